"""``actionkit lfb``: bank inference -> LFB training -> test, with skip / resume of valid outputs.

Runs on tiny synthetic AVA data (with the 'event' / 'relation' groups) in ``tmp_path``; the synthetic configs
use relative data paths, so every test works from inside ``tmp_path``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from actionkit.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]
SYN = REPO / "configs" / "detection" / "synthetic"
BASELINE_CFG = SYN / "slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py"
LFB_NL_CFG = SYN / "lfb_nl_slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py"
LT_CFGS = sorted(SYN.glob("*synthetic_ava_lt*.py"))
BANK_DIR = Path("data/synthetic_ava_lt/lfb")



@pytest.fixture
def tiny_lt(tmp_path, monkeypatch, one_thread):
    """cwd = tmp_path holding tiny synthetic data (2 train / 1 val videos of 12 keyframes) and a baseline ckpt."""
    from actionkit.config import load_config
    from actionkit.synthetic.ava import make_ava
    from actionkit.checkpoint import save_checkpoint
    from actionkit.models.builder import build_model

    monkeypatch.chdir(tmp_path)
    make_ava("data/synthetic_ava_lt", seed=3, num_train=2, num_val=1, num_keyframes=12, write_videos=False,
             extra_groups=("relation", "event", "flash"))
    torch.manual_seed(0)
    # an untrained baseline is enough to exercise the machinery (the proof trains a real one)
    save_checkpoint(tmp_path / "baseline.pth", build_model(load_config(BASELINE_CFG)))
    return tmp_path


def _mtimes(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


TINY_OPTS = ["--cfg-options", "total_epochs=2", "checkpoint_config.interval=1", "evaluation.interval=2",
             "log_config.interval=1", "data.workers_per_gpu=0"]


def test_lt_configs_build():
    """Every long-term synthetic config loads and builds (LFB heads need no bank to be *configured*)."""
    from actionkit.config import load_config
    from actionkit.engine.lfb_workflow import build_infer_config

    assert len(LT_CFGS) == 6, LT_CFGS
    for path in LT_CFGS:
        cfg = load_config(path)
        assert cfg.model.backbone.base_channels == 8, path
        assert cfg.model.roi_head.bbox_head.num_classes == 12, path
        shared = cfg.model.roi_head.get("shared_head") or {}
        if shared.get("type") == "FBOHead":
            lfb = shared["lfb_cfg"]
            # the event offsets are 5-25 s: the window [t - W//2, t - W//2 + W) must cover t-25 .. t+25
            w = lfb["window_size"]
            assert -(w // 2) <= -25 and w - w // 2 - 1 >= 25, path
            if shared["fbo_cfg"]["type"] == "non_local":
                assert shared["fbo_cfg"]["num_lt_feat"] == w * lfb["max_num_sampled_feat"]
            icfg = build_infer_config(cfg, "train", 64)
            assert icfg.model.roi_head.shared_head == {
                "type": "LFBInferHead", "lfb_prefix_path": lfb["lfb_prefix_path"], "dataset_mode": "train",
                "use_half_precision": True}
            assert icfg.model.roi_head.bbox_head.in_channels == 64
            assert icfg.data.test.ann_file == cfg.data.train.ann_file
            assert icfg.data.test.proposal_file == cfg.data.train.proposal_file
            assert icfg.data.test.exclude_file == cfg.data.train.exclude_file
            assert icfg.data.test.pipeline == cfg.data.val.pipeline      # test pipeline, test mode
            assert icfg.data.test.test_mode is True
            assert cfg.data.train.get("test_mode") is None                # the LFB config is untouched


def test_flash_group_adds_only_its_class(tmp_path):
    """'flash' adds class 11 where the flash is visible at the keyframe and leaves the other labels unchanged."""
    from actionkit.synthetic.ava import make_ava

    kw = dict(seed=5, num_train=2, num_val=1, num_keyframes=40, write_videos=False)
    a = make_ava(tmp_path / "a", extra_groups=("relation", "event"), **kw)
    b = make_ava(tmp_path / "b", extra_groups=("relation", "event", "flash"), **kw)
    assert a["num_classes"] == 11 and b["num_classes"] == 12 and "flash" in b["class_groups"]
    rows_a = (tmp_path / "a/annotations/train.csv").read_text().split()
    rows_b = (tmp_path / "b/annotations/train.csv").read_text().split()
    flash_rows = [r for r in rows_b if r.split(",")[6] == "11"]
    assert flash_rows and [r for r in rows_b if r.split(",")[6] != "11"] == rows_a
    assert (tmp_path / "a/rawframes/syntrain000/img_00100.jpg").read_bytes() == \
        (tmp_path / "b/rawframes/syntrain000/img_00100.jpg").read_bytes()


def test_workflow_refuses_non_lfb_config(tmp_path):
    from actionkit.cli.lfb import main

    with pytest.raises(ConfigError, match="model.roi_head.shared_head.type"):
        main([str(BASELINE_CFG), "--baseline", str(tmp_path / "none.pth"), "--work-dir", str(tmp_path / "w")])


def test_workflow_end_to_end_skip_and_resume(tiny_lt, capsys):
    """banks -> train -> test; rerun after simulated interruptions recomputes only what is missing/invalid."""
    from actionkit.cli import main as cli_main
    from actionkit.checkpoint import copy_checkpoint
    from actionkit.data.feature_bank import FeatureBank

    argv = ["lfb", str(LFB_NL_CFG), "--baseline", "baseline.pth", "--work-dir", "wd", "--seed", "0", *TINY_OPTS]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "bank train: inferring" in out and "bank val: inferring" in out
    assert "train: 2 epochs into wd" in out and "test: done" in out
    wd = Path("wd")
    for mode, n_videos in (("train", 2), ("val", 1)):
        bank = FeatureBank.open(BANK_DIR / f"lfb_{mode}", lfb_channels=64)
        assert len(bank) == n_videos and bank.num_seconds == 12 * n_videos
        assert (wd / f"lfb_infer_{mode}.py").is_file()
    assert (wd / "epoch_2.pth").is_file() and (wd / "results.csv").stat().st_size > 0
    banks0 = _mtimes(BANK_DIR)
    ep1 = (wd / "epoch_1.pth").stat().st_mtime_ns

    # 1. everything valid: nothing is recomputed
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "bank train:" in out and "is valid" in out and "- skipped" in out
    assert "train: final checkpoint" in out and "test: wd/results.csv exists - skipped" in out
    assert "ran nothing" in out
    assert _mtimes(BANK_DIR) == banks0

    # 2. interrupted during epoch 2 (latest.pth = end of epoch 1, no epoch_2.pth, no results): resume
    (wd / "epoch_2.pth").unlink()
    (wd / "results.csv").unlink()
    copy_checkpoint(wd / "epoch_1.pth", wd / "latest.pth")
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "resuming from wd/latest.pth" in out, out
    assert "bank train: inferring" not in out and "bank val: inferring" not in out
    assert _mtimes(BANK_DIR) == banks0                      # banks not recomputed
    assert (wd / "epoch_1.pth").stat().st_mtime_ns == ep1   # epoch 1 not retrained
    ck = torch.load(wd / "epoch_2.pth", map_location="cpu", weights_only=False)
    assert ck["meta"]["epoch"] == 2
    assert (wd / "results.csv").is_file()

    # 3. interrupted after the last latest.pth but before epoch_2.pth: copied, not retrained
    (wd / "epoch_2.pth").unlink()
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "already holds the final epoch" in out and "ran ['train']" in out
    assert (wd / "epoch_2.pth").is_file()

    # 4. a corrupt val bank (truncated features) is recomputed; the train bank is kept
    feats = BANK_DIR / "lfb_val" / "features.npy"
    with open(feats, "r+b") as f:
        f.truncate(feats.stat().st_size - 64)
    (wd / "results.csv").unlink()
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "bank val: " in out and "recomputing" in out
    assert "bank train: inferring" not in out
    banks1 = _mtimes(BANK_DIR)
    assert {k: v for k, v in banks1.items() if k.startswith("lfb_train")} == \
        {k: v for k, v in banks0.items() if k.startswith("lfb_train")}
    FeatureBank.open(BANK_DIR / "lfb_val", lfb_channels=64)
    assert "ran ['bank_val', 'test']" in out


def test_workflow_needs_baseline_only_for_missing_banks(tiny_lt, capsys):
    from actionkit.cli.lfb import main

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        main([str(LFB_NL_CFG), "--baseline", "missing.pth", "--work-dir", "wd", *TINY_OPTS])


@pytest.mark.slow
def test_lfb_acrn_proof_small(tmp_path, one_thread):
    """A smaller run of benchmarks/lfb_acrn_proof.py (baseline, control, bank, LFB-NL, ACRN): every group is
    evaluated and the table is written. (The LFB-vs-baseline margin is measured by the full script and recorded
    in BENCHMARKS.md; at this size it is too noisy to assert.)"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lfb_acrn_proof", REPO / "benchmarks" / "lfb_acrn_proof.py")
    proof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(proof)
    cwd = os.getcwd()
    try:
        assert proof.main(["--root", str(tmp_path / "proof"), "--num-train", "4", "--num-val", "2",
                           "--num-keyframes", "40", "--epochs", "2", "--lfb-epochs", "1",
                           "--models", "ft", "nl", "acrn"]) == 0
    finally:
        os.chdir(cwd)
    res = json.loads((tmp_path / "proof" / "proof.json").read_text())
    assert set(res["table"]) == {"baseline (SlowOnly)", "baseline-ft (control)", "LFB-NL", "ACRN"}
    for row in res["table"].values():
        for group in ("event", "relation", "motion", "all"):
            assert not math.isnan(row[group]), res["table"]
