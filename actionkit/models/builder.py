"""``build_model``: config (path, dict, Config or model zoo name) -> nn.Module, optionally with weights loaded."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch import nn

from ..config import Config, load_config
from ..registry import MODELS, ConfigError


def clear_pretrained(model_cfg: dict) -> None:
    """A full checkpoint replaces every weight: skip ImageNet / Kinetics initialisation (as MMAction2's test.py)."""
    backbone = model_cfg.get("backbone")
    if isinstance(backbone, dict):
        if "pretrained" in backbone:
            backbone["pretrained"] = None
        for path in ("slow_pathway", "fast_pathway"):
            if isinstance(backbone.get(path), dict) and "pretrained" in backbone[path]:
                backbone[path]["pretrained"] = None


def build_model(cfg: Config | Mapping[str, Any], init_weights: bool = True) -> nn.Module:
    """The model of a loaded config, or of a model dict such as ``cfg.model`` (MMAction2's
    ``build_model(cfg.model)``); errors name the config file and key.

    The one place a built model is initialised: constructors read no file and run no init, and
    ``init_weights()`` (MMAction2's init; it reads the backbone's ``pretrained`` file, if any) runs exactly once
    when ``init_weights`` is true.  Build with ``init_weights=False`` for a model that a checkpoint fills: its
    ``pretrained`` path is then never looked at."""
    filename = getattr(cfg, "filename", None)
    if isinstance(cfg, Mapping) and "model" not in cfg and "type" in cfg:
        model_cfg = cfg
    elif isinstance(cfg, Mapping) and "model" in cfg:
        model_cfg = cfg["model"]
    else:
        raise ConfigError("is required but missing (pass a loaded config, or its model dict)", "model", filename)
    model = MODELS.build(model_cfg, key="model", filename=filename)
    if init_weights and hasattr(model, "init_weights"):
        model.init_weights()
    return model


def resolve_config(config: str | os.PathLike | Mapping[str, Any] | Config):
    """``(config, zoo entry or None)``: a model zoo name (one that is not an existing file) becomes its shipped
    config file; a config file of a zoo config is paired with the entry of its plain name; anything else is
    returned as is with ``None``."""
    from .. import zoo

    if isinstance(config, (str, os.PathLike)):
        spec = os.fspath(config)
        if os.path.exists(spec):
            return config, zoo.find_model_entry(Path(spec).stem)
        entry = zoo.find_model_entry(spec) if not zoo.looks_like_path(spec.removesuffix(".py")) else None
        if entry is not None:
            return zoo.config_path(entry), zoo.get_model_entry(spec)
        if not zoo.looks_like_path(spec):
            # not a file and not a zoo name: list the close names (a bare word was meant as a name)
            zoo.get_model_entry(spec)
        return config, None
    filename = getattr(config, "filename", None)
    return config, (zoo.find_model_entry(Path(filename).stem) if filename else None)


def build_model_from_config(config: str | os.PathLike | Mapping[str, Any] | Config,
                            checkpoint: str | os.PathLike | None = None, device: str = "cpu",
                            strict: bool = True,
                            cfg_options: Mapping[str, Any] | Iterable[str] | None = None,
                            init_weights: bool = True, pretrained: bool = False) -> nn.Module:
    """Build the model of ``config`` and load weights.

    ``config``: a config file, dict or :class:`Config`, a model dict such as ``cfg.model`` (MMAction2's
    ``build_model(cfg.model)``), or a model zoo name (its shipped config).
    ``checkpoint``: a file, an http(s) URL or a zoo name (cached download, see :mod:`actionkit.zoo`).
    ``pretrained=True`` loads the published weights of the zoo entry ``config`` names (a zoo name, or a zoo
    config's file: its plain name's checkpoint); it cannot be combined with ``checkpoint``.
    When weights are loaded, the backbone's own ``pretrained`` is set to None first (as MMAction2's
    ``tools/test.py`` and ``init_recognizer``), the load is strict by default and the model is in eval mode.
    """
    config, entry = resolve_config(config)
    if isinstance(config, Mapping) and "model" not in config and "type" in config:
        config = {"model": copy.deepcopy(dict(config))}  # a model dict alone
    if pretrained:
        if checkpoint is not None:
            raise ValueError("pass either checkpoint=... or pretrained=True, not both")
        if entry is None:
            where = getattr(config, "filename", None) if not isinstance(config, (str, os.PathLike)) else config
            raise ValueError(f"pretrained=True: {where or 'this config'} is not a model zoo config "
                             "(run 'actionkit models' for the names); pass checkpoint=... instead")
        checkpoint = entry.url
    cfg = load_config(config, cfg_options)
    if "model" not in cfg:
        raise cfg.error("is required but missing", "model")
    if checkpoint is not None:
        from ..zoo import resolve_checkpoint

        checkpoint = resolve_checkpoint(checkpoint)  # before the (slow) build: a bad name fails at once
    if checkpoint is not None:
        clear_pretrained(cfg.model)
    model = build_model(cfg, init_weights=init_weights and checkpoint is None)
    if checkpoint is not None:
        from ..checkpoint import load_checkpoint

        load_checkpoint(model, str(checkpoint), map_location="cpu", strict=strict)
        model.eval()
    model.cfg = cfg  # type: ignore[attr-defined]
    return model.to(device)
