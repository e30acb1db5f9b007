"""AVA frame mAP: hand-computed cases, bad input, and equivalence with a slow, direct reference implementation."""
from __future__ import annotations

import heapq
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from actionkit.cli import eval_ava
from actionkit.evaluation import ava_map, ava_order
from actionkit.evaluation.ava_map import (
    AVAFormatError,
    AVAFrameEvaluator,
    frame_map,
    read_ava_csv,
    read_exclusions,
    read_labelmap,
    results2csv,
)

from conftest import AVA_SAMPLES, require_shared


# ---------------------------------------------------------------------------------------------------------------------
# A slow, direct reference: dict per keyframe, per-class loops, as the MMAction2 0.x / ActivityNet scripts are
# described in spec-detection.md §6.2 (written from the spec, step by step).
# ---------------------------------------------------------------------------------------------------------------------
def ref_labelmap(lines):
    cats, ids, name = [], set(), ""
    for line in lines:
        if line.startswith("  name:"):
            name = line.split('"')[1]
        elif line.startswith("  id:") or line.startswith("  label_id:"):
            cid = int(line.strip().split(" ")[-1])
            cats.append({"id": cid, "name": name})
            ids.add(cid)
    return cats, ids


def ref_key(vid, ts, mode):
    return "%s,%.6f" % (vid, float(ts)) if mode == "official" else "%s,%04d" % (vid, int(ts))


def ref_read_csv(rows, whitelist, mode, capacity):
    entries = defaultdict(list)
    all_keys = set()
    for row in rows:
        key = ref_key(row[0], row[1], mode)
        all_keys.add(key)
        if len(row) == 2:
            continue
        x1, y1, x2, y2 = [float(v) for v in row[2:6]]
        a = int(row[6])
        if whitelist and a not in whitelist:
            continue
        s = float(row[7]) if len(row) == 8 else 1.0
        item = (s, a, y1, x1, y2, x2)
        if mode == "official":
            if capacity < 1 or len(entries[key]) < capacity:
                heapq.heappush(entries[key], item)
            elif s > entries[key][0][0]:
                heapq.heapreplace(entries[key], item)
        else:
            entries[key].append(item)
    out = {}
    for key, items in entries.items():
        items = sorted(items, key=lambda t: -t[0])
        out[key] = (np.array([t[2:] for t in items], float).reshape(-1, 4), np.array([t[1] for t in items], int),
                    np.array([t[0] for t in items], float))
    return out, all_keys


def ref_iou(b1, b2):
    out = np.zeros((len(b1), len(b2)))
    for i, (ya, xa, yb, xb) in enumerate(b1):
        for j, (yc, xc, yd, xd) in enumerate(b2):
            h = max(0.0, min(yb, yd) - max(ya, yc))
            w = max(0.0, min(xb, xd) - max(xa, xc))
            inter = h * w
            out[i, j] = inter / ((yb - ya) * (xb - xa) + (yd - yc) * (xd - xc) - inter)
    return out


def ref_ap(scores, tp, num_gt):
    o = np.argsort(scores)[::-1]
    tpl = tp[o].astype(float)
    ctp = np.cumsum(tpl)
    cfp = np.cumsum(1.0 - tpl)
    prec = list(ctp / (ctp + cfp))
    rec = list(ctp / num_gt)
    rec = [0.0] + rec + [1.0]
    prec = [0.0] + prec + [0.0]
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    ap = 0.0
    terms = [(rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1]]
    return float(np.sum(np.array(terms))) if terms else 0.0


def reference_map(gt_rows, det_rows, label_lines, excl_rows=(), mode="mmaction"):
    cats, whitelist = ref_labelmap(label_lines)
    num_class = max(c["id"] for c in cats)
    excluded = {ref_key(r[0], r[1], mode) for r in excl_rows}
    gt, gt_keys = ref_read_csv(gt_rows, whitelist, mode, 0)
    det, _ = ref_read_csv(det_rows, whitelist, mode, 50)
    num_gt = np.zeros(num_class + 1, int)
    gts = {}
    for key, (b, lab, _) in gt.items():
        if key in excluded:
            continue
        gts[key] = (b, lab)
        for c in lab:
            num_gt[c] += 1
    per_scores, per_tp = defaultdict(list), defaultdict(list)
    for key, (b, lab, sc) in det.items():
        if key in excluded:
            continue
        if mode == "official" and key not in gt_keys:
            continue
        ok = (b[:, 0] < b[:, 2]) & (b[:, 1] < b[:, 3])
        b, lab, sc = b[ok], lab[ok], sc[ok]
        gb, gl = gts.get(key, (np.zeros((0, 4)), np.zeros(0, int)))
        for c in range(1, num_class + 1):
            db, ds = b[lab == c], sc[lab == c]
            if len(db) == 0:
                continue
            cg = gb[gl == c]
            tp = np.zeros(len(db), bool)
            if len(cg):
                iou = ref_iou(db, cg)
                best = np.argmax(iou, axis=1)
                taken = np.zeros(len(cg), bool)
                for i in range(len(db)):
                    g = best[i]
                    if iou[i, g] >= 0.5 and not taken[g]:
                        tp[i] = True
                        taken[g] = True
            per_scores[c].append(ds)
            per_tp[c].append(tp)
    aps = np.full(num_class, np.nan)
    for c in range(1, num_class + 1):
        if num_gt[c] == 0:
            continue
        if not per_scores[c]:
            aps[c - 1] = 0.0
            continue
        aps[c - 1] = ref_ap(np.concatenate(per_scores[c]), np.concatenate(per_tp[c]), num_gt[c])
    return float(np.nanmean(aps)), {c["id"]: aps[c["id"] - 1] for c in cats}


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------
LABELS3 = 'item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n}\nitem {\n  name: "c"\n  id: 3\n}\n'


def write(tmp_path, name, rows_or_text):
    p = tmp_path / name
    if isinstance(rows_or_text, str):
        p.write_text(rows_or_text)
    else:
        p.write_text("".join(",".join(str(v) for v in r) + "\n" for r in rows_or_text))
    return p


def run(tmp_path, gt, det, labels=LABELS3, excl=None, mode="mmaction"):
    g = write(tmp_path, "gt.csv", gt)
    d = write(tmp_path, "det.csv", det)
    lm = write(tmp_path, "labels.pbtxt", labels)
    e = write(tmp_path, "ex.csv", excl) if excl is not None else None
    return frame_map(g, d, lm, e, mode=mode)


A = (0.1, 0.1, 0.5, 0.5)
B = (0.6, 0.6, 0.9, 0.9)
C = (0.1, 0.6, 0.4, 0.9)


# ---------------------------------------------------------------------------------------------------------------------
# label map
# ---------------------------------------------------------------------------------------------------------------------
def test_read_labelmap_item_and_label_forms(tmp_path):
    cats, ids = read_labelmap(write(tmp_path, "l.pbtxt", LABELS3))
    assert ids == [1, 2, 3] and cats[1] == {"id": 2, "name": "b"}
    text = ('label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n  label_type: PERSON_MOVEMENT\n}\n'
            'label {\n  name: "carry/hold (an object)"\n  label_id: 17\n  label_type: OBJECT_MANIPULATION\n}\n')
    cats, ids = read_labelmap(write(tmp_path, "l2.pbtxt", text))
    assert ids == [1, 17] and cats[0]["name"] == "bend/bow (at the waist)"
    cats, ids = read_labelmap(write(tmp_path, "l3.txt", "1: bend/bow (at the waist)\n3: crouch/kneel\n"))
    assert ids == [1, 3] and cats[1]["name"] == "crouch/kneel"


def test_read_labelmap_real_sample():
    p = require_shared(AVA_SAMPLES / "ava_action_list_v2.1_for_activitynet_2018.pbtxt")
    cats, ids = read_labelmap(p)
    assert len(ids) == 60 and ids[:3] == [1, 3, 4] and ids[-1] == 80
    assert (cats, set(ids)) == ref_labelmap(p.read_text().splitlines(True))


@pytest.mark.parametrize("text, msg", [
    ('item {\n  name: "a"\n  id: x\n}\n', ":3: id must be an integer"),
    ('item {\n  id: 1\n}\n', ":2: id without a preceding name"),
    ('item {\n  name: a\n  id: 1\n}\n', ":2: expected name"),
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 1\n}\n', ":7: duplicate class id 1"),
    ('item {\n  name: "a"\n}\n', ":2: name 'a' has no id"),
    ("", "no classes"),
    ("1: a\nfoo\n", ":2: expected 'ID: name'"),
])
def test_read_labelmap_errors(tmp_path, text, msg):
    p = write(tmp_path, "bad.pbtxt", text)
    with pytest.raises(AVAFormatError, match=msg) as e:
        read_labelmap(p)
    assert str(p) in str(e.value)


# ---------------------------------------------------------------------------------------------------------------------
# csv reading
# ---------------------------------------------------------------------------------------------------------------------
def test_read_csv_formats(tmp_path):
    p = write(tmp_path, "gt.csv",
              "v1,0902,0.1,0.2,0.3,0.4,1,7\r\nv1,902,0.1,0.2,0.3,0.4,2\n\nv2,0903\nv1,0904,1,0,1,1e-1,3,0")
    r = read_ava_csv(p, "gt")
    assert r.keys == ["v1,0902", "v2,0903", "v1,0904"]
    assert r.key.tolist() == [0, 0, 2] and r.lineno.tolist() == [1, 2, 5]
    assert r.labels.tolist() == [1, 2, 3] and r.scores.tolist() == [7.0, 1.0, 0.0]
    np.testing.assert_array_equal(r.boxes, [[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [1, 0, 1, 0.1]])
    assert r.num_empty_rows == 1
    o = read_ava_csv(p, "gt", "official")
    assert o.keys == ["v1,902.000000", "v2,903.000000", "v1,904.000000"]
    r = read_ava_csv(p, "gt", class_whitelist=[1, 3])
    assert r.labels.tolist() == [1, 3] and r.skipped_classes == {2: 1}
    with pytest.raises(AVAFormatError, match=r"gt.csv:2: action id 2 is not in the label map"):
        read_ava_csv(p, "gt", class_whitelist=[1, 3], unknown_class="error")


def test_parse_numbers_matches_python_float(tmp_path):
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.random(300), rng.random(300).round(3), rng.random(100).round(1), [0, 1, 0.5]])
    texts = [repr(float(v)) for v in vals] + [f"{v:.3f}" for v in vals] + [f"{v:.17f}" for v in vals[:50]]
    texts += ["1", "0.", ".5", "1e-3", "5E-1", " 0.25", "0.0000000000000001", "+0.5"]
    rows = "".join(f"v,0902,{t},0,1,1,1,{t}\n" for t in texts)
    r = read_ava_csv(write(tmp_path, "d.csv", rows), "det")
    expect = np.array([float(t) for t in texts])
    assert np.array_equal(r.boxes[:, 0], expect) and np.array_equal(r.scores, expect)


@pytest.mark.parametrize("row, msg", [
    ("v,0902,0.1,0.1,0.5,0.5,1", "need 2 or 8 comma-separated columns, got 7"),
    ("v,0902,0.1,0.1,0.5,0.5,1,0.5,9", "got 9"),
    ("v,0902,0.1,abc,0.5,0.5,1,0.5", "y1 must be a number, got 'abc'"),
    ("v,0902,0.1,0.1,0.5,0.5,1.5,0.5", "action id must be an integer"),
    ("v,0902,0.1,0.1,0.5,0.5,0,0.5", "action id must be >= 1"),
    ("v,0902,0.1,0.1,0.5,0.5,1,nan", "score is not finite"),
    ("v,09x2,0.1,0.1,0.5,0.5,1,0.5", "timestamp must be an integer"),
    (",0902,0.1,0.1,0.5,0.5,1,0.5", "empty video id"),
    ("v,0902,0.1,,0.5,0.5,1,0.5", "empty y1 field"),
])
def test_bad_detection_rows(tmp_path, row, msg):
    good = "v,0902,0.1,0.1,0.5,0.5,1,0.5\n"
    p = write(tmp_path, "det.csv", good * 3 + row + "\n" + good)
    with pytest.raises(AVAFormatError, match=msg) as e:
        read_ava_csv(p, "det")
    assert f"det.csv:4:" in str(e.value)


def test_bad_gt_and_exclusions(tmp_path):
    p = write(tmp_path, "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1\nv,0902,0.1,0.1\n")
    with pytest.raises(AVAFormatError, match="gt.csv:2: ground-truth rows need 2 or 7 or 8"):
        read_ava_csv(p, "gt")
    e = write(tmp_path, "ex.csv", "v,0902\nv,0903,1\n")
    with pytest.raises(AVAFormatError, match="ex.csv:2: exclusion rows need 2 columns"):
        read_exclusions(e)
    assert read_exclusions(write(tmp_path, "ex2.csv", "v,0902\nw,903\n")) == {"v,0902", "w,0903"}
    assert read_exclusions(write(tmp_path, "ex3.csv", "v,0902\n"), "official") == {"v,902.000000"}


# ---------------------------------------------------------------------------------------------------------------------
# hand-computed mAP cases
# ---------------------------------------------------------------------------------------------------------------------
def gtrow(key, box, a, pid=0):
    return (*key.split(","), *box, a, pid)


def drow(key, box, a, s):
    return (*key.split(","), *box, a, s)


K1, K2, K3 = "v,0902", "v,0903", "w,0904"


def test_tp_then_fp_and_fp_then_tp(tmp_path):
    gt = [gtrow(K1, A, 1)]
    r = run(tmp_path, gt, [drow(K1, A, 1, 0.9), drow(K1, B, 1, 0.8)])
    assert r.per_class[1] == 1.0 and math.isnan(r.per_class[2]) and r.mAP == 1.0
    r = run(tmp_path, gt, [drow(K1, A, 1, 0.8), drow(K1, B, 1, 0.9)])
    assert r.per_class[1] == 0.5  # precision 0 at recall 0, 1/2 at recall 1


def test_class_with_gt_but_no_detections(tmp_path):
    gt = [gtrow(K1, A, 1), gtrow(K1, B, 2)]
    r = run(tmp_path, gt, [drow(K1, A, 1, 0.9)])
    assert r.per_class == {1: 1.0, 2: 0.0, 3: r.per_class[3]} and math.isnan(r.per_class[3])
    assert r.mAP == 0.5 and r.num_gt == {1: 1, 2: 1, 3: 0}
    assert r.groups["PersonMovement"] == 0.5 and math.isnan(r.groups["PersonObject"])


def test_no_fallback_to_second_best_gt_and_single_match(tmp_path):
    # D1 overlaps G1 best; D2's best GT is G1 too (already taken) -> FP although it overlaps G2 by >= 0.5.
    g1, g2 = (0.1, 0.1, 0.5, 0.5), (0.1, 0.15, 0.5, 0.55)
    d2 = (0.1, 0.12, 0.5, 0.52)  # IoU with g1: 0.38*... both >= 0.5, closer to g1? compute below
    i1 = ava_map._iou_pairs(np.array([d2]), np.array([g1]))[0]
    i2 = ava_map._iou_pairs(np.array([d2]), np.array([g2]))[0]
    assert i1 > i2 >= 0.5
    r = run(tmp_path, [gtrow(K1, g1, 1), gtrow(K1, g2, 1)], [drow(K1, g1, 1, 0.9), drow(K1, d2, 1, 0.8)])
    # ranked: TP, FP; num_gt 2 -> recall 0.5 at precision 1 -> AP 0.5
    assert r.per_class[1] == 0.5
    # duplicate detections of one GT: the second is FP
    r = run(tmp_path, [gtrow(K1, A, 1)], [drow(K1, A, 1, 0.9), drow(K1, A, 1, 0.8)])
    assert r.per_class[1] == 1.0
    r = run(tmp_path, [gtrow(K1, A, 1)], [drow(K1, A, 1, 0.7), drow(K1, B, 1, 0.9), drow(K1, A, 1, 0.8)])
    assert r.per_class[1] == 0.5


def test_iou_threshold_is_inclusive(tmp_path):
    g = (0.0, 0.0, 0.5, 0.5)
    d = (0.0, 0.0, 0.5, 0.25)  # IoU exactly 0.5
    assert ava_map._iou_pairs(np.array([d]), np.array([g]))[0] == 0.5
    assert run(tmp_path, [gtrow(K1, g, 1)], [drow(K1, d, 1, 0.9)]).per_class[1] == 1.0


def test_tied_scores_follow_the_reference_order(tmp_path):
    gt = [gtrow(K1, A, 1)]
    # equal scores: argsort([s, s])[::-1] puts the later row first
    tp_first = [drow(K1, A, 1, 0.5), drow(K1, B, 1, 0.5)]
    fp_first = [drow(K1, B, 1, 0.5), drow(K1, A, 1, 0.5)]
    assert run(tmp_path, gt, tp_first).per_class[1] == 0.5
    assert run(tmp_path, gt, fp_first).per_class[1] == 1.0
    # official: the heap of (score, id, y1, x1, ...) tuples orders the tie by box (A < B), whatever the file order
    assert run(tmp_path, gt, tp_first, mode="official").per_class[1] == 0.5
    assert run(tmp_path, gt, fp_first, mode="official").per_class[1] == 0.5


def test_empty_keyframes_and_keys_absent_from_gt(tmp_path):
    gt = [gtrow(K1, A, 1), (*K2.split(","),)]
    dets = [drow(K1, A, 1, 0.5), drow(K2, A, 1, 0.9)]  # K2: listed without boxes -> FP in both modes
    for mode in ("mmaction", "official"):
        assert run(tmp_path, gt, dets, mode=mode).per_class[1] == 0.5
    dets = [drow(K1, A, 1, 0.5), drow(K3, A, 1, 0.9)]  # K3 is not in the GT csv
    r = run(tmp_path, gt, dets)
    assert r.per_class[1] == 0.5 and r.stats["det_keys_not_in_gt"] == 1 and r.stats["det_rows_not_in_gt"] == 1
    r = run(tmp_path, gt, dets, mode="official")
    assert r.per_class[1] == 1.0 and r.stats["det_keys_not_in_gt"] == 1


def test_excluded_keys(tmp_path):
    gt = [gtrow(K1, A, 1), gtrow(K2, A, 1)]
    dets = [drow(K1, A, 1, 0.5), drow(K2, B, 1, 0.9)]
    assert run(tmp_path, gt, dets).per_class[1] == 0.5 * 0.5  # recall 1/2 at precision 1/2
    for mode in ("mmaction", "official"):
        r = run(tmp_path, gt, dets, excl=[K2.split(",")], mode=mode)
        assert r.per_class[1] == 1.0 and r.num_gt[1] == 1 and r.stats["det_keys_excluded"] == 1


def test_capacity_50_in_official_mode(tmp_path):
    gt = [gtrow(K1, A, 1)]
    dets = [drow(K1, B, 2, 0.5 + i / 1000) for i in range(50)] + [drow(K1, A, 1, 0.4)]
    assert run(tmp_path, gt, dets).per_class[1] == 1.0
    r = run(tmp_path, gt, dets, mode="official")
    assert r.per_class[1] == 0.0 and r.stats["detections_over_capacity"] == 1
    # a higher-scoring late detection still enters the heap
    dets = [drow(K1, B, 2, 0.5 + i / 1000) for i in range(50)] + [drow(K1, A, 1, 0.9)]
    assert run(tmp_path, gt, dets, mode="official").per_class[1] == 1.0


def test_invalid_boxes_and_whitelist(tmp_path):
    gt = [gtrow(K1, A, 1), gtrow(K1, B, 9)]  # class 9 is not in the label map: skipped
    dets = [drow(K1, A, 1, 0.5), drow(K1, (0.3, 0.3, 0.3, 0.6), 1, 0.9), drow(K1, B, 9, 0.9)]
    r = run(tmp_path, gt, dets)
    assert r.per_class[1] == 1.0  # the zero-width box is dropped, not a false positive
    assert r.stats["det_rows_invalid_box"] == 1 and r.stats["gt_rows_skipped_class"] == 1
    assert r.stats["det_rows_skipped_class"] == 1


def test_empty_detection_file(tmp_path, caplog):
    r = run(tmp_path, [gtrow(K1, A, 1), gtrow(K1, B, 2)], "")
    assert r.mAP == 0.0 and r.per_class[1] == 0.0
    assert "no detections" in caplog.text


def test_sample_files_match_reference():
    gt_p = require_shared(AVA_SAMPLES / "eval_detection__gt.csv")
    det_p, lab_p = AVA_SAMPLES / "eval_detection__pred.csv", AVA_SAMPLES / "eval_detection__action_list.txt"
    rows = lambda p: [ln.split(",") for ln in p.read_text().split()]
    for mode in ("mmaction", "official"):
        r = frame_map(gt_p, det_p, lab_p, mode=mode)
        ref, _ = reference_map(rows(gt_p), rows(det_p), lab_p.read_text().splitlines(True), mode=mode)
        assert abs(r.mAP - ref) < 1e-12
        assert abs(r.mAP - 0.09385522) < 1e-8


# ---------------------------------------------------------------------------------------------------------------------
# random equivalence with the reference
# ---------------------------------------------------------------------------------------------------------------------
def random_case(seed, decimals, dets_per_box=6, n_keys=12):
    rng = np.random.default_rng(seed)
    ids = [1, 2, 3, 5, 7]
    label_lines = "".join(f'item {{\n  name: "c{i}"\n  id: {i}\n}}\n' for i in ids).splitlines(True)
    fmt = (lambda v: repr(float(v))) if decimals is None else (lambda v: f"{v:.{decimals}f}")
    gt_rows, det_rows, excl = [], [], []
    keys = [(f"vid{k % 3}", f"{902 + k:04d}") for k in range(n_keys)]
    for ki, (vid, ts) in enumerate(keys):
        if ki == 0:
            gt_rows.append([vid, ts])  # empty keyframe
            continue
        if ki == n_keys - 1:
            continue  # a keyframe only in the detections
        if ki == 2:
            excl.append([vid, ts])
        persons = []
        for pid in range(rng.integers(1, 5)):
            x1, y1 = rng.random(2) * 0.6
            box = [x1, y1, x1 + 0.1 + rng.random() * 0.3, y1 + 0.1 + rng.random() * 0.3]
            box = [round(v, 3) for v in box]
            persons.append(box)
            for a in rng.choice([1, 2, 3, 4, 5, 7], size=rng.integers(1, 4), replace=False):
                gt_rows.append([vid, ts, *[f"{v:.3f}" for v in box], str(a), str(pid)])
        if ki == 3 and persons:
            gt_rows.append([vid, ts, *[f"{v:.3f}" for v in persons[0]], "2", "9"])  # duplicate GT box
    if seed % 3 == 0:  # 7-column GT (no person id): every GT score is 1.0
        gt_rows = [r[:7] for r in gt_rows]
    order = rng.permutation(len(gt_rows))
    gt_rows = [gt_rows[i] for i in order]
    for ki, (vid, ts) in enumerate(keys):
        nb = rng.integers(1, 6)
        for _ in range(nb):
            x1, y1 = rng.random(2) * 0.6
            w, h = 0.1 + rng.random(2) * 0.3
            box = np.clip(np.array([x1, y1, x1 + w, y1 + h]) + rng.normal(0, 0.02, 4), 0, 1)
            box[2:] = np.maximum(box[2:], box[:2])
            if rng.random() < 0.05:
                box[2] = box[0]  # zero width
            if decimals is not None:
                box = np.round(box, 3)
                box[2:] = np.maximum(box[2:], box[:2])
            for a in rng.choice([1, 2, 3, 4, 5, 7], size=dets_per_box, replace=True):
                s = rng.random()
                det_rows.append([vid, ts, *[fmt(v) for v in box], str(a), fmt(s)])
    # near-GT detections
    for r in gt_rows:
        if len(r) == 2:
            continue
        box = np.clip(np.array([float(v) for v in r[2:6]]) + rng.normal(0, 0.03, 4), 0, 1)
        box[2:] = np.maximum(box[2:], box[:2])
        if decimals is not None:
            box = np.round(box, 3)
        det_rows.append([r[0], r[1], *[fmt(v) for v in box], r[6], fmt(rng.random())])
    order = rng.permutation(len(det_rows))
    det_rows = [det_rows[i] for i in order]
    return gt_rows, det_rows, excl, label_lines


@pytest.mark.parametrize("mode", ["mmaction", "official"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 1, 2, 3])
def test_random_equivalence(tmp_path, mode, seed, decimals):
    dets_per_box = 12 if seed % 2 else 4  # odd seeds: keyframes over the 50 cap
    gt_rows, det_rows, excl, label_lines = random_case(seed * 7 + (decimals or 0), decimals, dets_per_box)
    ref, ref_pc = reference_map(gt_rows, det_rows, label_lines, excl, mode)
    r = run(tmp_path, gt_rows, det_rows, "".join(label_lines), excl, mode)
    tol = 1e-9 if decimals is None else 1e-6
    assert abs(r.mAP - ref) <= tol, (r.mAP, ref)
    for c, v in ref_pc.items():
        assert (math.isnan(v) and math.isnan(r.per_class[c])) or abs(v - r.per_class[c]) <= tol
    if decimals is not None:
        assert abs(r.mAP - ref) <= 1e-12  # the reference order is reproduced exactly


# ---------------------------------------------------------------------------------------------------------------------
# results csv, evaluator, command line
# ---------------------------------------------------------------------------------------------------------------------
def fake_results():
    r1 = [np.zeros((0, 5), np.float32) for _ in range(3)]
    r1[0] = np.array([[0.1, 0.1, 0.5, 0.5, 0.91234]], np.float32)
    r1[2] = np.array([[0.6, 0.6, 0.9, 0.9, 0.5], [0.1, 0.1, 0.5, 0.5, 0.0026]], np.float32)
    r2 = [np.array([[0.1, 0.1, 0.5, 0.5, 0.3]], np.float32), np.zeros((0, 5)), np.zeros((0, 5))]
    return [r1, r2]


def test_results2csv_format(tmp_path):
    out = tmp_path / "res.csv"
    n = results2csv(fake_results(), [{"video_id": "v", "timestamp": 902}, ("w", 1000)], out)
    lines = out.read_text().splitlines()
    assert n == 4 and lines[0] == "v,902,0.100,0.100,0.500,0.500,1,0.912"
    assert lines[1] == "v,902,0.600,0.600,0.900,0.900,3,0.500" and lines[2].endswith(",3,0.003")
    assert lines[3] == "w,1000,0.100,0.100,0.500,0.500,1,0.300"
    results2csv(fake_results(), ["v,902", "w,1000"], out, custom_classes=[4, 7, 9])
    assert [ln.split(",")[6] for ln in out.read_text().splitlines()] == ["4", "9", "9", "4"]
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match="2 results for 1 samples"):
        results2csv(fake_results(), ["v,902"], out)


def test_evaluator_matches_csv_round_trip(tmp_path):
    gt = write(tmp_path, "gt.csv", [gtrow("v,0902", A, 1), gtrow("v,0902", B, 3), gtrow("w,1000", A, 1)])
    lm = write(tmp_path, "l.pbtxt", LABELS3)
    ev = AVAFrameEvaluator(gt, lm)
    ev.process(["v,902"], fake_results()[:1])
    ev.process([("w", 1000)], fake_results()[1:])
    res = ev.evaluate()
    results2csv(fake_results(), ["v,902", "w,1000"], tmp_path / "r.csv")
    ref = frame_map(gt, tmp_path / "r.csv", lm)
    assert res.mAP == ref.mAP and res.to_json() == ref.to_json()
    assert res.per_class[3] == 1.0 and math.isnan(res.per_class[2]) and res.num_gt[1] == 2
    d = res.to_dict()
    assert d["mAP@0.5IOU"] == res.mAP and d["PerformanceByCategory/AP@0.5IOU/c"] == 1.0
    assert math.isnan(d["PerformanceByCategory/AP@0.5IOU/b"]) and list(res.to_dict(False)) == ["mAP@0.5IOU"]
    ev.reset()
    assert ev.evaluate().mAP == 0.0


def test_main_prints_and_writes_json(tmp_path, capsys):
    gt = write(tmp_path, "gt.csv", [gtrow(K1, A, 1), gtrow(K1, B, 2)])
    det = write(tmp_path, "det.csv", [drow(K1, A, 1, 0.9), drow(K3, A, 1, 0.95)])
    lm = write(tmp_path, "l.pbtxt", LABELS3)
    out = tmp_path / "o.json"
    assert eval_ava.main(["--gt", str(gt), "--det", str(det), "--label-map", str(lm), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mAP@0.5IOU = 0.250000" in text and "PersonMovement" in text
    js = json.loads(out.read_text())
    assert js["mAP"] == 0.25 and js["per_class"][2]["ap"] is None and js["stats"]["det_keys_not_in_gt"] == 1
    assert eval_ava.main(["--gt", str(gt), "--det", str(det), "--label-map", str(lm), "--official"]) == 0
    assert "mAP@0.5IOU = 0.500000" in capsys.readouterr().out  # the unknown keyframe is ignored
    bad = write(tmp_path, "bad.csv", "v,0902,0.1\n")
    assert eval_ava.main(["--gt", str(gt), "--det", str(bad), "--label-map", str(lm)]) == 2
    assert "bad.csv:1:" in capsys.readouterr().err


@pytest.mark.parametrize("capacity", [50, 0, 3])
def test_vectorised_heaps_equal_heapq(capacity):
    """Per keyframe, the kept detections equal heapq push/heapreplace + sorted(key=-score), and so does their
    order wherever it can change the evaluation: descending score, and the boxes of one class at one score in the
    reference's order (rows of different classes at one score may come in any order)."""
    rng = np.random.default_rng(capacity)
    n_keys = 40
    counts = rng.integers(1, 130, n_keys)
    key = rng.permutation(np.repeat(np.arange(n_keys), counts))  # interleaved keyframes
    n = len(key)
    scores = rng.integers(1, 6, n) / 10.0  # heavy ties
    labels = rng.integers(1, 3, n)
    boxes = np.sort(rng.integers(0, 3, (n, 4)) / 4.0, axis=1)[:, [0, 1, 2, 3]]
    rows = ava_map.AVARows("mem", "official", [str(k) for k in range(n_keys)], key, boxes, labels, scores,
                           np.arange(1, n + 1))
    order = ava_order.reference_order(rows, np.ones(n, bool), np.arange(n_keys), "official", capacity)
    got = defaultdict(list)
    for i in order.tolist():
        got[key[i]].append((scores[i], labels[i], boxes[i, 1], boxes[i, 0], boxes[i, 3], boxes[i, 2]))
    for k in range(n_keys):
        entries = []
        for i in np.flatnonzero(key == k).tolist():
            t = (scores[i], labels[i], boxes[i, 1], boxes[i, 0], boxes[i, 3], boxes[i, 2])
            if capacity < 1 or len(entries) < capacity:
                heapq.heappush(entries, t)
            elif t[0] > entries[0][0]:
                heapq.heapreplace(entries, t)
        ref = sorted(entries, key=lambda t: -t[0])
        assert sorted(got[k]) == sorted(ref), k
        assert [t[0] for t in got[k]] == [t[0] for t in ref], k
        for score, label in {t[:2] for t in ref}:
            assert [t for t in got[k] if t[:2] == (score, label)] == [t for t in ref if t[:2] == (score, label)], k


def test_sub_second_timestamps_are_distinct_keys_in_official_mode(tmp_path):
    gt = [("v", "902", *A, 1, 0), ("v", "902.5", *B, 1, 0)]
    dets = [("v", "902.500000", *B, 1, 0.9), ("v", "902", *A, 1, 0.8)]
    r = run(tmp_path, gt, dets, mode="official")
    assert r.per_class[1] == 1.0 and r.num_gt[1] == 2
    with pytest.raises(AVAFormatError, match="gt.csv:2: timestamp must be an integer"):
        run(tmp_path, gt, dets)


def test_interleaved_rows_and_custom_classes(tmp_path):
    # keyframes interleaved row by row; custom_classes restricts the evaluated classes
    gt = [gtrow(K1, A, 1), gtrow(K2, B, 2), gtrow(K1, B, 3), gtrow(K2, A, 1)]
    dets = [drow(K2, A, 1, 0.7), drow(K1, A, 1, 0.6), drow(K2, B, 2, 0.5), drow(K1, C, 3, 0.9), drow(K1, B, 3, 0.4)]
    d = tmp_path
    r = frame_map(write(d, "g.csv", gt), write(d, "d.csv", dets), write(d, "l.pbtxt", LABELS3))
    assert r.per_class == {1: 1.0, 2: 1.0, 3: 0.5} and r.mAP == pytest.approx(2.5 / 3)
    r = frame_map(d / "g.csv", d / "d.csv", d / "l.pbtxt", custom_classes=[1, 3])
    assert list(r.per_class) == [1, 3] and r.mAP == 0.75


def test_no_ground_truth_gives_nan_with_warning(tmp_path, caplog):
    r = run(tmp_path, [("v", "0902")], [drow(K1, A, 1, 0.9)])
    assert math.isnan(r.mAP) and all(math.isnan(v) for v in r.per_class.values())
    assert "no ground truth" in caplog.text


def test_real_format_samples_read():
    gt = read_ava_csv(require_shared(AVA_SAMPLES / "ava_dataset__ava_sample.csv"), "gt")
    assert gt.num_rows > 0 and gt.keys[0].count(",") == 1 and len(gt.keys[0].split(",")[1]) == 4
    ex = read_exclusions(AVA_SAMPLES / "ava_dataset__ava_excluded_timestamps_sample.csv")
    assert ex == {"0f39OWEqJ24,0903", "_-Z6wFjXtGQ,0902"}


@pytest.mark.parametrize("n, decimals", [(3000, None), (3000, 3), (500, 1)])
def test_tuple_codes_order_like_python_tuples(n, decimals):
    rng = np.random.default_rng(n)
    scores, boxes = rng.random(n), rng.random((n, 4))
    if decimals is not None:
        scores, boxes = scores.round(decimals), boxes.round(decimals)
    labels = rng.integers(1, 81, n)
    code, s_code = ava_order.tuple_codes(scores, labels, boxes)  # n=3000 floats: the lexsort fallback
    tuples = [(scores[i], labels[i], boxes[i, 1], boxes[i, 0], boxes[i, 3], boxes[i, 2]) for i in range(n)]
    i, j = rng.integers(0, n, (2, 20000))
    for a, b in zip(i.tolist(), j.tolist()):
        assert (code[a] < code[b]) == (tuples[a] < tuples[b]) and (code[a] == code[b]) == (tuples[a] == tuples[b])
        assert (s_code[a] < s_code[b]) == (scores[a] < scores[b])


def test_benchmark_data_matches_reference(tmp_path):
    """The benchmark's realistic generator (1 video, ~50k detections with 3-decimal ties), both modes, exactly."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ava_eval.py"
    spec = importlib.util.spec_from_file_location("ava_eval_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    gt, det, lm, ex = bench.generate(tmp_path, scale=1 / 64, seed=3)
    rows = lambda p: [ln.split(",") for ln in p.read_text().split()]
    G, D, E = rows(gt), rows(det), rows(ex)
    assert len(D) > 40000
    for mode in ("mmaction", "official"):
        r = frame_map(gt, det, lm, ex, mode=mode)
        ref, ref_pc = reference_map(G, D, lm.read_text().splitlines(True), E, mode)
        assert r.mAP == ref and 0.05 < r.mAP < 0.5
        assert all(r.per_class[c] == v for c, v in ref_pc.items() if not math.isnan(v))


# ---------------------------------------------------------------------------------------------------------------------
# detection files that the official script evaluates: degenerate / out-of-image boxes, odd scores, duplicates
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["mmaction", "official"])
def test_degenerate_boxes_are_scored_like_the_reference(tmp_path, mode, caplog):
    rng = np.random.default_rng(7)
    gt, det = [], []
    for t in range(902, 912):
        for p in range(3):
            x, y = rng.random(2) * 0.5
            box = tuple(round(v, 3) for v in (x, y, x + 0.3, y + 0.4))
            gt.append(gtrow(f"v,{t:04d}", box, int(rng.integers(1, 4)), p))
            for a in (1, 2, 3):
                jit = tuple(round(min(max(v + rng.normal(0, 0.03), 0.0), 1.0), 3) for v in box)
                det.append(drow(f"v,{t:04d}", jit, a, round(float(rng.random()), 3)))
    # x2 < x1, y2 < y1, a zero-width box, and coordinates slightly outside [0, 1] (some of them would match)
    det[0] = drow("v,0902", (0.5, 0.1, 0.4, 0.5), 1, 0.99)
    det[1] = drow("v,0902", (0.1, 0.5, 0.4, 0.2), 2, 0.98)
    det[2] = drow("v,0902", (0.3, 0.1, 0.3, 0.5), 3, 0.97)
    det[4] = drow("v,0903", (-0.02, gt[3][3], 1.01, gt[3][5]), 2, 0.96)
    g = write(tmp_path, "gt.csv", gt)
    d = write(tmp_path, "det.csv", det)
    lm = write(tmp_path, "labels.pbtxt", LABELS3)
    with caplog.at_level("WARNING"):
        r = frame_map(g, d, lm, mode=mode)
    rows = lambda p: [ln.split(",") for ln in p.read_text().split()]
    ref, _ = reference_map(rows(g), rows(d), LABELS3.splitlines(True), (), mode)
    assert r.mAP == ref and 0.1 < r.mAP < 1.0
    assert r.stats["det_rows_degenerate_box"] == 2 and r.stats["det_rows_invalid_box"] == 3
    assert r.stats["det_rows_box_outside_image"] == 1
    assert "2 with x2 < x1 or y2 < y1" in caplog.text and "outside [0, 1]" in caplog.text


def test_ground_truth_boxes_stay_strict(tmp_path):
    p = write(tmp_path, "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1\nv,0902,0.5,0.1,0.4,0.5,1\n")
    with pytest.raises(AVAFormatError, match=r"gt.csv:2: box has x2 < x1"):
        read_ava_csv(p, "gt")
    p = write(tmp_path, "gt2.csv", "v,0902,0.1,0.1,0.5,1.2,1\n")
    with pytest.raises(AVAFormatError, match=r"gt2.csv:1: box coordinates must lie in \[0, 1\]"):
        read_ava_csv(p, "gt")


def test_duplicates_and_scores_outside_0_1_are_counted_and_warned(tmp_path, caplog):
    gt = [gtrow(K1, A, 1), gtrow(K2, A, 1)]
    dets = [drow(K1, A, 1, 0.9), drow(K2, B, 1, 0.8), drow(K2, A, 1, 0.7)]
    clean = run(tmp_path, gt, dets)
    assert clean.stats["det_rows_duplicated"] == 0 and clean.mAP == pytest.approx(5 / 6)
    with caplog.at_level("WARNING"):
        r = run(tmp_path, gt, dets + dets[:2] + [drow(K1, A, 1, 1.5), drow(K2, A, 1, -0.1)])
    assert r.stats["det_rows_duplicated"] == 4 and r.stats["det_rows_score_outside_0_1"] == 2
    assert r.mAP < clean.mAP  # each copy is scored: the reference does the same
    assert "4 detection rows repeat an earlier row" in caplog.text and "2 detections have scores outside" in caplog.text


def test_iou_threshold_outside_0_1_is_refused(tmp_path, capsys):
    gt = write(tmp_path, "gt.csv", [gtrow(K1, A, 1)])
    det = write(tmp_path, "det.csv", [drow(K1, A, 1, 0.9)])
    lm = write(tmp_path, "l.pbtxt", LABELS3)
    for bad in ("0", "1.5", "-0.5", "abc"):
        with pytest.raises(SystemExit):
            eval_ava.main(["--gt", str(gt), "--det", str(det), "--label-map", str(lm), "--iou", bad])
        assert "--iou" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"IoU threshold must lie in \(0, 1\]"):
        frame_map(gt, det, lm, iou=0.0)
    assert frame_map(gt, det, lm, iou=1.0).mAP == 1.0


def test_bom_blank_lines_and_crlf_read_like_plain_files(tmp_path):
    body = "v,0902,0.1,0.2,0.3,0.4,1,0.5\nv,0903,0.1,0.2,0.3,0.4,2,0.25\n"
    plain = read_ava_csv(write(tmp_path, "a.csv", body), "det")
    odd = (tmp_path / "b.csv")
    odd.write_bytes(b"\xef\xbb\xbf" + body.replace("\n", "\r\n\r\n").encode())
    r = read_ava_csv(odd, "det")
    assert r.keys == plain.keys and r.lineno.tolist() == [1, 3]
    np.testing.assert_array_equal(r.boxes, plain.boxes)
    assert read_exclusions(write(tmp_path, "e.csv", "\ufeffv,0902\n")) == {"v,0902"}
    lm = tmp_path / "l.pbtxt"
    lm.write_text("\ufeff" + LABELS3, encoding="utf-8")
    assert read_labelmap(lm)[1] == [1, 2, 3]


def test_non_utf8_files_name_the_file_and_line(tmp_path):
    p = tmp_path / "det.csv"
    p.write_bytes(b"v,0902,0.1,0.2,0.3,0.4,1,0.5\nv\xff,0903,0.1,0.2,0.3,0.4,1,0.5\n")
    with pytest.raises(AVAFormatError, match=r"det.csv:2: not UTF-8"):
        read_ava_csv(p, "det")
    e = tmp_path / "ex.csv"
    e.write_bytes(b"v,0902\n\xfe,0903\n")
    with pytest.raises(AVAFormatError, match=r"ex.csv:2: not UTF-8"):
        read_exclusions(e)


def test_fast_and_line_by_line_readers_agree(tmp_path):
    """The polars fast path and the Python reader give the same rows (incl. mixed 2/7/8-column ground truth)."""
    from actionkit.data import ava_csv

    rng = np.random.default_rng(3)
    lines = []
    for i in range(400):
        t = 902 + i // 7
        if i % 37 == 0:
            lines.append(f"w,{t}")
            continue
        vals = ",".join(f"{v:.{rng.integers(1, 17)}f}" for v in rng.random(4))
        tail = "" if i % 3 == 0 else f",{int(rng.integers(0, 9))}"
        lines.append(f"{'vw'[i % 2]},{t:04d},{vals},{int(rng.integers(1, 81))}{tail}")
    data = ("\n".join(lines) + "\n").encode()
    for mode in ("mmaction", "official"):
        fast = ava_csv._parse_polars(data, ava_csv._GT_LAYOUT, mode)
        slow, problem = ava_csv._parse_python(data, "gt.csv", ava_csv._GT_LAYOUT, mode)
        assert fast is not None and problem is None
        for name in ("lineno", "ncol", "labels", "key"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))
        for a, b in zip(fast.boxes_eighth(None, 1.0), slow.boxes_eighth(None, 1.0)):
            np.testing.assert_array_equal(a, b)
        assert fast.keys == slow.keys


@pytest.mark.parametrize("high", [3, 2**16, 2**16 + 1, 2**40, 2**50])
def test_stable_argsort_is_numpys_stable_argsort(high):
    rng = np.random.default_rng(high % 1000)
    for n in (0, 1, 7, 5000):
        code = rng.integers(0, high, n)
        np.testing.assert_array_equal(ava_order.stable_argsort(code), np.argsort(code, kind="stable"))
    code = rng.integers(-5, 5, 300)  # negative codes: numpy's sort
    np.testing.assert_array_equal(ava_order.stable_argsort(code), np.argsort(code, kind="stable"))



def test_average_precision_at_true_positives_equals_the_stepwise_reference():
    """voc_average_precision works at the true positives only; it must give the reference's float exactly
    (ties in scores, recall reaching 1 or not, no true positive)."""
    rng = np.random.default_rng(5)
    for t in range(400):
        n = int(rng.integers(1, 200))
        scores = rng.random(n).round([1, 2, 3, 17][t % 4])
        tp = rng.random(n) < rng.random()
        num_gt = int(tp.sum()) + (int(rng.integers(0, 4)) if t % 3 else 0)
        if num_gt == 0:
            continue
        assert ava_map.voc_average_precision(scores, tp, num_gt) == ref_ap(scores, tp, num_gt)


@pytest.mark.parametrize("mode", ["mmaction", "official"])
def test_heavily_tied_interleaved_file_equals_the_reference_exactly(tmp_path, mode):
    """Scores with one decimal (ties everywhere, the tie order decides the AP), keyframes interleaved row by row
    and over the official cap of 50: the vectorised evaluator equals the row-by-row reference to the bit."""
    gt_rows, det_rows, excl, label_lines = random_case(11, 1, dets_per_box=20, n_keys=30)
    det_rows = det_rows[1::2] + det_rows[::2]   # no keyframe's rows are contiguous
    ref, ref_pc = reference_map(gt_rows, det_rows, label_lines, excl, mode)
    r = run(tmp_path, gt_rows, det_rows, "".join(label_lines), excl, mode)
    assert r.mAP == ref and 0.0 < r.mAP < 1.0
    assert all(r.per_class[c] == v for c, v in ref_pc.items() if not math.isnan(v))
    if mode == "official":
        assert r.stats["detections_over_capacity"] > 0


@pytest.mark.parametrize("seed", range(4))
def test_closed_form_kept_rows_equal_heapq(seed):
    """The rows the official heap keeps, computed without simulating it (``_kept_by_heap``: counts of arrivals
    below / at / above the capacity-th score), equal heapq's on small keyframes with heavy ties and duplicates."""
    rng = np.random.default_rng(seed)
    n_keys = 300
    capacity = int(rng.integers(1, 6))
    counts = rng.integers(1, 4 * capacity + 3, n_keys)
    key = rng.permutation(np.repeat(np.arange(n_keys), counts))
    n = len(key)
    scores = rng.integers(1, 4, n) / 10.0
    labels = rng.integers(1, 4, n)
    boxes = np.sort(rng.integers(0, 2, (n, 4)) / 2.0, axis=1)
    rows = ava_map.AVARows("mem", "official", [str(k) for k in range(n_keys)], key, boxes, labels, scores,
                           np.arange(1, n + 1))
    idx = np.arange(n)
    order = np.lexsort((-scores, key))
    kr_o = key[order]
    bounds = np.flatnonzero(np.r_[True, kr_o[1:] != kr_o[:-1], True])
    keep = ava_order._kept_by_heap(rows, idx, key, order, kr_o, scores[order], bounds[:-1], np.diff(bounds),
                                   capacity)
    assert keep.sum() == np.minimum(counts, capacity).sum()
    got = defaultdict(list)
    for i in order[keep].tolist():
        got[key[i]].append((scores[i], labels[i], boxes[i, 1], boxes[i, 0], boxes[i, 3], boxes[i, 2]))
    for k in range(n_keys):
        entries = []
        for i in np.flatnonzero(key == k).tolist():
            t = (scores[i], labels[i], boxes[i, 1], boxes[i, 0], boxes[i, 3], boxes[i, 2])
            if len(entries) < capacity:
                heapq.heappush(entries, t)
            elif t[0] > entries[0][0]:
                heapq.heapreplace(entries, t)
        assert sorted(got[k]) == sorted(entries), k
