"""``build_model``: config (path, dict or Config) -> nn.Module, optionally with a checkpoint loaded."""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from torch import nn

from ..config import Config, load_config
from ..registry import MODELS


def _clear_pretrained(model_cfg: dict) -> None:
    """A full checkpoint replaces every weight: skip ImageNet / Kinetics initialisation (as MMAction2's test.py)."""
    backbone = model_cfg.get("backbone")
    if isinstance(backbone, dict):
        if "pretrained" in backbone:
            backbone["pretrained"] = None
        for path in ("slow_pathway", "fast_pathway"):
            if isinstance(backbone.get(path), dict) and "pretrained" in backbone[path]:
                backbone[path]["pretrained"] = None


def build_model_from_config(config: str | os.PathLike | Mapping[str, Any] | Config,
                            checkpoint: str | os.PathLike | None = None, device: str = "cpu",
                            strict: bool = True,
                            cfg_options: Mapping[str, Any] | Iterable[str] | None = None,
                            init_weights: bool = True) -> nn.Module:
    cfg = load_config(config, cfg_options)
    if "model" not in cfg:
        raise cfg.error("is required but missing", "model")
    model_cfg = cfg.model
    if checkpoint is not None:
        _clear_pretrained(model_cfg)
    model = MODELS.build(model_cfg, key="model", filename=cfg.filename)
    if init_weights and checkpoint is None and hasattr(model, "init_weights"):
        model.init_weights()
    if checkpoint is not None:
        from ..engine.checkpoint import load_checkpoint

        load_checkpoint(model, str(checkpoint), map_location="cpu", strict=strict)
        model.eval()
    model.cfg = cfg  # type: ignore[attr-defined]
    return model.to(device)
