"""``actionkit detect``: streaming detection on a video equals the dataset path, output video, bad input."""
from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, require_shared

REPO = Path(__file__).resolve().parents[1]
BASE_CFG = REPO / "configs/detection/synthetic/slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py"
TWO_PEOPLE = SHARED_DATA / "real_videos" / "two_people.mp4"


def _write_config(path: Path, base: Path, ava: Path, proposal_file: str = "proposals_val.pkl") -> Path:
    ann = ava / "annotations"
    path.write_text(
        f"_base_ = [{str(base)!r}]\n"
        f"_val = dict(ann_file={str(ann / 'val.csv')!r}, exclude_file={str(ann / 'val_excluded_timestamps.csv')!r},\n"
        f"            label_file={str(ann / 'action_list.pbtxt')!r}, proposal_file={str(ann / proposal_file)!r},\n"
        f"            data_prefix={str(ava / 'videos')!r}, video_suffix='.mp4')\n"
        "data = dict(val=_val, test=_val, test_dataloader=dict(videos_per_gpu=1, workers_per_gpu=0))\n")
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Synthetic AVA videos (2 val videos of 4 keyframes at 15 fps, 160x120), a config reading them as
    videos, and a random-weight checkpoint of the tiny SlowOnly detector."""
    from actionkit.synthetic.ava import make_ava
    from actionkit.checkpoint import save_checkpoint
    from actionkit.models.builder import build_model_from_config

    root = tmp_path_factory.mktemp("detect")
    info = make_ava(root / "ava", seed=1, num_train=1, num_val=2, num_keyframes=4, margin_s=1)
    cfg = _write_config(root / "cfg.py", BASE_CFG, root / "ava")
    torch.manual_seed(0)
    ckpt = root / "rand.pth"
    save_checkpoint(ckpt, build_model_from_config(cfg))
    return dict(root=root, info=info, cfg=cfg, ckpt=ckpt, videos=root / "ava" / "videos",
                ann=root / "ava" / "annotations")


def _cli(*args: str) -> int:
    from actionkit.cli import main

    return main(["detect", *map(str, args)])


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [r for r in csv.reader(f) if r]


def _decode(path: Path) -> tuple[list[np.ndarray], float]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    return frames, fps


# ------------------------------------------------------------------------------------------------ exactness

def test_keyframe_clip_equals_dataset_item(synthetic):
    """The clip, boxes and metas that detect feeds the model are AVADataset's for the same keyframe, bit for bit."""
    from actionkit.config import load_config
    from actionkit.inference.detection import (Keyframe, KeyframeClipPipeline, iter_video_frames,
                                               load_person_boxes)
    from actionkit.registry import DATASETS

    cfg = load_config(synthetic["cfg"])
    dataset = DATASETS.build(dict(cfg.data.test, test_mode=True))
    video = synthetic["videos"] / "synval000.mp4"
    n, frames = iter_video_frames(video)
    all_frames = dict(frames)
    pipe = KeyframeClipPipeline(cfg, "synval000", n)
    boxes = load_person_boxes(synthetic["ann"] / "proposals_val.pkl", "synval000", 15, 900, 0.9)
    checked = 0
    for i, info in enumerate(dataset.video_infos):
        if info["video_id"] != "synval000":
            continue
        ref = dataset[i]
        kf = Keyframe(15 * (info["timestamp"] - 900) + 1, info["timestamp"])
        item = pipe.item(kf, all_frames, boxes.boxes(kf, all_frames[kf.frame]))
        assert torch.equal(item["img"][0], ref["img"][0])
        assert torch.equal(item["proposals"][0], ref["proposals"][0])
        assert item["img_metas"][0]["img_shape"] == ref["img_metas"][0]["img_shape"]
        np.testing.assert_array_equal(item["img_metas"][0]["scores"], ref["img_metas"][0]["scores"])
        checked += 1
    assert checked == 4


def test_detect_csv_equals_tools_test_and_same_map(synthetic, tmp_path, capsys):
    """detect --person-boxes (the synthetic proposals) on each val video: its csv rows equal tools/test.py --out
    on the same keyframes (action_thr 0 in both), and eval-ava gives the same mAP."""
    from actionkit.cli.test import main as test_main
    from actionkit.evaluation.ava_map import frame_map

    ref = tmp_path / "ref.csv"
    assert test_main([str(synthetic["cfg"]), str(synthetic["ckpt"]), "--out", str(ref),
                      "--cfg-options", "model.test_cfg.rcnn.action_thr=0"]) == 0
    det_rows = []
    for vid in synthetic["info"]["splits"]["val"]["videos"]:
        out_csv = tmp_path / f"{vid}.csv"
        assert _cli(synthetic["videos"] / f"{vid}.mp4", "--config", synthetic["cfg"], "--checkpoint",
                    synthetic["ckpt"], "--person-boxes", synthetic["ann"] / "proposals_val.pkl",
                    "--csv", out_csv, "--out", tmp_path / f"{vid}.mp4") == 0
        det_rows += _rows(out_csv)
    ref_rows = _rows(ref)
    assert len(det_rows) == len(ref_rows) > 0
    assert [r[:2] + [r[6]] for r in det_rows] == [r[:2] + [r[6]] for r in ref_rows]
    a = np.array([[float(v) for v in r[2:6] + r[7:]] for r in det_rows])
    b = np.array([[float(v) for v in r[2:6] + r[7:]] for r in ref_rows])
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    det = tmp_path / "det.csv"
    det.write_text("".join(",".join(r) + "\n" for r in det_rows))
    ann = synthetic["ann"]
    m_det = frame_map(ann / "val.csv", det, ann / "action_list.pbtxt", ann / "val_excluded_timestamps.csv").mAP
    m_ref = frame_map(ann / "val.csv", ref, ann / "action_list.pbtxt", ann / "val_excluded_timestamps.csv").mAP
    assert m_det == pytest.approx(m_ref, abs=1e-12)
    assert "4 keyframes" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ output video

def _box_csv(path: Path, rows: list[tuple]) -> Path:
    path.write_text("frame,x1,y1,x2,y2,score\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def _edge_is_box_color(frame: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    from actionkit.inference.video_writer import BOX_COLOR

    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h))
    top = frame[y1, (x1 + x2) // 2].astype(int)
    left = frame[(y1 + y2) // 2, x1].astype(int)
    return all(np.abs(px - np.array(BOX_COLOR)).max() < 40 for px in (top, left))


def test_output_video_frames_size_fps_and_box(synthetic, tmp_path, capsys):
    """Keyframes 8, 16, ... 64 of a 75-frame video, 2 output frames each at 6 fps; the csv's box is drawn on the
    frames of its keyframe; keyframes without boxes are reported and written with a note."""
    video = synthetic["videos"] / "synval000.mp4"
    box = (0.25, 0.25, 0.75, 0.75)
    boxes = _box_csv(tmp_path / "boxes.csv", [(16, *box, 0.95), (24, *box, 0.5)])
    out = tmp_path / "out.mp4"
    assert _cli(video, "--config", synthetic["cfg"], "--checkpoint", synthetic["ckpt"], "--person-boxes", boxes,
                "--out", out, "--action-score-thr", "1") == 0
    captured = capsys.readouterr()
    assert "no person found at 7 of 8 keyframes" in captured.err and str(video) in captured.err
    frames, fps = _decode(out)
    assert len(frames) == 8 * 2 and fps == pytest.approx(6.0)
    assert frames[0].shape == (120, 160, 3)
    assert _edge_is_box_color(frames[2], box) and _edge_is_box_color(frames[3], box)   # keyframe 16
    assert not _edge_is_box_color(frames[4], box)                                      # keyframe 24: score 0.5 < 0.9
    from actionkit.inference.video_writer import LABEL_COLORS

    note = np.array(LABEL_COLORS[0])    # 'keyframe 8: no person found' on its background, top left
    assert np.abs(frames[0][2, 2].astype(int) - note).max() < 40
    assert np.abs(frames[2][2, 2].astype(int) - note).max() >= 40


@pytest.mark.parametrize("with_detector", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_two_people_end_to_end(with_detector, tmp_path, capsys, monkeypatch):
    """The real 1080p clip (72 frames) runs end to end with a boxes file, and with torchvision's Faster R-CNN at
    random weights (made to call every proposal a person): frame count, size, fps and a drawn box."""
    video = require_shared(TWO_PEOPLE)
    from actionkit.config import load_config
    from actionkit.checkpoint import save_checkpoint
    from actionkit.models.builder import build_model_from_config

    torch.manual_seed(0)
    ckpt = tmp_path / "rand.pth"
    save_checkpoint(ckpt, build_model_from_config(load_config(BASE_CFG)))
    args = ["--config", BASE_CFG, "--checkpoint", ckpt, "--predict-stepsize", "32", "--output-stepsize", "16",
            "--action-score-thr", "1", "--out", tmp_path / "out.mp4", "--csv", tmp_path / "out.csv"]
    if with_detector:
        import torchvision_shim

        if not torchvision_shim.install():
            pytest.skip("torchvision is not installed")
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

        det = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
        with torch.no_grad():
            det.roi_heads.box_predictor.cls_score.weight.zero_()
            det.roi_heads.box_predictor.cls_score.bias.zero_()
            det.roi_heads.box_predictor.cls_score.bias[1] = 10.0   # every proposal is a person
        torch.save(det.state_dict(), tmp_path / "det.pth")
        args += ["--det-checkpoint", tmp_path / "det.pth"]
    else:
        box = (0.1, 0.2, 0.45, 0.9)
        args += ["--person-boxes", _box_csv(tmp_path / "boxes.csv", [(8, *box, 0.99), (40, *box, 0.99)])]
    assert _cli(video, *args) == 0
    frames, fps = _decode(tmp_path / "out.mp4")
    assert len(frames) == 2 * 2 and fps == pytest.approx(6.0)
    assert frames[0].shape == (1080, 1920, 3)
    rows = _rows(tmp_path / "out.csv")
    first = [r for r in rows if r[1] == "8"]
    assert first, "no person box at keyframe 8"
    drawn = (float(first[0][2]), float(first[0][3]), float(first[0][4]), float(first[0][5]))
    if not with_detector:
        assert drawn == pytest.approx(box, abs=1e-3)
    assert _edge_is_box_color(frames[0], drawn) and _edge_is_box_color(frames[1], drawn)


# ------------------------------------------------------------------------------------------------ bad input

def _err(capsys) -> str:
    return capsys.readouterr().err


def _tiny_video(path: Path, n: int, size=(64, 48)) -> Path:
    from actionkit.inference.video_writer import Mp4Writer

    with Mp4Writer(path, 15) as w:
        for i in range(n):
            w.write(np.full((size[1], size[0], 3), i * 8 % 255, np.uint8))
    return path


def test_unreadable_and_empty_video(synthetic, tmp_path, capsys):
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    assert _cli(bad, "--config", synthetic["cfg"], "--checkpoint", synthetic["ckpt"], "--person-boxes",
                synthetic["ann"] / "proposals_val.pkl") == 1
    assert str(bad) in _err(capsys)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert _cli(empty, "--config", synthetic["cfg"], "--checkpoint", synthetic["ckpt"]) == 1
    assert str(empty) in _err(capsys)
    assert _cli(tmp_path / "missing.mp4", "--config", synthetic["cfg"], "--checkpoint", synthetic["ckpt"]) == 1
    assert "missing.mp4: video file not found" in _err(capsys)


def test_video_shorter_than_one_clip_window(synthetic, tmp_path, capsys):
    short = _tiny_video(tmp_path / "short.mp4", 10)
    assert _cli(short, "--config", synthetic["cfg"], "--checkpoint", synthetic["ckpt"], "--person-boxes",
                _box_csv(tmp_path / "b.csv", [])) == 1
    err = _err(capsys)
    assert str(short) in err and "10 frames, shorter than one clip window of 16 frames" in err


@pytest.mark.parametrize("option,value,message", [
    ("--det-score-thr", "1.5", "--det-score-thr must be in [0, 1]"),
    ("--action-score-thr", "-0.1", "--action-score-thr must be in [0, 1]"),
    ("--output-stepsize", "3", "--output-stepsize (3) must divide --predict-stepsize (8)"),
])
def test_bad_options(synthetic, option, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _cli(synthetic["videos"] / "synval000.mp4", "--config", synthetic["cfg"], "--checkpoint",
             synthetic["ckpt"], option, value)
    assert exc.value.code == 2
    assert message in _err(capsys)


def test_boxes_file_of_another_video(synthetic, tmp_path, capsys):
    from actionkit.data.ava_proposals import load_proposals, save_proposals_npz

    props = load_proposals(synthetic["ann"] / "proposals_val.pkl")
    other = tmp_path / "other.npz"
    save_proposals_npz({k: v for k, v in props.items() if k.startswith("synval001,")}, other)
    video = synthetic["videos"] / "synval000.mp4"
    common = ["--config", synthetic["cfg"], "--checkpoint", synthetic["ckpt"], "--out", tmp_path / "o.mp4"]
    assert _cli(video, *common, "--person-boxes", other) == 1
    err = _err(capsys)
    assert str(other) in err and "no person boxes for video 'synval000'" in err and "synval001" in err
    far = tmp_path / "far.npz"
    save_proposals_npz({"synval000,0990": props["synval000,0901"]}, far)
    assert _cli(video, *common, "--person-boxes", far) == 1
    err = _err(capsys)
    assert str(far) in err and "'synval000,0990' is frame 1351" in err and "75 frames" in err
    late = _box_csv(tmp_path / "late.csv", [(16, 0.1, 0.1, 0.5, 0.5, 0.99), (400, 0.1, 0.1, 0.5, 0.5, 0.99)])
    assert _cli(video, *common, "--person-boxes", late) == 1
    err = _err(capsys)
    assert f"{late}:3: frame 400 is past the video's 75 frames" in err
    off = _box_csv(tmp_path / "off.csv", [(17, 0.1, 0.1, 0.5, 0.5, 0.99)])
    assert _cli(video, *common, "--person-boxes", off) == 1
    assert f"{off}:2: frame 17 is not a keyframe" in _err(capsys)
    bad = tmp_path / "bad.csv"
    bad.write_text("16,0.1,0.1,1.5,0.5,0.9\n")
    assert _cli(video, *common, "--person-boxes", bad) == 1
    assert f"{bad}:1: box" in _err(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_proposal_pickle_goes_through_restricted_loader(synthetic, tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"synval000,0901": Evil()}))
    assert _cli(synthetic["videos"] / "synval000.mp4", "--config", synthetic["cfg"], "--checkpoint",
                synthetic["ckpt"], "--person-boxes", evil) == 1
    captured = capsys.readouterr()
    assert "pwned" not in captured.out and str(evil) in captured.err and "refusing" in captured.err


def test_detector_unavailable_error_points_at_person_boxes(monkeypatch):
    import builtins

    from actionkit.inference import person_detector

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(person_detector.PersonDetectorUnavailable) as exc:
        person_detector.TorchvisionPersonDetector(0.9, weights=None)
    msg = str(exc.value)
    assert "torchvision::nms does not exist" in msg and "--person-boxes" in msg and "do not match" in msg


def test_memory_is_bounded_by_the_window(synthetic):
    """The streaming buffer never holds more than one keyframe's frames plus the next ones it shares."""
    from actionkit.config import load_config
    from actionkit.inference import detection as d

    cfg = load_config(synthetic["cfg"])
    n = 600
    pipe = d.KeyframeClipPipeline(cfg, "v", n)
    frames = ((i, np.zeros((2, 2, 3), np.uint8)) for i in range(1, n + 1))
    sizes = []

    class Probe:
        num_classes = 8

        def predict(self, pipeline, kf, buffer, boxes):
            sizes.append(len(buffer))
            return [np.zeros((0, 5), np.float32)] * 7

    class NoBoxes(d.PersonBoxes):
        def boxes(self, kf, frame):
            return np.zeros((0, 5))

    kfs = [d.Keyframe(t, t) for t in d.demo_keyframes(n, pipe.window, 8)]
    results = list(d.detect_video("v", pipe, Probe(), NoBoxes(), kfs, 8, 4, frames=frames))
    assert len(results) == len(kfs) == 74
    assert max(sizes) <= 8 and [f for f, _ in results[1].output_frames] == [14, 18]


# ------------------------------------------------------------------------------------------------ LFB

LFB_CFG = REPO / "configs/detection/synthetic/lfb_avg_slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py"
LT_BASELINE_CFG = REPO / "configs/detection/synthetic/slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py"


def test_lfb_model_on_a_video_equals_dataset_path(tmp_path, capsys):
    """An LFB model on a video: detect infers the video's bank with the baseline, then runs the LFB model; its
    csv equals the dataset path (bank inferred by tools/test.py with the LFBInferHead config that `actionkit
    lfb` builds, then tools/test.py on the LFB config) on the same keyframes, and eval-ava agrees."""
    from actionkit.config import load_config
    from actionkit.synthetic.ava import make_ava
    from actionkit.checkpoint import save_checkpoint
    from actionkit.config import config_to_python
    from actionkit.cli.test import main as test_main
    from actionkit.engine.lfb_workflow import build_infer_config
    from actionkit.evaluation.ava_map import frame_map
    from actionkit.models.builder import build_model_from_config

    info = make_ava(tmp_path / "lt", seed=3, num_train=1, num_val=1, num_keyframes=6, margin_s=1,
                    extra_groups=("relation", "event", "flash"))
    ava = tmp_path / "lt"
    base = _write_config(tmp_path / "base.py", LT_BASELINE_CFG, ava, "proposals_val.npz")
    lfb = tmp_path / "lfb.py"
    lfb.write_text(base.read_text().replace(repr(str(LT_BASELINE_CFG)), repr(str(LFB_CFG)))
                   + f"model = dict(roi_head=dict(shared_head=dict(lfb_cfg=dict(lfb_prefix_path="
                     f"{str(tmp_path / 'bank')!r}, dataset_modes=('val',)))))\n")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "baseline.pth", build_model_from_config(base))
    # the dataset path: the val bank through tools/test.py, then the LFB model through tools/test.py
    icfg = tmp_path / "infer.py"
    icfg.write_text(config_to_python(build_infer_config(load_config(lfb), "val", 64)))
    assert test_main([str(icfg), str(tmp_path / "baseline.pth"), "--out", str(tmp_path / "infer.csv")]) == 0
    assert (tmp_path / "bank" / "lfb_val").is_dir()
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "lfb.pth", build_model_from_config(lfb))
    ref = tmp_path / "ref.csv"
    assert test_main([str(lfb), str(tmp_path / "lfb.pth"), "--out", str(ref),
                      "--cfg-options", "model.test_cfg.rcnn.action_thr=0"]) == 0
    vid = info["splits"]["val"]["videos"][0]
    out_csv = tmp_path / "det.csv"
    common = [ava / "videos" / f"{vid}.mp4", "--config", lfb, "--checkpoint", tmp_path / "lfb.pth",
              "--person-boxes", ava / "annotations" / "proposals_val.npz", "--out", tmp_path / "det.mp4"]
    assert _cli(*common, "--csv", out_csv) == 1
    assert "--lfb-baseline" in capsys.readouterr().err
    assert _cli(*common, "--csv", out_csv, "--lfb-baseline", tmp_path / "baseline.pth") == 0
    det_rows, ref_rows = _rows(out_csv), _rows(ref)
    assert len(det_rows) == len(ref_rows) > 0
    assert [r[:2] + [r[6]] for r in det_rows] == [r[:2] + [r[6]] for r in ref_rows]
    np.testing.assert_allclose(np.array([[float(v) for v in r[2:6] + r[7:]] for r in det_rows]),
                               np.array([[float(v) for v in r[2:6] + r[7:]] for r in ref_rows]), atol=1e-5, rtol=0)
    ann = ava / "annotations"
    m = [frame_map(ann / "val.csv", f, ann / "action_list.pbtxt", ann / "val_excluded_timestamps.csv").mAP
         for f in (out_csv, ref)]
    assert m[0] == pytest.approx(m[1], abs=1e-12)
    # a non-LFB config refuses --lfb-baseline
    assert _cli(*[str(c) for c in common[:1]], "--config", base, "--checkpoint", tmp_path / "baseline.pth",
                "--person-boxes", ann / "proposals_val.npz", "--lfb-baseline", tmp_path / "baseline.pth") == 1
    assert "is not an LFB config" in capsys.readouterr().err


def test_scores_per_box_and_top_labels():
    from actionkit.inference.detection import action_score_matrix, top_labels

    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.9], [0.0, 0.3, 0.4, 0.7]], np.float32)
    per_class = [np.concatenate([boxes, np.array([[0.9], [0.2], [0.6]], np.float32)], 1),
                 np.concatenate([boxes[[0, 2]], np.array([[0.7], [0.8]], np.float32)], 1),   # box 1 scored 0
                 np.concatenate([boxes, np.array([[0.3], [0.55], [0.95]], np.float32)], 1)]
    scores = action_score_matrix(per_class, 3)
    np.testing.assert_allclose(scores, [[0.9, 0.7, 0.3], [0.2, 0.0, 0.55], [0.6, 0.8, 0.95]])
    labels = top_labels(scores, [1, 4, 7], 0.5, max_labels=2)
    assert labels == [[(1, pytest.approx(0.9)), (4, pytest.approx(0.7))], [(7, pytest.approx(0.55))],
                      [(7, pytest.approx(0.95)), (4, pytest.approx(0.8))]]


def test_config_without_ava_val_pipeline_is_refused(synthetic):
    from actionkit.config import load_config
    from actionkit.inference.detection import KeyframeClipPipeline
    from actionkit.registry import ConfigError

    cfg = load_config(REPO / "configs/recognition/i3d/i3d_r50_32x2x1_100e_kinetics400_rgb.py")
    with pytest.raises(ConfigError, match="data.val.pipeline"):
        KeyframeClipPipeline(cfg, "v", 100)


def test_offline_coco_weights_error_names_url_and_path(monkeypatch, tmp_path):
    """Without network the first use fails at once with the URL and the exact path a hand download goes to."""
    import urllib.error

    import torchvision_shim

    if not torchvision_shim.install():
        pytest.skip("torchvision is not installed")
    import torchvision.models._api as tv_api

    from actionkit.inference.person_detector import PersonDetectorUnavailable, TorchvisionPersonDetector

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(PersonDetectorUnavailable) as exc:
        TorchvisionPersonDetector(0.9)
    msg = str(exc.value)
    assert "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth") in msg
    assert "--person-boxes" in msg
