"""AVA frame mAP (MMAction2 0.x ``ava_eval`` and the ActivityNet ``--official`` variant), results csv.

Two modes, both reproducing their reference's numbers (including the order in which tied scores are processed):

* ``mmaction`` (default): MMAction2 0.x ``ava_eval`` (spec-detection.md §6.2). Image keys ``'%s,%04d' % (video,
  int(ts))``; excluded keyframes dropped from GT and detections; no per-keyframe cap; detections on keyframes absent
  from the GT are false positives.
* ``official``: ActivityNet ``get_ava_performance.py``. Keys ``'%s,%.6f'``; each keyframe keeps its top 50
  detections through the script's ``heapq`` (simulated exactly, vectorised across keyframes, since the heap layout
  fixes the order of tied scores); detections on keyframes absent from the GT csv are ignored, while 2-column GT rows
  list keyframes without boxes whose detections are false positives.

Both: Pascal VOC all-points AP per class at IoU >= 0.5 with greedy matching in score order (each detection takes
its first argmax-IoU GT box of the class, no fallback), ``np.argsort(scores)[::-1]`` ranking, mean over the
label-map classes that have GT. The files are read by :mod:`actionkit.evaluation.ava_csv` (errors name file:line).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from actionkit.utils import atomic_write

from .ava_csv import (  # noqa: F401 - re-exported: the readers live in ava_csv
    MODES, AVAFormatError, AVARows, make_image_key, read_ava_csv, read_exclusions, read_labelmap,
)

__all__ = [
    "AVAFormatError", "AVAFrameEvaluator", "AVARows", "CATEGORY_GROUPS", "FrameMAPResult", "evaluate_rows", "frame_map",
    "main", "read_ava_csv", "read_exclusions", "read_labelmap", "results2csv", "voc_average_precision",
]


OFFICIAL_CAPACITY = 50
# Standard AVA action-type groups (ids of ava_action_list_v2.x.pbtxt label_type).
CATEGORY_GROUPS = {
    "PersonMovement": (1, 14),
    "PersonObject": (15, 63),
    "PersonPerson": (64, 80),
}

# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class FrameMAPResult:
    """Frame-level AVA results. ``per_class`` maps every label-map id to its AP (NaN for classes without GT)."""

    mAP: float
    per_class: dict                 # id -> AP
    names: dict                     # id -> name
    num_gt: dict                    # id -> number of GT instances
    groups: dict                    # group name -> mean AP over its classes with GT (NaN when none)
    mode: str
    iou: float
    stats: dict                     # counts of skipped / ignored rows and keys

    def to_dict(self, by_category: bool = True) -> dict:
        """MMAction2 0.x metric names: ``mAP@0.5IOU`` (+ ``PerformanceByCategory/AP@0.5IOU/<name>``)."""
        thr = f"{self.iou:g}"
        out = {f"mAP@{thr}IOU": self.mAP}
        if by_category:  # every label-map class, NaN where it has no GT (as the reference prints them)
            for cid, ap in self.per_class.items():
                out[f"PerformanceByCategory/AP@{thr}IOU/{self.names[cid]}"] = ap
        return out

    def to_json(self) -> dict:
        def f(x):
            return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)
        return {
            "mode": self.mode, "iou": self.iou, "mAP": f(self.mAP),
            "per_class": [{"id": c, "name": self.names[c], "ap": f(ap), "num_gt": int(self.num_gt.get(c, 0))}
                          for c, ap in self.per_class.items()],
            "groups": {k: f(v) for k, v in self.groups.items()},
            "stats": self.stats,
        }


def _key_mask(keys: Sequence[str], members) -> np.ndarray:
    return np.array([k in members for k in keys], bool).reshape(-1)


def _order_codes(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Order-preserving dense integer codes of a float column (equal values -> equal codes), and their count."""
    if len(x) == 0:
        return np.zeros(0, np.int64), 1
    k = np.rint(x * 1000.0)
    if np.abs(k).max() < 2**40 and np.array_equal(k / 1000.0, x):  # 3-decimal values (the results csv)
        k = k.astype(np.int64)
        k -= k.min()
        return k, int(k.max()) + 1
    u, inv = np.unique(x, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(u)


def _tuple_codes(scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 codes ordering rows like the tuples ``(score, action_id, y1, x1, y2, x2)`` of the official script,
    and the codes of the scores alone."""
    s_code, s_card = _order_codes(scores)
    cols = [(s_code, s_card), (labels.astype(np.int64), int(labels.max()) + 1 if len(labels) else 1)]
    for j in (1, 0, 3, 2):
        cols.append(_order_codes(boxes[:, j]))
    total = 1
    for _, card in cols:
        total *= card
    if total < 2**62:
        code = np.zeros(len(scores), np.int64)
        for c, card in cols:
            code = code * card + c
        return code, s_code
    o = np.lexsort([c for c, _ in cols[::-1]])
    diff = np.zeros(len(o), bool)
    for c, _ in cols:
        cs = c[o]
        diff[1:] |= cs[1:] != cs[:-1]
    code = np.empty(len(o), np.int64)
    code[o] = np.cumsum(diff)
    return code, s_code


def _simulate_heaps(code: np.ndarray, s_code: np.ndarray, counts: np.ndarray,
                    capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the ``heapq`` push / ``heapreplace`` sequence of the official ``read_csv`` on many keyframes at once.

    Items are laid out key after key in arrival order (``counts`` per key, keys sorted by decreasing count);
    ``code`` orders them as the tuples do, ``s_code`` as their scores. Returns the heap arrays ``[K, width]`` of
    item indices (-1 for empty slots) and their fill sizes.
    """
    K = len(counts)
    nmax = int(counts.max()) if K else 0
    width = capacity if capacity > 0 else nmax
    H = np.full((K, max(width, 1)), -1, np.int64)
    HC = np.zeros((K, max(width, 1)), np.int64)
    start = np.zeros(K, np.int64)
    if K > 1:
        np.cumsum(counts[:-1], out=start[1:])
    neg = -counts
    for j in range(nmax):
        A = int(np.searchsorted(neg, -j, side="left"))  # keys with more than j items
        items = start[:A] + j
        c = code[items]
        if capacity <= 0 or j < capacity:  # heappush at slot j, then sift towards the root
            rows = np.arange(A)
            p = j
            while p > 0 and len(rows):
                par = (p - 1) >> 1
                pc = HC[rows, par]
                mv = c < pc
                st = ~mv
                if st.any():
                    rs = rows[st]
                    HC[rs, p] = c[st]
                    H[rs, p] = items[st]
                rows, c, items, pc = rows[mv], c[mv], items[mv], pc[mv]
                HC[rows, p] = pc
                H[rows, p] = H[rows, par]
                p = par
            if len(rows):
                HC[rows, p] = c
                H[rows, p] = items
            continue
        # heapreplace where the score beats the root's score
        acc = s_code[items] > s_code[H[:A, 0]]
        rows = np.flatnonzero(acc)
        if not len(rows):
            continue
        items, c = items[acc], c[acc]
        pos = np.zeros(len(rows), np.int64)
        while True:  # heapq._siftup: move the smaller child up until reaching a leaf (ties take the right child)
            child = 2 * pos + 1
            go = child < width
            if not go.any():
                break
            r, ch = rows[go], child[go]
            right = ch + 1
            has_r = right < width
            rr = np.where(has_r, right, ch)
            use_r = has_r & ~(HC[r, ch] < HC[r, rr])
            ch = np.where(use_r, rr, ch)
            pg = pos[go]
            HC[r, pg] = HC[r, ch]
            H[r, pg] = H[r, ch]
            pos[go] = ch
        while True:  # heapq._siftdown: bubble the new item up from that leaf
            par = (pos - 1) >> 1
            mv = pos > 0
            mv[mv] = c[mv] < HC[rows[mv], par[mv]]
            if not mv.any():
                break
            r, pm, pp = rows[mv], pos[mv], par[mv]
            HC[r, pm] = HC[r, pp]
            H[r, pm] = H[r, pp]
            pos[mv] = pp
        HC[rows, pos] = c
        H[rows, pos] = items
    sizes = np.minimum(counts, width) if capacity > 0 else counts.copy()
    return H, sizes


def _order_rows(rows: AVARows, sel: np.ndarray, key_rank: np.ndarray, mode: str, capacity: int,
                stats: dict | None = None) -> np.ndarray:
    """Indices of the selected rows in the reference's processing order: keys in ``key_rank`` order, inside a key
    the reference's score order (stable sort by descending score in MMAction2; the heap of the official script,
    top-``capacity`` by score when ``capacity > 0``)."""
    idx = np.flatnonzero(sel)
    if len(idx) == 0:
        return idx
    kr = key_rank[rows.key[idx]]
    s_code, s_card = _order_codes(rows.scores[idx])
    if (int(kr.max()) + 1) * s_card < 2**62:  # one stable sort of (key rank, descending score)
        order = idx[np.argsort(kr * s_card + (s_card - 1 - s_code), kind="stable")]
    else:
        order = idx[np.lexsort((-rows.scores[idx], kr))]
    del s_code
    if mode != "official":
        return order
    # official: simulate the heap where its layout can matter, i.e. keys over capacity, or with two different
    # boxes of one class at one score (their order decides the greedy matching); elsewhere the score order is it.
    kr_o = key_rank[rows.key[order]]
    s_o = rows.scores[order]
    n = len(order)
    bounds = np.flatnonzero(np.r_[True, kr_o[1:] != kr_o[:-1], True])
    gstart, gend = bounds[:-1], bounds[1:]
    need = np.zeros(len(gstart), bool)
    if capacity > 0:
        need |= (gend - gstart) > capacity
    tie = np.zeros(n, bool)
    tie[1:] = (kr_o[1:] == kr_o[:-1]) & (s_o[1:] == s_o[:-1])
    if tie.any():
        run_head = ~tie
        run_id = np.cumsum(run_head) - 1
        in_tie = tie | np.r_[tie[1:], False]
        t_rows = np.flatnonzero(in_tie)
        code = run_id[t_rows] * (int(rows.labels.max()) + 1) + rows.labels[order[t_rows]]
        srt = np.argsort(code, kind="stable")
        c_s = code[srt]
        dup = np.flatnonzero(c_s[1:] == c_s[:-1])
        if len(dup):
            a = order[t_rows[srt[dup]]]
            b = order[t_rows[srt[dup + 1]]]
            diff_box = (rows.boxes[a] != rows.boxes[b]).any(1)
            amb_pos = t_rows[srt[dup[diff_box]]]
            grp = np.searchsorted(gstart, amb_pos, side="right") - 1
            need[grp] = True
    if not need.any():
        return order

    # the simulated keys: their rows in arrival (file) order, keys by decreasing count
    gsel = np.flatnonzero(need)
    cnts = (gend - gstart)[gsel]
    kord = np.argsort(-cnts, kind="stable")
    gsel, cnts = gsel[kord], cnts[kord]
    # rows of those keys in arrival (file) order, keys in the order of gsel
    grank = np.full(len(gstart), -1, np.int64)
    grank[gsel] = np.arange(len(gsel))
    pos_grp = np.repeat(grank, gend - gstart)
    in_sim = np.flatnonzero(pos_grp >= 0)
    seg_rows = order[in_sim]
    seg_rows = seg_rows[np.argsort(pos_grp[in_sim] * (int(order.max()) + 1) + seg_rows, kind="stable")]
    code, s_code = _tuple_codes(rows.scores[seg_rows], rows.labels[seg_rows], rows.boxes[seg_rows])
    H, sizes = _simulate_heaps(code, s_code, cnts, capacity)
    # sorted(entries, key=-score): stable over the heap array order
    filled = np.arange(H.shape[1])[None, :] < sizes[:, None]
    sk = np.where(filled, -s_code[np.maximum(H, 0)], np.iinfo(np.int64).max)
    H = np.take_along_axis(H, np.argsort(sk, axis=1, kind="stable"), axis=1)
    # write each key's kept rows over the start of its slice of ``order``; drop the rest of the slice
    out = order.copy()
    keep = np.ones(n, bool)
    starts_sel = gstart[gsel]
    within = np.arange(H.shape[1])[None, :]
    dest = (starts_sel[:, None] + within)[filled]
    out[dest] = seg_rows[H[filled]]
    drop = (within < cnts[:, None]) & ~filled if H.shape[1] >= int(cnts.max()) else None
    if drop is not None:
        keep[(starts_sel[:, None] + within)[drop]] = False
    else:
        over = np.flatnonzero(cnts > sizes)
        for i in over.tolist():
            keep[starts_sel[i] + sizes[i]:starts_sel[i] + cnts[i]] = False
    if stats is not None:
        stats["detections_over_capacity"] = stats.get("detections_over_capacity", 0) + int((~keep).sum())
    return out[keep]


def _iou_pairs(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU of paired boxes (x1, y1, x2, y2), with the reference's operation order (np_box_list_ops.iou)."""
    ih = np.maximum(0.0, np.minimum(d[:, 3], g[:, 3]) - np.maximum(d[:, 1], g[:, 1]))
    iw = np.maximum(0.0, np.minimum(d[:, 2], g[:, 2]) - np.maximum(d[:, 0], g[:, 0]))
    inter = ih * iw
    a1 = (d[:, 3] - d[:, 1]) * (d[:, 2] - d[:, 0])
    a2 = (g[:, 3] - g[:, 1]) * (g[:, 2] - g[:, 0])
    return inter / (a1 + a2 - inter)


def voc_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC all-points AP of one class, as ``metrics.compute_precision_recall`` + ``compute_average_precision``:
    order by ``np.argsort(scores)[::-1]`` (default quicksort, which fixes the order of tied scores)."""
    if num_gt <= 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    o = np.argsort(scores)[::-1]
    tpl = tp[o]
    fpl = (tpl <= 0).astype(float)
    ctp = np.cumsum(tpl.astype(float))
    cfp = np.cumsum(fpl)
    precision = ctp.astype(float) / (ctp + cfp)
    recall = ctp.astype(float) / num_gt
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[idx] - recall[idx - 1]) * precision[idx]))


def evaluate_rows(gt: AVARows, det: AVARows, categories: Sequence[Mapping], excluded: Iterable[str] = (),
                  mode: str = "mmaction", iou: float = 0.5) -> FrameMAPResult:
    """Frame mAP of ``det`` against ``gt`` (both read with the label map as whitelist). See :func:`frame_map`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_iou(iou)
    if gt.mode != mode or det.mode != mode:
        raise ValueError(f"csvs were read for mode {gt.mode!r}/{det.mode!r}, evaluating in {mode!r}")
    excluded = set(excluded)
    ids = [int(c["id"]) for c in categories]
    names = {int(c["id"]): str(c["name"]) for c in categories}
    num_class = max(ids)
    wl = np.zeros(num_class + 1, bool)
    wl[ids] = True
    stats: dict = {"gt_rows_skipped_class": int(sum(gt.skipped_classes.values())),
                   "det_rows_skipped_class": int(sum(det.skipped_classes.values())),
                   "det_rows_degenerate_box": det.num_degenerate_boxes,
                   "det_rows_box_outside_image": det.num_outside_boxes,
                   "det_rows_score_outside_0_1": det.num_scores_outside,
                   "det_rows_duplicated": det.num_duplicate_rows}
    capacity = OFFICIAL_CAPACITY if mode == "official" else 0

    # ---- ground truth: per key (not excluded), the reference's within-key order, then split by class
    gt_excl = _key_mask(gt.keys, excluded) if excluded else np.zeros(len(gt.keys), bool)
    gsel = ~gt_excl[gt.key] & wl[np.minimum(gt.labels, num_class)] & (gt.labels <= num_class)
    stats["gt_keys_excluded"] = int(gt_excl.sum())
    nk = max(len(gt.keys), 1)
    gorder = _order_rows(gt, gsel, np.arange(nk), mode, 0)
    lab_t = np.int16 if num_class < 2**15 else np.int64  # small ints: numpy's stable sort is a radix sort
    gorder = gorder[np.argsort(gt.labels[gorder].astype(lab_t), kind="stable")]  # (class, key, within)
    g_boxes = gt.boxes[gorder]
    g_code = gt.labels[gorder] * nk + gt.key[gorder]
    num_gt = np.bincount(gt.labels[gorder], minlength=num_class + 1)

    # ---- detections
    gt_index = {k: i for i, k in enumerate(gt.keys)}
    get = gt_index.get
    d2g = np.array([get(k, -1) for k in det.keys], np.int64).reshape(-1)
    det_excl = _key_mask(det.keys, excluded) if excluded else np.zeros(len(det.keys), bool)
    dsel = wl[np.minimum(det.labels, num_class)] & (det.labels <= num_class)
    n_excl_rows = int((det_excl[det.key] & dsel).sum())
    dsel &= ~det_excl[det.key]
    unknown = d2g < 0
    stats["det_keys_excluded"] = int(det_excl.sum())
    stats["det_keys_not_in_gt"] = int((unknown & ~det_excl).sum())
    stats["det_rows_excluded"] = n_excl_rows
    stats["det_rows_not_in_gt"] = int((dsel & unknown[det.key]).sum())
    if mode == "official":
        dsel &= ~unknown[det.key]  # keyframes absent from the GT csv are ignored
    # dict insertion order of the reference: first appearance of a (whitelisted) row of the key
    nkd = max(len(det.keys), 1)
    first = np.full(nkd, np.iinfo(np.int64).max)
    np.minimum.at(first, det.key[dsel], np.flatnonzero(dsel)) if dsel.any() else None
    key_rank = np.empty(nkd, np.int64)
    key_rank[np.argsort(first, kind="stable")] = np.arange(nkd)
    dorder = _order_rows(det, dsel, key_rank, mode, capacity, stats)
    b = det.boxes[dorder]
    valid = (b[:, 1] < b[:, 3]) & (b[:, 0] < b[:, 2])
    stats["det_rows_invalid_box"] = int((~valid).sum())
    dorder = dorder[valid]
    dorder = dorder[np.argsort(det.labels[dorder].astype(lab_t), kind="stable")]  # (class, key rank, within)
    d_lab = det.labels[dorder]
    d_scores = det.scores[dorder]
    d_boxes = det.boxes[dorder]
    d_gkey = d2g[det.key[dorder]]
    stats["det_rows_evaluated"] = int(len(dorder))

    # ---- greedy matching, vectorised: a detection takes its first argmax-IoU GT of the same (key, class);
    # it is a TP iff that IoU >= thr and no earlier such detection of the group took the same GT.
    nd = len(dorder)
    tp = np.zeros(nd, bool)
    has = d_gkey >= 0
    if nd and len(g_code):
        code = np.where(has, d_lab * nk + d_gkey, -1)
        lo = np.searchsorted(g_code, code, "left")
        hi = np.searchsorted(g_code, code, "right")
        ng = np.where(has, hi - lo, 0)
        di = np.flatnonzero(ng > 0)
        if len(di):
            cnt = ng[di]
            seg = np.zeros(len(di), np.int64)
            np.cumsum(cnt[:-1], out=seg[1:])
            tot = int(cnt.sum())
            pd = np.repeat(np.arange(len(di)), cnt)
            local = np.arange(tot) - seg[pd]
            pg = lo[di][pd] + local
            ious = _iou_pairs(d_boxes[di[pd]], g_boxes[pg])
            mx = np.maximum.reduceat(ious, seg)
            first_max = np.minimum.reduceat(np.where(ious == mx[pd], local, tot), seg)
            best = lo[di] + first_max
            cand = mx >= iou
            ci = np.flatnonzero(cand)
            _, fi = np.unique(best[ci], return_index=True)
            tp[di[ci[fi]]] = True

    # ---- per-class AP
    ap = np.full(num_class, np.nan)
    cls_bounds = np.searchsorted(d_lab, np.arange(num_class + 2))
    for c in range(1, num_class + 1):
        if num_gt[c] == 0:
            continue
        a, z = cls_bounds[c], cls_bounds[c + 1]
        ap[c - 1] = voc_average_precision(d_scores[a:z], tp[a:z], int(num_gt[c]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_ap = float(np.nanmean(ap)) if (~np.isnan(ap)).any() else float("nan")
    per_class = {c: float(ap[c - 1]) for c in ids}
    groups = {}
    for gname, (lo_id, hi_id) in CATEGORY_GROUPS.items():
        vals = [per_class[c] for c in ids if lo_id <= c <= hi_id and not np.isnan(per_class[c])]
        groups[gname] = float(np.mean(vals)) if vals else float("nan")
    return FrameMAPResult(mean_ap, per_class, names, {c: int(num_gt[c]) for c in ids}, groups, mode, iou, stats)


def _check_iou(iou: float) -> None:
    if not (0.0 < float(iou) <= 1.0):
        raise ValueError(f"the IoU threshold must lie in (0, 1], got {iou}")


def _load_labelmap(label_map) -> tuple[list[dict], list[int]]:
    if isinstance(label_map, (str, os.PathLike)):
        return read_labelmap(label_map)
    if isinstance(label_map, tuple) and len(label_map) == 2 and not isinstance(label_map[0], Mapping):
        cats = list(label_map[0])
    else:
        cats = list(label_map)
    cats = [{"id": int(c["id"]), "name": str(c["name"])} for c in cats]
    if not cats:
        raise ValueError("empty label map")
    return cats, [c["id"] for c in cats]


def frame_map(gt, detections, label_map, exclusions=None, mode: str = "mmaction", iou: float = 0.5,
              custom_classes: Sequence[int] | None = None, logger: logging.Logger | None = None) -> FrameMAPResult:
    """AVA frame mAP@``iou``.

    ``gt`` / ``detections``: csv paths or :class:`AVARows` read for the same ``mode``. ``label_map``: a pbtxt path,
    ``(categories, ids)`` or a list of ``{'id', 'name'}``. ``exclusions``: a csv path, a set of image keys or None.

    ``mode='mmaction'`` is MMAction2 0.x ``ava_eval``: exclusions drop GT and detection keyframes, no per-keyframe
    cap, detections on keyframes absent from the GT are false positives. ``mode='official'`` is ActivityNet's
    ``get_ava_performance.py``: top-50 detections per keyframe, keys ``video,%.6f``, detections on keyframes absent
    from the GT csv ignored (2-column GT rows list keyframes without boxes: their detections are false positives).
    Both: Pascal VOC all-points AP per class at IoU >= ``iou`` with greedy matching by score, mean over the
    label-map classes that have GT.
    """
    log = logger or logging.getLogger(__name__)
    _check_iou(iou)
    categories, ids = _load_labelmap(label_map)
    if custom_classes is not None:
        custom = [int(c) for c in custom_classes]
        missing = sorted(set(custom) - set(ids))
        if missing:
            raise ValueError(f"custom_classes {missing} are not in the label map")
        categories = [c for c in categories if c["id"] in custom]
        ids = [c["id"] for c in categories]
    if not isinstance(gt, AVARows):
        gt = read_ava_csv(gt, "gt", mode, ids)
    if not isinstance(detections, AVARows):
        detections = read_ava_csv(detections, "det", mode, ids)
    if exclusions is None:
        excluded: set[str] = set()
    elif isinstance(exclusions, (str, os.PathLike)):
        excluded = read_exclusions(exclusions, mode)
    else:
        excluded = set(exclusions)
    if detections.num_rows == 0:
        log.warning("%s: no detections; every class with ground truth gets AP 0", detections.path)
    res = evaluate_rows(gt, detections, categories, excluded, mode, iou)
    if not any(res.num_gt.values()):
        log.warning("%s: no ground truth for the label-map classes; mAP is NaN", gt.path)
    st = res.stats
    if st["gt_rows_skipped_class"] or st["det_rows_skipped_class"]:
        log.info("skipped rows with classes outside the label map: %d GT, %d detections",
                 st["gt_rows_skipped_class"], st["det_rows_skipped_class"])
    if st["det_keys_not_in_gt"]:
        what = "ignored" if mode == "official" else "counted as false positives"
        log.warning("%s: %d keyframes (%d rows) are not in the ground truth: %s", detections.path,
                    st["det_keys_not_in_gt"], st["det_rows_not_in_gt"], what)
    if st["det_rows_invalid_box"]:
        log.warning("%s: %d detections with zero-area or degenerate boxes dropped (%d with x2 < x1 or y2 < y1); "
                    "the official script drops them too, so they can never match", detections.path,
                    st["det_rows_invalid_box"], st["det_rows_degenerate_box"])
    if st["det_rows_box_outside_image"]:
        log.warning("%s: %d detections have box coordinates outside [0, 1]; evaluated as given, as the official "
                    "script does", detections.path, st["det_rows_box_outside_image"])
    if st["det_rows_score_outside_0_1"]:
        log.warning("%s: %d detections have scores outside [0, 1]; ranked as given", detections.path,
                    st["det_rows_score_outside_0_1"])
    if st["det_rows_duplicated"]:
        log.warning("%s: %d detection rows repeat an earlier row's keyframe, box and action; each copy is scored "
                    "(a duplicate is a false positive once the person is matched), which lowers the mAP",
                    detections.path, st["det_rows_duplicated"])
    return res


class AVAFrameEvaluator:
    """Accumulate detector outputs and compute the frame mAP (``reset`` / ``process`` / ``evaluate``).

    ``process(img_keys, results)`` takes per-sample image keys (``'video,ts'`` strings, ``(video, ts)`` pairs or
    dicts with ``video_id`` / ``timestamp``) and per-sample detector outputs (a list over the classes of ``[k, 5]``
    arrays ``x1, y1, x2, y2, score``). ``evaluate()`` formats them exactly like :func:`results2csv` (values rounded
    to ``decimals`` as the csv round trip of MMAction2 does; ``decimals=None`` keeps full precision) and evaluates.
    """

    def __init__(self, gt, label_map, exclusions=None, mode: str = "mmaction", iou: float = 0.5,
                 custom_classes: Sequence[int] | None = None, decimals: int | None = 3):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.categories, self.ids = _load_labelmap(label_map)
        self.gt, self.exclusions, self.mode, self.iou = gt, exclusions, mode, iou
        self.custom_classes = custom_classes
        self.decimals = decimals
        self._gt_rows: AVARows | None = None
        self.reset()

    def reset(self) -> None:
        self._chunks: list[str] = []

    def process(self, img_keys: Sequence, results: Sequence) -> None:
        if len(img_keys) != len(results):
            raise ValueError(f"{len(img_keys)} image keys for {len(results)} results")
        self._chunks.append("".join(_format_rows(results, img_keys, self.custom_classes, self.decimals)))

    def evaluate(self) -> FrameMAPResult:
        ids = self.ids if self.custom_classes is None else [int(c) for c in self.custom_classes]
        if self._gt_rows is None:
            self._gt_rows = self.gt if isinstance(self.gt, AVARows) else read_ava_csv(self.gt, "gt", self.mode, ids)
        det = read_ava_csv("<AVAFrameEvaluator results>", "det", self.mode, ids,
                           data="".join(self._chunks).encode("utf-8"))
        return frame_map(self._gt_rows, det, self.categories, self.exclusions, self.mode, self.iou,
                         self.custom_classes)


# ---------------------------------------------------------------------------------------------------------------------
# Results csv
# ---------------------------------------------------------------------------------------------------------------------
def _split_key(item) -> tuple[str, int | str]:
    if isinstance(item, Mapping):
        return str(item["video_id"]), item["timestamp"]
    if isinstance(item, str):
        vid, sep, ts = item.rpartition(",")
        if not sep:
            raise ValueError(f"image key {item!r} is not 'video_id,timestamp'")
        return vid, ts
    vid, ts = item
    return str(vid), ts


def _format_rows(results: Sequence, img_keys: Sequence, custom_classes=None, decimals: int | None = 3) -> list[str]:
    fmt = (lambda x: f"{x:.{decimals}f}") if decimals is not None else repr
    lines: list[str] = []
    for sample, item in zip(results, img_keys):
        vid, ts = _split_key(item)
        ts_s = str(int(ts)) if isinstance(ts, (int, np.integer)) or str(ts).strip().isdigit() else str(ts)
        for label, arr in enumerate(sample):
            arr = np.asarray(arr)
            if arr.size == 0:
                continue
            if arr.ndim != 2 or arr.shape[1] < 5:
                raise ValueError(f"class {label} of {vid},{ts}: expected a [k, 5] array, got shape {arr.shape}")
            if custom_classes is not None:
                if label >= len(custom_classes):
                    raise ValueError(f"class index {label} has no entry in custom_classes ({len(custom_classes)})")
                action = int(custom_classes[label])
            else:
                action = label + 1
            for x1, y1, x2, y2, s in arr[:, :5].tolist():
                lines.append(f"{vid},{ts_s},{fmt(x1)},{fmt(y1)},{fmt(x2)},{fmt(y2)},{action},{fmt(s)}\n")
    return lines


def results2csv(results: Sequence, img_keys, out_path: str | os.PathLike, custom_classes: Sequence[int] | None = None,
                decimals: int | None = 3) -> int:
    """Write detector results as MMAction2's ``results2csv`` does (atomically); returns the number of rows.

    ``results[i]`` is a list over classes (index ``l`` -> action ``l+1``, or ``custom_classes[l]``) of ``[k, 5]``
    arrays ``x1, y1, x2, y2, score``; ``img_keys`` is the matching sequence of ``'video,ts'`` keys, ``(video, ts)``
    pairs or dataset ``video_infos`` dicts (or a dataset with ``video_infos``). Rows:
    ``video_id,timestamp,x1,y1,x2,y2,action_id,score`` with floats as ``f'{x:.3f}'``.
    """
    if hasattr(img_keys, "video_infos"):
        img_keys = img_keys.video_infos
    if len(img_keys) != len(results):
        raise ValueError(f"{len(results)} results for {len(img_keys)} samples")
    lines = _format_rows(results, img_keys, custom_classes, decimals)
    with atomic_write(out_path, "w", encoding="utf-8") as f:
        f.write("".join(lines))
    return len(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Command line: actionkit eval-ava
# ---------------------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return "nan" if x is None or np.isnan(x) else f"{x:.6f}"


def _iou_arg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return v


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="actionkit eval-ava", description="AVA frame mAP@0.5IoU of a detection csv.")
    p.add_argument("--gt", required=True, help="ground-truth csv (video,ts,x1,y1,x2,y2,action[,person])")
    p.add_argument("--det", required=True, help="detection csv (video,ts,x1,y1,x2,y2,action,score)")
    p.add_argument("--label-map", required=True, help="label map pbtxt (the evaluated classes)")
    p.add_argument("--exclude", default=None, help="csv of excluded video,timestamp keyframes")
    p.add_argument("--official", action="store_true",
                   help="ActivityNet get_ava_performance.py rules (top-50 per keyframe, unknown keyframes ignored)")
    p.add_argument("--iou", type=_iou_arg, default=0.5, help="IoU threshold in (0, 1] (default 0.5)")
    p.add_argument("--json", default=None, help="write the results as json here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    mode = "official" if args.official else "mmaction"
    try:
        res = frame_map(args.gt, args.det, args.label_map, args.exclude, mode, args.iou)
    except (AVAFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    thr = f"{args.iou:g}"
    print(f"mode: {mode}")
    print(f"mAP@{thr}IOU = {_fmt(res.mAP)}")
    for gname, v in res.groups.items():
        print(f"{gname:16s} AP = {_fmt(v)}")
    print(f"{'id':>4s}  {'num_gt':>7s}  {'AP':>9s}  name")
    for cid, ap in res.per_class.items():
        print(f"{cid:4d}  {res.num_gt[cid]:7d}  {_fmt(ap):>9s}  {res.names[cid]}")
    for k, v in res.stats.items():
        print(f"{k}: {v}")
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            json.dump(res.to_json(), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
