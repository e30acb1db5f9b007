"""AVA formats: csv / exclusion parsing, restricted proposal loading, npz, AVADataset grouping, SampleAVAFrames."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from actionkit.cli.convert_proposals import main as convert_proposals_cli
from actionkit.data.ava import AVADataset, AVAFormatError, SampleAVAFrames, read_ava_csv, read_exclusions
from actionkit.data.ava_proposals import (
    UnsafePickleError,
    convert_proposals,
    load_proposals,
    load_proposals_npz,
    load_proposals_pkl,
    save_proposals_npz,
)
from actionkit.registry import DATASETS, PIPELINES, ConfigError

from conftest import AVA_SAMPLES, require_shared

LABELMAP = """item {
  name: "a"
  id: 1
}
item {
  name: "b"
  id: 3
}
item {
  name: "c"
  id: 7
}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def labelmap(tmp_path):
    return write(tmp_path / "labels.pbtxt", LABELMAP)


# ---------------------------------------------------------------------------------------------- shared samples

def test_sample_csv_and_labelmap_parse():
    ann = require_shared(AVA_SAMPLES / "ava_dataset__ava_sample.csv")
    rows = read_ava_csv(ann)
    assert len(rows) == 8
    r = rows[0]
    assert (r.video_id, r.timestamp, r.action_id, r.person_id, r.lineno) == ("0f39OWEqJ24", 902, 12, 0, 1)
    assert r.box == (0.031, 0.162, 0.670, 0.995)
    # the sample uses ids 12, 17, 74, 79, 80: 74 is not in the 4-class sample label map
    with pytest.raises(AVAFormatError, match=r"ava_dataset__ava_sample.csv:7: action id 74 is not in the label map"):
        read_ava_csv(ann, label_ids=AVA_SAMPLES / "ava_dataset__action_list.txt")
    assert len(read_ava_csv(ann, label_ids=[12, 17, 74, 79, 80])) == 8
    exc = read_exclusions(AVA_SAMPLES / "ava_dataset__ava_excluded_timestamps_sample.csv")
    assert exc == {("0f39OWEqJ24", 903), ("_-Z6wFjXtGQ", 902)}
    gt = read_ava_csv(require_shared(AVA_SAMPLES / "eval_detection__gt.csv"))
    assert len(gt) == 12 and gt[0].timestamp == 1774


def test_sample_proposals_load_with_restricted_unpickler(tmp_path):
    pkl = require_shared(AVA_SAMPLES / "ava_dataset__ava_proposals_sample.pkl")
    props = load_proposals_pkl(pkl)
    assert sorted(props) == ["0f39OWEqJ24,0902", "0f39OWEqJ24,0903", "_-Z6wFjXtGQ,0902"]
    assert props["_-Z6wFjXtGQ,0902"].shape == (3, 5) and props["_-Z6wFjXtGQ,0902"].dtype == np.float64
    np.testing.assert_allclose(props["0f39OWEqJ24,0902"], [[0.011, 0.157, 0.655, 0.983, 0.998163]])
    out = tmp_path / "p.npz"
    assert convert_proposals(pkl, out) == 3
    back = load_proposals(out)
    assert set(back) == set(props)
    for k in props:
        np.testing.assert_array_equal(back[k], props[k])


def test_sample_dataset_like_mmaction(tmp_path):
    ann = require_shared(AVA_SAMPLES / "ava_dataset__ava_sample.csv")
    kw = dict(ann_file=ann, exclude_file=AVA_SAMPLES / "ava_dataset__ava_excluded_timestamps_sample.csv",
              pipeline=[], label_file=AVA_SAMPLES / "ava_dataset__action_list.txt",
              proposal_file=AVA_SAMPLES / "ava_dataset__ava_proposals_sample.pkl", data_prefix="data/ava")
    train = AVADataset(**kw)
    assert len(train) == 1 and train.video_infos[0]["img_key"] == "0f39OWEqJ24,0902"
    test = AVADataset(**kw, test_mode=True)
    assert [v["img_key"] for v in test.video_infos] == ["0f39OWEqJ24,0902", "0f39OWEqJ24,0903", "_-Z6wFjXtGQ,0902"]
    info = test.video_infos[2]
    assert info["frame_dir"] == os.path.join("data/ava", "_-Z6wFjXtGQ")
    assert info["shot_info"] == (0, 27000) and info["fps"] == 30 and info["timestamp"] == 902
    np.testing.assert_array_equal(info["ann"]["gt_labels"].nonzero()[1], [12, 74, 80])
    r = test[2]
    np.testing.assert_allclose(r["scores"], [0.994488, 0.996238])    # 0.281 is below 0.9
    assert r["proposals"].shape == (2, 4)
    assert r["start_index"] == 0 and r["timestamp_start"] == 900 and r["timestamp_end"] == 1800
    assert r["filename_tmpl"] == "img_{:05}.jpg" and r["modality"] == "RGB"
    assert r["gt_bboxes"].shape == (1, 4) and r["gt_labels"].shape == (1, 81)


# ---------------------------------------------------------------------------------------------- grouping

GROUP_CSV = """vidA,0902,0.1,0.1,0.5,0.5,3,0
vidA,0902,0.2,0.2,0.6,0.6,1,1
vidA,0902,0.1,0.1,0.5,0.5,7,5
vidA,0902,0.100,0.100,0.500,0.500,1,0
vidA,0902,0.2,0.2,0.6,0.61,7,1
vidB,0903,0.0,0.0,1.0,1.0,5,2
vidA,0903,0.3,0.3,0.4,0.4,1,4
"""


def test_grouping_merges_exactly_equal_boxes(tmp_path):
    ann = write(tmp_path / "a.csv", GROUP_CSV)
    ds = AVADataset(ann, None, [], test_mode=True, num_classes=8)
    assert [v["img_key"] for v in ds.video_infos] == ["vidA,0902", "vidB,0903", "vidA,0903"]
    a = ds.video_infos[0]["ann"]
    np.testing.assert_array_equal(a["gt_bboxes"], [[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6], [0.2, 0.2, 0.6, 0.61]])
    assert a["gt_bboxes"].dtype == np.float64 and a["gt_labels"].dtype == np.float32
    expect = np.zeros((3, 8), np.float32)
    expect[0, [1, 3, 7]] = 1          # same box, different person ids: merged (not grouping by person id)
    expect[1, 1] = 1                  # same person id, different box: separate GT
    expect[2, 7] = 1
    np.testing.assert_array_equal(a["gt_labels"], expect)
    np.testing.assert_array_equal(a["entity_ids"], [0, 1, 1])
    assert not ds.video_infos[1]["ann"]["gt_labels"][:, 0].any()
    # 7-column rows (no person id) are accepted
    ann7 = write(tmp_path / "b.csv", "v,0902,0.1,0.1,0.5,0.5,3\nv,0902,0.1,0.1,0.5,0.5,4\n")
    ds7 = AVADataset(ann7, None, [], test_mode=True, num_classes=8)
    assert ds7.video_infos[0]["ann"]["entity_ids"].tolist() == [-1]
    assert ds7.video_infos[0]["ann"]["gt_labels"][0].nonzero()[0].tolist() == [3, 4]


def test_custom_classes(tmp_path, labelmap):
    ann = write(tmp_path / "a.csv", GROUP_CSV)
    ds = AVADataset(ann, None, [], label_file=labelmap, num_classes=3, custom_classes=[7, 3], test_mode=True)
    # vidB,0903 (only id 5) and vidA,0903 (only id 1) disappear; 7 -> 1, 3 -> 2
    assert [v["img_key"] for v in ds.video_infos] == ["vidA,0902"]
    a = ds.video_infos[0]["ann"]
    np.testing.assert_array_equal(a["gt_bboxes"], [[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.61]])
    np.testing.assert_array_equal(a["gt_labels"], [[0, 1, 1], [0, 1, 0]])
    assert ds.custom_classes == (0, 7, 3)
    with pytest.raises(ConfigError, match="num_classes"):
        AVADataset(ann, None, [], num_classes=81, custom_classes=[7, 3])
    with pytest.raises(ConfigError, match=r"\[5\] are not in the label map"):
        AVADataset(ann, None, [], label_file=labelmap, num_classes=3, custom_classes=[7, 5])
    with pytest.raises(ConfigError, match="must not contain 0"):
        AVADataset(ann, None, [], num_classes=3, custom_classes=[0, 5])


def test_exclusions_only_in_training(tmp_path):
    ann = write(tmp_path / "a.csv", GROUP_CSV)
    exc = write(tmp_path / "e.csv", "vidA,0902\nvidB,903\nother,0902\n")
    train = AVADataset(ann, exc, [], num_classes=8)
    assert [v["img_key"] for v in train.video_infos] == ["vidA,0903"]
    test = AVADataset(ann, exc, [], num_classes=8, test_mode=True)
    assert len(test) == 3


def test_registered_and_built_from_config(tmp_path):
    ann = write(tmp_path / "a.csv", GROUP_CSV)
    ds = DATASETS.build(dict(type="AVADataset", ann_file=str(ann), exclude_file=None, num_classes=8,
                             pipeline=[dict(type="SampleAVAFrames", clip_len=4, frame_interval=16, test_mode=True)],
                             data_prefix="frames", test_mode=True, video_suffix=".mp4"))
    assert ds.video_infos[0]["frame_dir"] == os.path.join("frames", "vidA.mp4")
    r = ds[0]
    assert r["frame_inds"].tolist() == [29, 45, 61, 77]
    assert PIPELINES.get("SampleAVAFrames") is SampleAVAFrames


# ---------------------------------------------------------------------------------------------- proposals logic

def _props_dataset(tmp_path, props, **kw):
    ann = write(tmp_path / "a.csv", "v,0902,0.1,0.1,0.5,0.5,3,0\nw,0902,0.1,0.1,0.5,0.5,3,0\n"
                                     "x,0902,0.1,0.1,0.5,0.5,3,0\n")
    pfile = tmp_path / "p.npz"
    save_proposals_npz(props, pfile)
    return AVADataset(ann, None, [], proposal_file=pfile, test_mode=True, **kw)


def test_proposal_threshold_and_missing_key(tmp_path):
    props = {
        "v,0902": np.array([[0, 0, .5, .5, .95], [.1, .1, .6, .6, .3], [.2, .2, .7, .7, .92], [.3, .3, .8, .8, .9]]),
        "w,0902": np.array([[0, 0, .5, .5, .5], [.1, .1, .6, .6, .7], [.2, .2, .7, .7, .7]]),
        "x,0902": np.zeros((0, 5)),
    }
    ds = _props_dataset(tmp_path, props)
    r = ds[0]
    np.testing.assert_array_equal(r["scores"], [.95, .92, .9])              # score >= 0.9, file order kept
    np.testing.assert_array_equal(r["proposals"], [[0, 0, .5, .5], [.2, .2, .7, .7], [.3, .3, .8, .8]])
    r = ds[1]                                                                # thr = min(0.9, max) = 0.7
    np.testing.assert_array_equal(r["scores"], [.7, .7])
    r = ds[2]                                                                # empty -> whole frame
    np.testing.assert_array_equal(r["proposals"], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(r["scores"], [1])
    ds2 = _props_dataset(tmp_path, {"w,0902": props["w,0902"]}, num_max_proposals=1, person_det_score_thr=0.4)
    r = ds2[0]                                                                # key missing
    np.testing.assert_array_equal(r["proposals"], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(ds2[1]["scores"], [.5])                    # thr .4 keeps 3, cut to 1
    no_props = AVADataset(ds.ann_file, None, [], test_mode=True)
    assert "proposals" not in no_props[0]


# ---------------------------------------------------------------------------------------------- bad input

GOOD = "v,0902,0.1,0.1,0.5,0.5,3,0\n"


@pytest.mark.parametrize("line,msg", [
    ("v,0902,0.1,0.1,0.5,0.5\n", "expected 7 or 8 comma-separated columns.*got 6"),
    ("v,0902,0.1,0.1,0.5,0.5,3,0,9\n", "expected 7 or 8 comma-separated columns.*got 9"),
    ("v,0902,0.1,abc,0.5,0.5,3,0\n", "box coordinate y1 is not a number: 'abc'"),
    ("v,0902,0.6,0.1,0.5,0.5,3,0\n", r"box has x2 < x1 \(0.5 < 0.6\)"),
    ("v,0902,0.1,0.6,0.5,0.5,3,0\n", r"box has y2 < y1"),
    ("v,0902,0.1,0.1,1.5,0.5,3,0\n", r"x2=1.5 is outside \[0, 1\]"),
    ("v,0902,-0.1,0.1,0.5,0.5,3,0\n", r"x1=-0.1 is outside \[0, 1\]"),
    ("v,0902,0.1,0.1,0.5,nan,3,0\n", "not finite"),
    ("v,09x2,0.1,0.1,0.5,0.5,3,0\n", "timestamp must be an integer"),
    ("v,0902,0.1,0.1,0.5,0.5,x,0\n", "action id must be an integer"),
    ("v,0902,0.1,0.1,0.5,0.5,3,p\n", "person id must be an integer"),
    ("v,0902,0.1,0.1,0.5,0.5,4,0\n", "action id 4 is not in the label map"),
])
def test_bad_csv_rows_name_file_and_line(tmp_path, labelmap, line, msg):
    path = write(tmp_path / "bad.csv", GOOD + GOOD + line)
    with pytest.raises(AVAFormatError, match=f"bad.csv:3: .*{msg}"):
        read_ava_csv(path, label_ids=labelmap)


def test_dataset_rejects_bad_rows(tmp_path):
    path = write(tmp_path / "bad.csv", GOOD + "v,0902,0.1,0.1,0.5,0.5,81,0\n")
    with pytest.raises(AVAFormatError, match=r"bad.csv:2: action id 81 is larger than 80"):
        AVADataset(path, None, [])
    path = write(tmp_path / "bad2.csv", GOOD + "v,0902,0.1,0.1,0.5,0.5,0,0\n")
    with pytest.raises(AVAFormatError, match=r"bad2.csv:2: action id must be >= 1"):
        AVADataset(path, None, [])
    path = write(tmp_path / "bad3.csv", "v,0902,0.1,0.1,0.5\n")
    with pytest.raises(AVAFormatError, match="bad3.csv:1: expected 7 or 8"):
        AVADataset(path, None, [], test_mode=True)


def test_bad_exclusions(tmp_path):
    path = write(tmp_path / "e.csv", "v,0902\nv,0903,x\n")
    with pytest.raises(AVAFormatError, match=r"e.csv:2: expected 2 columns"):
        read_exclusions(path)
    path = write(tmp_path / "e2.csv", "v,abc\n")
    with pytest.raises(AVAFormatError, match=r"e2.csv:1: timestamp must be an integer"):
        read_exclusions(path)
    assert read_exclusions(None) == set()


# ---------------------------------------------------------------------------------------------- unsafe pickles

class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Custom:
    pass


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"v,0902": _Evil(marker)}
    for proto in (0, 2, 4):
        bad = tmp_path / f"evil{proto}.pkl"
        bad.write_bytes(pickle.dumps(payload, protocol=proto))
        with pytest.raises(UnsafePickleError, match=r"refusing to load '(posix|os|nt)\.system'") as ei:
            load_proposals(bad)
        assert str(bad) in str(ei.value)
        assert not marker.exists()
    # sanity: the plain pickle module would run it
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.exists()


def test_restricted_unpickler_refuses_custom_class_and_eval(tmp_path):
    bad = tmp_path / "custom.pkl"
    bad.write_bytes(pickle.dumps({"v,0902": _Custom()}))
    with pytest.raises(UnsafePickleError, match="_Custom"):
        load_proposals(bad)
    # a hand-written protocol-0 stream calling builtins.eval
    bad.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        load_proposals_pkl(bad)


def test_proposal_pickle_validation(tmp_path):
    p = tmp_path / "p.pkl"
    p.write_bytes(pickle.dumps({"v,0902": np.zeros((2, 3))}))
    with pytest.raises(AVAFormatError, match=r"'v,0902' have shape \(2, 3\)"):
        load_proposals(p)
    p.write_bytes(pickle.dumps([np.zeros((2, 5))]))
    with pytest.raises(AVAFormatError, match="expected a dict"):
        load_proposals(p)
    p.write_bytes(pickle.dumps({"v0902": np.zeros((2, 5))}))
    with pytest.raises(AVAFormatError, match="not 'video_id,timestamp'"):
        load_proposals(p)
    p.write_bytes(pickle.dumps({"v,0902": np.zeros((1, 5))})[:-5])
    with pytest.raises(AVAFormatError, match="not a readable proposal pickle"):
        load_proposals(p)
    # python-2 style (protocol 2, bytes through _codecs.encode) and float32 arrays load
    good = {"v,0902": np.arange(10, dtype=np.float32).reshape(2, 5) / 10}
    p.write_bytes(pickle.dumps(good, protocol=2))
    np.testing.assert_array_equal(load_proposals(p)["v,0902"], good["v,0902"])


def test_npz_roundtrip_and_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    # rows sorted: valid boxes (x1 <= x2, y1 <= y2); includes an empty [0, 5]
    props = {f"vid{i},{902 + i:04d}": np.sort(rng.random((i, 5)), axis=1) for i in range(4)}
    pkl = tmp_path / "in.pkl"
    pkl.write_bytes(pickle.dumps(props, protocol=4))
    out = tmp_path / "out.npz"
    assert convert_proposals_cli([str(pkl), str(out)]) == 0
    assert "wrote 4 keyframes" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == ["boxes", "keys", "offsets"]
        assert z["offsets"].tolist() == [0, 0, 1, 3, 6] and z["boxes"].shape == (6, 5)
    back = load_proposals_npz(out)
    assert list(back) == list(props)
    for k in props:
        np.testing.assert_array_equal(back[k], props[k])
    with pytest.raises(SystemExit):
        convert_proposals_cli([str(pkl), str(tmp_path / "out.pkl")])


def test_npz_with_object_arrays_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, keys=np.array(["v,0902"], dtype=object), boxes=np.zeros((1, 5)), offsets=np.array([0, 1]))
    with pytest.raises(AVAFormatError, match="not a pickle-free proposal .npz"):
        load_proposals(bad)
    np.savez(bad, keys=np.array(["v,0902"]), boxes=np.zeros((1, 5)), offsets=np.array([0, 2]))
    with pytest.raises(AVAFormatError, match="'offsets'"):
        load_proposals(bad)
    np.savez(bad, keys=np.array(["v,0902"]), boxes=np.zeros((1, 5)))
    with pytest.raises(AVAFormatError, match=r"missing arrays \['offsets'\]"):
        load_proposals(bad)


# ---------------------------------------------------------------------------------------------- SampleAVAFrames

def _kf(t=902, **kw):
    r = dict(fps=30, timestamp=t, timestamp_start=900, shot_info=(0, 27000), start_index=0)
    r.update(kw)
    return r


def test_sample_ava_frames_test_mode_exact():
    r = SampleAVAFrames(4, 16, test_mode=True)(_kf())
    assert r["frame_inds"].tolist() == [29, 45, 61, 77]            # centre 30*(902-900)+1 = 61
    assert r["clip_len"] == 4 and r["frame_interval"] == 16 and r["num_clips"] == 1
    np.testing.assert_array_equal(r["crop_quadruple"], [0, 0, 1, 1])
    r = SampleAVAFrames(32, 2, test_mode=True)(_kf(t=1000))
    assert r["frame_inds"].tolist() == list(range(3001 - 32, 3001 + 32, 2))
    r = SampleAVAFrames(8, 8, test_mode=True)(_kf(t=1799))
    assert r["frame_inds"].tolist() == [26939, 26947, 26955, 26963, 26971, 26979, 26987, 26995]
    r = SampleAVAFrames(8, 8, test_mode=True)(_kf(t=1800))          # clipped to shot_info[1] - 1
    assert r["frame_inds"].max() == 26999
    r = SampleAVAFrames(4, 16, test_mode=True)(_kf(t=900, start_index=1))   # clip at 0, then + start_index
    assert r["frame_inds"].tolist() == [1, 1, 2, 18]
    r = SampleAVAFrames(3, 2, test_mode=True)(_kf(fps=15, timestamp_start=100, t=103))
    assert r["frame_inds"].tolist() == [44, 46, 48]


@pytest.mark.parametrize("fi,lo,hi", [(16, -8, 7), (8, -4, 3), (2, -1, 0), (3, -2, 1)])
def test_sample_ava_frames_train_jitter(fi, lo, hi):
    np.random.seed(0)
    op = SampleAVAFrames(8, fi)
    base = np.array(SampleAVAFrames(8, fi, test_mode=True)(_kf(t=1000))["frame_inds"])
    offs = np.stack([op(_kf(t=1000))["frame_inds"] - base for _ in range(300)])
    assert offs.min() == lo and offs.max() == hi
    assert len({tuple(o) for o in offs}) > 1
    assert np.any(offs != offs[:, :1])        # independent per frame, not one shift per clip
    np.random.seed(3)
    a = op(_kf())["frame_inds"]
    np.random.seed(3)
    assert np.array_equal(a, op(_kf())["frame_inds"])


# ---------------------------------------------------------------------------------------------- results / mAP

def _perfect_results(ds: AVADataset, drop_keys=()) -> list:
    out = []
    for info in ds.video_infos:
        a = info["ann"]
        per_class = []
        for label in range(1, ds.num_classes):
            keep = a["gt_labels"][:, label] > 0
            if info["img_key"] in drop_keys:
                keep[:] = False
            boxes = a["gt_bboxes"][keep]
            per_class.append(np.concatenate([boxes, np.full((len(boxes), 1), 0.9)], 1).astype(np.float32))
        out.append(per_class)
    return out


def test_evaluate_and_dump_results(tmp_path, labelmap):
    ann = write(tmp_path / "gt.csv", GROUP_CSV.replace(",5,2", ",3,2"))
    exc = write(tmp_path / "e.csv", "vidA,0903\n")
    ds = AVADataset(ann, exc, [], label_file=labelmap, num_classes=8, test_mode=True)
    res = _perfect_results(ds)
    assert ds.evaluate(res) == {"mAP@0.5IOU": 1.0}
    assert ds.evaluate(res, metrics="mAP")["mAP@0.5IOU"] == 1.0
    # the excluded keyframe does not count: dropping its detections changes nothing
    assert ds.evaluate(_perfect_results(ds, drop_keys={"vidA,0903"}))["mAP@0.5IOU"] == 1.0
    # dropping the detections of a counted keyframe lowers the mAP
    assert ds.evaluate(_perfect_results(ds, drop_keys={"vidB,0903"}))["mAP@0.5IOU"] < 1.0
    out = tmp_path / "res.csv"
    ds.dump_results(res, out)
    lines = out.read_text().splitlines()
    assert lines[0] == "vidA,902,0.100,0.100,0.500,0.500,1,0.900"
    assert len(lines) == int(sum(info["ann"]["gt_labels"].sum() for info in ds.video_infos))
    with pytest.raises(ValueError, match=r"\.csv"):
        ds.dump_results(res, tmp_path / "res.pkl")
    with pytest.raises(ValueError, match="got 2 results for 3 keyframes"):
        ds.evaluate(res[:2])
    with pytest.raises(ValueError, match="only the metric 'mAP'"):
        ds.evaluate(res, metrics=["top_k_accuracy"])


def test_evaluate_custom_classes(tmp_path, labelmap):
    ann = write(tmp_path / "gt.csv", GROUP_CSV)
    ds = AVADataset(ann, None, [], label_file=labelmap, num_classes=3, custom_classes=[7, 3], test_mode=True)
    res = _perfect_results(ds)
    out = tmp_path / "res.csv"
    ds.dump_results(res, out)
    ids = sorted({int(line.split(",")[6]) for line in out.read_text().splitlines()})
    assert ids == [3, 7]                                   # written back as the original AVA ids
    assert ds.evaluate(res) == {"mAP@0.5IOU": 1.0}


def _py2_pickle(key: str, arr: np.ndarray) -> bytes:
    """A protocol-2 stream as Python 2's cPickle writes a dict of float64 arrays (byte strings as STRING)."""
    import struct

    def s(b: bytes) -> bytes:              # SHORT_BINSTRING / BINSTRING
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)

    def i1(v: int) -> bytes:
        return b"K" + bytes([v])

    rows, cols = arr.shape
    dtype = b"cnumpy\ndtype\n" + s(b"f8") + i1(0) + i1(1) + b"\x87R" + b"(" + i1(3) + s(b"<") + b"NNN" \
        + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff" + i1(0) + b"tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + i1(0) + b"\x85" + s(b"b") + b"\x87R" \
        + b"(" + i1(1) + i1(rows) + i1(cols) + b"\x86" + dtype + b"\x89" + s(arr.astype("<f8").tobytes()) + b"tb"
    return b"\x80\x02}" + s(key.encode()) + array + b"s."


def test_python2_pickle_loads(tmp_path):
    arr = np.array([[0.1, 0.2, 0.3, 0.4, 0.99], [0.0, 0.0, 1.0, 1.0, 0.5]])
    arr[0, 0] = 0.1 + 2 ** -50                 # bytes >= 0x80 in the buffer survive the latin-1 round trip
    p = tmp_path / "py2.pkl"
    p.write_bytes(_py2_pickle("vid,0902", arr))
    props = load_proposals(p)
    assert list(props) == ["vid,0902"]
    np.testing.assert_array_equal(props["vid,0902"], arr)


# ---------------------------------------------------------------------------------------------- one csv reader

def _reference_infos(ann: Path, exclude: Path | None, num_classes: int, test_mode: bool, data_prefix: str | None,
                     custom_classes=None) -> list[dict]:
    """AVADataset's records computed directly from the csv text, row by row (the MMAction2 0.x grouping)."""
    groups: dict[str, list] = {}
    for line in ann.read_text(encoding="utf-8-sig").splitlines():
        if not line.strip():
            continue
        c = [f.strip() for f in line.split(",")]
        label = int(c[6])
        if custom_classes is not None:
            if label not in custom_classes:
                continue
            label = custom_classes.index(label) + 1
        key = f"{c[0]},{int(c[1]):04d}"
        groups.setdefault(key, []).append(([float(v) for v in c[2:6]], label, int(c[7]) if len(c) == 8 else -1))
    excluded = set()
    if exclude is not None and not test_mode:
        excluded = {f"{v.strip()},{int(t):04d}" for v, t in
                    (ln.split(",") for ln in exclude.read_text().splitlines() if ln.strip())}
    infos = []
    for key, rows in groups.items():
        if key in excluded:
            continue
        boxes, labels, persons = [], [], []
        for box, label, person in rows:
            if box not in boxes:
                boxes.append(box)
                labels.append(np.zeros(num_classes, np.float32))
                persons.append(person)
            labels[boxes.index(box)][label] = 1.0
        vid, ts = key.rsplit(",", 1)
        infos.append(dict(img_key=key, video_id=vid, timestamp=int(ts),
                          frame_dir=vid if data_prefix is None else os.path.join(data_prefix, vid),
                          gt_bboxes=np.array(boxes, np.float64), gt_labels=np.stack(labels),
                          entity_ids=np.array(persons, np.int64)))
    return infos


def _assert_records(ds: AVADataset, expect: list[dict]) -> None:
    assert [v["img_key"] for v in ds.video_infos] == [e["img_key"] for e in expect]
    for got, e in zip(ds.video_infos, expect):
        assert (got["video_id"], got["timestamp"], got["frame_dir"]) == (e["video_id"], e["timestamp"],
                                                                         e["frame_dir"])
        assert type(got["timestamp"]) is int
        for name in ("gt_bboxes", "gt_labels", "entity_ids"):
            assert got["ann"][name].dtype == e[name].dtype
            np.testing.assert_array_equal(got["ann"][name], e[name])


@pytest.mark.parametrize("test_mode", [False, True])
def test_records_match_a_direct_reading_of_the_synthetic_csvs(tmp_path, test_mode):
    from actionkit.synthetic import ava as syn

    info = syn.make_ava(tmp_path, seed=5, num_train=2, num_val=1, num_keyframes=8, fps=15, write_videos=False,
                        extra_groups=("event",))
    args = info["dataset_args"]
    total = 0
    for split in info["splits"].values():
        ann, exc = tmp_path / split["ann_file"], tmp_path / split["exclude_file"]
        for custom in (None, [2, 5, 3]):
            num_classes = args["num_classes"] if custom is None else len(custom) + 1
            ds = AVADataset(ann, exc, [], label_file=tmp_path / info["label_file"], data_prefix="frames",
                            test_mode=test_mode, num_classes=num_classes, custom_classes=custom,
                            timestamp_start=args["timestamp_start"], timestamp_end=args["timestamp_end"],
                            fps=args["fps"])
            total += len(ds)
            _assert_records(ds, _reference_infos(ann, exc, num_classes, test_mode, "frames", custom))
    assert total >= 10  # non-empty in both modes, with and without custom classes


@pytest.mark.parametrize("test_mode", [False, True])
def test_records_match_a_direct_reading_of_the_real_format_samples(test_mode):
    ann = require_shared(AVA_SAMPLES / "ava_dataset__ava_sample.csv")
    exc = AVA_SAMPLES / "ava_dataset__ava_excluded_timestamps_sample.csv"
    ds = AVADataset(ann, exc, [], label_file=AVA_SAMPLES / "ava_dataset__action_list.txt", data_prefix="data/ava",
                    test_mode=test_mode)
    _assert_records(ds, _reference_infos(ann, exc, 81, test_mode, "data/ava"))
    gt = AVA_SAMPLES / "eval_detection__gt.csv"
    _assert_records(AVADataset(gt, None, [], test_mode=test_mode), _reference_infos(gt, None, 81, test_mode, None))


def test_irregular_files_read_like_the_plain_file(tmp_path):
    """The polars fast path reads regular files; white space, CRLF / CR line ends, a byte-order mark and blank
    lines go through the line-by-line reader. Both give the same rows (line numbers as an editor shows them)."""
    plain = write(tmp_path / "plain.csv", GROUP_CSV)
    lines = GROUP_CSV.splitlines()
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(f" {ln.replace(',', ' , ')} " for ln in lines[:3]).encode()
                    + b"\r\n\r\n" + "\r".join(lines[3:]).encode() + b"\n")
    a, b = read_ava_csv(plain), read_ava_csv(odd)
    assert [r[:5] for r in a] == [r[:5] for r in b]
    assert [r.lineno for r in b] == [1, 2, 3, 5, 6, 7, 8]
    ds_a = AVADataset(plain, None, [], test_mode=True, num_classes=8)
    ds_b = AVADataset(odd, None, [], test_mode=True, num_classes=8)
    for x, y in zip(ds_a.video_infos, ds_b.video_infos):
        assert x["img_key"] == y["img_key"]
        for name in ("gt_bboxes", "gt_labels", "entity_ids"):
            np.testing.assert_array_equal(x["ann"][name], y["ann"][name])
    exc = write(tmp_path / "e.csv", " vidA , 0902 \r\n\r\nvidB,903\n")
    assert read_exclusions(exc) == {("vidA", 902), ("vidB", 903)}


def test_the_first_bad_line_is_reported(tmp_path):
    """A value refused on line 2 comes before a malformed field on line 4 (the file goes through the line-by-line
    reader because of line 4, the range check sees the rows before it)."""
    path = write(tmp_path / "bad.csv", GOOD + "v,0902,0.1,0.1,1.5,0.5,3,0\n" + GOOD + "v,0902,0.1,abc,0.5,0.5,3,0\n")
    with pytest.raises(AVAFormatError, match=r"bad.csv:2: box coordinate x2=1.5 is outside"):
        read_ava_csv(path)
    path = write(tmp_path / "bad2.csv", GOOD + GOOD + "v,0902,0.1,abc,0.5,0.5,3,0\n" + "v,0902,0.1,0.1,1.5,0.5,3,0\n")
    with pytest.raises(AVAFormatError, match=r"bad2.csv:3: box coordinate y1 is not a number"):
        read_ava_csv(path)
    path = write(tmp_path / "bad3.csv", GOOD + "v,0902,0.1,0.1,0.5,0.5,9,0\n" + "v,0902,0.1,0.1,0.5,0.4,3,0\n")
    with pytest.raises(AVAFormatError, match=r"bad3.csv:2: action id 9 is larger than 8"):
        AVADataset(path, None, [], num_classes=9, test_mode=True)
