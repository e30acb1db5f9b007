"""The training state and its step: :class:`Trainer` (one iteration in :meth:`Trainer.run_step`, the epochs
in :meth:`Trainer.train`) and :class:`HookBase`, what the hooks of ``hooks.py`` (checkpoints, evaluation and
the best model, PreciseBN, logs) build on.

The trainer owns every piece of state a checkpoint holds (model, optimizer, lr scheduler, AMP scaler, epoch,
iteration, position inside the epoch, ``hook_msgs``) and writes checkpoints itself
(:meth:`Trainer.save_checkpoint`), so that hooks only decide *when* and *where*.  Hooks run in the order they
were registered, after each iteration (``after_iter``) and after each epoch (``after_epoch``); their order is
part of the behaviour (the epoch checkpoint is written after PreciseBN and before the evaluation, as mmcv's
runner does).
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..checkpoint import get_rng_state, nonfinite_tensors, save_checkpoint, unwrap_model
from .distributed import all_gather_object, get_dist_info, is_dist, reduce_mean
from .optim import clip_grads
from .schedule import LrScheduler
from .test import autocast_context, prepare_batch

__all__ = ["NonFiniteTrainingError", "training_stopped", "parse_losses", "HookBase", "Trainer"]


class NonFiniteTrainingError(RuntimeError):
    """Training diverged: repeated NaN / Inf losses, or weights that are no longer finite."""


def training_stopped(epoch: int, iteration: int, why: str, last_checkpoint: str | None,
                     advice: str) -> NonFiniteTrainingError:
    """The :class:`NonFiniteTrainingError` of a stop at ``epoch`` / ``iteration`` (1-based), naming the last good
    checkpoint when there is one."""
    last = f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint else ""
    return NonFiniteTrainingError(f"training stopped at epoch {epoch}, iteration {iteration}: {why}{last} ({advice})")


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


class HookBase:
    """A training hook: each method receives the :class:`Trainer` and reads / changes its state.

    ``before_train`` runs once before the first epoch, ``before_epoch`` / ``after_epoch`` around each epoch
    (``trainer.epoch`` is the 0-based epoch), ``after_iter`` after each :meth:`Trainer.run_step`
    (``trainer.iter`` / ``trainer.inner_iter`` already count it), ``after_train`` once after the last epoch
    (not when training raised)."""

    def before_train(self, trainer: "Trainer") -> None:
        pass

    def before_epoch(self, trainer: "Trainer") -> None:
        pass

    def after_iter(self, trainer: "Trainer") -> None:
        pass

    def after_epoch(self, trainer: "Trainer") -> None:
        pass

    def after_train(self, trainer: "Trainer") -> None:
        pass


class Trainer:
    """Epoch-based training of ``model`` on the batches of ``loader`` (MMAction2 0.x / mmcv 1.x semantics).

    ``batch_sampler`` is the loader's :class:`~actionkit.engine.distributed.EpochBatchSampler` (``set_epoch``,
    ``set_start_batch``, ``num_batches``). ``start_epoch`` / ``start_iter`` / ``start_inner`` are where a resumed
    run goes on (:func:`~actionkit.engine.train.resume_position`) and ``hook_msgs`` what its checkpoint carried
    (the best score and checkpoint). ``checkpoint_meta`` (plain values) leads every checkpoint's ``meta``,
    followed by the trainer's position, ``seed``, ``config_text``, ``hook_msgs`` and every rank's RNG states.

    State read and written by the hooks: ``epoch`` (0-based, the current one), ``iter`` (iterations done in all),
    ``inner_iter`` (done in this epoch), ``lr`` (of the first param group, this iteration), ``log_vars`` (of the
    last step), ``data_time`` / ``iter_time`` (seconds, the last iteration), ``hook_msgs``, ``last_checkpoint``
    (the last epoch checkpoint written).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LrScheduler,
                 loader: Iterable, batch_sampler: Any, max_epochs: int, *, device: torch.device | None = None,
                 amp: bool = False, scaler: torch.amp.GradScaler | None = None, grad_clip: Mapping | None = None,
                 max_nonfinite_losses: int = 3, work_dir: str | Path = ".", seed: int = 0,
                 checkpoint_meta: Mapping[str, Any] | None = None, config_text: str = "",
                 start_epoch: int = 0, start_iter: int = 0, start_inner: int = 0,
                 hook_msgs: Mapping[str, Any] | None = None, logger: logging.Logger | None = None,
                 hooks: Sequence[HookBase] = ()):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader = loader
        self.batch_sampler = batch_sampler
        self.max_epochs = int(max_epochs)
        self.iters_per_epoch = int(batch_sampler.num_batches)
        self.device = device if device is not None else torch.device("cpu")
        self.amp = bool(amp)
        self.scaler = scaler
        self.grad_clip = grad_clip
        self.max_nonfinite_losses = int(max_nonfinite_losses)
        self.work_dir = Path(work_dir)
        self.seed = int(seed)
        self.checkpoint_meta = dict(checkpoint_meta or {})
        self.config_text = config_text
        self.logger = logger or logging.getLogger("actionkit")
        self.rank, self.world_size = get_dist_info()
        self.start_epoch, self.start_inner = int(start_epoch), int(start_inner)
        self.epoch = self.start_epoch
        self.iter = int(start_iter)
        self.inner_iter = self.start_inner
        self.hook_msgs: dict[str, Any] = dict(hook_msgs or {})
        self.last_checkpoint: str | None = None
        self.lr = scheduler.lrs_at(self.start_epoch, self.iter, self.iters_per_epoch, self.max_epochs)[0]
        self.nonfinite_run = 0
        self.log_vars: dict[str, float] = {}
        self.data_time = self.iter_time = 0.0
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)

    @property
    def max_iters(self) -> int:
        return self.max_epochs * self.iters_per_epoch

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Append ``hooks``; they run in registration order."""
        self.hooks.extend(hooks)

    def _call_hooks(self, stage: str) -> None:
        for hook in self.hooks:
            getattr(hook, stage)(self)

    # ------------------------------------------------------------------------------------------ the loop
    def train(self) -> None:
        """Run the epochs ``start_epoch .. max_epochs - 1`` (the first from ``start_inner``) with the hooks."""
        self.logger.info("Start running, work_dir: %s, max: %d epochs (%d iters/epoch)", self.work_dir,
                         self.max_epochs, self.iters_per_epoch)
        self._call_hooks("before_train")
        for epoch in range(self.start_epoch, self.max_epochs):
            self.epoch = epoch
            self.inner_iter = self.start_inner if epoch == self.start_epoch else 0
            self.batch_sampler.set_epoch(epoch)
            self.batch_sampler.set_start_batch(self.inner_iter)
            self.model.train()
            self._call_hooks("before_epoch")
            t_data = time.time()
            for data in self.loader:
                self.data_time = time.time() - t_data
                self.log_vars = self.run_step(data)
                self.iter_time = time.time() - t_data
                self._call_hooks("after_iter")
                t_data = time.time()
            self._call_hooks("after_epoch")
        self._call_hooks("after_train")

    def run_step(self, data: Any) -> dict[str, float]:
        """One iteration on the collated batch ``data``: the lr of this iteration, the batch on the device
        (:func:`~actionkit.engine.test.prepare_batch`), forward (autocast with ``amp``), :func:`parse_losses`,
        backward, gradient clipping (``grad_norm`` logged), the optimizer step; ``iter`` / ``inner_iter`` + 1.

        A NaN / Inf loss (the mean over ranks, so every rank decides alike) skips the update (with a scaler,
        its own step skips it and lowers the scale); ``max_nonfinite_losses`` in a row raise
        :class:`NonFiniteTrainingError`. Returns the log variables.
        """
        self.lr = self.scheduler.step(self.epoch, self.iter, self.iters_per_epoch, self.max_epochs)[0]
        data = prepare_batch(data, self.device)
        with autocast_context(self.amp, self.device):
            outputs = self.model(**data, return_loss=True)
        loss, log_vars = parse_losses(outputs)
        finite = self._check_loss(log_vars["loss"])
        self.optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                self._clip(log_vars)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()  # also for a skipped update: DDP ranks meet in backward
            if self.grad_clip is not None:
                self._clip(log_vars)
            if finite:
                self.optimizer.step()
        self.iter += 1
        self.inner_iter += 1
        return log_vars

    def _check_loss(self, loss: float) -> bool:
        if math.isfinite(loss):
            self.nonfinite_run = 0
            return True
        self.nonfinite_run += 1
        self.logger.warning("non-finite loss %s at epoch %d iter %d: the update is skipped (%d in a row; "
                            "max_nonfinite_losses=%d)", loss, self.epoch + 1, self.inner_iter + 1,
                            self.nonfinite_run, self.max_nonfinite_losses)
        if self.nonfinite_run >= self.max_nonfinite_losses:
            raise training_stopped(self.epoch + 1, self.inner_iter + 1,
                                   f"the loss was NaN / Inf for {self.nonfinite_run} consecutive iterations "
                                   f"(max_nonfinite_losses={self.max_nonfinite_losses})", self.last_checkpoint,
                                   "lower the lr, set optimizer_config.grad_clip, or check the data")
        return False

    def _clip(self, log_vars: dict[str, float]) -> None:
        norm = clip_grads(unwrap_model(self.model).parameters(), **self.grad_clip)
        if norm is not None:
            log_vars["grad_norm"] = float(norm)

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoint_meta_at(self, epoch_done: int, inner: int) -> dict:
        """The ``meta`` of a checkpoint written now: ``epoch_done`` finished epochs and ``inner`` iterations of
        the next. Collective (every rank's RNG states are gathered): every rank calls it."""
        return {**self.checkpoint_meta, "epoch": epoch_done, "iter": self.iter, "inner_iter": inner,
                "seed": self.seed, "time": time.asctime(), "world_size": self.world_size,
                "config": self.config_text, "iters_per_epoch": self.iters_per_epoch,
                "hook_msgs": dict(self.hook_msgs), "rng_states": all_gather_object(get_rng_state())}

    def save_checkpoint(self, path: str | Path, epoch_done: int, inner: int) -> None:
        """Write ``path`` (rank 0, atomically): weights, optimizer, lr scheduler, AMP scaler and
        :meth:`checkpoint_meta_at`. Weights with a NaN / Inf are never saved: :class:`NonFiniteTrainingError`
        naming the last good checkpoint. Every rank calls it."""
        path = Path(path)
        bad = nonfinite_tensors(unwrap_model(self.model).state_dict())  # same on every rank (DDP keeps them equal)
        if bad:
            raise training_stopped(self.epoch + 1, inner or self.iters_per_epoch,
                                   f"{len(bad)} weight tensors are NaN / Inf (first: {', '.join(bad[:5])}); "
                                   f"{path.name} was not written", self.last_checkpoint,
                                   "lower the lr or set optimizer_config.grad_clip")
        meta = self.checkpoint_meta_at(epoch_done, inner)
        if self.rank == 0:
            extra = {"amp_scaler": self.scaler.state_dict()} if self.scaler is not None else None
            save_checkpoint(path, self.model, self.optimizer, self.scheduler, meta=meta, extra=extra)
