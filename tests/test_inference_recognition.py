"""``init_recognizer`` / ``inference_recognizer`` and ``actionkit recognize`` against ``tools/test.py``.

Synthetic Kinetics-format data (mp4 + frame folders) and a tiny I3D with random weights saved as a checkpoint;
the scores of the API and of the command must equal those that ``tools/test.py --out`` writes for the same
checkpoint (1e-5).  The real h264 clip runs through ``recognize`` with a reduced-width I3D.
"""
from __future__ import annotations

import copy
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from actionkit.cli import main as actionkit_main
from actionkit.cli.recognize import main as recognize_main
from actionkit.config import load_config
from actionkit.data.decode import DecodeError, PyAVReader
from actionkit.synthetic.kinetics import make_kinetics
from actionkit.checkpoint import CheckpointError, save_checkpoint
from actionkit.config import config_to_python
from actionkit.models.builder import build_model
from actionkit.cli.test import main as run_test_main
from actionkit.inference.recognition import (InputError, inference_recognizer, init_recognizer,
                                             recognition_scores)
from conftest import REPO, SHARED_DATA, require_shared

NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)
SAMPLE = dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=2, test_mode=True)
VIEWS = [dict(type="Resize", scale=(-1, 32)), dict(type="ThreeCrop", crop_size=32),
         dict(type="Normalize", **NORM), dict(type="FormatShape", input_format="NCTHW"),
         dict(type="Collect", keys=["imgs", "label"], meta_keys=[]), dict(type="ToTensor", keys=["imgs"])]
DECODE = {"videos": [dict(type="DecordInit"), SAMPLE, dict(type="DecordDecode")],
          "rawframes": [SAMPLE, dict(type="RawFrameDecode")]}
DATASET = {"videos": "VideoDataset", "rawframes": "RawframeDataset"}


def tiny_i3d(num_classes: int = 4, depth: int = 18, base_channels: int = 8) -> dict:
    inflate = ((1, 1), (1, 1), (1, 1), (1, 1)) if depth == 18 else \
        ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))
    return dict(type="Recognizer3D",
                backbone=dict(type="ResNet3d", depth=depth, base_channels=base_channels, pretrained=None,
                              pretrained2d=False, conv1_kernel=(3, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
                              conv_cfg=dict(type="Conv3d"), norm_eval=False, inflate=inflate,
                              zero_init_residual=False),
                cls_head=dict(type="I3DHead", num_classes=num_classes,
                              in_channels=base_channels * 8 * (1 if depth == 18 else 4), spatial_type="avg",
                              dropout_ratio=0.5, init_std=0.01),
                train_cfg=None, test_cfg=dict(average_clips="prob"))


def write_config(path: Path, layout: str, data: dict, model: dict | None = None,
                 pipeline: list | None = None) -> Path:
    test = dict(type=DATASET[layout], ann_file=data[f"ann_file_val_{layout}"],
                data_prefix=data[f"data_prefix_{layout}"],
                pipeline=copy.deepcopy(pipeline if pipeline is not None else DECODE[layout] + VIEWS))
    cfg = dict(model=model or tiny_i3d(), data=dict(videos_per_gpu=2, workers_per_gpu=0, test=test))
    path.write_text(config_to_python(cfg))
    return path


def random_checkpoint(config: Path, path: Path, seed: int = 0) -> Path:
    """Random weights with a classifier strong enough that the class scores differ clearly."""
    torch.manual_seed(seed)
    model = build_model(load_config(config), init_weights=True)
    torch.nn.init.normal_(model.cls_head.fc_cls.weight, 0, 2.0)
    torch.nn.init.normal_(model.cls_head.fc_cls.bias, 0, 0.5)
    save_checkpoint(path, model)
    return path


def listed(data: dict, layout: str) -> list[str]:
    """The val inputs in annotation order (absolute paths)."""
    prefix = Path(data[f"data_prefix_{layout}"])
    lines = Path(data[f"ann_file_val_{layout}"]).read_text().split("\n")
    return [str(prefix / line.split()[0]) for line in lines if line.strip()]


def test_py_scores(config: Path, ckpt: Path, average: str, out: Path) -> np.ndarray:
    assert run_test_main([str(config), str(ckpt), "--out", str(out), "--average-clips", average]) == 0
    return np.asarray(json.loads(out.read_text()), np.float64)


test_py_scores.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def kin(tmp_path_factory):
    out = tmp_path_factory.mktemp("kin")
    data = make_kinetics(out, seed=3, num_videos=2, num_val_videos=4, num_classes=4, size=(48, 32),
                         num_frames=24)
    configs = {layout: write_config(out / f"tiny_{layout}.py", layout, data) for layout in DECODE}
    ckpt = random_checkpoint(configs["videos"], out / "tiny.pth")
    return {"data": data, "configs": configs, "ckpt": ckpt, "dir": out}


# ------------------------------------------------------------------------------------- equal to tools/test.py
@pytest.mark.parametrize("layout,average,batch,workers", [("videos", "prob", 1, 0), ("videos", "score", 3, 2),
                                                          ("rawframes", "prob", 2, 0), ("rawframes", "score", 1, 0)])
def test_recognize_equals_test_py(kin, tmp_path, layout, average, batch, workers):
    config, ckpt = kin["configs"][layout], kin["ckpt"]
    expected = test_py_scores(config, ckpt, average, tmp_path / "test.json")
    videos = listed(kin["data"], layout)
    video_list = tmp_path / "videos.txt"
    video_list.write_text("# the val videos\n" + "\n".join(videos) + "\n\n")
    out = tmp_path / "preds.json"
    assert recognize_main([str(video_list), "--config", str(config), "--checkpoint", str(ckpt), "--out", str(out),
                           "--average-clips", average, "--batch-size", str(batch), "--num-workers", str(workers),
                           "--top-k", "3"]) == 0
    preds = json.loads(out.read_text())
    assert [v["video"] for v in preds["videos"]] == videos
    got = np.array([v["scores"] for v in preds["videos"]])
    assert got.shape == expected.shape == (4, 4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert not np.allclose(expected[0], expected[1], atol=1e-3)  # the videos are told apart
    for v, s in zip(preds["videos"], expected):
        order = np.argsort(-s, kind="stable")[:3]
        assert [t["index"] for t in v["top_k"]] == order.tolist()
        assert [t["score"] for t in v["top_k"]] == pytest.approx(s[order].tolist(), abs=1e-5)
    assert preds["average_clips"] == average


@pytest.mark.parametrize("average", ["prob", "score"])
def test_api_equals_test_py_and_input_kinds_agree(kin, tmp_path, average):
    data = kin["data"]
    config, ckpt = kin["configs"]["videos"], kin["ckpt"]
    expected = test_py_scores(config, ckpt, average, tmp_path / "test.json")
    model = init_recognizer(str(config), str(ckpt))
    model.average_clips = average
    videos = listed(data, "videos")
    for video, exp in zip(videos, expected):
        np.testing.assert_allclose(recognition_scores(model, video), exp, rtol=0, atol=1e-5)
    # the video as an array (sequential PyAV decode), as a results dict, and its frame folder
    video = videos[0]
    from_file = recognition_scores(model, video)
    np.testing.assert_array_equal(recognition_scores(model, sequential_decode(video)), from_file)
    np.testing.assert_array_equal(recognition_scores(model, {"filename": video}), from_file)
    top = inference_recognizer(model, video, top_k=4)
    assert [t[0] for t in top] == np.argsort(-from_file, kind="stable").tolist()
    assert [t[2] for t in top] == pytest.approx(np.sort(from_file)[::-1].tolist())
    assert all(isinstance(t[1], str) and t[1] for t in top)


def test_frame_folders_array_and_dict_agree(kin, tmp_path):
    import cv2

    data = kin["data"]
    raw_config, ckpt = kin["configs"]["rawframes"], kin["ckpt"]
    expected = test_py_scores(raw_config, ckpt, "prob", tmp_path / "test.json")
    model = init_recognizer(str(raw_config), str(ckpt))
    folders = listed(data, "rawframes")
    for folder, exp in zip(folders, expected):
        np.testing.assert_allclose(recognition_scores(model, folder), exp, rtol=0, atol=1e-5)
    folder = folders[1]
    files = sorted(Path(folder).glob("img_*.jpg"))
    frames = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    from_folder = recognition_scores(model, folder)
    np.testing.assert_array_equal(recognition_scores(model, frames), from_folder)
    np.testing.assert_array_equal(
        recognition_scores(model, {"frame_dir": folder, "total_frames": len(files)}), from_folder)
    # a frame folder through a video config, and a video through a frame-folder config
    video_model = init_recognizer(str(kin["configs"]["videos"]), str(ckpt))
    np.testing.assert_array_equal(recognition_scores(video_model, folder), from_folder)
    video = listed(data, "videos")[1]
    np.testing.assert_array_equal(recognition_scores(model, video),
                                  recognition_scores(model, sequential_decode(video)))


def test_outputs_hook_and_csv(kin, tmp_path):
    config, ckpt = kin["configs"]["videos"], kin["ckpt"]
    model = init_recognizer(str(config), str(ckpt))
    video = listed(kin["data"], "videos")[2]
    top, feats = inference_recognizer(model, video, top_k=2, outputs=["backbone", "cls_head"])
    assert len(top) == 2 and top[0][2] >= top[1][2]
    assert feats["backbone"].shape[:2] == (6, 64)  # 2 clips x 3 crops, 64 channels
    assert feats["cls_head"].shape == (6, 4)
    with pytest.raises(KeyError, match="no module named"):
        inference_recognizer(model, video, outputs=["not_a_layer"])
    out = tmp_path / "preds.csv"
    assert recognize_main([video, "--config", str(config), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["video"] == video and rows[0]["error"] == ""
    scores = np.array([float(rows[0][f"score_{k}"]) for k in range(4)])
    np.testing.assert_allclose(scores, recognition_scores(model, video), rtol=0, atol=1e-7)
    assert int(rows[0]["top1_index"]) == int(np.argmax(scores))


def test_missing_class_names_are_warned_about_once_and_stored_in_the_json(kin, tmp_path, caplog):
    config, ckpt = kin["configs"]["videos"], kin["ckpt"]
    out = tmp_path / "preds.json"
    with caplog.at_level("WARNING", logger="actionkit"):
        assert recognize_main([*listed(kin["data"], "videos")[:2], "--config", str(config), "--checkpoint",
                               str(ckpt), "--out", str(out)]) == 0
    assert sum("no shipped class names" in r.getMessage() for r in caplog.records) == 1
    assert json.loads(out.read_text())["class_names"] == [f"class_{k}" for k in range(4)]


def test_batch_of_videos_of_different_sizes(kin, tmp_path):
    """Without a crop the clips of differently sized videos differ in shape: each gets its own forward."""
    from actionkit.synthetic.kinetics import render_clip, write_video

    rng = np.random.default_rng(5)
    videos = []
    for i, size in enumerate([(64, 32), (48, 32), (64, 32)]):
        path = tmp_path / f"size_{i}.mp4"
        write_video(path, render_clip(rng, i % 4, 4, size=size, num_frames=20))
        videos.append(str(path))
    pipeline = DECODE["videos"] + [dict(type="Resize", scale=(-1, 32))] + VIEWS[2:]
    config = write_config(tmp_path / "no_crop.py", "videos", kin["data"], pipeline=pipeline)
    one_by_one, batched = tmp_path / "one.json", tmp_path / "batched.json"
    for out, batch in ((one_by_one, "1"), (batched, "3")):
        assert recognize_main([*videos, "--config", str(config), "--checkpoint", str(kin["ckpt"]),
                               "--batch-size", batch, "--out", str(out)]) == 0
    scores = [np.array([v["scores"] for v in json.loads(o.read_text())["videos"]]) for o in (one_by_one, batched)]
    np.testing.assert_allclose(scores[1], scores[0], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------- bad input
def test_unreadable_inputs_are_counted_and_the_rest_go_on(kin, tmp_path, capsys):
    config, ckpt = kin["configs"]["videos"], kin["ckpt"]
    good = listed(kin["data"], "videos")[:2]
    missing = tmp_path / "missing.mp4"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(Path(good[0]).read_bytes()[: os.path.getsize(good[0]) // 2])
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    inputs = [str(missing), good[0], str(garbage), str(truncated), str(empty), good[1]]
    out = tmp_path / "preds.json"
    code = recognize_main([*inputs, "--config", str(config), "--checkpoint", str(ckpt), "--out", str(out),
                           "--num-workers", "1", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 0
    assert "recognised 2 of 6 input(s); 4 could not be read" in err
    for bad in (missing, garbage, truncated, empty):
        assert str(bad) in err
    assert "no frames named like 'img_{:05}.jpg'" in err
    videos = json.loads(out.read_text())["videos"]
    assert [("error" in v) for v in videos] == [True, False, True, True, True, False]
    assert str(missing) in videos[0]["error"] and "no such video file" in videos[0]["error"]
    model = init_recognizer(str(config), str(ckpt))
    np.testing.assert_allclose(videos[5]["scores"], recognition_scores(model, good[1]), atol=1e-6)
    # every input unreadable: exit status 1
    assert recognize_main([str(missing), "--config", str(config), "--checkpoint", str(ckpt)]) == 1


def test_api_errors_name_the_input(kin, tmp_path):
    model = init_recognizer(str(kin["configs"]["rawframes"]), str(kin["ckpt"]))
    with pytest.raises(InputError, match="nope.mp4: no such video file"):
        inference_recognizer(model, str(tmp_path / "nope.mp4"))
    empty = tmp_path / "frames"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    with pytest.raises(InputError, match=f"{empty}: no frames named like"):
        inference_recognizer(model, str(empty))
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"\x00" * 5000)
    with pytest.raises(DecodeError, match="garbage.avi"):
        inference_recognizer(model, str(garbage))
    with pytest.raises(InputError, match=r"uint8 RGB \[T, H, W, 3\]"):
        inference_recognizer(model, np.zeros((4, 32, 32), np.uint8))


def test_checkpoint_for_another_number_of_classes(kin, tmp_path):
    five = write_config(tmp_path / "five.py", "videos", kin["data"], model=tiny_i3d(num_classes=5))
    ckpt5 = random_checkpoint(five, tmp_path / "five_classes.pth")
    with pytest.raises(CheckpointError, match=r"five_classes\.pth: the checkpoint classifies 5 classes but the "
                                              r"config .*tiny_videos\.py\) builds a model with 4"):
        init_recognizer(str(kin["configs"]["videos"]), str(ckpt5))


def test_unknown_zoo_name_lists_close_names(kin, capsys):
    video = listed(kin["data"], "videos")[0]
    code = actionkit_main(["recognize", video, "--checkpoint", "i3d_r50_32x2x1_100e_kinetics400_rgbb"])
    err = capsys.readouterr().err
    assert code != 0
    assert "i3d_r50_32x2x1_100e_kinetics400_rgbb" in err and "close names" in err
    assert "i3d_r50_32x2x1_100e_kinetics400_rgb" in err.split("close names", 1)[1]


def test_config_needed_for_a_checkpoint_file(kin):
    with pytest.raises(InputError, match="a config is needed"):
        init_recognizer(None, str(kin["ckpt"]))


# ------------------------------------------------------------------------------------- real video
def sequential_decode(path: str) -> np.ndarray:
    """Every frame of ``path``, decoded front to back with PyAV (no seeking), RGB."""
    import av

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_real_video_through_recognize_decodes_the_sequential_frames(tmp_path, monkeypatch, capsys):
    clip = require_shared(SHARED_DATA / "real_videos" / "kinetics_clip.mp4")
    # the published I3D R50 video config (full width, 400 classes) with a shorter test pipeline for CPU time:
    # 2 clips of 8 frames and a short side of 64 instead of 10 clips of 32 frames at 256
    cfg = load_config(REPO / "configs" / "recognition" / "i3d" / "i3d_r50_video_32x2x1_100e_kinetics400_rgb.py")
    cfg.model.backbone.pretrained = None  # random weights (no ImageNet file here)
    cfg.data.test.pipeline = [
        dict(type="DecordInit"),
        dict(type="SampleFrames", clip_len=8, frame_interval=2, num_clips=2, test_mode=True),
        dict(type="DecordDecode"), dict(type="Resize", scale=(-1, 64)), dict(type="ThreeCrop", crop_size=64),
        dict(type="Normalize", **NORM), dict(type="FormatShape", input_format="NCTHW"),
        dict(type="Collect", keys=["imgs", "label"], meta_keys=[]), dict(type="ToTensor", keys=["imgs"])]
    config = tmp_path / "i3d_r50_video_short.py"
    config.write_text(config_to_python(cfg))
    ckpt = random_checkpoint(config, tmp_path / "i3d_r50.pth")

    seen: dict[int, np.ndarray] = {}
    original = PyAVReader.iter_frames

    def recording(self, indices):
        inds = np.asarray(indices).reshape(-1)
        for positions, frame, is_bgr in original(self, indices):
            seen[int(inds[positions[0]])] = frame.copy()
            yield positions, frame, is_bgr

    monkeypatch.setattr(PyAVReader, "iter_frames", recording)
    out = tmp_path / "preds.json"
    assert recognize_main([str(clip), "--config", str(config), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    reference = sequential_decode(str(clip))
    assert reference.shape == (300, 256, 340, 3)
    assert len(seen) == 2 * 8
    for index, frame in seen.items():
        np.testing.assert_array_equal(frame, reference[index], err_msg=f"frame {index}")
    scores = np.array(json.loads(out.read_text())["videos"][0]["scores"])
    assert scores.shape == (400,) and abs(scores.sum() - 1) < 1e-4
    assert f"{clip}:" in printed and "  1. " in printed
    model = init_recognizer(str(config), str(ckpt))
    np.testing.assert_allclose(recognition_scores(model, reference), scores, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_memory_benchmark_script_runs(tmp_path, capsys):
    """benchmarks/recognize_memory.py on two short videos and a small pipeline (its figures: BENCHMARKS.md)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("recognize_memory", REPO / "benchmarks" / "recognize_memory.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--seconds", "1", "3", "--size", "96", "64", "--clips", "1", "--short-side", "32",
                        "--work-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 s") or line.startswith("| 3 s")]
    assert len(rows) == 2
    assert [int(r.split("|")[2]) for r in rows] == [30, 90]
    assert all(float(r.split("|")[5]) > 50 for r in rows)  # peak RSS in MiB of a real process
    assert "peak RSS 3 s / 1 s:" in out
