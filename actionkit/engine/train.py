"""Training: :func:`train_model` (MMAction2 0.x ``train_model``) sets up the run from a config and trains with a
:class:`~actionkit.engine.trainer.Trainer` and the hooks of ``hooks.py`` (logging, PreciseBN, checkpoints,
evaluation and the best model, in that order).

Reproducibility: the data order is a pure function of ``(seed, epoch)`` (:class:`EpochBatchSampler`),
random augmentation is seeded per sample from ``(seed, epoch, index)`` (:class:`SeededDataset`), the lr is a
pure function of ``(epoch, iteration)`` and checkpoints hold the model, optimizer, AMP scaler, epoch,
iteration, position inside the epoch and every rank's RNG states.  ``checkpoint_config.by_iter_interval=N``
additionally writes ``latest.pth`` every N iterations inside an epoch; resuming from any checkpoint gives
the same weights as an uninterrupted run (:func:`resume_position`).
"""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..config import to_plain
from ..data.kinetics import check_labels_fit_model
from ..registry import DATASETS, ConfigError
from ..utils import WorkDirLock, WorkDirLockedError, ensure_directory, remove_stale_temp_files
from ..checkpoint import (CheckpointError, check_finite, extract_state_dict, load_checkpoint, load_state_dict,
                         safe_load, set_rng_state)
from .distributed import broadcast_object, get_dist_info, is_dist, sync_random_seed
from .hooks import CheckpointHook, EvalHook, LoggerHook, PreciseBNHook, evaluate_dataset
from .loaders import build_test_loader, build_train_loader
from .logging import TrainLogger, get_logger
from .optim import build_optimizer
from .schedule import LrScheduler
from .test import multi_gpu_test, single_gpu_test
from .trainer import HookBase, Trainer

__all__ = ["train_model", "build_dataset", "set_random_seed", "set_deterministic", "resume_position",
           "load_optimizer_state", "resume_training", "DEFAULT_MAX_NONFINITE_LOSSES"]

# config ``max_nonfinite_losses``: this many consecutive iterations with a NaN / Inf loss stop training
DEFAULT_MAX_NONFINITE_LOSSES = 3


def build_dataset(cfg: Mapping[str, Any], split: str, **kwargs: Any) -> Any:
    """The dataset ``cfg.data[split]`` (``train`` / ``val`` / ``test``), with its labels checked against the
    model's class count (``model.cls_head.num_classes``): a label out of range names its list file and line."""
    filename = getattr(cfg, "filename", None)
    data = cfg.get("data") or {}
    if split not in data:
        raise ConfigError("is required but missing", f"data.{split}", filename)
    dataset = DATASETS.build(data[split], key=f"data.{split}", filename=filename, **kwargs)
    if "model" in cfg:
        check_labels_fit_model(dataset, cfg["model"])
    return dataset

def set_random_seed(seed: int, deterministic: bool = False, rank_shift: bool = False) -> None:
    """Seed python, numpy and torch (+ CUDA); ``deterministic`` also sets deterministic algorithms."""
    if rank_shift:
        seed += get_dist_info()[0]
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        set_deterministic()


def set_deterministic() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _revise(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _max_epochs(cfg: Mapping) -> int:
    if "total_epochs" in cfg:
        return int(cfg["total_epochs"])
    runner = cfg.get("runner") or {}
    if "max_epochs" in runner:
        return int(runner["max_epochs"])
    raise ConfigError("is required (number of training epochs)", "total_epochs", getattr(cfg, "filename", None))


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping, filename: str | os.PathLike) -> None:
    """``optimizer.load_state_dict(state)`` with a :class:`CheckpointError` naming the file when the saved
    state does not fit this optimizer (other parameter groups, or per-parameter buffers of other shapes,
    which torch would only notice inside the first step)."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(filename, f"cannot resume: the optimizer state does not fit this config's optimizer "
                              f"({type(exc).__name__}: {exc})") from None
    for gi, group in enumerate(optimizer.param_groups):
        for pi, param in enumerate(group["params"]):
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise CheckpointError(filename, f"cannot resume: optimizer state '{name}' of parameter {pi} in "
                                          f"group {gi} has shape {list(value.shape)}, the parameter "
                                          f"{list(param.shape)}")


def resume_position(meta: Mapping, iters_per_epoch: int, filename: str | os.PathLike,
                    logger: logging.Logger) -> tuple[int, int, int]:
    """``(epoch, global_iter, inner_iter)`` to resume at, from a checkpoint's ``meta``.

    Epochs are what a resumed run counts: the lr schedule and the data order depend on the epoch.
    When the checkpoint was written with another number of iterations per epoch (another batch size or
    number of processes; ``meta['iters_per_epoch']``, or for MMAction2 files an ``iter`` that is not
    ``epoch * iters_per_epoch``):

    * at the end of an epoch, the run goes on at the next epoch and the iteration counter is recomputed as
      ``epoch * iters_per_epoch`` (logged), so the lr schedule stays where an uninterrupted run with this
      batch size would be;
    * in the middle of an epoch (``checkpoint_config.by_iter_interval``), the position cannot be carried
      over: :class:`CheckpointError` (resume from the last ``epoch_N.pth``, or with the original batch size).
    """
    epoch = int(meta.get("epoch", 0))
    inner = int(meta.get("inner_iter", 0))
    saved_ipe = meta.get("iters_per_epoch")
    if saved_ipe is not None:
        differs = int(saved_ipe) != iters_per_epoch
        saved_text = f"{int(saved_ipe)} iterations per epoch"
    else:  # MMAction2 0.x/1.x files: only epoch and iter
        saved_iter = meta.get("iter")
        differs = saved_iter is not None and int(saved_iter) != epoch * iters_per_epoch + inner
        saved_text = f"iteration {saved_iter} at epoch {epoch}"
    if not differs:
        return epoch, int(meta.get("iter", epoch * iters_per_epoch + inner)), inner
    if inner:
        instead = (f"resume from the checkpoint of epoch {epoch} (epoch_{epoch}.pth)" if epoch
                   else "start without --resume-from (no epoch had finished)")
        raise CheckpointError(filename, f"cannot resume in the middle of epoch {epoch + 1}: the checkpoint was "
                              f"written with {saved_text}, this run has {iters_per_epoch} (another batch size or "
                              f"number of processes), so its position in the epoch has no equivalent; {instead} "
                              "or resume with the original data.videos_per_gpu and number of processes")
    logger.warning("%s: written with %s, this run has %d iterations per epoch (another batch size or number of "
                   "processes): resuming at the start of epoch %d with the iteration counter set to %d",
                   filename, saved_text, iters_per_epoch, epoch + 1, epoch * iters_per_epoch)
    return epoch, epoch * iters_per_epoch, 0


def resume_training(filename: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: LrScheduler, scaler: torch.amp.GradScaler | None, iters_per_epoch: int,
                    logger: logging.Logger) -> tuple[int, int, int, dict]:
    """Load a training checkpoint into the run's objects: the weights (strictly: :class:`CheckpointError` listing
    the keys that do not fit; non-finite weights refused), the optimizer (:func:`load_optimizer_state`), the lr
    scheduler and AMP scaler states when the file has them, and this rank's RNG states when the file has one per
    process of this run (else a warning). Returns ``(epoch, iter, inner_iter, hook_msgs)`` to start the
    :class:`~actionkit.engine.trainer.Trainer` at (:func:`resume_position`)."""
    rank, world = get_dist_info()
    ckpt = safe_load(filename, map_location="cpu")
    resume_sd = _revise(extract_state_dict(ckpt, filename))
    check_finite(resume_sd, filename)
    try:
        load_state_dict(model, resume_sd, strict=True, logger=logger, filename=str(filename))
    except CheckpointError as exc:
        raise CheckpointError(filename, "cannot resume: the checkpoint's weights do not fit this config's "
                              "model (resume needs the same model; --cfg-options load_from=... loads "
                              "matching weights only)" + str(exc)[len(str(filename)) + 1:]) from None
    if "optimizer" in ckpt and isinstance(ckpt["optimizer"], Mapping):
        load_optimizer_state(optimizer, ckpt["optimizer"], filename)
    if "scheduler" in ckpt and isinstance(ckpt["scheduler"], Mapping):
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and "amp_scaler" in ckpt:
        scaler.load_state_dict(ckpt["amp_scaler"])
    cmeta = ckpt.get("meta") or {}
    start_epoch, global_iter, start_inner = resume_position(cmeta, iters_per_epoch, filename, logger)
    hook_msgs = dict(cmeta.get("hook_msgs") or {})
    rng = cmeta.get("rng_states")
    if isinstance(rng, list) and len(rng) == world:
        set_rng_state(rng[rank])
    elif rng is not None:
        logger.warning("checkpoint RNG states are for %d processes, this run has %d; not restored",
                       len(rng), world)
    logger.info("resumed from %s: epoch %d, iter %d (inner %d)", filename, start_epoch, global_iter, start_inner)
    return start_epoch, global_iter, start_inner, hook_msgs


def _max_nonfinite_losses(cfg: Mapping, filename: str | None) -> int:
    value = cfg.get("max_nonfinite_losses", DEFAULT_MAX_NONFINITE_LOSSES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be a positive integer (consecutive non-finite losses that stop training), "
                          f"got {value!r}", "max_nonfinite_losses", filename)
    return value


# --------------------------------------------------------------------------------------------- train_model
def train_model(model: nn.Module, datasets: Sequence[Any] | Any, cfg: Mapping, distributed: bool = False,
                validate: bool = False, timestamp: str | None = None, meta: Mapping | None = None,
                amp: bool | None = None, deterministic: bool = False, test: Mapping | None = None,
                logger: logging.Logger | None = None) -> dict:
    """Train ``model`` on ``datasets[0]`` following ``cfg`` (MMAction2 0.x schema).

    Returns a summary dict: ``epoch``, ``iter``, ``last_checkpoint``, ``best_checkpoint``, ``best_score``,
    ``eval_results`` (last validation), ``test_results`` (``--test-last`` / ``--test-best``).

    Faults: the work directory is locked for the run (:class:`~actionkit.utils.WorkDirLock`, rank 0;
    :class:`~actionkit.utils.WorkDirLockedError` when another live run holds it) and cleared of temporary files
    that killed writes left; an iteration with a NaN / Inf loss skips its update and ``max_nonfinite_losses``
    (default :data:`DEFAULT_MAX_NONFINITE_LOSSES`) consecutive ones, or non-finite weights at a checkpoint,
    raise :class:`~actionkit.engine.trainer.NonFiniteTrainingError`; ``resume_from`` is strict (:class:`CheckpointError` listing the keys)
    and handles another number of iterations per epoch as :func:`resume_position` says.
    """
    timestamp = timestamp or time.strftime("%Y%m%d_%H%M%S", time.localtime())
    work_dir = Path(cfg.get("work_dir") or "./work_dirs/default")
    rank, _ = get_dist_info()
    if distributed and not is_dist():
        raise RuntimeError("train_model(distributed=True) needs an initialised process group (init_dist)")
    if rank == 0:
        ensure_directory(work_dir, "work dir")
    logger = logger or get_logger(work_dir / f"{timestamp}.log")
    lock = _lock_work_dir(work_dir, logger)
    try:
        return _train_in_work_dir(model, datasets, cfg, distributed, validate, timestamp, meta, amp, deterministic,
                                  test, logger, work_dir)
    finally:
        if lock is not None:
            lock.release()


def _lock_work_dir(work_dir: Path, logger: logging.Logger) -> WorkDirLock | None:
    """Rank 0 takes the work directory's lock (:class:`~actionkit.utils.WorkDirLock`) and removes the
    temporary files of checkpoint writes that a killed run left; every rank fails if the lock is held."""
    rank, _ = get_dist_info()
    lock, failure = None, None
    if rank == 0:
        lock = WorkDirLock(work_dir, logger)
        try:
            lock.acquire()
            remove_stale_temp_files(work_dir, logger)
        except Exception as exc:  # noqa: BLE001 - passed on to every rank below
            lock.release()
            failure = exc
    if is_dist():
        message = broadcast_object(None if failure is None else str(failure))
        if message is not None and failure is None:
            raise WorkDirLockedError(work_dir / WorkDirLock.FILENAME, message)
    if failure is not None:
        raise failure
    return lock


def _train_in_work_dir(model: nn.Module, datasets: Sequence[Any] | Any, cfg: Mapping, distributed: bool,
                       validate: bool, timestamp: str, meta: Mapping | None, amp: bool | None, deterministic: bool,
                       test: Mapping | None, logger: logging.Logger, work_dir: Path) -> dict:
    """The body of :func:`train_model`, run while this process holds the work directory."""
    filename = getattr(cfg, "filename", None)
    tlog = TrainLogger(work_dir, timestamp, logger, tensorboard=any(
        isinstance(h, Mapping) and h.get("type") == "TensorboardLoggerHook"
        for h in (cfg.get("log_config") or {}).get("hooks", [])))
    meta = dict(meta or {})
    if meta:
        tlog.dump_json({k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))})
    if deterministic:
        set_deterministic()
    for entry in cfg.get("workflow", [("train", 1)]):
        if tuple(entry)[0] != "train":
            logger.warning("workflow entry %s is ignored: only training epochs run (use --validate)", entry)

    dataset = datasets[0] if isinstance(datasets, (list, tuple)) else datasets
    seed = sync_random_seed(cfg.get("seed"))
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % max(torch.cuda.device_count(), 1)}"
                          if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    if cfg.get("channels_last"):  # ``--channels-last``: with --amp (bf16) on CPU (benchmarks/train_speed.py)
        model = model.to(memory_format=torch.channels_last_3d)
    loader, batch_sampler = build_train_loader(dataset, cfg, seed)
    iters_per_epoch = batch_sampler.num_batches
    if iters_per_epoch == 0:
        raise ConfigError(f"the training set ({len(dataset)} samples) gives no batch of "
                          f"{batch_sampler.batch_size}", "data.videos_per_gpu", filename)
    max_epochs = _max_epochs(cfg)

    if "optimizer" not in cfg:
        raise ConfigError("is required", "optimizer", filename)
    optimizer = build_optimizer(model, cfg["optimizer"], filename)
    scheduler = LrScheduler.from_config(optimizer, cfg.get("lr_config"), filename)
    grad_clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    max_nonfinite = _max_nonfinite_losses(cfg, filename)
    use_amp = bool(amp) if amp is not None else bool(cfg.get("fp16"))
    scaler = torch.amp.GradScaler("cuda") if use_amp and device.type == "cuda" else None

    # ---- load_from / resume_from (resume wins, as in mmcv)
    start_epoch, global_iter, start_inner = 0, 0, 0
    hook_msgs: dict[str, Any] = {}
    resume_from = cfg.get("resume_from")
    if resume_from:
        start_epoch, global_iter, start_inner, hook_msgs = resume_training(
            resume_from, model, optimizer, scheduler, scaler, iters_per_epoch, logger)
    elif cfg.get("load_from"):
        load_checkpoint(model, cfg["load_from"], strict=False, logger=logger)
        logger.info("load checkpoint from %s", cfg["load_from"])

    if distributed:
        ddp_kwargs = {"find_unused_parameters": bool(cfg.get("find_unused_parameters", False))}
        if device.type == "cuda":
            ddp_kwargs["device_ids"] = [device.index]
        model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)

    # ---- the trainer and its hooks (the order of the hooks is the order of their effects)
    hooks: list[HookBase] = [LoggerHook(tlog, int((cfg.get("log_config") or {}).get("interval", 20)))]
    pbn_cfg = cfg.get("precise_bn")
    if pbn_cfg:
        hooks.append(PreciseBNHook(dataset, int(pbn_cfg.get("num_iters", 200)), int(pbn_cfg.get("interval", 1)),
                                   seed + 7919))
    ckpt_cfg = dict(cfg.get("checkpoint_config") or {})
    hooks.append(CheckpointHook(work_dir, interval=int(ckpt_cfg.get("interval", 1)),
                                by_iter_interval=int(ckpt_cfg.get("by_iter_interval", 0) or 0),
                                max_keep=int(ckpt_cfg.get("max_keep_ckpts", -1)),
                                save_last=bool(ckpt_cfg.get("save_last", True))))
    eval_hook = None
    if validate:
        if "val" not in cfg.get("data", {}):
            raise ConfigError("is required with --validate", "data.val", filename)
        val_dataset = build_dataset(cfg, "val", test_mode=True)
        val_loader = build_test_loader(val_dataset, cfg, "val", distributed, seed)
        eval_hook = EvalHook(val_dataset, val_loader, cfg.get("evaluation") or {}, tlog, work_dir, distributed,
                             filename)
        hooks.append(eval_hook)

    trainer = Trainer(model, optimizer, scheduler, loader, batch_sampler, max_epochs, device=device, amp=use_amp,
                      scaler=scaler, grad_clip=grad_clip, max_nonfinite_losses=max_nonfinite, work_dir=work_dir,
                      seed=seed, checkpoint_meta={**dict(ckpt_cfg.get("meta") or {}), **{
                          k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}},
                      config_text=cfg.pretty_text() if hasattr(cfg, "pretty_text") else repr(to_plain(dict(cfg))),
                      start_epoch=start_epoch, start_iter=global_iter, start_inner=start_inner, hook_msgs=hook_msgs,
                      logger=logger, hooks=hooks)
    trainer.train()
    summary: dict[str, Any] = {"best_checkpoint": trainer.hook_msgs.get("best_ckpt"),
                               "best_score": trainer.hook_msgs.get("best_score"),
                               "eval_results": eval_hook.results if eval_hook is not None else None,
                               "last_checkpoint": trainer.last_checkpoint, "epoch": max_epochs, "iter": trainer.iter}
    test = dict(test or {})
    if test.get("test_last") or test.get("test_best"):
        summary["test_results"] = _test_after_training(model, cfg, work_dir, test, summary, distributed,
                                                       use_amp, logger, seed)
    return summary


def _test_after_training(model: nn.Module, cfg: Mapping, work_dir: Path, test: Mapping, summary: Mapping,
                         distributed: bool, amp: bool, logger: logging.Logger, seed: int) -> dict:
    filename = getattr(cfg, "filename", None)
    names, ckpts = [], []
    if test.get("test_last"):
        names.append("last")
        ckpts.append(None)
    if test.get("test_best"):
        best = summary.get("best_checkpoint")
        if best is None or not Path(best).exists():
            found = sorted(work_dir.glob("best_*.pth"), key=lambda p: p.stat().st_mtime)
            best = str(found[-1]) if found else None
        if best is None:
            logger.warning("--test-best: no best checkpoint found (set evaluation.save_best); skipped")
        else:
            names.append("best")
            ckpts.append(best)
    out: dict[str, Any] = {}
    if not names:
        return out
    if "test" not in cfg.get("data", {}):
        raise ConfigError("is required with --test-last/--test-best", "data.test", filename)
    test_dataset = build_dataset(cfg, "test", test_mode=True)
    test_loader = build_test_loader(test_dataset, cfg, "test", distributed, seed)
    eval_cfg = dict(cfg.get("evaluation") or {})
    rank, _ = get_dist_info()
    for name, ckpt in zip(names, ckpts):
        if ckpt is not None:
            load_checkpoint(model, ckpt, strict=False, logger=logger)
        if distributed:
            results = multi_gpu_test(model, test_loader, amp=amp)
        else:
            results = single_gpu_test(model, test_loader, amp=amp)
        if rank == 0:
            # MMAction2 writes {name}_pred.pkl; datasets that only write csv (AVA) get {name}_pred.csv
            for suffix in (".pkl", ".csv"):
                pred = work_dir / f"{name}_pred{suffix}"
                try:
                    test_dataset.dump_results(results, str(pred))
                    break
                except (ValueError, NotImplementedError, AttributeError) as exc:
                    if suffix == ".csv":
                        logger.warning("could not dump %s predictions to %s: %s", name, pred, exc)
            res = evaluate_dataset(test_dataset, results, eval_cfg, logger)
            logger.info("Testing results of the %s checkpoint", name)
            for k, v in res.items():
                logger.info("%s: %s", k, f"{v:.04f}" if isinstance(v, float) else v)
            out[name] = res
    return broadcast_object(out)
