"""Optimizer construction (``cfg.optimizer``), gradient clipping and the linear lr scaling rule."""
from __future__ import annotations

import logging
import warnings
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..registry import ConfigError

_LOG = logging.getLogger("actionkit")

_OPTIMIZERS = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}


def build_optimizer(model: nn.Module, optimizer_cfg: Mapping[str, Any], filename: str | None = None) -> torch.optim.Optimizer:
    """``torch.optim.<type>(params that require grad, **rest)``; ``paramwise_cfg`` is ignored with a warning."""
    if not isinstance(optimizer_cfg, Mapping) or "type" not in optimizer_cfg:
        raise ConfigError("expected a dict with a 'type' (SGD, Adam, AdamW)", "optimizer", filename)
    cfg = dict(optimizer_cfg)
    type_name = cfg.pop("type")
    if type_name not in _OPTIMIZERS:
        raise ConfigError(f"unsupported optimizer '{type_name}'; expected one of {sorted(_OPTIMIZERS)}",
                          "optimizer.type", filename)
    if cfg.pop("paramwise_cfg", None) is not None:
        msg = "optimizer.paramwise_cfg is not supported and is ignored (all parameters use the same settings)"
        warnings.warn(msg, stacklevel=2)
        _LOG.warning(msg)
    if "lr" not in cfg:
        raise ConfigError("is required", "optimizer.lr", filename)
    module = model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    params = [p for p in module.parameters() if p.requires_grad]
    try:
        return _OPTIMIZERS[type_name](params, **cfg)
    except TypeError as exc:
        raise ConfigError(f"{type_name}: {exc}", "optimizer", filename) from None


def clip_grads(params: Iterable[torch.nn.Parameter], max_norm: float, norm_type: float = 2.0) -> torch.Tensor | None:
    """``clip_grad_norm_`` over the parameters that have a gradient (mmcv ``OptimizerHook.clip_grads``)."""
    params = [p for p in params if p.requires_grad and p.grad is not None]
    if not params:
        return None
    return torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, norm_type=norm_type)


def auto_scale_lr(cfg: Mapping, world_size: int, logger: logging.Logger | None = None) -> float:
    """Linear scaling rule (``--auto-scale-lr``): ``lr *= total_batch / base_batch``, in place.

    ``base_batch`` is ``cfg.auto_scale_lr.base_batch_size`` when given, else 8 GPUs x ``videos_per_gpu``
    (the batch the MMAction2 configs were tuned for).  Returns the new lr.
    """
    logger = logger or _LOG
    data = cfg.get("data", {})
    vpg = data.get("train_dataloader", {}).get("videos_per_gpu", data.get("videos_per_gpu", 1))
    asl = cfg.get("auto_scale_lr") or {}
    base = asl.get("base_batch_size") if isinstance(asl, Mapping) else None
    if base is None:
        base = 8 * data.get("videos_per_gpu", 1)
    total = world_size * vpg
    old = cfg["optimizer"]["lr"]
    new = old * total / base
    cfg["optimizer"]["lr"] = new
    logger.info("auto-scale-lr: lr %.6g -> %.6g (batch %d vs base %d)", old, new, total, base)
    return new
