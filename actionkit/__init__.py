"""actionkit: video action recognition (Kinetics) and spatio-temporal detection (AVA) in plain PyTorch."""
from __future__ import annotations

from .version import __version__  # noqa: E402

from .config import Config, load_config  # noqa: E402
from .registry import ConfigError  # noqa: E402


def build_model(config, checkpoint=None, pretrained=False, device="cpu", strict=True, cfg_options=None):
    """Build the model of ``config``: a config file, dict or :class:`Config`, or a model zoo name
    (``actionkit models`` lists them).

    ``checkpoint`` (a file, an http(s) URL or a zoo name) is loaded if given; ``pretrained=True`` loads the
    published weights of the zoo entry ``config`` names, e.g.
    ``build_model("slowfast_r50_4x16x1_256e_kinetics400_rgb", pretrained=True)``.  Downloads go to the cache
    (``$ACTIONKIT_HOME/checkpoints``).  Returns the ``nn.Module`` on ``device`` (in eval mode when weights
    are loaded).
    """
    from .models.builder import build_model_from_config

    return build_model_from_config(config, checkpoint=checkpoint, device=device, strict=strict,
                                   cfg_options=cfg_options, pretrained=pretrained)


def __getattr__(name):
    # the zoo / label helpers without importing them at package import
    if name in ("list_models", "get_model_entry", "download_checkpoint", "resolve_checkpoint"):
        from . import zoo

        return getattr(zoo, name)
    if name in ("load_label_map", "class_names_for_config"):
        from . import labels

        return getattr(labels, name)
    if name in ("init_recognizer", "inference_recognizer"):
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'actionkit' has no attribute '{name}'")


__all__ = ["Config", "ConfigError", "build_model", "class_names_for_config", "download_checkpoint",
           "get_model_entry", "inference_recognizer", "init_recognizer", "list_models", "load_config",
           "load_label_map", "resolve_checkpoint", "__version__"]
