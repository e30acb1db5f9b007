"""Python config files in the MMAction2 0.x schema.

Supported: ``_base_`` inheritance (a string or a list, paths relative to the file), recursive
dict merging, ``_delete_=True`` to replace a base dict instead of merging into it, and
``--cfg-options a.b.c=value`` overrides (list elements addressable by index: ``a.0.b=1``).
The result is a :class:`Config`: nested dicts with attribute access that remember the file
they came from, so errors can name it.
"""
from __future__ import annotations

import ast
import copy
import os
import types
from pathlib import Path
from typing import Any, Iterable, Mapping

from .registry import ConfigError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"


class ConfigDict(dict):
    """A dict whose items are also attributes (``cfg.model.backbone.depth``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __deepcopy__(self, memo):
        return type(self)({k: copy.deepcopy(v, memo) for k, v in self.items()})


def _to_config_dict(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return ConfigDict({k: _to_config_dict(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_to_config_dict(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_config_dict(v) for v in obj)
    return obj


def to_plain(obj: Any) -> Any:
    """Nested plain dict/list/tuple copy (for saving in checkpoints and printing)."""
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj) if isinstance(obj, tuple) else [to_plain(v) for v in obj]
    return obj


class Config(ConfigDict):
    """The loaded config; ``cfg.filename`` is the file it was read from (or None)."""

    def __init__(self, data: Mapping | None = None, filename: str | None = None):
        super().__init__()
        for k, v in (data or {}).items():
            self[k] = _to_config_dict(v)
        dict.__setattr__(self, "filename", filename)

    def __getattr__(self, name: str) -> Any:
        if name == "filename":
            return self.__dict__.get("filename")
        return super().__getattr__(name)

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()}, self.filename)

    def error(self, message: str, key: str | None = None) -> ConfigError:
        return ConfigError(message, key, self.filename)

    def require(self, key: str, types_: type | tuple[type, ...] | None = None) -> Any:
        """Value at dotted ``key``; a clear ConfigError when absent or of the wrong type."""
        node: Any = self
        for part in key.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                raise self.error("is required but missing", key)
        if types_ is not None and not isinstance(node, types_):
            names = (types_,) if isinstance(types_, type) else types_
            raise self.error(f"expected {' or '.join(t.__name__ for t in names)}, "
                             f"got {type(node).__name__} ({node!r})", key)
        return node

    def pretty_text(self) -> str:
        import pprint

        return pprint.pformat(to_plain(dict(self)), sort_dicts=False, width=110)


def _exec_config_file(path: Path) -> dict[str, Any]:
    if path.suffix != ".py":
        raise ConfigError("only Python config files (.py) are supported", filename=str(path))
    if not path.is_file():
        raise ConfigError("config file not found", filename=str(path))
    source = path.read_text(encoding="utf-8")
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise ConfigError(f"syntax error on line {exc.lineno}: {exc.msg}", filename=str(path)) from None
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": "__actionkit_config__"}
    try:
        exec(code, namespace)  # noqa: S102 - config files are the user's own Python code
    except Exception as exc:  # report the file and line of the failure inside the config
        import traceback

        tb = traceback.extract_tb(exc.__traceback__)
        lines = [f.lineno for f in tb if f.filename == str(path)]
        where = f" on line {lines[-1]}" if lines else ""
        raise ConfigError(f"executing the config failed{where}: {type(exc).__name__}: {exc}",
                          filename=str(path)) from exc
    out: dict[str, Any] = {}
    for k, v in namespace.items():
        if k.startswith("__") or isinstance(v, (types.ModuleType, types.FunctionType, type)):
            continue
        out[k] = v
    return out


def merge_dicts(base: Mapping, override: Mapping, key_prefix: str = "", filename: str | None = None) -> dict:
    """Merge ``override`` into a copy of ``base`` (dicts recursively; ``_delete_`` replaces)."""
    result = dict(copy.deepcopy(base))
    for k, v in override.items():
        if isinstance(v, Mapping):
            v = dict(v)
            delete = v.pop(DELETE_KEY, False)
            if not delete and isinstance(result.get(k), Mapping):
                result[k] = merge_dicts(result[k], v, f"{key_prefix}{k}.", filename)
            else:
                result[k] = _strip_delete(v)
        else:
            result[k] = copy.deepcopy(v)
    return result


def _strip_delete(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _strip_delete(x) for k, x in v.items() if k != DELETE_KEY}
    if isinstance(v, list):
        return [_strip_delete(x) for x in v]
    return v


def _load_raw(path: Path, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if str(path) in chain:
        raise ConfigError("circular _base_ inheritance: " + " -> ".join([*chain, str(path)]),
                          filename=str(path))
    own = _exec_config_file(path)
    bases = own.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
        raise ConfigError("expected a path or a list of paths", BASE_KEY, str(path))
    merged: dict[str, Any] = {}
    for b in bases:
        base_path = (path.parent / b)
        if not base_path.is_file():
            raise ConfigError(f"base config '{b}' not found (looked at {base_path})", BASE_KEY, str(path))
        merged = merge_dicts(merged, _load_raw(base_path, (*chain, str(path))), filename=str(path))
    return merge_dicts(merged, own, filename=str(path))


def parse_option_value(text: str) -> Any:
    """``'1'`` -> 1, ``'[1,2]'`` -> [1, 2], ``'None'`` -> None, ``'true'`` -> True, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_cfg_options(cfg: dict, options: Mapping[str, Any] | Iterable[str], filename: str | None = None) -> None:
    """Apply ``{'a.b.c': value}`` or ``['a.b.c=value', ...]`` in place."""
    if not isinstance(options, Mapping):
        parsed = {}
        for item in options:
            if "=" not in item:
                raise ConfigError(f"--cfg-options entry '{item}' must look like key=value", filename=filename)
            k, v = item.split("=", 1)
            parsed[k.strip()] = parse_option_value(v)
        options = parsed
    for dotted, value in options.items():
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(f"--cfg-options key '{dotted}' has an empty part", dotted, filename)
        node: Any = cfg
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"'{part}' is not a valid index of a list of {len(node)}", where, filename)
                node = node[int(part)]
            elif isinstance(node, dict):
                if part not in node or node[part] is None:
                    node[part] = ConfigDict()
                node = node[part]
            else:
                raise ConfigError(f"cannot set a sub-key of a {type(node).__name__}", where, filename)
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"'{last}' is not a valid index of a list of {len(node)}", dotted, filename)
            node[int(last)] = _to_config_dict(value)
        elif isinstance(node, dict):
            node[last] = _to_config_dict(value)
        else:
            parent = ".".join(parts[:-1])
            raise ConfigError(f"cannot set '{last}': '{parent}' holds {node!r} ({type(node).__name__}), "
                              f"not a dict", dotted, filename)


def config_to_python(cfg: Mapping) -> str:
    """The resolved config as a Python file (``key = value`` per top-level entry) that loads back."""
    import pprint

    from .version import __version__

    lines = [f"# resolved by actionkit {__version__}"]
    for k, v in to_plain(dict(cfg)).items():
        lines.append(f"{k} = {pprint.pformat(v, sort_dicts=False, width=110)}")
    return "\n".join(lines) + "\n"


def load_config(path: str | os.PathLike | Mapping, cfg_options: Mapping[str, Any] | Iterable[str] | None = None) -> Config:
    """Load a config file (or wrap a dict) and apply ``cfg_options`` overrides."""
    if isinstance(path, Config):
        cfg = copy.deepcopy(path)
    elif isinstance(path, Mapping):
        cfg = Config(copy.deepcopy(dict(path)))
    else:
        p = Path(path)
        cfg = Config(_load_raw(p), filename=str(p))
    overridden: list[str] = []
    if cfg_options:
        apply_cfg_options(cfg, cfg_options, cfg.filename)
        overridden = list(cfg_options) if isinstance(cfg_options, Mapping) else \
            [o.split("=", 1)[0].strip() for o in cfg_options]
    validate_config(cfg, overridden)
    return cfg


# ------------------------------------------------------------------------------------------ validation
def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected a positive integer, got {type(value).__name__} ({value!r})"
    return None if value > 0 else f"expected a positive integer, got {value}"


def _non_negative_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an integer >= 0, got {type(value).__name__} ({value!r})"
    return None if value >= 0 else f"expected an integer >= 0, got {value}"


def _optional_int(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    return f"expected an integer or None, got {type(value).__name__} ({value!r})"


def _non_negative_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {type(value).__name__} ({value!r})"
    return None if value >= 0 and value == value else f"expected a number >= 0, got {value}"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected True or False, got {type(value).__name__} ({value!r})"


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {type(value).__name__} ({value!r})"


# Well-known keys -> their check.  ``*`` matches any key of a dict (one level); a key that is absent
# or None (where None is the MMAction2 default) is not checked.
_KEY_CHECKS: tuple[tuple[str, Any], ...] = (
    ("total_epochs", _positive_int),
    ("runner.max_epochs", _positive_int),
    ("seed", _optional_int),
    ("work_dir", _string),
    ("data.videos_per_gpu", _positive_int),
    ("data.workers_per_gpu", _non_negative_int),
    ("data.*_dataloader.videos_per_gpu", _positive_int),
    ("data.*_dataloader.workers_per_gpu", _non_negative_int),
    ("data.*_dataloader.drop_last", _bool),
    ("data.defer_normalize", _bool),
    ("data.*_dataloader.defer_normalize", _bool),
    ("model.backbone.depth", _positive_int),
    ("model.backbone.slow_pathway.depth", _positive_int),
    ("model.backbone.fast_pathway.depth", _positive_int),
    ("model.backbone.pretrained2d", _bool),
    ("model.cls_head.num_classes", _positive_int),
    ("model.cls_head.in_channels", _positive_int),
    ("model.roi_head.bbox_head.num_classes", _positive_int),
    ("model.roi_head.bbox_head.in_channels", _positive_int),
    ("optimizer.lr", _non_negative_number),
    ("optimizer.momentum", _non_negative_number),
    ("optimizer.weight_decay", _non_negative_number),
    ("checkpoint_config.interval", _positive_int),
    ("evaluation.interval", _positive_int),
    ("log_config.interval", _positive_int),
)


def _matches(pattern: str, node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(dotted key, value)`` for every present, non-None value of ``pattern`` in ``node``."""
    head, _, rest = pattern.partition(".")
    if not isinstance(node, Mapping):
        return
    if "*" in head:
        before, _, after = head.partition("*")
        names = [k for k in node if isinstance(k, str) and k.startswith(before) and k.endswith(after)
                 and len(k) >= len(before) + len(after)]
    else:
        names = [head] if head in node else []
    for name in names:
        value = node[name]
        key = f"{prefix}{name}"
        if rest:
            yield from _matches(rest, value, key + ".")
        elif value is not None:
            yield key, value


def validate_config(cfg: Config, overridden: Iterable[str] = ()) -> None:
    """Check the well-known keys (epochs, batch sizes, workers, depths, class counts, lr, intervals).

    Raises a :class:`ConfigError` naming the config file and the key (and ``--cfg-options`` when the
    value came from there).  Keys not listed are checked where they are used (registry builds, engine).
    """
    from_cli = set(overridden)
    for pattern, check in _KEY_CHECKS:
        for key, value in _matches(pattern, cfg):
            problem = check(value)
            if problem is not None:
                if key in from_cli:
                    problem += " (set by --cfg-options)"
                raise cfg.error(problem, key)
