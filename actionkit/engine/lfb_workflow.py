"""``actionkit lfb CONFIG --baseline CKPT``: the whole Long-Term Feature Bank workflow, resumable.

MMAction2 0.x trains an LFB model in three manual steps; this command runs them in order:

1. **banks**: for every mode of ``lfb_cfg.dataset_modes`` (``train``, ``val``) infer the feature bank
   ``{lfb_prefix_path}/lfb_{mode}`` with the baseline checkpoint.  The inference config is built from the LFB
   config (MMAction2's ``lfb_slowonly_r50_ava_infer.py``): the same model and data settings, the shared head
   replaced by ``LFBInferHead(lfb_prefix_path, dataset_mode=mode)``, the bbox head ``in_channels`` of the
   baseline (read from the checkpoint), ``data.test`` = the mode's annotation / exclusion / proposal files with
   the test pipeline, in test mode.  The resolved config is written to ``WORK_DIR/lfb_infer_{mode}.py`` and that
   file is tested (:func:`actionkit.engine.run.test`, as ``tools/test.py``), which writes the bank after
   inference.
2. **train** the LFB model (:func:`actionkit.engine.run.train` with ``validate=True``, as
   ``tools/train.py CONFIG --validate``) into ``WORK_DIR``.
3. **test** its final checkpoint (as ``tools/test.py CONFIG WORK_DIR/epoch_N.pth --eval mAP --out
   WORK_DIR/results.csv``).

Every step whose output exists and is valid is skipped: a bank directory that opens with
:class:`~actionkit.data.feature_bank.FeatureBank` validation (meta, shapes, dtypes, index bounds, channel count), a
final checkpoint that loads, a results csv that exists.  An interrupted run therefore resumes where it stopped;
interrupted training resumes from ``WORK_DIR/latest.pth`` (exact resume).  Banks and checkpoints are written
atomically, so a half-written output is never taken for a finished one.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Sequence

from ..config import Config, config_to_python, load_config
from ..registry import ConfigError
from ..utils import atomic_save_text

__all__ = ["run_lfb_workflow", "build_infer_config", "bank_status", "checkpoint_status"]

_LOG_PREFIX = "[actionkit lfb]"


def _say(msg: str) -> None:
    print(f"{_LOG_PREFIX} {msg}", flush=True)


# --------------------------------------------------------------------------------------------- checks
def bank_status(path: str | Path, channels: int | None = None) -> tuple[bool, str]:
    """``(valid, description)`` of a bank directory (opened with full validation, memory-mapped)."""
    from ..data.feature_bank import FeatureBank, FeatureBankError

    path = Path(path)
    if not path.exists():
        return False, f"{path}: missing"
    try:
        bank = FeatureBank.open(path, lfb_channels=channels)
    except (FeatureBankError, OSError, ValueError) as e:
        return False, f"invalid ({e})"
    return True, (f"{bank.num_features} features x {bank.channels} channels ({bank.dtype}), {len(bank)} videos, "
                  f"{bank.num_seconds} seconds")


def checkpoint_status(path: str | Path) -> tuple[bool, str]:
    """``(valid, description)``: the file exists and its state dict loads (``weights_only=True``)."""
    from ..checkpoint import extract_state_dict, safe_load

    path = Path(path)
    if not path.is_file():
        return False, f"{path}: missing"
    try:
        ckpt = safe_load(path, map_location="cpu")
        sd = extract_state_dict(ckpt, path)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is "not valid": recompute it
        return False, f"{path}: unreadable ({type(e).__name__}: {e})"
    if not sd:
        return False, f"{path}: empty state dict"
    epoch = (ckpt.get("meta") or {}).get("epoch") if isinstance(ckpt, dict) else None
    return True, f"{path} ({len(sd)} tensors, epoch {epoch})"


def _finished_epochs(path: str | Path) -> int:
    """Complete epochs recorded in a checkpoint's meta (0 when mid-epoch or unknown)."""
    from ..checkpoint import safe_load

    meta = (safe_load(path, map_location="cpu") or {}).get("meta") or {}
    if int(meta.get("inner_iter", 0) or 0) != 0:
        return 0
    return int(meta.get("epoch", 0) or 0)


def _baseline_in_channels(checkpoint: str | Path) -> int:
    """``in_channels`` of the baseline's bbox head: the input width of ``roi_head.bbox_head.fc_cls``."""
    from ..checkpoint import extract_state_dict, safe_load

    sd = extract_state_dict(safe_load(checkpoint, map_location="cpu"), checkpoint)
    for key in ("roi_head.bbox_head.fc_cls.weight", "module.roi_head.bbox_head.fc_cls.weight"):
        if key in sd:
            return int(sd[key].shape[1])
    raise ValueError(f"{checkpoint}: no 'roi_head.bbox_head.fc_cls.weight' in the state dict; is it a "
                     "FastRCNN (AVA detector) checkpoint?")


# --------------------------------------------------------------------------------------------- configs
def _lfb_settings(cfg: Config) -> dict:
    """The FBOHead's ``lfb_cfg`` of an LFB config (ConfigError naming the key if it is not one)."""
    try:
        shared = cfg.model.roi_head.shared_head
    except (AttributeError, KeyError, TypeError):
        shared = None
    if not isinstance(shared, dict) or shared.get("type") != "FBOHead":
        got = shared.get("type") if isinstance(shared, dict) else None
        raise ConfigError(f"expected an LFB config (shared_head type 'FBOHead'), got {got!r}",
                          "model.roi_head.shared_head.type", cfg.filename)
    lfb_cfg = shared.get("lfb_cfg")
    if not isinstance(lfb_cfg, dict) or "lfb_prefix_path" not in lfb_cfg:
        raise ConfigError("missing 'lfb_prefix_path'", "model.roi_head.shared_head.lfb_cfg.lfb_prefix_path",
                          cfg.filename)
    return dict(lfb_cfg)


def build_infer_config(cfg: Config, mode: str, in_channels: int, use_half_precision: bool = True) -> Config:
    """The bank-inference config for ``mode`` derived from the LFB config ``cfg`` (see the module docstring)."""
    lfb_cfg = _lfb_settings(cfg)
    icfg = copy.deepcopy(cfg)
    roi_head = icfg.model.roi_head
    roi_head.shared_head = {"type": "LFBInferHead", "lfb_prefix_path": str(lfb_cfg["lfb_prefix_path"]),
                            "dataset_mode": mode, "use_half_precision": use_half_precision}
    roi_head.bbox_head["in_channels"] = int(in_channels)
    data = icfg.get("data") or {}
    if mode not in data:
        raise ConfigError(f"no data.{mode} for the bank of mode '{mode}' (lfb_cfg.dataset_modes)",
                          f"data.{mode}", cfg.filename)
    test_src = data.get("test") or data.get("val")
    if test_src is None or "pipeline" not in test_src:
        raise ConfigError("a test pipeline (data.test or data.val) is needed for bank inference", "data.test",
                          cfg.filename)
    test = copy.deepcopy(data[mode])
    test["pipeline"] = copy.deepcopy(test_src["pipeline"])
    test["test_mode"] = True
    data["test"] = test
    icfg["dataset_mode"] = mode
    icfg["lfb_prefix_path"] = str(lfb_cfg["lfb_prefix_path"])
    for key in ("load_from", "resume_from"):
        if key in icfg:
            icfg[key] = None
    return icfg


# --------------------------------------------------------------------------------------------- workflow
def run_lfb_workflow(config: str | Path, baseline: str | Path, work_dir: str | Path | None = None,
                     cfg_options: Sequence[str] | None = None, seed: int | None = None,
                     init_from_baseline: bool = False, deterministic: bool = False,
                     out: str | Path | None = None) -> dict[str, Any]:
    """Run (or resume) the workflow; returns a summary (paths, what ran / was skipped, seconds per step)."""
    from . import run
    from .train import _max_epochs

    config = str(config)
    baseline = Path(baseline)
    options = list(cfg_options or [])
    cfg = load_config(config, options or None)
    lfb_cfg = _lfb_settings(cfg)
    prefix = Path(str(lfb_cfg["lfb_prefix_path"]))
    modes = list(lfb_cfg.get("dataset_modes") or ("train", "val"))
    channels = lfb_cfg.get("lfb_channels")
    if work_dir is None:
        work_dir = cfg.get("work_dir") or str(run.default_work_dir(config))
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"work_dir": str(work), "banks": {}, "skipped": [], "ran": [], "seconds": {}}

    # ---- 1. feature banks
    in_channels: int | None = None
    for mode in modes:
        bank_dir = prefix / f"lfb_{mode}"
        summary["banks"][mode] = str(bank_dir)
        ok, desc = bank_status(bank_dir, channels)
        if ok:
            _say(f"bank {mode}: {bank_dir} is valid ({desc}) - skipped")
            summary["skipped"].append(f"bank_{mode}")
            continue
        if bank_dir.exists():
            _say(f"bank {mode}: {bank_dir} {desc} - recomputing")
        if not baseline.is_file():
            raise FileNotFoundError(f"{baseline}: baseline checkpoint not found (needed to infer {bank_dir})")
        if in_channels is None:
            in_channels = _baseline_in_channels(baseline)
        icfg = build_infer_config(cfg, mode, in_channels)
        icfg_path = work / f"lfb_infer_{mode}.py"
        atomic_save_text(icfg_path, config_to_python(icfg))
        _say(f"bank {mode}: inferring {bank_dir} with {baseline} ({icfg_path})")
        t0 = time.time()
        run.test(load_config(icfg_path), baseline, out=work / f"lfb_infer_{mode}_detections.csv")
        summary["seconds"][f"bank_{mode}"] = round(time.time() - t0, 2)
        ok, desc = bank_status(bank_dir, channels)
        if not ok:
            raise RuntimeError(f"bank inference for mode '{mode}' did not produce a valid bank: {desc}")
        _say(f"bank {mode}: done ({desc}, {summary['seconds'][f'bank_{mode}']} s)")
        summary["ran"].append(f"bank_{mode}")

    # ---- 2. training
    max_epochs = _max_epochs(cfg)
    final_ckpt = work / f"epoch_{max_epochs}.pth"
    summary["checkpoint"] = str(final_ckpt)
    ok, desc = checkpoint_status(final_ckpt)
    if ok:
        _say(f"train: final checkpoint {desc} is valid - skipped")
        summary["skipped"].append("train")
    else:
        train_options = list(options)
        if init_from_baseline:
            train_options.append(f"load_from={baseline}")
        latest = work / "latest.pth"
        latest_ok, latest_desc = checkpoint_status(latest)
        t0 = time.time()
        if latest_ok and _finished_epochs(latest) >= max_epochs:
            # interrupted after the last epoch's latest.pth but before epoch_N.pth: nothing left to train
            from ..checkpoint import copy_checkpoint

            _say(f"train: {latest_desc} already holds the final epoch - copied to {final_ckpt}")
            copy_checkpoint(latest, final_ckpt)
        else:
            if latest_ok:
                _say(f"train: resuming from {latest_desc}")
            else:
                _say(f"train: {max_epochs} epochs into {work}")
            run.train(load_config(config, train_options or None), work_dir=work,
                      resume_from=latest if latest_ok else None, validate=True, seed=seed,
                      deterministic=deterministic)
        summary["seconds"]["train"] = round(time.time() - t0, 2)
        ok, desc = checkpoint_status(final_ckpt)
        if not ok:
            raise RuntimeError(f"training did not leave a valid final checkpoint: {desc}")
        _say(f"train: done ({desc}, {summary['seconds']['train']} s)")
        summary["ran"].append("train")

    # ---- 3. test
    results = Path(out) if out is not None else work / "results.csv"
    summary["results"] = str(results)
    if results.is_file():
        _say(f"test: {results} exists - skipped")
        summary["skipped"].append("test")
    else:
        _say(f"test: {final_ckpt} -> {results}")
        t0 = time.time()
        tested = run.test(load_config(config, options or None), final_ckpt, out=results, metrics=["mAP"])
        for line in run.metric_lines(tested.metrics):
            print(line, flush=True)
        summary["seconds"]["test"] = round(time.time() - t0, 2)
        _say(f"test: done ({summary['seconds']['test']} s)")
        summary["ran"].append("test")
    return summary
