"""Learning-rate schedules with mmcv 1.x ``LrUpdaterHook`` semantics.

The lr of an iteration is a pure function of ``(epoch, global_iter)`` given ``iters_per_epoch`` and
``max_epochs``, so resuming needs no hidden state:

* regular lr: ``policy`` evaluated at ``progress = epoch`` (``by_epoch=True``, set at each epoch start) or
  ``progress = global_iter`` (``by_epoch=False``, max_progress = max_epochs * iters_per_epoch);
* warmup (``linear``/``constant``/``exp``) multiplies the regular lr for ``global_iter < warmup_iters``
  (``warmup_by_epoch=True`` -> ``warmup_iters`` counts epochs, i.e. ``warmup_iters * iters_per_epoch``):
  linear: ``lr = regular * (1 - (1 - it / W) * (1 - warmup_ratio))``; constant: ``regular * warmup_ratio``;
  exp: ``regular * warmup_ratio ** (1 - it / W)``.

Policies: ``fixed``, ``step`` (int or list, gamma, min_lr), ``exp`` (gamma), ``poly`` (power, min_lr),
``inv`` (gamma, power), ``CosineAnnealing`` (min_lr or min_lr_ratio).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from ..registry import ConfigError

_POLICIES = ("Fixed", "Step", "Exp", "Poly", "Inv", "CosineAnnealing")


def _norm_policy(policy: str) -> str:
    # mmcv: an all-lowercase name is title-cased ('step' -> 'Step'); others are used as given
    name = policy.title() if policy == policy.lower() else policy
    if name == "Cosineannealing":
        name = "CosineAnnealing"
    return name


def annealing_cos(start: float, end: float, factor: float) -> float:
    return end + 0.5 * (start - end) * (math.cos(math.pi * factor) + 1)


class LrScheduler:
    """Computes and applies the lr of every iteration (mmcv 1.x ``LrUpdaterHook``)."""

    def __init__(self, optimizer: torch.optim.Optimizer | None, policy: str = "fixed", by_epoch: bool = True,
                 warmup: str | None = None, warmup_iters: int = 0, warmup_ratio: float = 0.1,
                 warmup_by_epoch: bool = False, base_lrs: Sequence[float] | None = None, filename: str | None = None,
                 **kwargs: Any):
        self.policy = _norm_policy(policy)
        if self.policy not in _POLICIES:
            raise ConfigError(f"unsupported lr policy '{policy}'; expected one of {list(_POLICIES)}",
                              "lr_config.policy", filename)
        if warmup is not None and warmup not in ("constant", "linear", "exp"):
            raise ConfigError(f"'{warmup}' is not a supported warmup type (constant, linear, exp)",
                              "lr_config.warmup", filename)
        if warmup is not None and not (isinstance(warmup_iters, (int, float)) and warmup_iters > 0):
            raise ConfigError("warmup_iters must be a positive number", "lr_config.warmup_iters", filename)
        if not 0 < warmup_ratio <= 1.0:
            raise ConfigError("warmup_ratio must be in (0, 1]", "lr_config.warmup_ratio", filename)
        self.optimizer = optimizer
        self.by_epoch = by_epoch
        self.warmup = warmup
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.warmup_by_epoch = warmup_by_epoch
        self.kwargs = dict(kwargs)
        allowed = {"Fixed": set(), "Step": {"step", "gamma", "min_lr"}, "Exp": {"gamma"},
                   "Poly": {"power", "min_lr"}, "Inv": {"gamma", "power"},
                   "CosineAnnealing": {"min_lr", "min_lr_ratio"}}[self.policy]
        unknown = set(kwargs) - allowed
        if unknown:
            raise ConfigError(f"unknown argument(s) {sorted(unknown)} for policy '{policy}'", "lr_config", filename)
        if self.policy == "Step":
            step = kwargs.get("step")
            if isinstance(step, int):
                if step <= 0:
                    raise ConfigError("step must be positive", "lr_config.step", filename)
            elif isinstance(step, (list, tuple)) and all(isinstance(s, int) and s > 0 for s in step):
                self.kwargs["step"] = list(step)
            else:
                raise ConfigError("step must be a positive int or a list of positive ints", "lr_config.step", filename)
        if self.policy == "CosineAnnealing" and ("min_lr" in kwargs) == ("min_lr_ratio" in kwargs):
            raise ConfigError("exactly one of min_lr and min_lr_ratio must be set", "lr_config", filename)
        if base_lrs is None:
            if optimizer is None:
                raise ValueError("base_lrs or an optimizer is required")
            base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.base_lrs = [float(x) for x in base_lrs]
        if optimizer is not None:
            for g, lr in zip(optimizer.param_groups, self.base_lrs):
                g.setdefault("initial_lr", lr)

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer | None, lr_config: Mapping | None,
                    filename: str | None = None, base_lrs: Sequence[float] | None = None) -> "LrScheduler":
        cfg = dict(lr_config or {"policy": "fixed"})
        policy = cfg.pop("policy", None)
        if policy is None:
            raise ConfigError("is required", "lr_config.policy", filename)
        return cls(optimizer, policy=policy, filename=filename, base_lrs=base_lrs, **cfg)

    # ------------------------------------------------------------------ formulas
    def regular_lr(self, base_lr: float, progress: float, max_progress: float) -> float:
        p, kw = self.policy, self.kwargs
        if p == "Fixed":
            return base_lr
        if p == "Step":
            step = kw["step"]
            if isinstance(step, int):
                exp = int(progress // step)
            else:
                exp = len(step)
                for i, s in enumerate(step):
                    if progress < s:
                        exp = i
                        break
            lr = base_lr * kw.get("gamma", 0.1) ** exp
            min_lr = kw.get("min_lr")
            return max(lr, min_lr) if min_lr is not None else lr
        if p == "Exp":
            return base_lr * kw.get("gamma", 0.1) ** progress
        if p == "Poly":
            min_lr = kw.get("min_lr", 0.0)
            coeff = (1 - progress / max_progress) ** kw.get("power", 1.0)
            return (base_lr - min_lr) * coeff + min_lr
        if p == "Inv":
            return base_lr * (1 + kw.get("gamma", 0.1) * progress) ** (-kw.get("power", 1.0))
        # CosineAnnealing
        target = base_lr * kw["min_lr_ratio"] if "min_lr_ratio" in kw else kw["min_lr"]
        return annealing_cos(base_lr, target, progress / max_progress)

    def total_warmup_iters(self, iters_per_epoch: int) -> int:
        if self.warmup is None:
            return 0
        if self.warmup_by_epoch:
            return int(self.warmup_iters * iters_per_epoch)
        return int(self.warmup_iters)

    def warmup_lr(self, regular: float, cur_iter: int, warmup_iters: int) -> float:
        if self.warmup == "constant":
            return regular * self.warmup_ratio
        if self.warmup == "linear":
            k = (1 - cur_iter / warmup_iters) * (1 - self.warmup_ratio)
            return regular * (1 - k)
        k = self.warmup_ratio ** (1 - cur_iter / warmup_iters)
        return regular * k

    def lrs_at(self, epoch: int, global_iter: int, iters_per_epoch: int, max_epochs: int) -> list[float]:
        """The lr of every param group for the iteration ``global_iter`` (0-based) of ``epoch`` (0-based)."""
        if self.by_epoch:
            progress, max_progress = epoch, max_epochs
        else:
            progress, max_progress = global_iter, max_epochs * iters_per_epoch
        regular = [self.regular_lr(b, progress, max_progress) for b in self.base_lrs]
        w = self.total_warmup_iters(iters_per_epoch)
        if self.warmup is None or global_iter >= w:
            return regular
        return [self.warmup_lr(r, global_iter, w) for r in regular]

    def step(self, epoch: int, global_iter: int, iters_per_epoch: int, max_epochs: int) -> list[float]:
        """Set the optimizer's lrs for this iteration and return them."""
        lrs = self.lrs_at(epoch, global_iter, iters_per_epoch, max_epochs)
        if self.optimizer is not None:
            for g, lr in zip(self.optimizer.param_groups, lrs):
                g["lr"] = lr
        return lrs

    # ------------------------------------------------------------------ state (resume)
    def state_dict(self) -> dict:
        return {"policy": self.policy, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: Mapping) -> None:
        if "base_lrs" in state:
            self.base_lrs = [float(x) for x in state["base_lrs"]]
