"""VideoDataset / RawframeDataset: annotations, items through real pipelines, skipping, evaluate, collate."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from actionkit.data.collate import collate_ava, collate_recognition
from actionkit.data.decode import DecodeError
from actionkit.data.kinetics import RawframeDataset, VideoDataset
from actionkit.synthetic.kinetics import make_kinetics
from actionkit.registry import DATASETS, ConfigError

NORM = dict(type="Normalize", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)


def video_pipeline(test_mode=True):
    return [dict(type="DecordInit"),
            dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=1, test_mode=test_mode),
            dict(type="DecordDecode"),
            dict(type="FormatShape", input_format="NCTHW"),
            dict(type="Collect", keys=["imgs", "label"], meta_keys=[]),
            dict(type="ToTensor", keys=["imgs", "label"])]


def frame_pipeline(test_mode=True):
    return [dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=1, test_mode=test_mode),
            dict(type="RawFrameDecode"),
            dict(type="FormatShape", input_format="NCTHW"),
            dict(type="Collect", keys=["imgs", "label"], meta_keys=[]),
            dict(type="ToTensor", keys=["imgs", "label"])]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("kin")
    return make_kinetics(out, seed=1, num_videos=8, num_val_videos=4, num_classes=4, size=(32, 32),
                         num_frames=16)


def test_items_both_layouts_agree(data):
    vd = DATASETS.build(dict(type="VideoDataset", ann_file=data["ann_file_val_videos"],
                             data_prefix=data["data_prefix_videos"], pipeline=video_pipeline(),
                             test_mode=True, label_map=data["label_map"]))
    rd = DATASETS.build(dict(type="RawframeDataset", ann_file=data["ann_file_val_rawframes"],
                             data_prefix=data["data_prefix_rawframes"], pipeline=frame_pipeline(),
                             test_mode=True))
    assert len(vd) == len(rd) == 4 and vd.num_classes == 4
    assert vd.class_names[0] == "move_right"
    items_v = [vd[i] for i in range(len(vd))]
    items_r = [rd[i] for i in range(len(rd))]
    for i, (a, b) in enumerate(zip(items_v, items_r)):
        assert a["imgs"].shape == b["imgs"].shape == (1, 3, 4, 32, 32)
        assert a["imgs"].dtype == torch.uint8
        assert int(a["label"]) == int(b["label"]) == vd.video_infos[i]["label"]
        # mp4 (h264, 4:2:0 chroma) and JPEG (4:4:4) copies of the same clip, same test-mode indices
        # (0-based video frames vs 1-based files): codec noise only, far below another clip's difference
        same = (a["imgs"].float() - b["imgs"].float()).abs().mean()
        assert same < 12
        for j, other in enumerate(items_r):
            if j != i:
                assert (a["imgs"].float() - other["imgs"].float()).abs().mean() > 1.5 * same


def test_train_loader_collate(data):
    pipe = video_pipeline(test_mode=False)
    pipe.insert(3, NORM)
    ds = VideoDataset(data["ann_file_train_videos"], pipe, data_prefix=data["data_prefix_videos"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=True, collate_fn=collate_recognition)
    batch = next(iter(loader))
    assert batch["imgs"].shape == (3, 1, 3, 4, 32, 32) and batch["imgs"].dtype == torch.float32
    assert batch["label"].shape == (3,) and batch["label"].dtype == torch.long


def test_forked_worker_decodes(data):
    ds = RawframeDataset(data["ann_file_val_rawframes"], frame_pipeline(), data["data_prefix_rawframes"],
                         test_mode=True)
    vds = VideoDataset(data["ann_file_val_videos"], video_pipeline(), data_prefix=data["data_prefix_videos"],
                       test_mode=True)
    for d in (ds, vds):
        loader = torch.utils.data.DataLoader(d, batch_size=2, num_workers=1, collate_fn=collate_recognition)
        batches = list(loader)
        assert len(batches) == 2 and batches[0]["imgs"].shape == (2, 1, 3, 4, 32, 32)
        torch.testing.assert_close(batches[1]["imgs"][1], d[3]["imgs"])


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_annotation_errors(tmp_path, data):
    pre = data["data_prefix_videos"]
    cases = [("a.txt", "train/vid_00000.mp4\n", r"a\.txt:1: expected 'path label'"),
             ("b.txt", "train/vid_00000.mp4 0\n\ntrain/vid_00001.mp4 zero\n", r"b\.txt:3: label 'zero'"),
             ("c.txt", "train/vid_00000.mp4 7\n", r"c\.txt:1: label 7 outside \[0, 4\) \(num_classes\)"),
             ("d.txt", "\n# only a comment\n", r"d\.txt: empty annotation file"),
             ("e.txt", "train/../../x.mp4 1\n", r"e\.txt:1: path 'train/../../x.mp4' escapes data_prefix"),
             ("f.txt", "/etc/x.mp4 1\n", r"f\.txt:1: absolute path"),
             ("g.txt", "train/vid_00000.mp4 1 2\n", r"g\.txt:1: expected one label")]
    for name, text, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            VideoDataset(write(tmp_path, name, text), [], data_prefix=pre, num_classes=4)
    with pytest.raises(ValueError, match=r"h\.txt:1: label 5 outside \[0, 4\) \(the label map\)"):
        VideoDataset(write(tmp_path, "h.txt", "train/vid_00000.mp4 5\n"), [], data_prefix=pre,
                     label_map=data["label_map"])
    raw = data["data_prefix_rawframes"]
    with pytest.raises(ValueError, match=r"i\.txt:2: expected 'frame_dir total_frames label'"):
        RawframeDataset(write(tmp_path, "i.txt", "train/vid_00000 16 1\ntrain/vid_00001 1\n"), [], raw)
    with pytest.raises(ValueError, match=r"j\.txt:1: total_frames 'x'"):
        RawframeDataset(write(tmp_path, "j.txt", "train/vid_00000 x 1\n"), [], raw)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        VideoDataset(str(tmp_path / "nope.txt"), [], data_prefix=pre)
    with pytest.raises(FileNotFoundError, match=r"k\.txt:1: .*missing\.mp4 not found"):
        VideoDataset(write(tmp_path, "k.txt", "train/missing.mp4 1\n"), [], data_prefix=pre, check_files=True)


def test_with_offset_multiclass_and_sthv1_template(tmp_path, data):
    raw = data["data_prefix_rawframes"]
    ann = write(tmp_path, "o.txt", "train/vid_00000 2 10 1 3\n")
    ds = RawframeDataset(ann, [dict(type="SampleFrames", clip_len=2, frame_interval=1, test_mode=True),
                               dict(type="RawFrameDecode")], raw, test_mode=True, with_offset=True,
                         multi_class=True, num_classes=4)
    info = ds.video_infos[0]
    assert info["offset"] == 2 and info["total_frames"] == 10 and info["label"] == [1, 3]
    res = ds[0]
    np.testing.assert_array_equal(res["label"], [0, 1, 0, 1])
    assert res["imgs"].shape == (2, 32, 32, 3) and res["filename_tmpl"] == "img_{:05}.jpg"
    # sthv1 layout: {:05}.jpg files
    folder = tmp_path / "sth" / "v0"
    folder.mkdir(parents=True)
    import shutil
    for k in range(1, 7):
        shutil.copy(f"{raw}/train/vid_00000/img_{k:05}.jpg", folder / f"{k:05}.jpg")
    ds = RawframeDataset(write(tmp_path, "s.txt", "v0 6 2\n"),
                         [dict(type="SampleFrames", clip_len=3, frame_interval=2, test_mode=True),
                          dict(type="RawFrameDecode")], str(tmp_path / "sth"), test_mode=True,
                         filename_tmpl="{:05}.jpg")
    assert ds[0]["imgs"].shape == (3, 32, 32, 3)


def test_unreadable_samples_skipped_in_training(tmp_path, data, caplog):
    pre = data["data_prefix_videos"]
    ann = write(tmp_path, "m.txt", "train/vid_00000.mp4 0\ntrain/missing.mp4 1\ntrain/vid_00002.mp4 2\n")
    ds = VideoDataset(ann, video_pipeline(test_mode=False), data_prefix=pre, max_skips=1)
    with caplog.at_level(logging.WARNING, logger="actionkit"):
        item = ds[1]
    assert int(item["label"]) in (0, 2)
    assert list(ds.skipped) == [1] and "missing.mp4" in ds.skipped[1]
    assert "missing.mp4" in caplog.text and "1 skipped" in caplog.text
    for _ in range(5):  # a known-bad index is not retried nor counted again
        ds[1]
    assert len(ds.skipped) == 1
    strict = VideoDataset(ann, video_pipeline(test_mode=False), data_prefix=pre, max_skips=0)
    with pytest.raises(DecodeError, match="max_skips=0.*missing.mp4"):
        strict[1]
    test = VideoDataset(ann, video_pipeline(), data_prefix=pre, test_mode=True)
    with pytest.raises(DecodeError, match="missing.mp4: video file not found"):
        test[1]
    # a corrupt video is skipped the same way
    bad = tmp_path / "vids" / "train"
    bad.mkdir(parents=True)
    (bad / "broken.mp4").write_bytes(b"\x00" * 100)
    ds2 = VideoDataset(write(tmp_path, "n.txt", "train/broken.mp4 0\n"), video_pipeline(False),
                       data_prefix=str(tmp_path / "vids"), max_skips=3)
    with pytest.raises(DecodeError, match="broken.mp4"):
        ds2[0]  # every sample is unreadable: an error, not an endless loop


def test_evaluate_and_dump(tmp_path, data):
    pytest.importorskip("actionkit.evaluation.accuracy")
    ds = VideoDataset(data["ann_file_val_videos"], [], data_prefix=data["data_prefix_videos"], test_mode=True)
    labels = [info["label"] for info in ds.video_infos]
    scores = []
    for i, lab in enumerate(labels):
        s = np.full(4, 0.1, np.float32)
        s[lab if i % 2 == 0 else (lab + 1) % 4] = 0.9  # half right
        scores.append(s)
    res = ds.evaluate(scores, topk=(1, 2))
    assert res["top1_acc"] == pytest.approx(0.5)
    assert set(res) == {"top1_acc", "top2_acc", "mean_class_accuracy"}
    res = ds.evaluate(scores, metrics=["top_k_accuracy"])
    assert set(res) == {"top1_acc", "top5_acc"}
    with pytest.raises(KeyError):
        ds.evaluate(scores, metrics=["mAP"])
    with pytest.raises(ValueError, match="3 results for 4"):
        ds.evaluate(scores[:3])


def test_dump_results(tmp_path, data):
    ds = VideoDataset(data["ann_file_val_videos"], [], data_prefix=data["data_prefix_videos"], test_mode=True)
    scores = [np.arange(4, dtype=np.float32) + i for i in range(4)]
    ds.dump_results(scores, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())[1] == [1.0, 2.0, 3.0, 4.0]
    ds.dump_results(scores, tmp_path / "r.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), np.stack(scores))
    with pytest.raises(ConfigError, match="pickle"):
        ds.dump_results(scores, tmp_path / "r.pkl")
    assert not list(tmp_path.glob(".*tmp*"))


def test_collate_ava_and_recognition():
    items = [dict(img=torch.zeros(3, 4, 8, 8), proposals=torch.zeros(n, 4), gt_bboxes=np.zeros((n, 4)),
                  gt_labels=torch.zeros(n, 81), img_metas=dict(img_shape=(8, 8), k=n)) for n in (1, 3)]
    b = collate_ava(items)
    assert b["img"].shape == (2, 3, 4, 8, 8)
    assert [p.shape[0] for p in b["proposals"]] == [1, 3]
    assert isinstance(b["gt_bboxes"][1], torch.Tensor) and b["gt_bboxes"][1].shape == (3, 4)
    assert b["img_metas"][1]["k"] == 3
    r = collate_recognition([dict(imgs=np.zeros((2, 3, 4, 8, 8), np.float32), label=np.int64(i),
                                  img_metas=dict(a=i)) for i in range(3)])
    assert r["imgs"].shape == (3, 2, 3, 4, 8, 8) and r["label"].tolist() == [0, 1, 2]
    assert r["img_metas"] == [dict(a=0), dict(a=1), dict(a=2)]
    with pytest.raises(ValueError, match="different shapes"):
        collate_recognition([dict(imgs=torch.zeros(1, 2)), dict(imgs=torch.zeros(1, 3))])
