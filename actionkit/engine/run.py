"""Training and testing jobs from a loaded config, with plain arguments.

:func:`train` and :func:`test` do what MMAction2 0.x ``tools/train.py`` / ``tools/test.py`` do after parsing their
command line: work directory, distributed start-up, log file, seed, config copy, model, datasets, then the loop
(:func:`actionkit.engine.train.train_model`) or inference and evaluation.  The command lines
(:mod:`actionkit.cli.train`, :mod:`actionkit.cli.test`: ``actionkit train|test``, ``tools/*.py``), the LFB
workflow and the demo call them.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..checkpoint import load_checkpoint
from ..config import Config, config_to_python, load_config
from ..models.builder import build_model, clear_pretrained
from ..utils import atomic_save_text
from ..version import __version__
from .distributed import (barrier, broadcast_object, get_dist_info, init_dist, launched_by_torchrun,
                          sync_random_seed)
from .logging import get_logger

__all__ = ["LAUNCHERS", "AVERAGE_CLIPS", "TestResult", "train", "test", "default_work_dir", "metric_lines"]

LAUNCHERS = ("none", "pytorch")
AVERAGE_CLIPS = ("score", "prob")
DEFAULT_CONFIG_NAME = "config.py"


# --------------------------------------------------------------------------------------------- shared
def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _set_local_rank(local_rank: int | None) -> None:
    """A launcher's ``--local_rank`` argument becomes ``LOCAL_RANK`` unless the environment already has one."""
    if "LOCAL_RANK" not in os.environ and local_rank is not None:
        os.environ["LOCAL_RANK"] = str(local_rank)


def _start_distributed(cfg: Config, launcher: str) -> bool:
    """Join the process group when launched with ``launcher='pytorch'`` or by torchrun; whether distributed."""
    distributed = launcher == "pytorch" or launched_by_torchrun()
    if distributed:
        init_dist(backend=(cfg.get("dist_params") or {}).get("backend") if torch.cuda.is_available() else "gloo")
    return distributed


def _finish_distributed(distributed: bool) -> None:
    """All ranks meet, then leave the process group (no rank exits while another still talks to it)."""
    if distributed:
        import torch.distributed as dist

        barrier()
        if dist.is_initialized():
            dist.destroy_process_group()


def _own_copy(cfg: Config | Mapping) -> Config:
    """A copy the job may change (a plain mapping is validated as :func:`~actionkit.config.load_config` does)."""
    return copy.deepcopy(cfg) if isinstance(cfg, Config) else load_config(cfg)


def _config_name(cfg: Config, config_name: str | os.PathLike | None) -> str:
    return Path(config_name or getattr(cfg, "filename", None) or DEFAULT_CONFIG_NAME).name


def default_work_dir(config_name: str | os.PathLike) -> Path:
    """``./work_dirs/<config stem>``: the work directory of a config that names none (MMAction2's rule)."""
    return Path("./work_dirs") / Path(config_name).stem


# --------------------------------------------------------------------------------------------- train
def train(cfg: Config | Mapping, *, work_dir: str | os.PathLike | None = None,
          resume_from: str | os.PathLike | None = None, validate: bool = False, test_last: bool = False,
          test_best: bool = False, seed: int | None = None, deterministic: bool = False, launcher: str = "none",
          local_rank: int | None = None, auto_scale_lr: bool = False, amp: bool = False,
          channels_last: bool = False, gpus: int | None = None, gpu_ids: Sequence[int] | None = None,
          config_name: str | os.PathLike | None = None) -> dict:
    """Train the model of ``cfg`` (a loaded config, or a mapping to validate; not modified) as ``tools/train.py``
    does.

    - ``work_dir``: the argument, else ``cfg.work_dir``, else ``./work_dirs/<config stem>``; rank 0 creates it
      and writes the log ``<timestamp>.log`` (the timestamp is rank 0's), and the resolved config as
      ``<work_dir>/<config_name>``.
    - ``config_name``: the config's file name (default: the file ``cfg`` was loaded from, else ``config.py``).
    - ``resume_from`` / ``channels_last`` override the config's entries; ``seed`` overrides ``cfg.seed`` (none:
      a random seed), synchronised across ranks and stored in ``cfg.seed`` and the checkpoints' meta.
    - ``launcher='pytorch'`` or a torchrun environment: one process per device in a process group (gloo
      without CUDA), left at the end.  ``local_rank`` (torch.distributed.launch's argument) becomes
      ``LOCAL_RANK`` when the environment has none.  ``gpus`` / ``gpu_ids`` (MMAction2's) are only reported as
      ignored.
    - ``auto_scale_lr``: scale the learning rate by the total batch over ``auto_scale_lr.base_batch_size``;
      ``amp``: mixed precision (bf16 on CPU, with a warning where the CPU emulates it; fp16 on CUDA).
    - ``validate`` / ``test_last`` / ``test_best``: evaluation during training, tests after it.

    Returns :func:`~actionkit.engine.train.train_model`'s summary.  A config without ``data.train`` raises
    :class:`~actionkit.registry.ConfigError`.
    """
    _check_choice("launcher", launcher, LAUNCHERS)
    _set_local_rank(local_rank)
    cfg = _own_copy(cfg)
    name = _config_name(cfg, config_name)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif not cfg.get("work_dir"):
        cfg.work_dir = str(default_work_dir(name))
    if resume_from is not None:
        cfg.resume_from = str(resume_from)
    if channels_last:
        cfg.channels_last = True
    distributed = _start_distributed(cfg, launcher)
    rank, world = get_dist_info()

    work = Path(cfg.work_dir)
    if rank == 0:
        work.mkdir(parents=True, exist_ok=True)
    barrier()
    timestamp = broadcast_object(time.strftime("%Y%m%d_%H%M%S", time.localtime()))
    logger = get_logger(work / f"{timestamp}.log")
    if gpus is not None or gpu_ids is not None:
        logger.info("--gpus/--gpu-ids are ignored: launch one process per device with torchrun "
                    "(--launcher pytorch); this run uses %d process(es)", world)
    if auto_scale_lr:
        from .optim import auto_scale_lr as scale_lr

        scale_lr(cfg, world, logger)
    if (amp or cfg.get("fp16")) and not torch.cuda.is_available():
        from .fast import native_bf16

        native, why = native_bf16(torch.device("cpu"))
        if not native:
            logger.warning("--amp on this CPU (%s): bfloat16 is emulated there and slower than float32", why)
    if cfg.get("cudnn_benchmark", False):
        torch.backends.cudnn.benchmark = True

    seed = sync_random_seed(seed if seed is not None else cfg.get("seed"))
    from .train import build_dataset, set_random_seed, train_model

    set_random_seed(seed, deterministic=deterministic)
    cfg.seed = seed
    if rank == 0:
        atomic_save_text(work / name, config_to_python(cfg))
    logger.info("Distributed training: %s (world size %d)", distributed, world)
    logger.info("Config:\n%s", cfg.pretty_text())
    logger.info("Set random seed to %d, deterministic: %s", seed, deterministic)
    meta = {"seed": seed, "config_name": name, "work_dir": str(work), "actionkit_version": __version__,
            "env_info": f"torch {torch.__version__}"}

    model = build_model(cfg, init_weights=True)
    if "data" not in cfg or "train" not in cfg.data:
        raise cfg.error("is required but missing", "data.train")
    datasets = [build_dataset(cfg, "train")]
    summary = train_model(model, datasets, cfg, distributed=distributed, validate=validate, timestamp=timestamp,
                          meta=meta, amp=True if amp else None, deterministic=deterministic,
                          test={"test_last": test_last, "test_best": test_best}, logger=logger)
    _finish_distributed(distributed)
    return summary


# --------------------------------------------------------------------------------------------- test
@dataclass
class TestResult:
    """What :func:`test` produced: the model's ``outputs`` in dataset order (the dataset's ``evaluate`` input),
    the evaluation ``metrics`` (rank 0; empty without ``metrics`` or on other ranks) and the feature banks
    written (LFBInferHead)."""

    outputs: list
    metrics: dict[str, Any] = field(default_factory=dict)
    banks: list[str] = field(default_factory=list)

    __test__ = False  # a result type, not a pytest test class


def _set_average_clips(cfg: Config, value: str) -> None:
    model_cfg = cfg.model
    if model_cfg.get("test_cfg") is None and cfg.get("test_cfg") is None:
        model_cfg["test_cfg"] = {"average_clips": value}
    elif model_cfg.get("test_cfg") is not None:
        model_cfg["test_cfg"]["average_clips"] = value
    else:
        cfg.test_cfg["average_clips"] = value


def _device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}")


def test(cfg: Config | Mapping, checkpoint: str | os.PathLike, *, out: str | os.PathLike | None = None,
         metrics: Sequence[str] = (), average_clips: str | None = None, fuse_conv_bn: bool = False,
         amp: bool = False, fast: bool = False, launcher: str = "none", local_rank: int | None = None,
         gpu_collect: bool = False, tmpdir: str | os.PathLike | None = None) -> TestResult:
    """Test ``checkpoint`` (a file, URL or zoo name; loaded strictly) on ``cfg.data.test`` as ``tools/test.py``
    does; ``cfg`` (a loaded config) is not modified.

    - ``out``: rank 0 writes the outputs there (the dataset's ``dump_results`` chooses the format);
      ``metrics``: rank 0 evaluates them (``cfg.eval_config`` supplies the other evaluation arguments).
    - ``average_clips`` (``'score'`` / ``'prob'``) overrides the config's ``test_cfg.average_clips``; ``None``
      keeps it.
    - ``fuse_conv_bn`` folds BN into the convolutions; ``amp`` runs under autocast; ``fast`` (exclusive with
      ``amp``) prepares the fast path of :mod:`actionkit.engine.fast` (the config's ``inference = dict(fast=True)``
      does too).
    - ``launcher`` / ``local_rank``: as :func:`train`; distributed runs gather the outputs with
      ``all_gather_object`` (``gpu_collect`` / ``tmpdir`` are accepted for MMAction2's interface).
    - Modules with ``write_bank()`` (LFBInferHead) write their feature bank after inference.

    A config without ``data.test`` raises :class:`~actionkit.registry.ConfigError`.
    """
    _check_choice("launcher", launcher, LAUNCHERS)
    if average_clips is not None:
        _check_choice("average_clips", average_clips, AVERAGE_CLIPS)
    if amp and fast:
        raise ValueError("amp and fast are exclusive (the fast path chooses its own precision)")
    _set_local_rank(local_rank)
    cfg = _own_copy(cfg)
    if average_clips is not None:
        _set_average_clips(cfg, average_clips)
    distributed = _start_distributed(cfg, launcher)
    rank, _ = get_dist_info()
    logger = get_logger(None)
    from .loaders import build_test_loader
    from .test import multi_gpu_test, single_gpu_test
    from .hooks import evaluate_dataset
    from .train import build_dataset

    if "data" not in cfg or "test" not in cfg.data:
        raise cfg.error("is required but missing", "data.test")
    cfg.data.test["test_mode"] = True
    dataset = build_dataset(cfg, "test")
    loader = build_test_loader(dataset, cfg, "test", distributed, seed=int(cfg.get("seed") or 0))

    clear_pretrained(cfg.model)
    model = build_model(cfg, init_weights=False)
    load_checkpoint(model, os.fspath(checkpoint), map_location="cpu", strict=True, logger=logger)
    if average_clips is not None and hasattr(model, "average_clips"):
        model.average_clips = average_clips
    if fuse_conv_bn:
        from .fuse import fuse_conv_bn as fuse

        model = fuse(model)
    device = _device()
    model = model.to(device)
    from .fast import FastPathOptions, optimize_for_inference, options_from_config

    fast_options = FastPathOptions() if fast else options_from_config(cfg, cfg.filename)
    if fast_options is not None:
        model, description = optimize_for_inference(model, device, fast_options)
        logger.info(description)
    if distributed:
        outputs = multi_gpu_test(model, loader, None if tmpdir is None else os.fspath(tmpdir), gpu_collect, amp=amp)
    else:
        outputs = single_gpu_test(model, loader, amp=amp)
    result = TestResult(outputs)
    # Feature-bank inference (LFBInferHead): every rank writes its shard, the writer merges them atomically.
    inner = model.module if hasattr(model, "module") else model
    for module in inner.modules():
        if callable(getattr(module, "write_bank", None)):
            bank_path = module.write_bank()
            result.banks.append(str(bank_path))
            if rank == 0:
                logger.info("feature bank written to %s", bank_path)
    if rank == 0:
        if out is not None:
            logger.info("writing results to %s", out)
            dataset.dump_results(outputs, os.fspath(out))
        if metrics:
            eval_cfg = dict(cfg.get("eval_config") or {})
            eval_cfg["metrics"] = list(metrics)
            result.metrics = evaluate_dataset(dataset, outputs, eval_cfg, logger)
    _finish_distributed(distributed)
    return result


test.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test


def metric_lines(metrics: dict[str, Any]) -> list[str]:
    """``name: value`` per metric, floats to 4 decimals (what ``tools/test.py --eval`` prints)."""
    return [f"{name}: {val:.04f}" if isinstance(val, float) else f"{name}: {val}" for name, val in metrics.items()]
