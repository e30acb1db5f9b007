"""Checkpoint loading (safe: ``weights_only=True`` + an allow-list) and atomic saving.

MMAction2 0.x files are ``{'meta': {...}, 'state_dict': OrderedDict, 'optimizer'?: {...}}``; 1.x files may
add ``message_hub`` / ``param_schedulers`` holding mmengine objects (``HistoryBuffer``, ``ConfigDict``) that
cannot be imported here.  Those non-tensor parts are read through torch's restricted unpickler with each
unknown class mapped to an inert placeholder (nothing is called, imported or executed) and then turned
into plain dicts.  Unknown objects anywhere else (the weights, the optimizer state, the top level) make the
load fail with :class:`CheckpointError`.
"""
from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .utils import atomic_write

_LOG = logging.getLogger("actionkit")

# top-level keys whose non-tensor content may hold foreign classes (mapped to inert dicts)
META_KEYS = ("meta", "message_hub", "param_schedulers")
_PLACEHOLDER_KEY = "__unloaded_class__"
_MAX_UNKNOWN_GLOBALS = 64


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read safely; the message names the file."""

    def __init__(self, filename: str | os.PathLike, message: str):
        self.filename = str(filename)
        super().__init__(f"{filename}: {message}")


# ----------------------------------------------------------------------------------------------- allow-list
def _numpy_safe_globals() -> list:
    out: list = []
    try:
        from numpy._core import multiarray as _ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as _ma  # type: ignore
    for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append((_ma.scalar, f"{prefix}.scalar"))
        out.append((_ma._reconstruct, f"{prefix}._reconstruct"))
    out.append((np.ndarray, "numpy.ndarray"))
    out.append((np.dtype, "numpy.dtype"))
    dtypes_mod = getattr(np, "dtypes", None)
    if dtypes_mod is not None:
        for name in dir(dtypes_mod):
            obj = getattr(dtypes_mod, name)
            if isinstance(obj, type) and name.endswith("DType"):
                out.append((obj, f"numpy.dtypes.{name}"))
    return out


def safe_globals_list() -> list:
    """The harmless non-tensor types allowed in checkpoints (in addition to torch's defaults)."""
    return [(collections.OrderedDict, "collections.OrderedDict"), *_numpy_safe_globals()]


class _Inert:
    """Stands in for a class/function of the checkpoint that is not allow-listed.

    Calling it, ``__new__`` and ``__setstate__`` only *record* their arguments; nothing is executed.
    """

    _path = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "_args", args)
        object.__setattr__(obj, "_state", None)
        return obj

    def __init__(self, *args, **kwargs):  # noqa: D401 - never does anything
        pass

    def __setstate__(self, state):
        object.__setattr__(self, "_state", state)


def _make_inert(path: str) -> type:
    return type(f"Inert[{path}]", (_Inert,), {"_path": path, "__module__": __name__})


_UNSUPPORTED_RE = re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global")
_BLOCKED_RE = re.compile(r"unsupported GLOBAL (\S+) whose module (\S+) is blocked")
_WO_DETAIL_RE = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")
# torch's advice to load with weights_only=False (arbitrary code execution) is never passed on
_UNSAFE_ADVICE_RE = re.compile(r"weights_only|trusted source|arbitrary code|file an issue|pytorch\.org/docs",
                               re.IGNORECASE)


def _inert_to_plain(obj: Any, found: list[str]) -> Any:
    if isinstance(obj, _Inert):
        found.append(obj._path)
        return {_PLACEHOLDER_KEY: obj._path,
                "args": _inert_to_plain(list(obj._args), found),
                "state": _inert_to_plain(obj._state, found)}
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _inert_to_plain(v, found)
        return out
    if isinstance(obj, list):
        return [_inert_to_plain(v, found) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_inert_to_plain(v, found) for v in obj)
    return obj


def _find_inert(obj: Any, path: str = "") -> str | None:
    if isinstance(obj, _Inert):
        return f"{obj._path} at '{path or '<top level>'}'"
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = _find_inert(v, f"{path}.{k}" if path else str(k))
            if hit:
                return hit
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            hit = _find_inert(v, f"{path}[{i}]")
            if hit:
                return hit
    return None


def _check_file(filename: str | os.PathLike) -> bytes:
    """The first bytes of the file (format sniffing); clear errors for missing/unreadable/empty files."""
    try:
        with open(filename, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise CheckpointError(filename, "checkpoint file not found") from None
    except OSError as exc:
        raise CheckpointError(filename, f"cannot read checkpoint: {exc}") from None
    if not head:
        raise CheckpointError(filename, "checkpoint file is empty")
    return head


def torch_error_detail(message: str) -> str:
    """The informative part of a torch loading error, without torch's advice to retry with
    ``weights_only=False`` (never a good idea for a file that failed the safe load)."""
    m = _WO_DETAIL_RE.search(message)
    if m:
        return m.group(1).strip()
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(message.split()))
    kept = [t for t in sentences if t and not _UNSAFE_ADVICE_RE.search(t)]
    return " ".join(kept) or "unreadable"


def verify_zip_records(filename: str | os.PathLike) -> int:
    """Check the CRC-32 of every record of a zip checkpoint (``torch.save``'s format); returns the bytes read.

    A record whose stored CRC is 0 while it holds data was written without one (torch's
    ``compute_crc32=False``) and cannot be checked; the others must match, otherwise a
    :class:`CheckpointError` names the file and the damaged record (``<archive>/data/<n>`` holds the n-th
    tensor storage).  Legacy (non-zip) files have no checksums.
    """
    checked = 0
    name = "<central directory>"
    try:
        with zipfile.ZipFile(filename) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.CRC == 0 and info.file_size > 0:
                    continue
                with zf.open(info) as f:
                    while chunk := f.read(1 << 20):
                        checked += len(chunk)
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            what = "tensor data" if "/data/" in f"/{name}" and not name.endswith(".pkl") else "a record"
            raise CheckpointError(filename, f"damaged checkpoint: {what} '{name}' fails its CRC-32 check (the file "
                                  "changed after it was written: a bad disk, copy or download)") from None
        if name == "<central directory>":
            raise CheckpointError(filename, f"corrupt or truncated checkpoint (its zip directory is missing or "
                                  f"damaged: {exc})") from None
        raise CheckpointError(filename, f"corrupt or truncated checkpoint (zip record '{name}': {exc})") from None
    except (OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(filename, f"corrupt or truncated checkpoint (zip record '{name}': "
                              f"{type(exc).__name__}: {exc})") from None
    return checked


def safe_load(filename: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(filename, weights_only=True)`` with the checkpoint allow-list.

    Classes outside the allow-list become inert dicts ``{'__unloaded_class__': 'module.Name', ...}`` inside
    the ``meta`` / ``message_hub`` / ``param_schedulers`` parts (with a warning); anywhere else the load
    fails with :class:`CheckpointError`.  Never runs a plain unpickler, never executes checkpoint code.
    ``filename`` may also be an http(s) URL or a model zoo name: its cached download is loaded
    (:func:`actionkit.zoo.resolve_checkpoint`).
    The CRC-32 of every record of a zip checkpoint is checked first (:func:`verify_zip_records`): a damaged
    file fails instead of loading altered weights.
    """
    from .zoo import is_checkpoint_reference, resolve_checkpoint

    if is_checkpoint_reference(filename):
        filename = resolve_checkpoint(filename)
    head = _check_file(filename)
    placeholders: dict[str, type] = {}
    # Zip checkpoints: torch lists the unknown globals up front (a static scan of the pickle).  Legacy (non-zip)
    # files cannot be scanned that way (get_unsafe_globals_in_checkpoint refuses them): their unknown globals
    # are learnt one at a time from the loader's refusals below.
    is_zip = head == b"PK\x03\x04"
    if is_zip:
        verify_zip_records(filename)
        try:
            with torch.serialization.safe_globals(safe_globals_list()):
                for path in torch.serialization.get_unsafe_globals_in_checkpoint(str(filename)):
                    placeholders.setdefault(path, _make_inert(path))
        except Exception:  # corrupt archives are reported by the real load below
            pass
    for _ in range(_MAX_UNKNOWN_GLOBALS + 1):
        allowed = safe_globals_list() + [(cls, path) for path, cls in placeholders.items()]
        try:
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(str(filename), map_location=map_location, weights_only=True)
            break
        except pickle.UnpicklingError as exc:
            msg = str(exc)
            m = None if is_zip else _UNSUPPORTED_RE.search(msg)
            if m is None:
                blocked = _BLOCKED_RE.search(msg)
                if blocked:
                    raise CheckpointError(filename, f"refusing to load: the file calls {blocked.group(1)} (module "
                                          f"'{blocked.group(2)}' is never allowed in a checkpoint)") from None
                detail = torch_error_detail(msg)
                if "operand" in detail or "opcode" in detail:
                    raise CheckpointError(filename, "not a valid checkpoint: damaged, or a pickle that was not "
                                          f"written by torch.save ({detail})") from None
                if "Unsupported" in msg or "unrecognized" in msg or "Can only" in msg:
                    raise CheckpointError(filename, "refusing to load: the file holds an object that is not "
                                          f"allowed in a checkpoint ({detail})") from None
                raise CheckpointError(filename, f"corrupt or truncated checkpoint ({detail})") from None
            path = m.group(1)
            if "." not in path:
                path = f"builtins.{path}"
            if path in placeholders:
                raise CheckpointError(filename, f"cannot load object of class {path}") from None
            placeholders[path] = _make_inert(path)
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError,
                IndexError, TypeError, AttributeError) as exc:
            first = torch_error_detail(str(exc)) if str(exc).strip() else type(exc).__name__
            raise CheckpointError(filename, f"corrupt or truncated checkpoint ({type(exc).__name__}: {first})") from None
    else:
        raise CheckpointError(filename, f"more than {_MAX_UNKNOWN_GLOBALS} unknown classes in the checkpoint")

    if not placeholders:
        return obj
    # Placeholders are tolerated only inside the metadata parts.
    if not isinstance(obj, dict):
        hit = _find_inert(obj)
        raise CheckpointError(filename, f"refusing to load: non-allow-listed object {hit}")
    found: list[str] = []
    for key in list(obj):
        if key in META_KEYS:
            obj[key] = _inert_to_plain(obj[key], found)
        else:
            hit = _find_inert(obj[key], str(key))
            if hit:
                raise CheckpointError(filename, f"refusing to load: non-allow-listed object {hit}")
    if found:
        msg = (f"{filename}: metadata holds classes that are not loaded (kept as inert dicts): "
               + ", ".join(sorted(set(found))))
        warnings.warn(msg, stacklevel=2)
        _LOG.warning(msg)
    return obj


# ----------------------------------------------------------------------------------------------- loading
def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a (Distributed)DataParallel wrapper, or ``model`` itself."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def extract_state_dict(checkpoint: Any, filename: str | os.PathLike = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The weights of ``{'state_dict': ...}`` (MMAction2), ``{'model': ...}`` or a bare state dict."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(filename, f"expected a dict, got {type(checkpoint).__name__}")
    for key in ("state_dict", "model"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            sd = checkpoint[key]
            break
    else:
        sd = checkpoint
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(filename, "no tensors found (expected 'state_dict', 'model' or a state dict)")
    return dict(tensors)


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = False,
                    logger: logging.Logger | None = None, filename: str = "<state_dict>") -> dict[str, list]:
    """Copy ``state_dict`` into ``model``; report missing/unexpected/shape-mismatched keys by name.

    Shape-mismatched keys are skipped (with a warning) when ``strict=False``, as mmcv does.  With
    ``strict=True`` any of the three lists being non-empty raises :class:`CheckpointError`.
    """
    logger = logger or _LOG
    model = unwrap_model(model)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(own[k].shape)) for k in state_dict
                  if k in own and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    bad = {k for k, _, _ in mismatched}
    to_load = {k: v for k, v in state_dict.items() if k in own and k not in bad}
    report = {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}
    lines = []
    if unexpected:
        lines.append("unexpected key in source state_dict: " + ", ".join(unexpected))
    if missing:
        lines.append("missing keys in source state_dict: " + ", ".join(missing))
    if mismatched:
        lines.append("size mismatch (skipped): " + ", ".join(
            f"{k} (checkpoint {list(s)} vs model {list(m)})" for k, s, m in mismatched))
    if strict and lines:
        raise CheckpointError(filename, "strict loading failed:\n  " + "\n  ".join(lines))
    model.load_state_dict(to_load, strict=False)
    for line in lines:
        logger.warning("%s: %s", filename, line)
    return report


def nonfinite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """The keys of the floating-point tensors of ``state_dict`` that hold a NaN or an infinity."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())
            and not bool(torch.isfinite(v).all())]


def check_finite(state_dict: Mapping[str, Any], filename: str | os.PathLike, what: str = "weights") -> None:
    """Raise :class:`CheckpointError` naming the file and the first keys when a tensor is not finite."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        first = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise CheckpointError(filename, f"{len(bad)} of the {what}' tensors hold NaN or Inf values (first: {first}); "
                              "such weights only give NaN scores (was it saved after training diverged?)")


def load_checkpoint(model: nn.Module, filename: str | os.PathLike, map_location: Any = "cpu",
                    strict: bool = False, logger: logging.Logger | None = None,
                    revise_keys: Sequence[tuple[str, str]] = ((r"^module\.", ""),),
                    allow_nonfinite: bool = False) -> dict:
    """Load a checkpoint file into ``model`` (safely) and return the checkpoint dict.

    ``revise_keys``: ``(pattern, replacement)`` regexes applied to every key (default strips ``module.``).
    The returned dict carries ``'_load_report'`` with the missing/unexpected/mismatched key lists.
    Weights holding NaN / Inf raise :class:`CheckpointError` (naming the file and the first keys) unless
    ``allow_nonfinite``.
    """
    ckpt = safe_load(filename, map_location=map_location)
    sd = extract_state_dict(ckpt, filename)
    if not allow_nonfinite:
        check_finite(sd, filename)
    for pattern, repl in revise_keys:
        rx = re.compile(pattern)
        sd = {rx.sub(repl, k): v for k, v in sd.items()}
    report = load_state_dict(model, sd, strict=strict, logger=logger, filename=str(filename))
    if not isinstance(ckpt, dict) or ("state_dict" not in ckpt and "model" not in ckpt):
        ckpt = {"state_dict": sd}
    ckpt["_load_report"] = report
    return ckpt


# ----------------------------------------------------------------------------------------------- saving
def get_rng_state() -> dict:
    """RNG states as tensors / plain types (loadable with weights_only=True)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [str(np_state[0]), torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def weights_to_cpu(state_dict: Mapping[str, torch.Tensor]) -> collections.OrderedDict:
    return collections.OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items())


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, meta: Mapping | None = None, extra: Mapping | None = None) -> None:
    """Write ``{'meta', 'state_dict', 'optimizer'?, 'scheduler'?}`` atomically (MMAction2-compatible layout).

    ``meta`` should only hold plain types / tensors (epoch, iter, rng states, config text, ...); the file
    loads back with ``weights_only=True``.
    """
    meta = dict(meta or {})
    meta.setdefault("rng_states", [get_rng_state()])  # one entry per rank (the trainer gathers all ranks)
    ckpt: dict[str, Any] = {"meta": meta, "state_dict": weights_to_cpu(unwrap_model(model).state_dict())}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
    if extra:
        ckpt.update(extra)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Atomic copy (used for ``latest.pth``: a real file, not a symlink)."""
    data = Path(src).read_bytes()
    with atomic_write(dst, "wb") as f:
        f.write(data)
