"""The inference fast path (``--fast``; config ``inference = dict(fast=True)``).

:func:`optimize_for_inference` prepares an inference-only copy of a model's backbone, which holds
nearly all of the compute of the recognizers and of the AVA detector:

1. every BatchNorm that directly follows a convolution is folded into it, in float32 (eval statistics);
2. the copy is cast to bfloat16 where the device computes it natively (a CPU with ``avx512_bf16`` or AMX,
   a CUDA device that supports bf16); elsewhere it stays float32;
3. its weights and inputs use ``torch.channels_last_3d``;
4. it is compiled with ``torch.compile`` (inductor, ``freezing=True``: the weights become constants, so
   they are pre-packed once), specialised to each input shape it meets (``dynamic=False``: a shape is
   compiled once, on its first call; past ``torch._dynamo.config.cache_size_limit`` shapes, new ones run the
   prepared copy uncompiled). Inductor's on-disk caches (FX graph and kernel caches) live under
   ``$ACTIONKIT_HOME/inductor`` (default ``~/.cache/actionkit/inductor``) unless ``TORCHINDUCTOR_CACHE_DIR``
   is set, so a later run of the same model and shape compiles faster.

Heads, necks and RoI heads run unchanged in float32 on the backbone's features cast back to float32, so
every output is float32 (recognizer scores, detector boxes). The original model is not modified: calling
it directly stays the exact float32 eager computation (the default everywhere). The prepared copy is a
second set of backbone weights (half the size in bfloat16) and a snapshot: load weights first.

Tolerance. Without bfloat16 the fast path differs from eager float32 by rounding only (folding BN reorders
the arithmetic: relative differences ~1e-6). With bfloat16 (8 significant bits) through ~50 layers, class
scores differ by up to a few percent of the largest score (BENCHMARKS.md), so near-ties can flip.
``tests/test_fast_path.py`` checks that on the synthetic recognition and detection test sets top-1 / frame
mAP stay within 0.5 points of float32 and >= 99 % of the top-1 predictions agree.
"""
from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..registry import ConfigError
from ..utils import actionkit_home
from .fuse import fuse_conv_bn

_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class FastPathOptions:
    """What the fast path does. ``None`` means "where the device supports it" (see the module docstring)."""

    bf16: bool | None = None
    channels_last: bool = True
    compile: bool | None = None
    fold_bn: bool = True


def _is_inductor_default(path: str) -> bool:
    """Whether ``path`` is inductor's own default cache dir (which importing ``torch._dynamo`` writes into
    ``TORCHINDUCTOR_CACHE_DIR`` when the variable is unset)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # pragma: no cover - other torch versions
        return False
    return os.path.abspath(path) == os.path.abspath(default_cache_dir())


def inductor_cache_dir() -> Path:
    """Where inductor keeps its on-disk caches for actionkit: ``TORCHINDUCTOR_CACHE_DIR`` when the user set it,
    else ``$ACTIONKIT_HOME/inductor``."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(env) if env and not _is_inductor_default(env) else actionkit_home() / "inductor"


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 natively, and why (for the log line)."""
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, f"CUDA {'supports' if ok else 'does not support'} bf16"
    if device.type == "cpu":
        found = sorted(_CPU_BF16_FLAGS & cpu_flags())
        return bool(found), ("CPU " + "/".join(found)) if found else "CPU without avx512_bf16/AMX"
    return False, f"{device.type} not handled"


def can_compile(device: torch.device) -> tuple[bool, str]:
    """Whether inductor can compile for ``device``: a CUDA device, or a CPU with a C++ compiler on PATH."""
    if device.type == "cuda":
        return True, "CUDA"
    if device.type == "cpu":
        cxx = os.environ.get("CXX") or next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
        return (cxx is not None and shutil.which(cxx) is not None), f"C++ compiler {cxx or 'not found'}"
    return False, f"{device.type} not handled"


def options_from_config(cfg: Mapping[str, Any], filename: str | None = None) -> FastPathOptions | None:
    """The fast-path options of a config's top-level ``inference`` dict (None when ``fast`` is not set).

    ``inference = dict(fast=True, bf16=None, channels_last=True, compile=None, fold_bn=True)``.
    """
    section = cfg.get("inference")
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError(f"must be a dict, got {type(section).__name__}", "inference", filename)
    known = {f.name for f in fields(FastPathOptions)} | {"fast"}
    for key in section:
        if key not in known:
            raise ConfigError(f"unknown key (expected one of {sorted(known)})", f"inference.{key}", filename)
    for key, value in section.items():
        if not (isinstance(value, bool) or (value is None and key in ("bf16", "compile"))):
            raise ConfigError(f"must be True or False{' or None' if key in ('bf16', 'compile') else ''}, "
                              f"got {value!r}", f"inference.{key}", filename)
    if not section.get("fast", False):
        return None
    return FastPathOptions(**{k: v for k, v in section.items() if k != "fast"})


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, tuple):
        return tuple(_to_float32(o) for o in out)
    if isinstance(out, list):
        return [_to_float32(o) for o in out]
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    return out


class _PreparedBackbone:
    """Calls the prepared copy: input cast to its dtype / memory format, output cast back to float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, channels_last: bool, compiled: Callable | None):
        self.module, self.dtype, self.channels_last = module, dtype, channels_last
        self.run = compiled if compiled is not None else module

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        x = x.to(self.dtype)
        if self.channels_last and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return _to_float32(self.run(x, *args, **kwargs))


class FastInferenceModel(nn.Module):
    """``model`` whose backbone runs the prepared copy for the duration of each call; inference only.

    Call it as the model (``fast(imgs, return_loss=False)``, ``fast(img=..., proposals=..., img_metas=...,
    return_loss=False)``); ``return_loss`` defaults to False and True is refused. Attributes the model has
    and this wrapper does not (``average_clips``, ``cls_head``, ...) are looked up on the model. The copy is
    a snapshot: load weights into ``model`` before :func:`optimize_for_inference`.
    """

    def __init__(self, model: nn.Module, backbone: _PreparedBackbone, description: str):
        super().__init__()
        self.model = model
        self.description = description
        object.__setattr__(self, "_backbone", backbone)  # not a registered submodule: no second state_dict

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def train(self, mode: bool = True) -> "FastInferenceModel":
        if mode:
            raise RuntimeError("the fast path is for inference only (BatchNorm is folded): use the model itself")
        return super().train(False)

    def forward(self, *args: Any, return_loss: bool = False, **kwargs: Any) -> Any:
        if return_loss:
            raise ValueError("the fast path is for inference only: call it with return_loss=False")
        backbone = self.model.backbone
        backbone.forward = self._backbone  # instance attribute: shadows the class's forward for this call
        try:
            with torch.no_grad():
                out = self.model(*args, return_loss=False, **kwargs)
        finally:
            del backbone.forward
        return _to_float32(out)


def optimize_for_inference(model: nn.Module, device: torch.device | str,
                           options: FastPathOptions | None = None) -> tuple[FastInferenceModel, str]:
    """Prepare the fast path for ``model`` (a Recognizer3D / FastRCNN-like module with a ``backbone``) on
    ``device``: returns the callable model and a one-line description for the log.

    ``model`` is moved to ``device`` and put in eval mode; its own weights and forward are left as they are.
    """
    options = options or FastPathOptions()
    device = torch.device(device)
    if not isinstance(getattr(model, "backbone", None), nn.Module):
        raise TypeError(f"the fast path needs a model with a 'backbone' module, got {type(model).__name__}")
    model.to(device).eval()
    steps: list[str] = []
    prepared = copy.deepcopy(model.backbone).eval()
    for p in prepared.parameters():
        p.requires_grad_(False)
    if options.fold_bn:
        prepared = fuse_conv_bn(prepared)
        steps.append("BN folded")
    native, why = native_bf16(device)
    use_bf16 = native if options.bf16 is None else options.bf16
    dtype = torch.bfloat16 if use_bf16 else torch.float32
    prepared = prepared.to(dtype=dtype)
    steps.append(f"bfloat16 ({why})" if use_bf16 else f"float32 ({why})" if options.bf16 is None else "float32")
    if options.channels_last:
        prepared = prepared.to(memory_format=torch.channels_last_3d)
        steps.append("channels_last_3d")
    compilable, cwhy = can_compile(device)
    use_compile = compilable if options.compile is None else options.compile
    compiled = None
    if use_compile:
        cache = inductor_cache_dir()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)   # read by inductor whenever it opens its caches
        compiled = torch.compile(prepared, dynamic=False, options={"freezing": True})
        steps.append(f"torch.compile (inductor, freezing, once per shape, cache {cache})")
    else:
        steps.append(f"eager (no compile: {cwhy})" if options.compile is None else "eager")
    description = f"fast path on {device}: backbone " + ", ".join(steps) + "; heads float32"
    backbone = _PreparedBackbone(prepared, dtype, options.channels_last, compiled)
    return FastInferenceModel(model, backbone, description), description
