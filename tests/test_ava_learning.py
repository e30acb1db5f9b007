"""End-to-end AVA detection on the synthetic data (actionkit.synthetic.ava).

1. Learning: a tiny SlowOnly detector trained through ``train_main`` on ``make_ava`` data (the five motion classes,
   ``custom_classes``) reaches a frame AP on 'walk left' / 'walk right' far above what the same model reaches
   without temporal input (the control sees only the keyframe, ``clip_len=1``), which stays near chance.
2. ``tools/test.py CONFIG CKPT --eval mAP --out results.csv`` runs for the AVA configs of configs/detection/ava
   (SlowOnly, SlowFast, context, temporal-max, focal, custom classes), shrunk for a CPU with ``--cfg-options``,
   on an initialised checkpoint; ``results.csv`` rows are well-formed.
"""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actionkit.config import load_config
from actionkit.synthetic.ava import CLASSES, make_ava
from actionkit.checkpoint import save_checkpoint
from actionkit.config import config_to_python
from actionkit.cli.test import main as test_main
from actionkit.cli.train import main as train_main
from actionkit.models.builder import build_model
from actionkit.evaluation.ava_map import frame_map

REPO = Path(__file__).resolve().parents[1]
AVA_CONFIGS = REPO / "configs" / "detection" / "ava"
DEMO_CONFIG = REPO / "configs" / "detection" / "synthetic" / "slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py"


def _data_options(data_dir: Path, info: dict, splits=(("train", "train"), ("val", "val"), ("test", "val")),
                  npz: bool = True) -> dict:
    """--cfg-options pointing the data entries of a config at a ``make_ava`` folder."""
    opts: dict = {}
    for key, split in splits:
        s = info["splits"][split]
        opts[f"data.{key}.ann_file"] = str(data_dir / s["ann_file"])
        opts[f"data.{key}.exclude_file"] = str(data_dir / s["exclude_file"])
        opts[f"data.{key}.proposal_file"] = str(data_dir / s["proposal_file_npz" if npz else "proposal_file"])
        opts[f"data.{key}.label_file"] = str(data_dir / info["label_file"])
        opts[f"data.{key}.data_prefix"] = str(data_dir / info["rawframes_dir"])
        for k in ("fps", "timestamp_start", "timestamp_end"):
            opts[f"data.{key}.{k}"] = info["dataset_args"][k]
    return opts


# ------------------------------------------------------------------------------------------------ 1. learning

# The demo detector (configs/detection/synthetic/slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py) cut to its first three
# stages (ResNet3dSlowOnly depth 18, 8 base channels, 32 output channels at stride 8: 2.2x cheaper), trained on the
# five motion classes only (custom_classes: every actor has exactly one, so every GT box is a positive).
# Data: one keyframe per video and one actor on 160x64 frames (wide enough for actors to walk; every sample a new
# actor and background: with 32 videos of 6 keyframes the model memorised them and, depending on the seed, did not
# generalise), batches of 4 (more updates for the same compute).
LEARN_DATA = dict(num_train=192, num_val=160, num_keyframes=1, margin_s=1, width=160, height=64, actors=(1, 1),
                  write_videos=False)
LEARN_CLIP = (4, 4)          # clip_len, frame_interval of the temporal model (the control: 1, 1)
LEARN_EPOCHS = 8
LEARN_MODEL = {
    "model.backbone.num_stages": 3,
    "model.backbone.out_indices": (2,),
    "model.backbone.spatial_strides": (1, 2, 1),
    "model.backbone.temporal_strides": (1, 1, 1),
    "model.backbone.dilations": (1, 1, 1),
    "model.backbone.non_local": (0, 0, 0),
    "model.backbone.inflate": (1, 1, 1),
    "model.roi_head.bbox_head.in_channels": 32,
    "data.videos_per_gpu": 4,
}


def _tiny_options(clip_len: int, frame_interval: int, epochs: int) -> dict:
    return {
        "data.train.pipeline.0": dict(type="SampleAVAFrames", clip_len=clip_len, frame_interval=frame_interval),
        "data.train.pipeline.2": dict(type="Resize", scale=(-1, LEARN_DATA["height"])),
        "data.val.pipeline.0": dict(type="SampleAVAFrames", clip_len=clip_len, frame_interval=frame_interval,
                                    test_mode=True),
        "data.val.pipeline.2": dict(type="Resize", scale=(-1, LEARN_DATA["height"])),
        "data.workers_per_gpu": 0,
        "total_epochs": epochs,
        "checkpoint_config.interval": epochs,
        "evaluation.interval": 1000,
        "log_config.interval": 1000,
    }


def _train_and_test(tmp_path: Path, data_dir: Path, info: dict, name: str, clip_len: int, frame_interval: int,
                    epochs: int, custom_classes: list[int] | None = None, model_options: dict | None = None):
    """Train the tiny detector through train_main and test it through test_main; return the frame mAP result
    (over ``custom_classes`` when given)."""
    opts = {**_data_options(data_dir, info), **_tiny_options(clip_len, frame_interval, epochs), **(model_options or {})}
    num_classes = info["num_classes"] if custom_classes is None else len(custom_classes) + 1
    opts["model.roi_head.bbox_head.num_classes"] = num_classes
    for split in ("train", "val"):
        opts[f"data.{split}.num_classes"] = num_classes
        if custom_classes is not None:
            opts[f"data.{split}.custom_classes"] = list(custom_classes)
    cfg = load_config(DEMO_CONFIG, opts)
    cfg.data.test = cfg.data.val
    work = tmp_path / name
    work.mkdir()
    cfg_path = work / "config.py"
    cfg_path.write_text(config_to_python(cfg))
    assert train_main([str(cfg_path), "--work-dir", str(work), "--seed", "0", "--deterministic"]) in (0, None)
    out = work / "results.csv"
    assert test_main([str(cfg_path), str(work / f"epoch_{epochs}.pth"), "--out", str(out)]) in (0, None)
    return frame_map(cfg.data.val.ann_file, out, cfg.data.val.label_file, cfg.data.val.exclude_file,
                     custom_classes=custom_classes)


# ------------------------------------------------------------------------------------------------ 2. tools/test.py

# name -> (config file, CPU-sized model overrides, RoI feature channels)
_SLOWONLY = {"model.backbone.base_channels": 4}                       # ResNet3dSlowOnly r50: 32 * 4 = 128
_SLOWFAST = {"model.backbone.slow_pathway.base_channels": 8,          # slow 32 * 8 = 256 + fast 32 * 1 = 32
             "model.backbone.fast_pathway.base_channels": 1}
AVA_TEST_CASES = {
    "slowonly": ("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb.py", _SLOWONLY, 128),
    "slowonly_custom_classes": ("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes.py",
                                _SLOWONLY, 128),
    "slowfast": ("slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb.py", _SLOWFAST, 288),
    "slowfast_context": ("slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb.py", _SLOWFAST, 2 * 288),
    "slowfast_custom_classes": ("slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes.py",
                                _SLOWFAST, 288),
    "slowfast_temporal_max": ("slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb.py",
                              _SLOWFAST, 288),
    "slowfast_temporal_max_focal": (
        "slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb.py",
        _SLOWFAST, 288),
}
CUSTOM_CLASSES = [1, 3, 4, 6, 7]      # ids of the synthetic label map (5 classes: topk=(3, 5) stays valid)


@pytest.fixture(scope="module")
def small_ava(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_ava")
    info = make_ava(out, seed=3, num_train=1, num_val=1, num_keyframes=3, write_videos=False)
    return out, info


def _test_options(name: str, data_dir: Path, info: dict) -> dict:
    cfg_file, model_opts, in_channels = AVA_TEST_CASES[name]
    opts = dict(model_opts)
    opts["model.roi_head.bbox_head.in_channels"] = in_channels
    opts.update(_data_options(data_dir, info, splits=(("test", "val"),), npz=False))   # the published .pkl form
    opts["data.test.pipeline.2.scale"] = (-1, 64)                      # Resize: short side 64 instead of 256
    opts["data.workers_per_gpu"] = 0
    opts["data.test_dataloader.videos_per_gpu"] = 2
    if "custom_classes" in name:
        opts["data.test.custom_classes"] = CUSTOM_CLASSES
        opts["data.test.num_classes"] = len(CUSTOM_CLASSES) + 1
        opts["model.roi_head.bbox_head.num_classes"] = len(CUSTOM_CLASSES) + 1
    else:
        opts["data.test.num_classes"] = info["num_classes"]
        opts["model.roi_head.bbox_head.num_classes"] = info["num_classes"]
    return opts


def _check_results_csv(path: Path, info: dict, allowed_ids: set[int]) -> int:
    val = info["splits"]["val"]
    keys = {f"{v},{ts:04d}" for v in val["videos"] for ts in info["keyframes"]}
    rows = list(csv.reader(path.open(newline="")))
    assert rows, f"{path} is empty"
    for i, row in enumerate(rows, 1):
        assert len(row) == 8, f"{path}:{i}: {row}"
        assert row[1].isdigit() and f"{row[0]},{int(row[1]):04d}" in keys, f"{path}:{i}: unknown keyframe {row[:2]}"
        x1, y1, x2, y2, score = (float(row[j]) for j in (2, 3, 4, 5, 7))
        assert all(len(row[j].split(".")[-1]) == 3 for j in (2, 3, 4, 5, 7)), f"{path}:{i}: {row}"
        assert 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0, f"{path}:{i}: bad box {row}"
        assert 0.0 <= score <= 1.0 and math.isfinite(score), f"{path}:{i}: bad score {row}"
        assert int(row[6]) in allowed_ids, f"{path}:{i}: action {row[6]} not in {sorted(allowed_ids)}"
    return len(rows)


def _run_tools_test(name: str, small_ava, tmp_path: Path, subprocess_cli: bool = False) -> None:
    data_dir, info = small_ava
    cfg_file = AVA_CONFIGS / AVA_TEST_CASES[name][0]
    opts = _test_options(name, data_dir, info)
    cfg = load_config(cfg_file, opts)
    torch.manual_seed(0)
    model = build_model(cfg)                   # the config's init (no pretrained weights on a CPU test)
    ckpt = tmp_path / "init.pth"
    save_checkpoint(ckpt, model, meta=dict(epoch=0, iter=0))
    out = tmp_path / "results.csv"
    argv = [str(cfg_file), str(ckpt), "--eval", "mAP", "--out", str(out),
            "--cfg-options", *(f"{k}={v!r}" for k, v in opts.items())]
    if subprocess_cli:
        proc = subprocess.run([sys.executable, str(REPO / "tools" / "test.py"), *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "mAP@0.5IOU:" in proc.stdout, proc.stdout[-3000:]
    else:
        assert test_main(argv) in (0, None)
    allowed = set(CUSTOM_CLASSES) if "custom_classes" in name else {c.id for c in CLASSES}
    n = _check_results_csv(out, info, allowed)
    # every class of the model's output appears (action_thr is tiny), every valid keyframe has rows
    assert {int(r[6]) for r in csv.reader(out.open())} == allowed
    assert n >= len(allowed)


def test_tools_test_cli_slowonly(small_ava, tmp_path):
    """The real command line: ``python tools/test.py CONFIG CKPT --eval mAP --out results.csv --cfg-options ...``."""
    _run_tools_test("slowonly", small_ava, tmp_path, subprocess_cli=True)


@pytest.mark.parametrize("name", list(AVA_TEST_CASES))
def test_tools_test_ava_configs(name, small_ava, tmp_path):
    """Each AVA config (shrunk; about 1 s each on a CPU) tests an initialised checkpoint through test_main."""
    _run_tools_test(name, small_ava, tmp_path)


MOTION_IDS = [c.id for c in CLASSES if c.needs_motion]
MOTION_GROUP = [c.id for c in CLASSES if c.group == "motion"]      # stand still, walk left/right, bounce, spin
WALK_IDS = [c.id for c in CLASSES if c.name in ("walk left", "walk right")]
# thresholds of test_tiny_detector_learns (measurements in its docstring)
LEARN_MIN_WALK_AP, LEARN_CONTROL_MAX_WALK_AP, LEARN_MIN_WALK_GAP = 0.7, 0.4, 0.4
LEARN_MIN_MOTION_MAP, LEARN_MIN_MOTION_MAP_GAP = 0.5, 0.2


@pytest.fixture(scope="module")
def learning_ava(tmp_path_factory):
    out = tmp_path_factory.mktemp("learning_ava")
    info = make_ava(out, seed=0, **LEARN_DATA)
    return out, info


def _motion_ap(res) -> float:
    return sum(res.per_class[c] for c in MOTION_IDS) / len(MOTION_IDS)


def _walk_ap(res) -> float:
    return sum(res.per_class[c] for c in WALK_IDS) / len(WALK_IDS)


def _summary(name: str, res) -> str:
    return f"{name}: mAP {res.mAP:.3f}, motion classes {_motion_ap(res):.3f}, per class " + ", ".join(
        f"{res.names[c]} {ap:.2f}" for c, ap in res.per_class.items())


def _walk_summary(name: str, res) -> str:
    return f"{name}: walk left/right AP {_walk_ap(res):.3f}, mAP (motion classes) {res.mAP:.3f}, per class " + \
        ", ".join(f"{res.names[c]} {ap:.2f} (gt {res.num_gt.get(c, 0)})" for c, ap in res.per_class.items())


def test_tiny_detector_learns(learning_ava, tmp_path):
    """The tiny detector (make_ava -> train_main -> test_main) learns the direction of walking, which one frame
    cannot show: trained on the five motion classes (custom_classes), 4 frames at stride 4 against the same
    model, data, seed and schedule on the keyframe alone (clip_len=1).

    Measured (seed 0, 1 torch thread on a loaded 2-core machine; 8 epochs of 48 iterations, training ~22 s with
    4 frames and ~10 s with one; the whole test ~35 s): 4 frames: walk left/right AP 0.91 (0.88 / 0.94), mAP over
    the motion classes 0.63; keyframe only: walk left/right 0.25 (0.20 / 0.30; chance, their frequency, is
    0.18 / 0.21), mAP 0.29. Other seeds of the same setting (data seed, training seed) = (1, 0): 4 frames walk
    0.93, mAP 0.68; (2, 1): 4 frames walk 0.84, mAP 0.65, keyframe only walk 0.20, mAP 0.27.
    Thresholds: 4 frames >= 0.7 on walking, the control <= 0.4 and a gap >= 0.4; motion mAP >= 0.5 and 0.2 above
    the control. A detector whose boxes, frames or labels do not line up fails the walk check.
    """
    data_dir, info = learning_ava
    kw = dict(custom_classes=MOTION_GROUP, model_options=LEARN_MODEL)
    temporal = _train_and_test(tmp_path, data_dir, info, "temporal", LEARN_CLIP[0], LEARN_CLIP[1], LEARN_EPOCHS,
                               **kw)
    control = _train_and_test(tmp_path, data_dir, info, "keyframe_only", 1, 1, LEARN_EPOCHS, **kw)
    msg = _walk_summary("4 frames", temporal) + "; " + _walk_summary("keyframe only", control)
    print(msg)
    assert _walk_ap(temporal) >= LEARN_MIN_WALK_AP, msg
    assert _walk_ap(control) <= LEARN_CONTROL_MAX_WALK_AP, msg
    assert _walk_ap(temporal) - _walk_ap(control) >= LEARN_MIN_WALK_GAP, msg
    assert temporal.mAP >= LEARN_MIN_MOTION_MAP, msg
    assert temporal.mAP - control.mAP >= LEARN_MIN_MOTION_MAP_GAP, msg


DEMO_MIN_MAP, DEMO_MIN_MOTION_AP = 0.7, 0.65
CONTROL_MAX_MOTION_AP, MIN_MOTION_GAP = 0.4, 0.3


@pytest.mark.slow
def test_demo_detector_beats_keyframe_only(tmp_path):
    """The demo setting (``actionkit demo``: DEMO_DATA + the demo config, 20 epochs) against the same detector
    trained and tested on the keyframe alone (clip_len=1).

    Measured (seed 0, 1 thread on 2 cores, through ``actionkit demo``): 4 frames mAP 0.845 (motion classes 0.83;
    training ~10 min); keyframe only mAP 0.353 (motion classes 0.26, carry 0.90 as with 4 frames; ~4 min).
    Thresholds leave a margin on both sides.
    """
    from actionkit.demo import DEMO_DATA, demo_config

    data_dir = tmp_path / "data"
    make_ava(data_dir, seed=0, **DEMO_DATA)
    results = {}
    for name, clip in (("temporal", (4, 4)), ("keyframe_only", (1, 1))):
        cfg, _ = demo_config(data_dir)
        cfg.data.train.pipeline[0] = dict(type="SampleAVAFrames", clip_len=clip[0], frame_interval=clip[1])
        cfg.data.val.pipeline[0] = dict(type="SampleAVAFrames", clip_len=clip[0], frame_interval=clip[1],
                                        test_mode=True)
        cfg.data.test = cfg.data.val
        cfg.evaluation.interval = 1000
        work = tmp_path / name
        work.mkdir()
        (work / "config.py").write_text(config_to_python(cfg))
        assert train_main([str(work / "config.py"), "--work-dir", str(work), "--seed", "0", "--deterministic"]) in (
            0, None)
        out = work / "results.csv"
        assert test_main([str(work / "config.py"), str(work / f"epoch_{cfg.total_epochs}.pth"), "--out",
                          str(out)]) in (0, None)
        results[name] = frame_map(cfg.data.val.ann_file, out, cfg.data.val.label_file, cfg.data.val.exclude_file)
    temporal, control = results["temporal"], results["keyframe_only"]
    msg = _summary("4 frames", temporal) + "; " + _summary("keyframe only", control)
    print(msg)
    assert temporal.mAP >= DEMO_MIN_MAP, msg
    assert _motion_ap(temporal) >= DEMO_MIN_MOTION_AP, msg
    assert _motion_ap(control) <= CONTROL_MAX_MOTION_AP, msg
    assert _motion_ap(temporal) - _motion_ap(control) >= MIN_MOTION_GAP, msg
