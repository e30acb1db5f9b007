"""Tiny name -> class registries used to resolve ``type=`` names in configs.

Modules stay plain classes with explicit constructor arguments; the registry is only the
edge where a config dict becomes an object.  Errors name the config key path so that a user
sees *where* in their config a wrong ``type`` or argument sits.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Mapping


class ConfigError(ValueError):
    """A configuration problem: says the file (when known), the key and what was expected."""

    def __init__(self, message: str, key: str | None = None, filename: str | None = None):
        self.message = message
        self.key = key
        self.filename = filename
        where = []
        if filename:
            where.append(str(filename))
        if key:
            where.append(f"key '{key}'")
        prefix = (": ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


# The modules that register classes, per registry.  They are imported the first time a registry is queried,
# so ``import actionkit`` stays cheap; a name that is not a module is an error (tests/test_configs.py checks
# that this list is exactly the modules whose source registers into each registry).
_PLUGIN_MODULES: dict[str, list[str]] = {
    "models": [
        "actionkit.models.resnet3d",
        "actionkit.models.nonlocal3d",
        "actionkit.models.slowfast",
        "actionkit.models.heads",
        "actionkit.models.recognizer",
        "actionkit.models.roi",
        "actionkit.models.bbox_head",
        "actionkit.models.acrn",
        "actionkit.models.fbo_head",
        "actionkit.models.lfb_infer_head",
        "actionkit.models.detector",
    ],
    "datasets": [
        "actionkit.data.kinetics",
        "actionkit.data.ava",
    ],
    "pipelines": [
        "actionkit.data.pipeline",
        "actionkit.data.decode",
        "actionkit.data.sampling",
        "actionkit.data.transforms",
        "actionkit.data.ava",
    ],
}


class Registry:
    def __init__(self, name: str):
        self.name = name
        self._items: dict[str, Callable[..., Any]] = {}
        self._loaded = False

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()):
        def deco(obj):
            for key in (name or obj.__name__, *aliases):
                if key in self._items and self._items[key] is not obj:
                    raise KeyError(f"{self.name} registry: '{key}' is already registered")
                self._items[key] = obj
            return obj

        return deco

    def _load_plugins(self) -> None:
        """Import this registry's plugin modules (once); a listed name that is not a module raises ImportError."""
        if self._loaded:
            return
        self._loaded = True  # set first: a plugin module may query the registry while it is imported
        for mod in _PLUGIN_MODULES.get(self.name, []):
            try:
                importlib.import_module(mod)
            except BaseException as exc:
                self._loaded = False  # the next query tries again (and fails the same way)
                if isinstance(exc, ModuleNotFoundError) and exc.name and (mod + ".").startswith(exc.name + "."):
                    raise ImportError(f"{self.name} registry: plugin module '{mod}' does not exist (listed in "
                                      "actionkit.registry._PLUGIN_MODULES)", name=mod) from None
                raise  # the module exists and failed to import, or something it imports is missing

    def get(self, name: str) -> Callable[..., Any]:
        self._load_plugins()
        if name not in self._items:
            raise KeyError(name)
        return self._items[name]

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items

    def build(self, cfg: Mapping[str, Any], *, key: str = "", filename: str | None = None,
              **default_args: Any) -> Any:
        """Build ``cfg['type'](**rest, **default_args)``; errors name the key path."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"expected a dict with a 'type' entry, got {type(cfg).__name__}",
                              key, filename)
        if "type" not in cfg:
            raise ConfigError(f"missing 'type' (one of the {self.name}: {', '.join(self.names())})",
                              key, filename)
        args = {k: v for k, v in cfg.items() if k != "type"}
        for k, v in default_args.items():
            args.setdefault(k, v)
        type_name = cfg["type"]
        if not isinstance(type_name, str):
            return type_name(**args)  # a class given directly
        try:
            cls = self.get(type_name)
        except KeyError:
            raise ConfigError(
                f"unknown {self.name[:-1] if self.name.endswith('s') else self.name} type "
                f"'{type_name}'; expected one of: {', '.join(self.names())}",
                f"{key}.type" if key else "type", filename) from None
        try:
            sig = inspect.signature(cls)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            params = sig.parameters
            has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
            if not has_var_kw:
                unknown = [a for a in args if a not in params]
                if unknown:
                    raise ConfigError(
                        f"{type_name} got unexpected argument(s) {unknown}; it accepts: "
                        f"{', '.join(p for p in params if p not in ('self',))}", key, filename)
            missing = [n for n, p in params.items()
                       if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                       and n not in args]
            if missing:
                raise ConfigError(f"{type_name} is missing required argument(s) {missing}",
                                  key, filename)
        try:
            return cls(**args)
        except ConfigError as exc:
            if exc.filename is not None and not (key and exc.key is not None and not _is_absolute(exc.key, key)):
                raise
            raise ConfigError(exc.message, _join_key(key, exc.key), exc.filename or filename) from exc
        except _CONSTRUCTOR_ERRORS as exc:
            if type(exc) not in _CONSTRUCTOR_ERRORS:  # subclasses (project errors) name their own file
                raise
            detail = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
            raise ConfigError(f"building {type_name} failed: {type(exc).__name__}: {detail}",
                              key, filename) from exc


# Exceptions a constructor raises about its arguments (exact types only): ``build`` re-raises them as a
# ConfigError naming the config key and file.  Subclasses (FeatureBankError, DecodeError, ...) pass through.
_CONSTRUCTOR_ERRORS = (TypeError, ValueError, KeyError)


def _root(key: str) -> str:
    return key.split(".", 1)[0].split("[", 1)[0]


def _is_absolute(inner: str, outer: str) -> bool:
    """Whether ``inner`` (a key raised from inside the build of ``outer``) is a full config path.

    Nested builds name full paths (``model.backbone``); constructors name their own argument
    (``lfb_cfg.device``, ``modality``), which is relative to the key being built."""
    root = _root(outer)
    return inner == root or inner.startswith((root + ".", root + "["))


def _join_key(outer: str, inner: str | None) -> str | None:
    if not inner:
        return outer or None
    if not outer or _is_absolute(inner, outer):
        return inner
    return f"{outer}.{inner}"


MODELS = Registry("models")
DATASETS = Registry("datasets")
PIPELINES = Registry("pipelines")
