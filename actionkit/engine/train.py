"""The epoch-based training loop (MMAction2 0.x ``train_model`` + the mmcv 1.x runner hooks it relies on).

Reproducibility: the data order is a pure function of ``(seed, epoch)`` (:class:`EpochBatchSampler`),
random augmentation is seeded per sample from ``(seed, epoch, index)`` (:class:`SeededDataset`), the lr is a
pure function of ``(epoch, iteration)`` and checkpoints hold the model, optimizer, AMP scaler, epoch,
iteration, position inside the epoch and every rank's RNG states.  ``checkpoint_config.by_iter_interval=N``
additionally writes ``latest.pth`` every N iterations inside an epoch; resuming from any checkpoint gives
the same weights as an uninterrupted run.

Why this module is long: ``train_model`` keeps the behaviour of mmcv 1.x's epoch runner and its hooks in one
loop (checkpoints, evaluation and the best model, PreciseBN, exact resume accounting, non-finite guards, the
work-dir lock) because resume exactness depends on their order; the loaders it uses live in
``loaders.py``.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..config import to_plain
from ..data.kinetics import check_labels_fit_model
from ..registry import DATASETS, ConfigError
from ..utils import WorkDirLock, WorkDirLockedError, ensure_directory, remove_stale_temp_files
from ..checkpoint import (CheckpointError, check_finite, copy_checkpoint, extract_state_dict, get_rng_state,
                         load_checkpoint, load_state_dict, nonfinite_tensors, safe_load, save_checkpoint,
                         set_rng_state)
from .distributed import all_gather_object, broadcast_object, get_dist_info, is_dist, reduce_mean, sync_random_seed
from .loaders import build_precise_bn_loader, build_test_loader, build_train_loader
from .logging import TrainLogger, get_logger
from .optim import build_optimizer, clip_grads
from .schedule import LrScheduler
from .test import autocast_context, model_device, multi_gpu_test, prepare_batch, single_gpu_test, unwrap_model

# keys of cfg.evaluation consumed by the hook (the rest goes to dataset.evaluate)
_EVAL_HOOK_KEYS = ("interval", "start", "save_best", "rule", "gpu_collect", "tmpdir", "by_epoch",
                   "broadcast_bn_buffers", "out_dir", "less_keys", "greater_keys")
_GREATER_KEYS = ("acc", "top", "AR@", "auc", "precision", "mAP", "mDice", "mIoU", "mAcc", "aAcc", "recall")
# config ``max_nonfinite_losses``: this many consecutive iterations with a NaN / Inf loss stop training
DEFAULT_MAX_NONFINITE_LOSSES = 3


class NonFiniteTrainingError(RuntimeError):
    """Training diverged: repeated NaN / Inf losses, or weights that are no longer finite."""


# --------------------------------------------------------------------------------------------- helpers

def _stopped(epoch: int, iteration: int, why: str, last_checkpoint: str | None,
             advice: str) -> "NonFiniteTrainingError":
    last = f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint else ""
    return NonFiniteTrainingError(f"training stopped at epoch {epoch}, iteration {iteration}: {why}{last} ({advice})")


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


def parse_losses(losses: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """MMAction2 ``_parse_losses``: mean every entry, sum those whose key contains ``'loss'``.

    Returns the total loss (a tensor with grad) and the log variables (floats, averaged across ranks).
    """
    log_vars: dict[str, torch.Tensor] = {}
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            log_vars[name] = value.float().mean()
        elif isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value):
            log_vars[name] = sum(v.float().mean() for v in value)
        elif isinstance(value, (int, float)):
            log_vars[name] = torch.tensor(float(value))
        else:
            raise TypeError(f"{name} is not a tensor or list of tensors")
    loss_terms = [v for k, v in log_vars.items() if "loss" in k]
    if not loss_terms:
        raise ValueError(f"the model returned no entry whose key contains 'loss' (got {list(losses)})")
    loss = sum(loss_terms)
    log_vars["loss"] = loss
    out: dict[str, float] = {}
    for k, v in log_vars.items():
        out[k] = reduce_mean(v.detach().item()) if is_dist() else float(v.detach().item())
    return loss, out


def evaluate_dataset(dataset: Any, results: list, eval_cfg: Mapping, logger: logging.Logger | None = None) -> dict:
    """``dataset.evaluate(results, **kwargs)`` with only the arguments its signature accepts."""
    kwargs = {k: v for k, v in dict(eval_cfg).items() if k not in _EVAL_HOOK_KEYS}
    if "metric" in kwargs and "metrics" not in kwargs:
        kwargs["metrics"] = kwargs.pop("metric")
    try:
        params = inspect.signature(dataset.evaluate).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        dropped = [k for k in kwargs if k not in params]
        if dropped:
            (logger or logging.getLogger("actionkit")).warning(
                "evaluation options %s are not accepted by %s.evaluate and are ignored", dropped,
                type(dataset).__name__)
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    if "logger" in params or not params:
        kwargs["logger"] = logger
    return dict(dataset.evaluate(results, **kwargs))


def broadcast_bn_buffers(model: nn.Module) -> None:
    if not is_dist():
        return
    for m in unwrap_model(model).modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            dist.broadcast(m.running_mean, 0)
            dist.broadcast(m.running_var, 0)


def precise_bn(model: nn.Module, loader: Any, num_iters: int, amp: bool = False,
               logger: logging.Logger | None = None) -> int:
    """Recompute BN running statistics as the arithmetic mean of ``num_iters`` train batches' statistics
    (MMAction2 ``mmaction/utils/precise_bn.py``); averaged across ranks.  Returns the batches used."""
    net = unwrap_model(model)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or num_iters <= 0:
        return 0
    was_training = net.training
    net.train()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    sums_mean = [torch.zeros_like(m.running_mean) for m in bns]
    sums_var = [torch.zeros_like(m.running_var) for m in bns]
    device = model_device(net)
    n = 0
    with torch.no_grad():
        for data in loader:
            if n >= num_iters:
                break
            with autocast_context(amp, device):
                net(return_loss=False, **prepare_batch(data, device))
            for i, m in enumerate(bns):
                sums_mean[i] += m.running_mean
                sums_var[i] += m.running_var
            n += 1
    for i, m in enumerate(bns):
        m.momentum = momenta[i]
        if n:
            mean, var = sums_mean[i] / n, sums_var[i] / n
            if is_dist():
                dist.all_reduce(mean)
                dist.all_reduce(var)
                mean /= dist.get_world_size()
                var /= dist.get_world_size()
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    net.train(was_training)
    if logger is not None:
        logger.info("PreciseBN: recomputed %d BN layers' statistics over %d batches", len(bns), n)
    return n


def _revise(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _max_epochs(cfg: Mapping) -> int:
    if "total_epochs" in cfg:
        return int(cfg["total_epochs"])
    runner = cfg.get("runner") or {}
    if "max_epochs" in runner:
        return int(runner["max_epochs"])
    raise ConfigError("is required (number of training epochs)", "total_epochs", getattr(cfg, "filename", None))


def _best_rule(key: str, rule: str | None) -> str:
    if rule is not None:
        if rule not in ("greater", "less"):
            raise ConfigError("rule must be 'greater' or 'less'", "evaluation.rule")
        return rule
    return "less" if "loss" in key.lower() else "greater"


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


def _max_nonfinite_losses(cfg: Mapping, filename: str | None) -> int:
    value = cfg.get("max_nonfinite_losses", DEFAULT_MAX_NONFINITE_LOSSES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be a positive integer (consecutive non-finite losses that stop training), "
                          f"got {value!r}", "max_nonfinite_losses", filename)
    return value


# --------------------------------------------------------------------------------------------- the loop
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
    raise :class:`NonFiniteTrainingError`; ``resume_from`` is strict (:class:`CheckpointError` listing the keys)
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
    rank, world = get_dist_info()
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
    max_iters = max_epochs * iters_per_epoch

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
        ckpt = safe_load(resume_from, map_location="cpu")
        resume_sd = _revise(extract_state_dict(ckpt, resume_from))
        check_finite(resume_sd, resume_from)
        try:
            load_state_dict(model, resume_sd, strict=True, logger=logger, filename=str(resume_from))
        except CheckpointError as exc:
            raise CheckpointError(resume_from, "cannot resume: the checkpoint's weights do not fit this config's "
                                  "model (resume needs the same model; --cfg-options load_from=... loads "
                                  "matching weights only)" + str(exc)[len(str(resume_from)) + 1:]) from None
        if "optimizer" in ckpt and isinstance(ckpt["optimizer"], Mapping):
            load_optimizer_state(optimizer, ckpt["optimizer"], resume_from)
        if "scheduler" in ckpt and isinstance(ckpt["scheduler"], Mapping):
            scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and "amp_scaler" in ckpt:
            scaler.load_state_dict(ckpt["amp_scaler"])
        cmeta = ckpt.get("meta") or {}
        start_epoch, global_iter, start_inner = resume_position(cmeta, iters_per_epoch, resume_from, logger)
        hook_msgs = dict(cmeta.get("hook_msgs") or {})
        rng = cmeta.get("rng_states")
        if isinstance(rng, list) and len(rng) == world:
            set_rng_state(rng[rank])
        elif rng is not None:
            logger.warning("checkpoint RNG states are for %d processes, this run has %d; not restored",
                           len(rng), world)
        logger.info("resumed from %s: epoch %d, iter %d (inner %d)", resume_from, start_epoch, global_iter,
                    start_inner)
    elif cfg.get("load_from"):
        load_checkpoint(model, cfg["load_from"], strict=False, logger=logger)
        logger.info("load checkpoint from %s", cfg["load_from"])

    if distributed:
        ddp_kwargs = {"find_unused_parameters": bool(cfg.get("find_unused_parameters", False))}
        if device.type == "cuda":
            ddp_kwargs["device_ids"] = [device.index]
        model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)

    # ---- hooks configuration
    ckpt_cfg = dict(cfg.get("checkpoint_config") or {})
    ckpt_interval = int(ckpt_cfg.get("interval", 1))
    by_iter_interval = int(ckpt_cfg.get("by_iter_interval", 0) or 0)
    max_keep = int(ckpt_cfg.get("max_keep_ckpts", -1))
    save_last = bool(ckpt_cfg.get("save_last", True))
    ckpt_meta_extra = dict(ckpt_cfg.get("meta") or {})
    log_interval = int((cfg.get("log_config") or {}).get("interval", 20))
    eval_cfg = dict(cfg.get("evaluation") or {})
    eval_interval = int(eval_cfg.get("interval", 1))
    eval_start = eval_cfg.get("start")
    save_best = eval_cfg.get("save_best", "auto")  # MMAction2 0.x EvalHook default
    pbn_cfg = cfg.get("precise_bn")

    val_dataset = val_loader = None
    if validate:
        if "val" not in cfg.get("data", {}):
            raise ConfigError("is required with --validate", "data.val", filename)
        val_dataset = build_dataset(cfg, "val", test_mode=True)
        val_loader = build_test_loader(val_dataset, cfg, "val", distributed, seed)

    def make_meta(epoch_done: int, inner: int) -> dict:
        m = {**ckpt_meta_extra, **{k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))},
             "epoch": epoch_done, "iter": global_iter, "inner_iter": inner, "seed": seed,
             "time": time.asctime(), "world_size": world,
             "config": cfg.pretty_text() if hasattr(cfg, "pretty_text") else repr(to_plain(dict(cfg))),
             "iters_per_epoch": iters_per_epoch, "hook_msgs": dict(hook_msgs),
             "rng_states": all_gather_object(get_rng_state())}
        return m

    def write_ckpt(path: Path, epoch_done: int, inner: int) -> None:
        bad = nonfinite_tensors(unwrap_model(model).state_dict())  # same on every rank (DDP keeps them equal)
        if bad:
            raise _stopped(epoch + 1, inner or iters_per_epoch,
                           f"{len(bad)} weight tensors are NaN / Inf (first: {', '.join(bad[:5])}); {path.name} was "
                           f"not written", summary.get("last_checkpoint"),
                           "lower the lr or set optimizer_config.grad_clip")
        m = make_meta(epoch_done, inner)  # collective: every rank takes part
        if rank == 0:
            extra = {"amp_scaler": scaler.state_dict()} if scaler is not None else None
            save_checkpoint(path, model, optimizer, scheduler, meta=m, extra=extra)

    summary: dict[str, Any] = {"best_checkpoint": hook_msgs.get("best_ckpt"),
                               "best_score": hook_msgs.get("best_score"), "eval_results": None,
                               "last_checkpoint": None}
    logger.info("Start running, work_dir: %s, max: %d epochs (%d iters/epoch)", work_dir, max_epochs, iters_per_epoch)
    t_start = time.time()
    iters_run = 0
    lr = scheduler.lrs_at(start_epoch, global_iter, iters_per_epoch, max_epochs)[0]
    nonfinite_run = 0
    epoch = start_epoch
    for epoch in range(start_epoch, max_epochs):
        batch_sampler.set_epoch(epoch)
        inner = start_inner if epoch == start_epoch else 0
        batch_sampler.set_start_batch(inner)
        model.train()
        buf: dict[str, list[float]] = {}
        t_data = time.time()
        for data in loader:
            data_time = time.time() - t_data
            lr = scheduler.step(epoch, global_iter, iters_per_epoch, max_epochs)[0]
            data = prepare_batch(data, device)
            with autocast_context(use_amp, device):
                outputs = model(**data, return_loss=True)
            loss, log_vars = parse_losses(outputs)
            # the logged loss is the mean over ranks: every rank takes the same decision
            finite = math.isfinite(log_vars["loss"])
            if finite:
                nonfinite_run = 0
            else:
                nonfinite_run += 1
                logger.warning("non-finite loss %s at epoch %d iter %d: the update is skipped (%d in a row; "
                               "max_nonfinite_losses=%d)", log_vars["loss"], epoch + 1, inner + 1, nonfinite_run,
                               max_nonfinite)
                if nonfinite_run >= max_nonfinite:
                    raise _stopped(epoch + 1, inner + 1,
                                   f"the loss was NaN / Inf for {nonfinite_run} consecutive iterations "
                                   f"(max_nonfinite_losses={max_nonfinite})", summary.get("last_checkpoint"),
                                   "lower the lr, set optimizer_config.grad_clip, or check the data")
            optimizer.zero_grad()
            if scaler is not None:
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    norm = clip_grads(unwrap_model(model).parameters(), **grad_clip)
                    if norm is not None:
                        log_vars["grad_norm"] = float(norm)
                # a NaN / Inf loss gives non-finite gradients: the scaler's step skips the update itself
                # (and update() lowers the scale), which keeps its per-iteration state consistent
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()  # also for a skipped update: DDP ranks meet in backward
                if grad_clip is not None:
                    norm = clip_grads(unwrap_model(model).parameters(), **grad_clip)
                    if norm is not None:
                        log_vars["grad_norm"] = float(norm)
                if finite:
                    optimizer.step()
            global_iter += 1
            inner += 1
            iters_run += 1
            iter_time = time.time() - t_data
            for k, v in {**log_vars, "time": iter_time, "data_time": data_time}.items():
                buf.setdefault(k, []).append(v)
            if inner % log_interval == 0:
                avg = {k: float(np.mean(v)) for k, v in buf.items()}
                t_avg, d_avg = avg.pop("time"), avg.pop("data_time")
                eta = (time.time() - t_start) / iters_run * (max_iters - global_iter)
                tlog.log_train(epoch + 1, inner, iters_per_epoch, global_iter, lr, avg, t_avg, d_avg, eta)
                buf = {}
            if by_iter_interval and global_iter % by_iter_interval == 0 and inner < iters_per_epoch:
                write_ckpt(work_dir / "latest.pth", epoch, inner)
            t_data = time.time()
        epoch_done = epoch + 1

        if pbn_cfg and epoch_done % int(pbn_cfg.get("interval", 1)) == 0:
            pbn_loader = build_precise_bn_loader(dataset, loader, batch_sampler, seed + 7919, epoch)
            precise_bn(model, pbn_loader, int(pbn_cfg.get("num_iters", 200)), use_amp, logger)

        if epoch_done % ckpt_interval == 0 or (save_last and epoch_done == max_epochs):
            path = work_dir / f"epoch_{epoch_done}.pth"
            write_ckpt(path, epoch_done, 0)
            if rank == 0:
                copy_checkpoint(path, work_dir / "latest.pth")
                if max_keep > 0:
                    for old in range(epoch_done - max_keep * ckpt_interval, 0, -ckpt_interval):
                        p = work_dir / f"epoch_{old}.pth"
                        if p.exists():
                            p.unlink()
            summary["last_checkpoint"] = str(path)
            logger.info("Saving checkpoint at %d epochs", epoch_done)

        if validate and _should_evaluate(epoch, eval_interval, eval_start):
            if eval_cfg.get("broadcast_bn_buffers", True):
                broadcast_bn_buffers(model)
            if distributed:
                results = multi_gpu_test(model, val_loader, amp=use_amp)
            else:
                results = single_gpu_test(model, val_loader, amp=use_amp)
            eval_res = evaluate_dataset(val_dataset, results, eval_cfg, logger) if rank == 0 else None
            eval_res = broadcast_object(eval_res)
            summary["eval_results"] = eval_res
            tlog.log_val(epoch_done, global_iter, lr, eval_res)
            if save_best and eval_res:
                key = next(iter(eval_res)) if save_best == "auto" else save_best
                if key not in eval_res:
                    raise ConfigError(f"'{key}' is not among the evaluation results {list(eval_res)}",
                                      "evaluation.save_best", filename)
                rule = _best_rule(key, eval_cfg.get("rule"))
                score = float(eval_res[key])
                best = hook_msgs.get("best_score")
                if best is not None and not math.isfinite(float(best)):
                    best = None  # a NaN best (older runs) never wins a comparison
                better = best is None or (score > best if rule == "greater" else score < best)
                if not math.isfinite(score):
                    better = False
                    logger.warning("epoch %d: %s is %s; not a candidate for the best checkpoint", epoch_done, key,
                                   score)
                if better:
                    old = hook_msgs.get("best_ckpt")
                    new = work_dir / f"best_{key}_epoch_{epoch_done}.pth"
                    hook_msgs.update(best_score=score, best_ckpt=str(new), best_key=key)
                    write_ckpt(new, epoch_done, 0)
                    if rank == 0 and old and Path(old).exists() and Path(old) != new:
                        Path(old).unlink()
                    summary.update(best_checkpoint=str(new), best_score=score)
                    logger.info("Now best checkpoint is saved as %s (%s: %.4f)", new.name, key, score)
        start_inner = 0
    summary.update(epoch=max_epochs, iter=global_iter)
    tlog.close()

    test = dict(test or {})
    if test.get("test_last") or test.get("test_best"):
        summary["test_results"] = _test_after_training(model, cfg, work_dir, test, summary, distributed,
                                                       use_amp, logger, seed)
    return summary


def _should_evaluate(epoch: int, interval: int, start: int | None) -> bool:
    """mmcv ``EvalHook._should_evaluate`` with the 0-based epoch that just finished."""
    if start is None:
        return (epoch + 1) % interval == 0
    if epoch + 1 < start:
        return False
    return (epoch + 1 - start) % interval == 0


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
        results = multi_gpu_test(model, test_loader, amp=amp) if distributed else single_gpu_test(model, test_loader, amp=amp)
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
