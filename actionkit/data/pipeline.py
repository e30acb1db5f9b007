"""``Compose`` and the formatting ops (MMAction2 0.x ``formatting.py`` names and arguments).

* ``Compose(transforms)``: builds config dicts through ``PIPELINES`` (errors name ``pipeline[i]``).
* ``FormatShape(input_format, collapse=False)``: ``[M,H,W,C]`` -> ``NCTHW`` ``[crops*clips, C, L, H, W]``
  (crop-major view order) or ``NCHW`` ``[M, C, H, W]``; ``collapse=True`` drops the leading 1.
* ``Collect(keys, meta_keys, meta_name='img_metas', nested=False)``: the listed keys plus a plain meta dict.
* ``ToTensor(keys)``, ``ImageToTensor(keys)``, ``Rename(mapping)``, ``ToDataContainer(fields)`` (a no-op:
  there is no DataContainer here; the AVA collate keeps per-sample lists itself).

Deferred normalisation: inside ``with deferred_normalization():`` (the engine's loaders wrap their datasets
in the engine's ``DeferredNormalizeDataset``) a pipeline whose fused ``Normalize`` + ``FormatShape('NCTHW')`` step is
only followed by ``Rename`` / ``ToTensor`` / ``ToDataContainer`` / ``Collect`` returns the clip as **uint8** in
its final layout plus a :class:`DeferredNormalize` under ``DEFERRED_NORMALIZE_KEY``; the consumer calls
:func:`apply_deferred_normalize` on the collated batch (after moving it to the device).  Workers then send a
quarter of the bytes, and the result is bit-identical: both sides index the same 256-entry table per
channel, computed with the ``cv2`` calls of ``Normalize``.  Outside the context nothing changes.

This module is imported by ``actionkit.data.transforms`` so that its ops are registered whenever the
pipeline registry loads its plugins.

Why this module is long: ``Compose`` rewrites ``Normalize`` + ``FormatShape`` and decode + geometric steps into
fused steps, and those steps are one contract with the deferred normalisation the engine finishes; keeping them
beside the formatting ops they fuse keeps that contract in one file (making the normalisation an explicit
engine-side step would remove most of it).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np
import torch

from actionkit.registry import PIPELINES, ConfigError

__all__ = ["Compose", "FormatShape", "Collect", "ToTensor", "ImageToTensor", "Rename",
           "ToDataContainer", "to_tensor", "NormalizeFormatShape", "DeferredNormalize",
           "DEFERRED_NORMALIZE_KEY", "deferred_normalization",
           "apply_deferred_normalize", "clip_to_ncthw", "empty_tensor", "FramewiseClip", "output_buffer"]

DEFERRED_NORMALIZE_KEY = "deferred_normalize"

_DEFER_NORMALIZE: ContextVar[bool] = ContextVar("actionkit_defer_normalize", default=False)

# Where an item's final clip may be written: ``(shape, dtype) -> array or None``.  In a DataLoader worker,
# ``collate.shared_batch_items`` hands out the item's place in the shared buffer of its batch, so that the collate
# has nothing to copy.
_OUTPUT_BUFFER: ContextVar[Callable[[tuple, np.dtype], "np.ndarray | None"] | None] = ContextVar(
    "actionkit_output_buffer", default=None)


def output_buffer(shape: Sequence[int], dtype: Any) -> np.ndarray:
    """An uninitialised array for an item's final clip (the pipeline's last copy of the pixels)."""
    provide = _OUTPUT_BUFFER.get()
    if provide is not None:
        buf = provide(tuple(int(n) for n in shape), np.dtype(dtype))
        if buf is not None:
            return buf
    return np.empty(shape, dtype)


@contextlib.contextmanager
def deferred_normalization(enabled: bool = True) -> Iterator[None]:
    """Pipelines called inside return uint8 clips plus a :class:`DeferredNormalize` where they can."""
    token = _DEFER_NORMALIZE.set(bool(enabled))
    try:
        yield
    finally:
        _DEFER_NORMALIZE.reset(token)


class Compose:
    """Run transforms in order on a ``results`` dict; a transform returning ``None`` stops the chain."""

    def __init__(self, transforms: Sequence[Mapping[str, Any] | Callable[[dict], Any]],
                 filename: str | None = None):
        if isinstance(transforms, (Mapping, str)) or not isinstance(transforms, Sequence):
            raise ConfigError(f"a pipeline is a list of transforms, got {type(transforms).__name__}",
                              "pipeline", filename)
        self.transforms: list[Callable[[dict], Any]] = []
        for i, t in enumerate(transforms):
            if isinstance(t, Mapping):
                self.transforms.append(PIPELINES.build(t, key=f"pipeline[{i}]", filename=filename))
            elif callable(t):
                self.transforms.append(t)
            else:
                raise ConfigError(f"expected a dict with 'type' or a callable, got {type(t).__name__}",
                                  f"pipeline[{i}]", filename)

        self._run = _fuse_framewise(_fuse_normalize_format(self.transforms))
        self._deferral = _deferral_plan(self._run)

    @property
    def supports_deferred_normalize(self) -> bool:
        """Whether :func:`deferred_normalization` changes this pipeline's output (see the module doc)."""
        return self._deferral is not None

    def __call__(self, data: dict) -> dict | None:
        plan = self._deferral if _DEFER_NORMALIZE.get() else None
        deferred = False
        for i, t in enumerate(self._run):
            if plan is not None and i == plan.index:
                data, deferred = t.run(data, defer=True)
            else:
                data = t(data)
            if data is None:
                return None
        if deferred:
            spec = self._run[plan.index].deferred(plan.key)
            # a nested Collect wraps every value in a list (one entry per augmentation); so does the spec
            data[DEFERRED_NORMALIZE_KEY] = [spec] if plan.nested else spec
        return data

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}" for t in self.transforms)
        return f"Compose({inner}\n)"


def _fuse_normalize_format(transforms: list) -> list:
    """Replace each ``Normalize`` directly followed by ``FormatShape('NCTHW')`` with one fused step."""
    out: list = []
    i = 0
    while i < len(transforms):
        t = transforms[i]
        nxt = transforms[i + 1] if i + 1 < len(transforms) else None
        if (type(t).__name__ == "Normalize" and hasattr(t, "_mean64") and isinstance(nxt, FormatShape)
                and nxt.input_format == "NCTHW"):
            out.append(NormalizeFormatShape(t, nxt))
            i += 2
        else:
            out.append(t)
            i += 1
    return out


@dataclass(frozen=True)
class _DeferralPlan:
    index: int  # position of the fused step in Compose._run
    key: str  # name of the clip in the pipeline output
    nested: bool  # Collect(nested=True) wraps the outputs in lists


def _deferral_plan(steps: list) -> _DeferralPlan | None:
    """Where the last fused step's clip ends up, if only key-moving formatting ops follow it."""
    fused = [i for i, t in enumerate(steps) if isinstance(t, (NormalizeFormatShape, FramewiseClip))]
    if not fused:
        return None
    key, nested, collected = "imgs", False, False
    for t in steps[fused[-1] + 1:]:
        if nested:
            return None
        if isinstance(t, Rename):
            key = t.mapping.get(key, key)
        elif isinstance(t, Collect):
            if collected or key not in t.keys:
                return None
            collected, nested = True, t.nested
        elif not isinstance(t, (ToTensor, ToDataContainer)):
            return None  # anything else might read the pixels
    return _DeferralPlan(fused[-1], key, nested)


def _nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


def empty_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty`` on the CPU, allocated by numpy.

    numpy asks the kernel for transparent huge pages on large allocations (``madvise``) and torch's CPU
    allocator does not: a fresh 19 MB clip then costs ~100 page faults instead of ~3000 (0.5 vs 8 ms median
    on the benchmark machine; 754 MB: 85 vs 370 ms).
    """
    nbytes = _nbytes(shape, dtype)
    if nbytes == 0:
        return torch.empty(tuple(shape), dtype=dtype)
    return torch.from_numpy(np.empty(nbytes, dtype=np.uint8)).view(dtype).view(tuple(shape))


class ReusedOutputs:
    """Fresh-looking CPU tensors on memory that earlier ones, now freed, had: for the deferred ``Normalize``.

    A 754 MB test batch on fresh memory costs the kernel's zeroing of its pages first (131 vs 64 ms for the whole
    normalisation on the benchmark machine).  Tensors of at least ``min_bytes`` are made with ``torch.from_numpy``
    on an array kept here; the tensor's storage holds a reference to that array until the last tensor and view
    on it is freed, so an array that only this pool refers to is free to hand out again.  A request that no free
    array fits drops the free ones (of other sizes); at most ``max_arrays`` are kept (arrays in use stay; beyond
    that, new tensors are not pooled).
    """

    def __init__(self, min_bytes: int = 16 << 20, max_arrays: int = 4):
        self.min_bytes, self.max_arrays = int(min_bytes), int(max_arrays)
        self._arrays: list[np.ndarray] = []

    def _free(self, i: int) -> bool:
        # references: the list, and getrefcount's own argument
        return sys.getrefcount(self._arrays[i]) <= 2

    def empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        nbytes = _nbytes(shape, dtype)
        if nbytes < self.min_bytes:
            return empty_tensor(shape, dtype)
        found = next((i for i in range(len(self._arrays)) if self._arrays[i].nbytes == nbytes and self._free(i)), None)
        if found is None:
            # free arrays are all of other sizes (a switch between training and validation): drop them, so that
            # what stays allocated is what is in use plus the arrays of the current size
            in_use = [not self._free(i) for i in range(len(self._arrays))]  # no other reference held meanwhile
            self._arrays = [a for a, used in zip(self._arrays, in_use) if used]
            if len(self._arrays) >= self.max_arrays:
                return empty_tensor(shape, dtype)
            self._arrays.append(np.empty(nbytes, dtype=np.uint8))  # numpy: huge pages (see empty_tensor)
            found = len(self._arrays) - 1
        return torch.from_numpy(self._arrays[found]).view(dtype).view(tuple(shape))


_REUSED_OUTPUTS = ReusedOutputs()


@functools.lru_cache(maxsize=16)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``[3, 256]`` float32: ``Normalize``'s output for every uint8 value of every channel.

    Computed with the very calls of ``Normalize`` (float32 buffer, ``cv2.subtract`` a float64 mean, then
    ``cv2.multiply`` by a float64 ``1/std``), so indexing it reproduces ``Normalize`` bit for bit.
    """
    mean64 = np.float64(np.array(mean, dtype=np.float32).reshape(1, -1))
    stdinv64 = 1 / np.float64(np.array(std, dtype=np.float32).reshape(1, -1))
    table = np.arange(256, dtype=np.float32).reshape(1, 256, 1).repeat(3, axis=2)
    cv2.subtract(table, mean64, table)
    cv2.multiply(table, stdinv64, table)
    out = np.ascontiguousarray(table[0].T)
    out.flags.writeable = False
    return out


def _lut_planes(src: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """``out[n, c] = table[c, src[n, c]]`` for C-contiguous ``[N, C, ...]`` uint8 -> float32 arrays."""
    width = src.shape[-1]
    for n in range(src.shape[0]):
        for c in range(src.shape[1]):
            cv2.LUT(src[n, c].reshape(-1, width), table[c].reshape(1, 256), dst=out[n, c].reshape(-1, width))


@dataclass(frozen=True)
class DeferredNormalize:
    """The ``Normalize`` still to apply to the uint8 clip ``batch[key]`` (channels at dim -4: ``[.., C, T, H, W]``).

    ``mean``/``std`` are the float32 values of ``Normalize`` (in the order of the output channels: BGR when
    ``to_bgr``; the clip's channels are already in that order).  Calling it on a uint8 tensor returns the
    float32 tensor that ``Normalize`` + ``FormatShape`` would have produced, bit for bit, on its device.
    """

    key: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    to_bgr: bool = False

    def table(self) -> np.ndarray:
        return _normalize_table(self.mean, self.std)

    def __call__(self, clip: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(clip, np.ndarray):
            clip = torch.from_numpy(np.ascontiguousarray(clip))
        if clip.dtype != torch.uint8 or clip.dim() < 4 or clip.shape[-4] != len(self.mean):
            raise TypeError(f"deferred Normalize of '{self.key}': expected a uint8 tensor [..., "
                            f"{len(self.mean)}, T, H, W], got {clip.dtype} {tuple(clip.shape)}")
        if clip.device.type == "cpu":
            return self._normalize_cpu(clip)
        return self.normalize_torch(clip)

    def _normalize_cpu(self, clip: torch.Tensor) -> torch.Tensor:
        src = clip.contiguous()
        out = _REUSED_OUTPUTS.empty(src.shape, torch.float32)
        planes = (-1,) + tuple(src.shape[-4:])
        _lut_planes(src.numpy().reshape(planes), self.table(), out.numpy().reshape(planes))
        return out

    def normalize_torch(self, clip: torch.Tensor) -> torch.Tensor:
        """The table lookup with torch ops on ``clip``'s device (what runs on accelerators)."""
        table = torch.tensor(self.table(), device=clip.device)
        out = torch.empty(clip.shape, dtype=torch.float32, device=clip.device)
        for c in range(table.shape[0]):
            plane = clip.select(-4, c)
            out.select(-4, c).copy_(table[c].index_select(0, plane.reshape(-1).int()).view(plane.shape))
        return out


def _specs(value: Any) -> list[DeferredNormalize]:
    if isinstance(value, DeferredNormalize):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _specs(v)]
    raise TypeError(f"'{DEFERRED_NORMALIZE_KEY}' holds {type(value).__name__}, expected DeferredNormalize")


def _map_clips(value: Any, fn: Callable[[Any], torch.Tensor]) -> Any:
    if isinstance(value, (list, tuple)):  # nested (test-time) batches: one tensor per augmentation
        return [_map_clips(v, fn) for v in value]
    return fn(value)


def apply_deferred_normalize(data: Any) -> Any:
    """Finish a batch (or item) produced under :func:`deferred_normalization`; anything else is returned as is.

    Pops ``DEFERRED_NORMALIZE_KEY`` and replaces the uint8 clip it names by the normalised float32 tensor,
    computed on the clip's device (call it after moving the batch).
    """
    if not isinstance(data, dict) or DEFERRED_NORMALIZE_KEY not in data:
        return data
    data = dict(data)
    specs = _specs(data.pop(DEFERRED_NORMALIZE_KEY))
    if not specs:
        return data
    spec = specs[0]
    if any(s != spec for s in specs[1:]):
        raise ValueError(f"a batch mixes different deferred normalisations: {sorted(set(map(repr, specs)))}")
    if spec.key not in data:
        raise KeyError(f"deferred Normalize: the batch has no '{spec.key}' (keys: {sorted(data)})")
    data[spec.key] = _map_clips(data[spec.key], spec)
    return data


def _split_frame(frame: np.ndarray, planes: list[np.ndarray], scratch: np.ndarray) -> Sequence[np.ndarray]:
    """Write the channels of one ``[H, W, 3]`` frame (any view: crop, flip, reversed channels) into ``planes``."""
    flip_code = None
    if frame.strides[0] < 0 and frame.strides[1] < 0:
        frame, flip_code = frame[::-1, ::-1], -1
    elif frame.strides[1] < 0:
        frame, flip_code = frame[:, ::-1], 1
    elif frame.strides[0] < 0:
        frame, flip_code = frame[::-1], 0
    if frame.strides[2] < 0:
        frame, planes = frame[:, :, ::-1], planes[::-1]
    if flip_code is not None:
        # a flip is a permutation of pixels: cv2.flip into a cache-sized buffer equals numpy's reversed view
        cv2.flip(frame, flip_code, dst=scratch)
        frame = scratch
    elif not frame.flags.c_contiguous:
        # cv2.split of a strided view (a crop) was measured up to 20x slower (in some processes) than a copy
        # plus a contiguous split (benchmarks/frame_ops.py)
        np.copyto(scratch, frame)
        frame = scratch
    return cv2.split(frame, planes)


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _split_into(out: np.ndarray, v: int, t: int, frame: np.ndarray, reverse: bool, scratch: np.ndarray,
                check: bool) -> None:
    """Write ``frame``'s channels (reversed when ``reverse``) into ``out[v, :, t]`` of a ``[V, C, L, H, W]`` clip;
    ``check``: make sure that ``cv2.split`` wrote there (done once per clip)."""
    planes = [out[v, 0, t], out[v, 1, t], out[v, 2, t]]
    written = _split_frame(frame, planes[::-1] if reverse else planes, scratch)
    if check and {_address(a) for a in written} != {_address(a) for a in planes}:
        raise RuntimeError("cv2.split did not write into the given planes (unexpected OpenCV behaviour)")


def clip_to_ncthw(imgs: np.ndarray, clip_len: int, reverse_channels: bool = False,
                  out: np.ndarray | None = None) -> np.ndarray:
    """``[V*L, H, W, C]`` (any view) -> C-contiguous ``[V, C, L, H, W]`` (``FormatShape('NCTHW')``'s layout).

    3-channel uint8/float32 clips are split frame by frame with ``cv2.split`` straight into the output planes,
    undoing crop/flip views on the way (one pass, about 5x faster than numpy's strided transpose); other
    clips go through numpy.  ``reverse_channels`` gives the channels in reverse order (``to_bgr``).  ``out``:
    where to write (C-contiguous, of that shape and dtype); a new array when None.
    """
    m, h, w, c = imgs.shape
    views = m // clip_len
    if out is None:
        out = np.empty((views, c, clip_len, h, w), dtype=imgs.dtype)
    elif out.shape != (views, c, clip_len, h, w) or out.dtype != imgs.dtype or not out.flags.c_contiguous:
        raise ValueError(f"clip_to_ncthw: out must be C-contiguous {imgs.dtype} {(views, c, clip_len, h, w)}, "
                         f"got {out.dtype} {out.shape}")
    if c != 3 or imgs.dtype not in (np.uint8, np.float32) or m == 0:
        x = imgs.reshape(views, clip_len, h, w, c).transpose(0, 4, 1, 2, 3)
        np.copyto(out, x[:, ::-1] if reverse_channels else x)
        return out
    scratch = np.empty((h, w, c), dtype=imgs.dtype)
    for i in range(m):
        _split_into(out, *divmod(i, clip_len), imgs[i], reverse_channels, scratch, check=i == 0)
    return out


class NormalizeFormatShape:
    """``Normalize`` then ``FormatShape('NCTHW')`` with the same numbers, several times faster.

    The clip is rearranged while still uint8 (:func:`clip_to_ncthw`, which also materialises crop and
    flip views) and then normalised with a per-channel 256-entry lookup table that was computed with the
    very ``cv2.subtract`` / ``cv2.multiply`` calls of ``Normalize``: a uint8 pixel can only take 256 values,
    so the table reproduces ``Normalize`` bit for bit.  ``run(results, defer=True)`` stops before the table
    (see :class:`DeferredNormalize`).  Non-uint8 input falls back to the two steps.
    """

    def __init__(self, normalize, format_shape: "FormatShape"):
        self.normalize = normalize
        self.format_shape = format_shape
        self._table = _normalize_table(tuple(map(float, normalize.mean)), tuple(map(float, normalize.std)))

    def __call__(self, results: dict) -> dict:
        return self.run(results, defer=False)[0]

    def run(self, results: dict, defer: bool) -> tuple[dict, bool]:
        """``(results, deferred)``; with ``defer`` the clip stays uint8 (``deferred`` is then True)."""
        imgs = results.get("imgs")
        if not (isinstance(imgs, np.ndarray) and imgs.dtype == np.uint8 and imgs.ndim == 4 and imgs.shape[-1] == 3
                and results.get("modality", "RGB") == "RGB"):
            return self.format_shape(self.normalize(results)), False
        clip_len = self.format_shape.ncthw_clip_len(results, imgs.shape[0])
        m, h, w, _ = imgs.shape
        final = output_buffer((m // clip_len, 3, clip_len, h, w), np.uint8) if defer else None
        x = clip_to_ncthw(imgs, clip_len, reverse_channels=self.normalize.to_bgr, out=final)  # uint8 [V,C,L,H,W]
        return self.finish(results, x, defer), defer

    def finish(self, results: dict, x: np.ndarray, defer: bool) -> dict:
        """Set the outputs from the uint8 ``[V, C, L, H, W]`` clip ``x`` (normalised unless ``defer``)."""
        if not defer:
            out = output_buffer(x.shape, np.float32)
            _lut_planes(x, self._table, out)
            x = out
        results["imgs"] = self.format_shape.collapse_views(x)
        results["input_shape"] = results["imgs"].shape
        results["img_norm_cfg"] = dict(mean=self.normalize.mean, std=self.normalize.std, to_bgr=self.normalize.to_bgr)
        return results

    def deferred(self, key: str = "imgs") -> DeferredNormalize:
        return DeferredNormalize(key, tuple(map(float, self.normalize.mean)), tuple(map(float, self.normalize.std)),
                                 self.normalize.to_bgr)

    def __repr__(self) -> str:
        return f"NormalizeFormatShape({self.normalize!r}, {self.format_shape!r})"


def _is_planned(t: Any) -> bool:
    return callable(getattr(t, "plan", None)) and not getattr(t, "lazy", False)


def _fuse_framewise(steps: list) -> list:
    """Replace each decode op + planned transforms + fused Normalize/FormatShape run by a :class:`FramewiseClip`."""
    out: list = []
    i = 0
    while i < len(steps):
        t = steps[i]
        if callable(getattr(t, "decode_stream", None)):
            j, multi_views = i + 1, 0
            # at most one multi-view crop: its plan counts the frames as decoded (len(frame_inds))
            while j < len(steps) and _is_planned(steps[j]) and multi_views + getattr(steps[j], "multi_view", 0) <= 1:
                multi_views += getattr(steps[j], "multi_view", 0)
                j += 1
            if j < len(steps) and isinstance(steps[j], NormalizeFormatShape):
                out.append(FramewiseClip(t, steps[i + 1:j], steps[j]))
                i = j + 1
                continue
        out.append(t)
        i += 1
    return out


class FramewiseClip:
    """A decode op, geometric transforms and ``Normalize`` + ``FormatShape('NCTHW')``, one frame at a time.

    ``Compose`` builds it where a decode op (``RawFrameDecode``, ``*Decode``) is followed by transforms with a
    ``plan`` (``Resize``, ``RandomRescale``, the crops, ``Flip``, at most one ``ThreeCrop`` / ``TenCrop``; none
    lazy) and then by the fused :class:`NormalizeFormatShape`.  The first frame gives the size; then every transform's
    ``plan`` runs in order (the same random draws and keys as the step-by-step pipeline) and each decoded
    frame goes through the planned ops (``FrameOp.apply_views``: crop views, ``cv2.resize``, flip views,
    multi-view windows) and is split into its planes of the uint8 ``[V, C, L, H, W]`` output while it is in
    cache.  Each frame sees the same calls as in the step-by-step pipeline, so the output is the same bit for
    bit; what goes is the decoded clip (never held), the BGR-to-RGB pass (channels are swapped by the split)
    and a pass over memory per step (figures in BENCHMARKS.md, "Data pipeline").  Frames wanted twice are
    decoded once and their planes copied.  A clip without frames, or not RGB, runs the steps one by one.
    """

    def __init__(self, decode: Any, transforms: Sequence[Any], tail: NormalizeFormatShape):
        self.decode = decode
        self.transforms = list(transforms)
        self.tail = tail

    def __call__(self, results: dict) -> dict:
        return self.run(results, defer=False)[0]

    def deferred(self, key: str = "imgs") -> DeferredNormalize:
        return self.tail.deferred(key)

    def _stepwise(self, results: dict, defer: bool) -> tuple[dict, bool]:
        results = self.decode(results)
        for t in self.transforms:
            results = t(results)
        return self.tail.run(results, defer)

    def run(self, results: dict, defer: bool) -> tuple[dict, bool]:
        """``(results, deferred)`` like :meth:`NormalizeFormatShape.run`."""
        num_frames = int(np.asarray(results.get("frame_inds", ())).size)
        if results.get("modality", "RGB") != "RGB" or num_frames == 0:
            return self._stepwise(results, defer)
        from .decode import record_decoded_shape

        stream = self.decode.decode_stream(results)
        try:
            first = next(stream)
            record_decoded_shape(results, *first[1].shape[:2])
            try:
                ops = [op for op in (t.plan(results) for t in self.transforms) if op is not None]
                num_views = int(np.prod([getattr(op, "num_views", 1) for op in ops]))
                clip_len = self.tail.format_shape.ncthw_clip_len(results, num_views * num_frames)
            except Exception:
                for _ in stream:  # a decoding error comes first, as in the step-by-step pipeline
                    pass
                raise
            h, w = results["img_shape"]
            shape = (num_views * num_frames // clip_len, 3, clip_len, h, w)
            out = output_buffer(shape, np.uint8) if defer else np.empty(shape, np.uint8)
            scratch = np.empty((h, w, 3), np.uint8)
            check = True
            for positions, frame, is_bgr in itertools.chain([first], stream):
                views = [frame]
                for op in ops:
                    views = op.apply_views(views)
                reverse = is_bgr != self.tail.normalize.to_bgr
                for k, view in enumerate(views):
                    v, t = divmod(k * num_frames + positions[0], clip_len)
                    _split_into(out, v, t, view, reverse, scratch, check)
                    check = False
                    for i in positions[1:]:  # the same frame wanted again: copy its planes
                        again_v, again_t = divmod(k * num_frames + i, clip_len)
                        out[again_v, :, again_t] = out[v, :, t]
        finally:
            stream.close()
        return self.tail.finish(results, out, defer), defer

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in [self.decode, *self.transforms, self.tail])
        return f"FramewiseClip({inner})"


def to_tensor(data: Any) -> torch.Tensor:
    """numpy / sequence / scalar -> tensor.

    Deviation from mmcv's ``to_tensor``, following docs/DEVELOPING.md (recognition items carry
    ``'label': Tensor[] long``): a Python/numpy int scalar becomes a 0-d ``int64`` tensor (mmcv: shape
    ``[1]``) and a float scalar a 0-d ``float32`` tensor, so the default collate gives ``label`` ``[B]``.
    """
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous or any(st < 0 for st in data.strides):
            data = np.ascontiguousarray(data)
        return torch.from_numpy(data)
    if isinstance(data, (bool, np.bool_)):
        return torch.tensor(bool(data))
    if isinstance(data, (int, np.integer)):
        return torch.tensor(int(data), dtype=torch.int64)
    if isinstance(data, (float, np.floating)):
        return torch.tensor(float(data), dtype=torch.float32)
    if isinstance(data, Sequence) and not isinstance(data, str):
        return torch.tensor(data)
    raise TypeError(f"type {type(data).__name__} cannot be converted to a tensor")


@PIPELINES.register()
class ToTensor:
    """Convert ``results[k]`` for every ``k`` in ``keys`` to a ``torch.Tensor``."""

    def __init__(self, keys: Sequence[str]):
        self.keys = [keys] if isinstance(keys, str) else list(keys)

    def __call__(self, results: dict) -> dict:
        for key in self.keys:
            if key not in results:
                raise KeyError(f"ToTensor: results has no key {key!r} (keys: {sorted(results)})")
            results[key] = to_tensor(results[key])
        return results

    def __repr__(self) -> str:
        return f"ToTensor(keys={self.keys})"


@PIPELINES.register()
class ImageToTensor:
    """``[H,W,C]`` image -> ``[C,H,W]`` tensor for every key."""

    def __init__(self, keys: Sequence[str]):
        self.keys = [keys] if isinstance(keys, str) else list(keys)

    def __call__(self, results: dict) -> dict:
        for key in self.keys:
            results[key] = to_tensor(np.ascontiguousarray(np.asarray(results[key]).transpose(2, 0, 1)))
        return results

    def __repr__(self) -> str:
        return f"ImageToTensor(keys={self.keys})"


@PIPELINES.register()
class Rename:
    """Rename keys: ``mapping={'imgs': 'img'}``; absent keys are skipped, clobbering is an error."""

    def __init__(self, mapping: Mapping[str, str]):
        if not isinstance(mapping, Mapping):
            raise TypeError(f"Rename: mapping must be a dict, got {type(mapping).__name__}")
        for k, v in mapping.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"Rename: keys and new names must be str, got {k!r} -> {v!r}")
        self.mapping = dict(mapping)

    def __call__(self, results: dict) -> dict:
        for key, value in self.mapping.items():
            if key in results:
                if value in results:
                    raise KeyError(f"Rename: the new name {value!r} already exists in results")
                results[value] = results.pop(key)
        return results

    def __repr__(self) -> str:
        return f"Rename(mapping={self.mapping})"


@PIPELINES.register()
class ToDataContainer:
    """Accepted for config compatibility; does nothing (no mmcv DataContainer in actionkit)."""

    def __init__(self, fields: Any = ()):
        self.fields = fields

    def __call__(self, results: dict) -> dict:
        return results

    def __repr__(self) -> str:
        return f"ToDataContainer(fields={self.fields})"


_DEFAULT_META_KEYS = ("filename", "label", "original_shape", "img_shape", "pad_shape",
                      "flip_direction", "img_norm_cfg")


@PIPELINES.register()
class Collect:
    """Keep ``keys``; gather ``meta_keys`` into ``data[meta_name]`` (a plain dict); ``nested`` wraps in lists."""

    def __init__(self, keys: Sequence[str], meta_keys: Sequence[str] = _DEFAULT_META_KEYS,
                 meta_name: str = "img_metas", nested: bool = False):
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.meta_keys = [meta_keys] if isinstance(meta_keys, str) else list(meta_keys)
        self.meta_name = meta_name
        self.nested = bool(nested)

    def __call__(self, results: dict) -> dict:
        data = {}
        for key in self.keys:
            if key not in results:
                raise KeyError(f"Collect: results has no key {key!r} (keys: {sorted(results)})")
            data[key] = results[key]
        if self.meta_keys:
            meta = {}
            for key in self.meta_keys:
                if key not in results:
                    raise KeyError(f"Collect: results has no meta key {key!r} (keys: {sorted(results)})")
                meta[key] = results[key]
            data[self.meta_name] = meta
        if self.nested:
            data = {k: [v] for k, v in data.items()}
        return data

    def __repr__(self) -> str:
        return (f"Collect(keys={self.keys}, meta_keys={self.meta_keys}, meta_name={self.meta_name!r}, "
                f"nested={self.nested})")


@PIPELINES.register()
class FormatShape:
    """Arrange the clip array for the model.

    ``NCTHW``: ``[M,H,W,C]`` with ``M = crops*clips*L`` -> reshape ``(crops, clips, L, H, W, C)`` ->
    transpose ``(crops, clips, C, L, H, W)`` -> ``[crops*clips, C, L, H, W]`` (view ``v = crop*clips + clip``).
    ``NCHW``: ``[M, C, H, W]``.  ``collapse=True`` requires ``num_clips == 1`` and a single view and
    returns ``[C, L, H, W]`` (AVA).  Sets ``results['input_shape']``.
    """

    _FORMATS = ("NCTHW", "NCHW")

    def __init__(self, input_format: str, collapse: bool = False):
        if input_format not in self._FORMATS:
            raise ValueError(f"FormatShape: input_format must be one of {self._FORMATS}, got {input_format!r}")
        self.input_format = input_format
        self.collapse = bool(collapse)

    def _check_collapse(self, results: dict) -> None:
        if self.collapse and results.get("num_clips", 1) != 1:
            raise ValueError(f"FormatShape(collapse=True) needs num_clips == 1, got {results['num_clips']}")

    def ncthw_clip_len(self, results: dict, m: int) -> int:
        """``clip_len`` after checking that ``m`` frames split into ``num_clips * clip_len`` groups."""
        self._check_collapse(results)
        num_clips = int(results["num_clips"])
        clip_len = int(results["clip_len"])
        if m % (num_clips * clip_len):
            raise ValueError(f"FormatShape: {m} frames is not a multiple of num_clips*clip_len "
                             f"= {num_clips}*{clip_len}")
        return clip_len

    def collapse_views(self, imgs: np.ndarray) -> np.ndarray:
        if not self.collapse:
            return imgs
        if imgs.shape[0] != 1:
            raise ValueError(f"FormatShape(collapse=True) needs a single view, got {imgs.shape[0]}")
        return imgs[0]

    def __call__(self, results: dict) -> dict:
        imgs = results["imgs"]
        if not isinstance(imgs, np.ndarray):
            imgs = np.stack([np.asarray(i) for i in imgs])
        if imgs.ndim != 4:
            raise ValueError(f"FormatShape: expected imgs [M,H,W,C], got shape {imgs.shape}")
        if self.input_format == "NCTHW":
            imgs = clip_to_ncthw(imgs, self.ncthw_clip_len(results, imgs.shape[0]))
        else:  # NCHW
            self._check_collapse(results)
            imgs = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))
        imgs = self.collapse_views(imgs)
        results["imgs"] = imgs
        results["input_shape"] = imgs.shape
        return results

    def __repr__(self) -> str:
        return f"FormatShape(input_format={self.input_format!r}, collapse={self.collapse})"
