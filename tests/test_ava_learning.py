"""End-to-end AVA detection on the synthetic data (actionkit.data.synthetic_ava).

1. Learning: a tiny SlowOnly detector trained through ``train_main`` on ``make_ava`` data reaches a frame mAP far
   above what the same model reaches without temporal input (the control sees only the keyframe, ``clip_len=1``);
   the motion classes of the control stay near chance.
2. ``tools/test.py CONFIG CKPT --eval mAP --out results.csv`` runs for the AVA configs of configs/detection/ava
   (SlowOnly, SlowFast, context, temporal-max, focal, custom classes), shrunk for a CPU with ``--cfg-options``,
   on an initialised checkpoint; ``results.csv`` rows are well-formed.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actionkit.config import load_config
from actionkit.data.synthetic_ava import CLASSES, make_ava
from actionkit.engine.checkpoint import save_checkpoint
from actionkit.engine.entry import build_model, config_to_python, test_main, train_main
from actionkit.evaluation.ava_map import frame_map

REPO = Path(__file__).resolve().parents[1]
AVA_CONFIGS = REPO / "configs" / "detection" / "ava"
DEMO_CONFIG = REPO / "configs" / "detection" / "synthetic" / "slowonly_r50_tiny_8x2x1_synthetic_ava_rgb.py"


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

# The tiny detector: ResNet3dSlowOnly depth 18, 8 base channels, output stride 8, 80x60 input, 8 frames.
TINY_CLIP = dict(clip_len=8, frame_interval=2)


def _tiny_options(clip_len: int, frame_interval: int, epochs: int) -> dict:
    return {
        "model.backbone.depth": 18,
        "model.backbone.base_channels": 8,
        "model.backbone.spatial_strides": (1, 2, 1, 1),
        "model.roi_head.bbox_head.in_channels": 64,
        "data.train.pipeline.0": dict(type="SampleAVAFrames", clip_len=clip_len, frame_interval=frame_interval),
        "data.train.pipeline.2": dict(type="Resize", scale=(-1, 60)),
        "data.train.pipeline.3": dict(type="Flip", flip_ratio=0.0),
        "data.val.pipeline.0": dict(type="SampleAVAFrames", clip_len=clip_len, frame_interval=frame_interval,
                                    test_mode=True),
        "data.val.pipeline.2": dict(type="Resize", scale=(-1, 60)),
        "data.workers_per_gpu": 0,
        "total_epochs": epochs,
        "checkpoint_config.interval": epochs,
        "evaluation.interval": 1000,
        "log_config.interval": 1000,
    }
