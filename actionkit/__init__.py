"""actionkit: video action recognition (Kinetics) and spatio-temporal detection (AVA) in plain PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .registry import ConfigError  # noqa: E402


def build_model(config, checkpoint=None, device="cpu", strict=True, cfg_options=None):
    """Build the model of a config (path, dict or :class:`Config`); load ``checkpoint`` if given.

    Returns the ``nn.Module`` on ``device`` (in eval mode when a checkpoint is loaded).
    """
    from .models.builder import build_model_from_config

    return build_model_from_config(config, checkpoint=checkpoint, device=device, strict=strict,
                                   cfg_options=cfg_options)


__all__ = ["Config", "ConfigError", "build_model", "load_config", "__version__"]
