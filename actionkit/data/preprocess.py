"""Batch preprocessing after the device copy: the pipeline's ``Normalize`` as an explicit engine-side step.

A recognition or AVA pipeline ends with ``Normalize`` -> ``FormatShape('NCTHW')`` -> key-moving ops.  The
engine's loaders (``actionkit.engine.loaders``, config ``data.defer_normalize``, default True) split such a
pipeline in two with :func:`split_normalize`:

* the dataset's pipeline without the ``Normalize`` (``dataset[i]`` of the loader's copy of the dataset returns
  the **uint8** clip, ``[V, C, T, H, W]`` RGB, a quarter of the float32 bytes), and
* a :class:`BatchNormalize`, attached by the loader's collate to every batch under ``BATCH_NORMALIZE_KEY`` and
  applied by ``engine.test.prepare_batch`` (through :func:`apply_batch_normalize`) after the device copy.

The result is bit-identical to the pipeline's own ``Normalize``: a uint8 value has 256 possible values, and
:class:`BatchNormalize` indexes a per-channel 256-entry table computed with the very ``cv2`` calls of
``Normalize`` (float32 buffer, ``cv2.subtract`` of the float64 mean, ``cv2.multiply`` by the float64 ``1/std``).

No state decides a value: the split is a pure function of the built transforms, and the step travels with the
batch it belongs to.  (On the CPU, the outputs reuse the memory of freed earlier ones: :class:`ReusedOutputs`.)
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from .pipeline import Collect, FormatShape, Rename, ToDataContainer, ToTensor
from .transforms import Normalize

__all__ = ["BatchNormalize", "BATCH_NORMALIZE_KEY", "split_normalize", "apply_batch_normalize",
           "attach_batch_normalize", "normalize_table", "ReusedOutputs"]

BATCH_NORMALIZE_KEY = "batch_normalize"

# ops after FormatShape that only move, convert or select keys (never read the pixels' values)
_KEY_MOVING_OPS = (Rename, ToTensor, ToDataContainer, Collect)
# what Normalize sets besides the pixels; a pipeline that hands it on keeps its Normalize
_NORMALIZE_META_KEY = "img_norm_cfg"


@functools.lru_cache(maxsize=16)
def normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``[3, 256]`` float32, read-only: ``Normalize``'s output for every uint8 value of every channel.

    Computed with the calls of ``Normalize`` (float32 buffer, ``cv2.subtract`` a float64 mean, then
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


class ReusedOutputs:
    """Fresh-looking CPU tensors on memory that earlier ones, now freed, had: the outputs of the CPU
    :class:`BatchNormalize` (a 30-view test batch is 754 MB of float32; fresh pages cost the kernel's zeroing
    first, several times the normalisation itself: BENCHMARKS.md, "Data pipeline").

    Tensors of at least ``min_bytes`` are made with ``torch.from_numpy`` on an array kept here; the tensor's
    storage holds a reference to that array until the last tensor and view on it is freed, so an array that only
    this pool refers to is free to hand out again.  A request that no free array fits drops the free ones (of other
    sizes); at most ``max_arrays`` are kept (beyond that, new tensors are not pooled).  Only where the memory lies
    depends on it, never a value.
    """

    def __init__(self, min_bytes: int = 16 << 20, max_arrays: int = 4):
        self.min_bytes, self.max_arrays = int(min_bytes), int(max_arrays)
        self._arrays: list[np.ndarray] = []

    def _free(self, i: int) -> bool:
        return sys.getrefcount(self._arrays[i]) <= 2  # references: the list, and getrefcount's own argument

    def empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        if nbytes < self.min_bytes:
            return torch.empty(tuple(shape), dtype=dtype)
        found = next((i for i in range(len(self._arrays)) if self._arrays[i].nbytes == nbytes and self._free(i)), None)
        if found is None:
            # free arrays are all of other sizes (a switch between training and validation): drop them, so that
            # what stays allocated is what is in use plus the arrays of the current size
            in_use = [not self._free(i) for i in range(len(self._arrays))]  # no other reference held meanwhile
            self._arrays = [a for a, used in zip(self._arrays, in_use) if used]
            if len(self._arrays) >= self.max_arrays:
                return torch.empty(tuple(shape), dtype=dtype)
            self._arrays.append(np.empty(nbytes, dtype=np.uint8))
            found = len(self._arrays) - 1
        return torch.from_numpy(self._arrays[found]).view(dtype).view(tuple(shape))


_CPU_OUTPUTS = ReusedOutputs()  # the memory of the CPU BatchNormalize's outputs (this process)


@dataclass(frozen=True)
class BatchNormalize:
    """``Normalize(mean, std, to_bgr)`` of the uint8 clip ``batch[key]`` (``[..., 3, T, H, W]``, RGB).

    ``mean`` / ``std`` are ``Normalize``'s float32 values, in the order of the output channels (BGR when
    ``to_bgr``: the step then reverses the channels, as ``Normalize`` does).  Calling it on a batch dict returns
    a new dict whose ``key`` (a tensor, or a list of tensors for nested test batches) holds the float32 clip
    that ``Normalize`` + ``FormatShape`` would have produced, bit for bit, computed on the clip's device.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    to_bgr: bool = False
    key: str = "imgs"

    @classmethod
    def from_transform(cls, normalize: Normalize, key: str = "imgs") -> BatchNormalize:
        return cls(tuple(map(float, normalize.mean)), tuple(map(float, normalize.std)), normalize.to_bgr, key)

    def table(self) -> np.ndarray:
        return normalize_table(self.mean, self.std)

    def __call__(self, batch: Mapping[str, Any]) -> dict:
        if self.key not in batch:
            raise KeyError(f"BatchNormalize: the batch has no '{self.key}' (keys: {sorted(batch)})")
        out = dict(batch)
        out[self.key] = self._map(out[self.key])
        return out

    def _map(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):  # nested (test-time) batches: one tensor per augmentation
            return [self._map(v) for v in value]
        return self.normalize(value)

    def normalize(self, clip: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The float32 clip for one uint8 clip ``[..., 3, T, H, W]`` (on its device)."""
        if isinstance(clip, np.ndarray):
            clip = torch.from_numpy(np.ascontiguousarray(clip))
        if not isinstance(clip, torch.Tensor) or clip.dtype != torch.uint8 or clip.dim() < 4 \
                or clip.shape[-4] != len(self.mean):
            got = f"{clip.dtype} {tuple(clip.shape)}" if hasattr(clip, "shape") else type(clip).__name__
            raise TypeError(f"BatchNormalize of '{self.key}': expected a uint8 tensor [..., {len(self.mean)}, T, H, "
                            f"W], got {got} (a pipeline that makes float clips before Normalize needs "
                            "data.defer_normalize=False)")
        if clip.device.type == "cpu":
            return self._normalize_cpu(clip)
        return self.normalize_torch(clip)

    def _source_channel(self, c: int) -> int:
        return len(self.mean) - 1 - c if self.to_bgr else c

    def _normalize_cpu(self, clip: torch.Tensor) -> torch.Tensor:
        """``cv2.LUT`` plane by plane (C-contiguous uint8 in, float32 out)."""
        src = clip.contiguous()
        out = _CPU_OUTPUTS.empty(src.shape, torch.float32)
        planes = (-1,) + tuple(src.shape[-4:])
        src_np, out_np, table = src.numpy().reshape(planes), out.numpy().reshape(planes), self.table()
        width = src.shape[-1]
        for n in range(src_np.shape[0]):
            for c in range(src_np.shape[1]):
                plane = src_np[n, self._source_channel(c)].reshape(-1, width)
                cv2.LUT(plane, table[c].reshape(1, 256), dst=out_np[n, c].reshape(-1, width))
        return out

    def normalize_torch(self, clip: torch.Tensor) -> torch.Tensor:
        """The table lookup with torch ops on ``clip``'s device (what runs on accelerators)."""
        table = torch.tensor(self.table(), device=clip.device)
        out = torch.empty(clip.shape, dtype=torch.float32, device=clip.device)
        for c in range(table.shape[0]):
            plane = clip.select(-4, self._source_channel(c))
            out.select(-4, c).copy_(table[c].index_select(0, plane.reshape(-1).int()).view(plane.shape))
        return out


Step = Callable[[dict], Any]


def split_normalize(steps: Sequence[Step]) -> tuple[list[Step], BatchNormalize | None]:
    """``(steps without the Normalize, the BatchNormalize that replaces it)``, or ``(steps, None)``.

    Splits only where a ``Normalize`` directly precedes ``FormatShape('NCTHW')`` and everything after that
    ``FormatShape`` is ``Rename`` / ``ToTensor`` / ``ToDataContainer`` / ``Collect`` (at most one ``Collect``,
    collecting the clip and not ``img_norm_cfg``): then the pipeline's clip, under its final key, is the
    ``BatchNormalize``'s input and nothing else in the output depends on the ``Normalize``.  ``steps`` are built
    transforms (``Compose.transforms``); the list given back holds the same objects.
    """
    steps = list(steps)
    for i in range(len(steps) - 1):
        norm, fmt = steps[i], steps[i + 1]
        if isinstance(norm, Normalize) and isinstance(fmt, FormatShape) and fmt.input_format == "NCTHW":
            key = _final_clip_key(steps[i + 2:])
            if key is None:
                return steps, None
            return steps[:i] + steps[i + 1:], BatchNormalize.from_transform(norm, key)
    return steps, None


def _final_clip_key(tail: Sequence[Any]) -> str | None:
    """The name of the clip after the key-moving ops ``tail``; None where ``tail`` may read it or drops it."""
    key, collected = "imgs", False
    for t in tail:
        if not isinstance(t, _KEY_MOVING_OPS):
            return None  # anything else might read the pixels
        if isinstance(t, Rename):
            if _NORMALIZE_META_KEY in t.mapping:
                return None
            key = t.mapping.get(key, key)
        elif isinstance(t, ToTensor) and _NORMALIZE_META_KEY in t.keys:
            return None
        elif isinstance(t, Collect):
            if collected or key not in t.keys or _NORMALIZE_META_KEY in (*t.keys, *t.meta_keys):
                return None
            collected = True
    # without a Collect the output would hold every key, img_norm_cfg (set by Normalize) among them
    return key if collected else None


def attach_batch_normalize(batch: Any, step: BatchNormalize) -> Any:
    """Put ``step`` under ``BATCH_NORMALIZE_KEY`` into the batch dict ``batch``, or into every dict of a tuple /
    list of results (a dataset's own collate may return several batches, e.g. ``RecognitionInputs``)."""
    if isinstance(batch, dict):
        if BATCH_NORMALIZE_KEY in batch and batch[BATCH_NORMALIZE_KEY] != step:
            raise ValueError(f"a batch already holds another {BATCH_NORMALIZE_KEY}: {batch[BATCH_NORMALIZE_KEY]!r}")
        batch[BATCH_NORMALIZE_KEY] = step
    elif isinstance(batch, (list, tuple)):
        for part in batch:
            attach_batch_normalize(part, step)
    return batch


def apply_batch_normalize(data: Any) -> Any:
    """The batch with its :class:`BatchNormalize` (``BATCH_NORMALIZE_KEY``, popped) applied; anything without
    one is returned as is.  Call it after moving the batch to its device."""
    if not isinstance(data, dict) or BATCH_NORMALIZE_KEY not in data:
        return data
    data = dict(data)
    step = data.pop(BATCH_NORMALIZE_KEY)
    if not isinstance(step, BatchNormalize):
        raise TypeError(f"'{BATCH_NORMALIZE_KEY}' holds {type(step).__name__}, expected BatchNormalize")
    return step(data)
