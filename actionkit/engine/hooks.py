"""The training hooks (mmcv 1.x runner hooks, as MMAction2 0.x configures them) on :class:`~.trainer.Trainer`.

* :class:`LoggerHook` (``log_config``): averaged log variables every ``interval`` iterations, as text and
  JSON lines (:class:`~actionkit.engine.logging.TrainLogger`);
* :class:`PreciseBNHook` (``precise_bn``): BN statistics recomputed after every ``interval`` epochs;
* :class:`CheckpointHook` (``checkpoint_config``): ``epoch_N.pth`` + ``latest.pth`` every ``interval`` epochs
  (``max_keep_ckpts``, ``save_last``) and ``latest.pth`` every ``by_iter_interval`` iterations inside an epoch;
* :class:`EvalHook` (``evaluation``): validation after every ``interval`` epochs from ``start``, and the best
  checkpoint (``save_best``, ``rule``) whose score and path travel in ``trainer.hook_msgs``.

The helpers the hooks run (:func:`precise_bn`, :func:`evaluate_dataset`, :func:`should_evaluate`) are usable
on their own.
"""
from __future__ import annotations

import inspect
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import copy_checkpoint, unwrap_model
from ..registry import ConfigError
from .distributed import broadcast_object, is_dist
from .loaders import build_precise_bn_loader
from .logging import TrainLogger
from .test import autocast_context, model_device, multi_gpu_test, prepare_batch, single_gpu_test
from .trainer import HookBase, Trainer

__all__ = ["LoggerHook", "PreciseBNHook", "CheckpointHook", "EvalHook", "precise_bn", "evaluate_dataset",
           "should_evaluate", "best_rule", "broadcast_bn_buffers", "EVAL_HOOK_KEYS"]

# keys of cfg.evaluation consumed by the hook (the rest goes to dataset.evaluate)
EVAL_HOOK_KEYS = ("interval", "start", "save_best", "rule", "gpu_collect", "tmpdir", "by_epoch",
                  "broadcast_bn_buffers", "out_dir", "less_keys", "greater_keys")


# --------------------------------------------------------------------------------------------- logging
class LoggerHook(HookBase):
    """Every ``interval`` iterations of an epoch (counted from its start), the mean of each log variable over
    the iterations since the last record, the lr, the mean iteration / data time and the ETA go to
    ``train_logger`` (text + JSON line). The buffer starts empty with every epoch."""

    def __init__(self, train_logger: TrainLogger, interval: int = 20):
        self.train_logger = train_logger
        self.interval = int(interval)
        self.buffer: dict[str, list[float]] = {}
        self.t_start = time.time()
        self.iters_run = 0

    def before_train(self, trainer: Trainer) -> None:
        self.t_start = time.time()
        self.iters_run = 0

    def before_epoch(self, trainer: Trainer) -> None:
        self.buffer = {}

    def after_iter(self, trainer: Trainer) -> None:
        self.iters_run += 1
        for k, v in {**trainer.log_vars, "time": trainer.iter_time, "data_time": trainer.data_time}.items():
            self.buffer.setdefault(k, []).append(v)
        if trainer.inner_iter % self.interval == 0:
            avg = {k: float(np.mean(v)) for k, v in self.buffer.items()}
            t_avg, d_avg = avg.pop("time"), avg.pop("data_time")
            eta = (time.time() - self.t_start) / self.iters_run * (trainer.max_iters - trainer.iter)
            self.train_logger.log_train(trainer.epoch + 1, trainer.inner_iter, trainer.iters_per_epoch, trainer.iter,
                                        trainer.lr, avg, t_avg, d_avg, eta)
            self.buffer = {}

    def after_train(self, trainer: Trainer) -> None:
        self.train_logger.close()


# --------------------------------------------------------------------------------------------- PreciseBN
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


class PreciseBNHook(HookBase):
    """After every ``interval`` epochs, :func:`precise_bn` over ``num_iters`` batches of ``dataset`` in an order
    of their own (seed ``seed``, the epoch; :func:`~actionkit.engine.loaders.build_precise_bn_loader`)."""

    def __init__(self, dataset: Any, num_iters: int = 200, interval: int = 1, seed: int = 0):
        self.dataset = dataset
        self.num_iters = int(num_iters)
        self.interval = int(interval)
        self.seed = int(seed)

    def after_epoch(self, trainer: Trainer) -> None:
        if (trainer.epoch + 1) % self.interval != 0:
            return
        loader = build_precise_bn_loader(self.dataset, trainer.loader, trainer.batch_sampler, self.seed,
                                         trainer.epoch)
        precise_bn(trainer.model, loader, self.num_iters, trainer.amp, trainer.logger)


# --------------------------------------------------------------------------------------------- checkpoints
class CheckpointHook(HookBase):
    """``{work_dir}/epoch_N.pth`` after every ``interval`` epochs (and after the last with ``save_last``), copied
    to ``latest.pth``; ``max_keep`` > 0 keeps only that many epoch checkpoints. ``by_iter_interval`` > 0 also
    writes ``latest.pth`` every that many iterations (``trainer.iter``) when it falls inside an epoch. Writes are
    atomic (:meth:`Trainer.save_checkpoint`); ``trainer.last_checkpoint`` names the last epoch checkpoint."""

    def __init__(self, work_dir: str | Path, interval: int = 1, by_iter_interval: int = 0, max_keep: int = -1,
                 save_last: bool = True):
        self.work_dir = Path(work_dir)
        self.interval = int(interval)
        self.by_iter_interval = int(by_iter_interval or 0)
        self.max_keep = int(max_keep)
        self.save_last = bool(save_last)

    def after_iter(self, trainer: Trainer) -> None:
        if (self.by_iter_interval and trainer.iter % self.by_iter_interval == 0
                and trainer.inner_iter < trainer.iters_per_epoch):
            trainer.save_checkpoint(self.work_dir / "latest.pth", trainer.epoch, trainer.inner_iter)

    def after_epoch(self, trainer: Trainer) -> None:
        epoch_done = trainer.epoch + 1
        if not (epoch_done % self.interval == 0 or (self.save_last and epoch_done == trainer.max_epochs)):
            return
        path = self.work_dir / f"epoch_{epoch_done}.pth"
        trainer.save_checkpoint(path, epoch_done, 0)
        if trainer.rank == 0:
            copy_checkpoint(path, self.work_dir / "latest.pth")
            if self.max_keep > 0:
                for old in range(epoch_done - self.max_keep * self.interval, 0, -self.interval):
                    p = self.work_dir / f"epoch_{old}.pth"
                    if p.exists():
                        p.unlink()
        trainer.last_checkpoint = str(path)
        trainer.logger.info("Saving checkpoint at %d epochs", epoch_done)


# --------------------------------------------------------------------------------------------- evaluation
def evaluate_dataset(dataset: Any, results: list, eval_cfg: Mapping, logger: logging.Logger | None = None) -> dict:
    """``dataset.evaluate(results, **kwargs)`` with only the arguments its signature accepts."""
    kwargs = {k: v for k, v in dict(eval_cfg).items() if k not in EVAL_HOOK_KEYS}
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
    """Rank 0's BN running statistics to every rank (no-op without a process group)."""
    if not is_dist():
        return
    for m in unwrap_model(model).modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            dist.broadcast(m.running_mean, 0)
            dist.broadcast(m.running_var, 0)


def should_evaluate(epoch: int, interval: int, start: int | None) -> bool:
    """mmcv ``EvalHook._should_evaluate`` with the 0-based epoch that just finished."""
    if start is None:
        return (epoch + 1) % interval == 0
    if epoch + 1 < start:
        return False
    return (epoch + 1 - start) % interval == 0


def best_rule(key: str, rule: str | None) -> str:
    """``rule`` ('greater' / 'less') when given, else 'less' for a key containing 'loss' and 'greater' otherwise."""
    if rule is not None:
        if rule not in ("greater", "less"):
            raise ConfigError("rule must be 'greater' or 'less'", "evaluation.rule")
        return rule
    return "less" if "loss" in key.lower() else "greater"


class EvalHook(HookBase):
    """Validation after the epochs :func:`should_evaluate` picks (``interval``, ``start``): the model runs over
    ``loader`` (every rank its shard when ``distributed``), rank 0 evaluates ``dataset`` with ``eval_cfg``
    (:func:`evaluate_dataset`) and every rank gets the metrics (``self.results``), logged by ``train_logger``.

    ``save_best`` ('auto' = the first metric, a metric name, or None / '' for none) keeps
    ``{work_dir}/best_{key}_epoch_N.pth`` for the best score under ``rule`` (:func:`best_rule`); a NaN / Inf score
    never wins, and the previous best file is removed. The best score, file and key live in ``trainer.hook_msgs``
    (``best_score``, ``best_ckpt``, ``best_key``), which checkpoints carry and a resumed run continues from.
    """

    def __init__(self, dataset: Any, loader: Any, eval_cfg: Mapping, train_logger: TrainLogger,
                 work_dir: str | Path, distributed: bool = False, filename: str | None = None):
        eval_cfg = dict(eval_cfg)
        self.dataset, self.loader, self.eval_cfg = dataset, loader, eval_cfg
        self.train_logger = train_logger
        self.work_dir = Path(work_dir)
        self.distributed = distributed
        self.filename = filename
        self.interval = int(eval_cfg.get("interval", 1))
        self.start = eval_cfg.get("start")
        self.save_best = eval_cfg.get("save_best", "auto")  # MMAction2 0.x EvalHook default
        self.results: dict | None = None

    def after_epoch(self, trainer: Trainer) -> None:
        if not should_evaluate(trainer.epoch, self.interval, self.start):
            return
        if self.eval_cfg.get("broadcast_bn_buffers", True):
            broadcast_bn_buffers(trainer.model)
        if self.distributed:
            results = multi_gpu_test(trainer.model, self.loader, amp=trainer.amp)
        else:
            results = single_gpu_test(trainer.model, self.loader, amp=trainer.amp)
        metrics = evaluate_dataset(self.dataset, results, self.eval_cfg, trainer.logger) if trainer.rank == 0 else None
        self.results = broadcast_object(metrics)
        self.train_logger.log_val(trainer.epoch + 1, trainer.iter, trainer.lr, self.results)
        if self.save_best and self.results:
            self.update_best(trainer, self.results)

    def update_best(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        """Write the best checkpoint when ``metrics`` beat ``trainer.hook_msgs['best_score']``."""
        epoch_done = trainer.epoch + 1
        key = next(iter(metrics)) if self.save_best == "auto" else self.save_best
        if key not in metrics:
            raise ConfigError(f"'{key}' is not among the evaluation results {list(metrics)}",
                              "evaluation.save_best", self.filename)
        rule = best_rule(key, self.eval_cfg.get("rule"))
        score = float(metrics[key])
        best = trainer.hook_msgs.get("best_score")
        if best is not None and not math.isfinite(float(best)):
            best = None  # a NaN best (older runs) never wins a comparison
        better = best is None or (score > best if rule == "greater" else score < best)
        if not math.isfinite(score):
            better = False
            trainer.logger.warning("epoch %d: %s is %s; not a candidate for the best checkpoint", epoch_done, key,
                                   score)
        if not better:
            return
        old = trainer.hook_msgs.get("best_ckpt")
        new = self.work_dir / f"best_{key}_epoch_{epoch_done}.pth"
        trainer.hook_msgs.update(best_score=score, best_ckpt=str(new), best_key=key)
        trainer.save_checkpoint(new, epoch_done, 0)
        if trainer.rank == 0 and old and Path(old).exists() and Path(old) != new:
            Path(old).unlink()
        trainer.logger.info("Now best checkpoint is saved as %s (%s: %.4f)", new.name, key, score)
