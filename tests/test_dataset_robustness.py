"""Bad annotation files and unreadable samples (issue 12 items 5, 7, 9, 10, 13, 14): Kinetics lists, AVA csv /
exclusions / label maps / proposals. Every bad input must raise an error that names the file and the line (or the
proposal key); small synthetic files are written by each test."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from actionkit.data.annotations import UnreadableSkips, read_text_lines, resolve_under_prefix
from actionkit.data.ava import (
    AVADataset,
    AVAFormatError,
    SampleAVAFrames,
    read_ava_csv,
    read_exclusions,
    read_label_ids,
)
from actionkit.data.ava_proposals import PROPOSAL_CLIP_TOLERANCE, load_proposals, save_proposals_npz
from actionkit.data.decode import DecodeError, RawFrameDecode
from actionkit.data.kinetics import RawframeDataset, VideoDataset, check_labels_fit_model
from actionkit.registry import ConfigError

BOM = b"\xef\xbb\xbf"


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------------------ 5: Kinetics labels vs class count

def test_labels_checked_against_the_model_head(tmp_path):
    ann = write(tmp_path / "list.txt", "a.mp4 0\nb.mp4 3\n# comment\nc.mp4 7\n")
    ds = VideoDataset(ann, [], data_prefix=tmp_path, test_mode=True)  # the config gives no num_classes
    assert ds.num_classes is None
    with pytest.raises(ValueError, match=r"list\.txt:4: label 7 outside \[0, 4\) \(model\.cls_head\.num_classes\)"):
        check_labels_fit_model(ds, dict(type="Recognizer3D", cls_head=dict(type="I3DHead", num_classes=4)))
    with pytest.raises(ValueError, match=r"list\.txt:4: label 7 outside \[0, 5\) \(the classifier\)"):
        ds.check_num_classes(5, "the classifier")
    check_labels_fit_model(ds, dict(cls_head=dict(num_classes=8)))
    assert ds.num_classes == 8
    check_labels_fit_model(ds, dict(type="FastRCNN", roi_head=dict()))  # no classifier head: nothing to check
    # a class count the dataset already has must agree with the head
    with pytest.raises(ConfigError, match=r"list\.txt: the dataset has 8 classes .* num_classes=10"):
        check_labels_fit_model(ds, dict(cls_head=dict(num_classes=10)))
    named = VideoDataset(ann, [], data_prefix=tmp_path, test_mode=True, label_map=[f"c{i}" for i in range(8)])
    with pytest.raises(ConfigError, match=r"8 classes \(its label map\)"):
        named.check_num_classes(9)
    # rawframe lists and multi-label lines are checked the same way
    raw_list = write(tmp_path / "raw.txt", "v0 10 1\nv1 10 2 5\n")
    with pytest.raises(ValueError, match=r"raw\.txt:2: label 5 outside \[0, 5\) \(num_classes\)"):
        RawframeDataset(raw_list, [], test_mode=True, multi_class=True, num_classes=5)
    raw = RawframeDataset(raw_list, [], test_mode=True, multi_class=True, num_classes=6)
    with pytest.raises(ConfigError, match=r"raw\.txt: the dataset has 6 classes \(its num_classes\)"):
        raw.check_num_classes(5)


def test_evaluate_refuses_labels_beyond_the_scores(tmp_path):
    ann = write(tmp_path / "val.txt", "a.mp4 0\nb.mp4 1\nc.mp4 6\n")
    ds = VideoDataset(ann, [], data_prefix=tmp_path, test_mode=True)
    scores = [np.eye(4, dtype=np.float32)[i % 4] for i in range(3)]
    with pytest.raises(ValueError, match=r"val\.txt:3: label 6 outside \[0, 4\) \(the results have 4 scores"):
        ds.evaluate(scores, metrics=["top_k_accuracy"], topk=(1,))
    ok = VideoDataset(write(tmp_path / "ok.txt", "a.mp4 0\nb.mp4 1\n"), [], data_prefix=tmp_path, test_mode=True)
    assert ok.evaluate(scores[:2], metrics=["top_k_accuracy"], topk=(1,))["top1_acc"] == 1.0


# ------------------------------------------------------------------------------ 7: proposal boxes

def _ann(tmp_path: Path) -> Path:
    return write(tmp_path / "a.csv", "v,0902,0.1,0.1,0.5,0.5,3,0\nw,0903,0.1,0.1,0.5,0.5,3,0\n")


@pytest.mark.parametrize("box,msg", [
    ([10.0, 20.0, 200.0, 180.0], r"row 1 has x1=10\.0 outside \[0, 1\] \(by more than 0\.01\); proposal boxes "
                                 r"must be normalized"),
    ([0.1, -0.2, 0.5, 0.6], r"row 1 has y1=-0\.2 outside \[0, 1\]"),
    ([0.6, 0.1, 0.5, 0.6], r"row 1 has x2 < x1 \(0\.5 < 0\.6\)"),
    ([0.1, 0.7, 0.5, 0.6], r"row 1 has y2 < y1 \(0\.6 < 0\.7\)"),
    ([0.1, np.nan, 0.5, 0.6], r"non-finite"),
])
@pytest.mark.parametrize("fmt", ["npz", "pkl"])
def test_bad_proposal_boxes_refused_at_load_naming_file_and_key(tmp_path, box, msg, fmt):
    props = {"v,0902": np.array([[0.1, 0.1, 0.5, 0.5, 0.99], [*box, 0.95]])}
    if fmt == "npz":
        path = tmp_path / "props.npz"
        np.savez(path, keys=np.array(list(props)), boxes=props["v,0902"], offsets=np.array([0, 2]))
    else:
        import pickle
        path = write_bytes(tmp_path / "props.pkl", pickle.dumps(props, protocol=2))
    pattern = rf"props\.{fmt}: proposals of 'v,0902'.*{msg}"
    with pytest.raises(AVAFormatError, match=pattern):
        load_proposals(path)
    with pytest.raises(AVAFormatError, match=pattern):  # the dataset fails at construction, before any inference
        AVADataset(_ann(tmp_path), None, [], proposal_file=path, test_mode=True)


def test_bad_proposal_box_located_among_many_keys(tmp_path):
    rng = np.random.default_rng(0)
    props = {f"v{i},{902 + i:04d}": np.sort(rng.random((i % 3, 5)), axis=1) for i in range(50)}
    props["v41,0943"] = props["v41,0943"].copy()
    props["v41,0943"][1, 3] = 0.0                      # y2 below y1 in the second row of the 42nd key
    path = tmp_path / "many.npz"
    keys = list(props)
    np.savez(path, keys=np.array(keys), boxes=np.concatenate([props[k] for k in keys]),
             offsets=np.concatenate([[0], np.cumsum([len(props[k]) for k in keys])]))
    with pytest.raises(AVAFormatError, match=r"many\.npz: proposals of 'v41,0943': row 1 has y2 < y1"):
        load_proposals(path)
    props["v41,0943"][1, 3] = 250.0                    # a pixel coordinate
    with pytest.raises(AVAFormatError, match=r"proposals of 'v41,0943': row 1 has y2=250\.0 outside"):
        save_proposals_npz(props, tmp_path / "out.npz")


def test_proposals_slightly_outside_the_frame_are_clipped_with_a_counted_warning(tmp_path, caplog):
    eps = PROPOSAL_CLIP_TOLERANCE / 2
    props = {"v,0902": np.array([[-eps, 0.1, 0.5, 1 + eps, 0.99], [0.2, 0.2, 0.4, 0.4, 0.98]]),
             "w,0903": np.array([[0.1, 0.1, 1 + eps, 0.5, 0.97]]),
             "x,0904": np.array([[0.0, 0.0, 1.0, 1.0, 0.9]])}
    path = tmp_path / "props.npz"
    np.savez(path, keys=np.array(list(props)), boxes=np.concatenate(list(props.values())),
             offsets=np.array([0, 2, 3, 4]))
    with caplog.at_level(logging.WARNING, logger="actionkit"):
        back = load_proposals(path)
    np.testing.assert_array_equal(back["v,0902"], [[0, 0.1, 0.5, 1, 0.99], [0.2, 0.2, 0.4, 0.4, 0.98]])
    np.testing.assert_array_equal(back["w,0903"], [[0.1, 0.1, 1, 0.5, 0.97]])
    np.testing.assert_array_equal(back["x,0904"], props["x,0904"])
    assert "props.npz: clipped 3 proposal box coordinate(s)" in caplog.text
    assert "in 2 keyframe(s) (first: 'v,0902')" in caplog.text
    ds = AVADataset(_ann(tmp_path), None, [], proposal_file=path, test_mode=True)
    assert ds[0]["proposals"].min() >= 0 and ds[1]["proposals"].max() <= 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="actionkit"):
        save_proposals_npz(back, tmp_path / "again.npz")       # in range now: written as read, no warning
    assert caplog.text == ""


# ------------------------------------------------------------------------------ 9: AVA video ids vs data_prefix

@pytest.mark.parametrize("video_id,msg", [
    ("../../etc/x", r"path '\.\./\.\./etc/x\.mp4' escapes data_prefix"),
    ("sub/../../x", r"path 'sub/\.\./\.\./x\.mp4' escapes data_prefix"),
    ("/abs/x", r"absolute path '/abs/x\.mp4' with data_prefix set"),
])
def test_ava_video_ids_must_stay_inside_data_prefix(tmp_path, video_id, msg):
    ann = write(tmp_path / "a.csv", f"v,0902,0.1,0.1,0.5,0.5,3,0\n{video_id},0902,0.1,0.1,0.5,0.5,3,0\n"
                                    f"{video_id},0902,0.2,0.1,0.5,0.5,3,0\n")
    with pytest.raises(ValueError, match=rf"a\.csv:2: {msg}"):
        AVADataset(ann, None, [], data_prefix=str(tmp_path / "videos"), video_suffix=".mp4", test_mode=True)
    ok = write(tmp_path / "ok.csv", "sub/v,0902,0.1,0.1,0.5,0.5,3,0\n")  # a sub-folder is fine
    ds = AVADataset(ok, None, [], data_prefix="videos", test_mode=True)
    assert ds.video_infos[0]["frame_dir"] == str(Path("videos", "sub", "v"))


def test_resolve_under_prefix_is_the_kinetics_guard(tmp_path):
    ann = write(tmp_path / "list.txt", "ok/a.mp4 0\nok/../../b.mp4 1\n")
    with pytest.raises(ValueError, match=r"list\.txt:2: path 'ok/\.\./\.\./b\.mp4' escapes data_prefix"):
        VideoDataset(ann, [], data_prefix=tmp_path / "videos", test_mode=True)
    assert resolve_under_prefix(None, "../x", "f", 1) == "../x"
    assert resolve_under_prefix("p", "a/./b", "f", 1) == str(Path("p", "a", "b"))


# ------------------------------------------------------------------------------ 10: AVA unreadable frames skipped

def _ava_frames_dataset(tmp_path: Path, **kw) -> AVADataset:
    """Two keyframes at 1 s on a 0..3 s timeline at 2 fps: 'good' has its 6 JPEG frames, 'bad' has none."""
    frames = tmp_path / "frames" / "good"
    frames.mkdir(parents=True)
    for k in range(1, 7):
        cv2.imwrite(str(frames / f"img_{k:05}.jpg"), np.full((8, 8, 3), 40 * k, np.uint8))
    ann = write(tmp_path / "a.csv", "good,1,0.1,0.1,0.5,0.5,1,0\nbad,1,0.1,0.1,0.5,0.5,2,0\n")
    pipeline = [SampleAVAFrames(2, 1, test_mode=True), RawFrameDecode()]
    return AVADataset(ann, None, pipeline, num_classes=3, start_index=1, data_prefix=str(tmp_path / "frames"),
                      timestamp_start=0, timestamp_end=3, fps=2, **kw)


def test_ava_unreadable_keyframes_are_skipped_in_training(tmp_path, caplog):
    ds = _ava_frames_dataset(tmp_path, max_skips=1)
    assert ds[0]["imgs"].shape == (2, 8, 8, 3)
    with caplog.at_level(logging.WARNING, logger="actionkit"):
        item = ds[1]
    assert item["img_key"] == "good,0001"           # another keyframe instead
    assert list(ds.skipped) == [1] and "bad" in ds.skipped[1]
    assert "1 skipped so far, max_skips=1" in caplog.text and "bad" in caplog.text
    for _ in range(3):                              # a known-bad keyframe is neither retried nor counted again
        assert ds[1]["img_key"] == "good,0001"
    assert len(ds.skipped) == 1
    assert isinstance(ds._skips, UnreadableSkips)   # the policy Kinetics uses, not a copy
    strict = _ava_frames_dataset(tmp_path / "strict", max_skips=0)
    with pytest.raises(DecodeError, match=r"a\.csv: 1 unreadable samples, more than max_skips=0; last: .*bad"):
        strict[1]
    test = _ava_frames_dataset(tmp_path / "test", test_mode=True)
    with pytest.raises(DecodeError, match="bad"):   # evaluation must see every keyframe
        test[1]


def test_ava_all_keyframes_unreadable_is_an_error_not_a_loop(tmp_path):
    ann = write(tmp_path / "a.csv", "bad,1,0.1,0.1,0.5,0.5,1,0\nworse,1,0.1,0.1,0.5,0.5,1,0\n")
    ds = AVADataset(ann, None, [SampleAVAFrames(2, 1, test_mode=True), RawFrameDecode()], num_classes=3,
                    data_prefix=str(tmp_path), timestamp_start=0, timestamp_end=3, fps=2, max_skips=10)
    with pytest.raises(DecodeError, match=r"a\.csv: all 2 samples are unreadable"):
        ds[0]


# ------------------------------------------------------------------------------ 13: encodings and byte-order marks

def test_kinetics_lists_with_a_bom_keep_their_first_sample(tmp_path):
    ann = write_bytes(tmp_path / "list.txt", BOM + b"train/a.mp4 0\r\ntrain/b.mp4 1\r\n")
    ds = VideoDataset(ann, [], data_prefix=tmp_path, test_mode=True)
    assert [Path(v["filename"]).name for v in ds.video_infos] == ["a.mp4", "b.mp4"]
    assert ds.video_infos[0]["filename"] == str(tmp_path / "train" / "a.mp4")
    commented = write_bytes(tmp_path / "c.txt", BOM + b"# header\nv0 10 1\n")
    raw = RawframeDataset(commented, [], test_mode=True)
    assert [v["frame_dir"] for v in raw.video_infos] == ["v0"] and raw.video_infos[0]["lineno"] == 2
    labels = write_bytes(tmp_path / "labels.txt", BOM + b"abseiling\nair drumming\n")
    named = VideoDataset(ann, [], data_prefix=tmp_path, test_mode=True, label_map=labels)
    assert named.class_names == ["abseiling", "air drumming"] and named.num_classes == 2


def test_non_utf8_lists_name_file_and_line(tmp_path):
    ann = write_bytes(tmp_path / "list.txt", b"train/a.mp4 1\ntrain/caf\xe9.mp4 2\n")
    with pytest.raises(ValueError, match=r"list\.txt:2: annotation file is not UTF-8 text \(byte 0xe9 at column "
                                         r"10.*save it as UTF-8"):
        VideoDataset(ann, [], data_prefix=tmp_path, test_mode=True)
    with pytest.raises(ValueError, match=r"list\.txt:2: annotation file is not UTF-8"):
        RawframeDataset(ann, [], test_mode=True)
    labels = write_bytes(tmp_path / "labels.txt", b"a\nb\n\xff\xfec\n")
    with pytest.raises(ValueError, match=r"labels\.txt:3: label map is not UTF-8"):
        VideoDataset(write(tmp_path / "ok.txt", "a.mp4 0\n"), [], test_mode=True, label_map=labels)
    # UTF-16 (a spreadsheet export) is refused at line 1, not read as garbage
    utf16 = write_bytes(tmp_path / "u16.txt", "a.mp4 0\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"u16\.txt:1: annotation file is not UTF-8"):
        VideoDataset(utf16, [], test_mode=True)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt: annotation file not found"):
        VideoDataset(tmp_path / "missing.txt", [], test_mode=True)


def test_read_text_lines_numbers_lines_as_an_editor_does(tmp_path):
    path = write_bytes(tmp_path / "t.txt", BOM + b"a\r\nb\rc\n\nd\x0ce\n")  # \x0c is no line end
    assert read_text_lines(path) == ["a", "b", "c", "", "d\x0ce"]
    bad = write_bytes(tmp_path / "bad.txt", b"a\r\nb\rc\xc3(\n")
    with pytest.raises(AVAFormatError, match=r"bad\.txt:3: note file is not UTF-8 text \(byte 0xc3 at column 2"):
        read_text_lines(bad, "note file", AVAFormatError)


def test_ava_csv_exclusions_and_label_maps_accept_a_bom_and_refuse_other_encodings(tmp_path):
    csv = write_bytes(tmp_path / "a.csv", BOM + b"vid,0902,0.1,0.1,0.5,0.5,3,0\n")
    rows = read_ava_csv(csv)
    assert rows[0].video_id == "vid" and rows[0].lineno == 1
    assert AVADataset(csv, None, [], test_mode=True).video_infos[0]["img_key"] == "vid,0902"
    exc = write_bytes(tmp_path / "e.csv", BOM + b"vid,0902\n")
    assert read_exclusions(exc) == {("vid", 902)}
    pbtxt = write_bytes(tmp_path / "l.pbtxt", BOM + b'item {\n  name: "talk"\n  id: 3\n}\n')
    assert read_label_ids(pbtxt) == [3]

    bad_csv = write_bytes(tmp_path / "bad.csv", b"vid,0902,0.1,0.1,0.5,0.5,3,0\nvid\xe9,0903,0.1,0.1,0.5,0.5,3,0\n")
    with pytest.raises(AVAFormatError, match=r"bad\.csv:2: AVA annotation csv is not UTF-8"):
        read_ava_csv(bad_csv)
    with pytest.raises(AVAFormatError, match=r"bad\.csv:2: AVA annotation csv is not UTF-8"):
        AVADataset(bad_csv, None, [], test_mode=True)
    bad_exc = write_bytes(tmp_path / "bad_e.csv", b"vid,0902\n\nvid\xe9,0903\n")
    with pytest.raises(AVAFormatError, match=r"bad_e\.csv:3: excluded-timestamps csv is not UTF-8"):
        read_exclusions(bad_exc)
    with pytest.raises(AVAFormatError, match=r"bad_e\.csv:3: excluded-timestamps csv is not UTF-8"):
        AVADataset(csv, bad_exc, [])
    bad_map = write_bytes(tmp_path / "bad.pbtxt", b'item {\n  name: "caf\xe9"\n  id: 3\n}\n')
    with pytest.raises(AVAFormatError, match=r"bad\.pbtxt:2: label map is not UTF-8"):
        read_label_ids(bad_map)
    with pytest.raises(AVAFormatError, match=r"bad\.pbtxt:2: label map is not UTF-8"):
        read_ava_csv(csv, label_ids=bad_map)


# ------------------------------------------------------------------------------ 14: timestamps off the timeline

@pytest.mark.parametrize("ts", ["0899", "1800", "2400"])
def test_ava_timestamps_off_the_timeline_are_refused(tmp_path, ts):
    ann = write(tmp_path / "a.csv", f"v,0902,0.1,0.1,0.5,0.5,3,0\nv,{ts},0.1,0.1,0.5,0.5,3,0\n")
    with pytest.raises(AVAFormatError, match=rf"a\.csv:2: timestamp {int(ts)} is outside the timeline "
                                             r"\[900, 1800\) of the dataset \(set timestamp_start"):
        AVADataset(ann, None, [])
    with pytest.raises(AVAFormatError, match=r"a\.csv:2: timestamp"):
        AVADataset(ann, None, [], test_mode=True)


def test_ava_timeline_edges_are_accepted(tmp_path):
    ann = write(tmp_path / "a.csv", "v,0900,0.1,0.1,0.5,0.5,3,0\nv,1799,0.1,0.1,0.5,0.5,3,0\n")
    ds = AVADataset(ann, None, [SampleAVAFrames(4, 16, test_mode=True)], test_mode=True)
    assert ds[0]["frame_inds"].tolist() == [0, 0, 1, 17]                # clip clamped, keyframe 1 inside
    assert ds[1]["frame_inds"].tolist() == [26939, 26955, 26971, 26987]  # keyframe 30 * 899 + 1 inside
    custom = write(tmp_path / "b.csv", "v,5,0.1,0.1,0.5,0.5,3,0\n")
    assert len(AVADataset(custom, None, [], timestamp_start=0, timestamp_end=10, fps=15)) == 1


def test_train_and_test_commands_check_labels_before_any_work(tmp_path):
    """The engine builds every dataset through one function that checks the labels against the head: a label
    beyond ``num_classes`` stops train.py / test.py at once, naming the list file and line."""
    from actionkit.cli.test import main as test_main
    from actionkit.cli.train import main as train_main

    ann = write(tmp_path / "list.txt", "a.mp4 0\nb.mp4 7\n")
    cfg = write(tmp_path / "cfg.py", f"""
model = dict(type='Recognizer3D',
             backbone=dict(type='ResNet3d', depth=18, pretrained=None, base_channels=4, num_stages=1,
                           out_indices=(0,), spatial_strides=(1,), temporal_strides=(1,), dilations=(1,)),
             cls_head=dict(type='I3DHead', num_classes=4, in_channels=4), test_cfg=dict(average_clips='prob'))
pipeline = [dict(type='PyAVInit'), dict(type='SampleFrames', clip_len=2, frame_interval=1, num_clips=1),
            dict(type='PyAVDecode'), dict(type='FormatShape', input_format='NCTHW'),
            dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]), dict(type='ToTensor', keys=['imgs'])]
data = dict(videos_per_gpu=1, workers_per_gpu=0,
            train=dict(type='VideoDataset', ann_file={str(ann)!r}, data_prefix={str(tmp_path)!r}, pipeline=pipeline),
            test=dict(type='VideoDataset', ann_file={str(ann)!r}, data_prefix={str(tmp_path)!r}, pipeline=pipeline))
optimizer = dict(type='SGD', lr=0.1, momentum=0.9)
lr_config = dict(policy='fixed')
total_epochs = 1
""")
    with pytest.raises(ValueError, match=r"list\.txt:2: label 7 outside \[0, 4\)"):
        train_main([str(cfg), "--work-dir", str(tmp_path / "work")])
    with pytest.raises(ValueError, match=r"list\.txt:2: label 7 outside \[0, 4\)"):
        test_main([str(cfg), str(tmp_path / "missing.pth"), "--eval", "top_k_accuracy"])
