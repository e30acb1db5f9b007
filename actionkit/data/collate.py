"""Batch collation for the DataLoader.

* :func:`collate_recognition`: like ``torch.utils.data.default_collate`` (tensors and numpy arrays are
  stacked, numbers become tensors, dicts are collated per key), except that ``img_metas`` stays a list
  of per-sample dicts.  Recognition items ``{'imgs': [V,C,T,H,W], 'label': []}`` give ``imgs [B,V,C,T,H,W]``.
* :func:`collate_ava`: ``img`` is stacked to ``[B, C, T, H, W]``; ``proposals``, ``gt_bboxes``,
  ``gt_labels``, ``img_metas`` and every other key become lists (their sizes differ per sample).

Inside a DataLoader worker, small stacked tensors (labels) travel by value in the pickle, others are written
straight into shared memory (like torch's ``default_collate``), and large ones (clips, >= 1 MB) into a small
per-worker pool of shared buffers that is reused: in the main process the batch is a tensor on that buffer,
which goes back to the worker once the tensor (and every view of it) is freed; the main process keeps the
buffers mapped, so after the first batch only their names travel.  Fresh shared memory costs a page fault per
4 KiB on first touch and passing a file descriptor a socket round trip to the worker: together most of the cost
of moving a clip between processes (BENCHMARKS.md, "Data pipeline", has the paired measurement).  The pool lives
in the worker process (``_POOL``) and decides only where a batch's memory lies, never its values.
"""
from __future__ import annotations

import os
import weakref
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["collate_recognition", "collate_ava", "STACKED_AVA_KEYS"]

STACKED_AVA_KEYS = ("img",)


def _to_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    return x


# ------------------------------------------------------------------------------- shared-memory stacking
# Slot header: byte 0 is 1 from the moment the worker fills the slot until the main process has freed the batch
# tensor on it; byte 1 is set by the main process once it keeps the slot mapped, after which the worker sends
# only the slot's name instead of its file descriptor.  64 bytes keep the data aligned.
_SLOT_HEADER = 64
_BY_VALUE_BYTES = 64 << 10  # stacked tensors up to this size are pickled by value


class _SlotPool:
    """Shared-memory buffers of one worker process, reused once the main process has freed the batch on them."""

    MIN_BYTES = 1 << 20  # smaller batches: a fresh shared buffer (the fd passing costs more than the faults)
    MAX_SLOTS = 4  # prefetch_factor (2 by default) batches in flight + the one being built + one spare
    MAX_TOTAL_BYTES = 1 << 30  # per worker; batches that do not fit get a fresh shared buffer

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.token = os.urandom(8).hex()  # names this pool in the main process's map of slots
        self.slots: list[torch.UntypedStorage] = []  # a slot's index is its name in the main process

    def acquire(self, nbytes: int) -> tuple[int, torch.UntypedStorage] | None:
        """``(index, slot)``: a free slot of at least ``nbytes``, marked busy; None when the pool is exhausted.

        Slots live as long as the worker (the main process keeps them mapped until then), so a full pool
        hands out no new one: batches that fit no free slot get a fresh buffer.
        """
        fits = [(s.nbytes(), i) for i, s in enumerate(self.slots)
                if s[0] == 0 and s.nbytes() - _SLOT_HEADER >= nbytes]
        if fits:
            index = min(fits)[1]
        elif len(self.slots) < self.MAX_SLOTS and \
                sum(s.nbytes() for s in self.slots) + nbytes + _SLOT_HEADER <= self.MAX_TOTAL_BYTES:
            self.slots.append(torch.UntypedStorage._new_shared(nbytes + _SLOT_HEADER))
            index = len(self.slots) - 1
        else:
            return None
        self.slots[index][0] = 1
        return index, self.slots[index]


_POOL: _SlotPool | None = None


def _slot_pool() -> _SlotPool:
    global _POOL
    if _POOL is None or _POOL.pid != os.getpid():
        _POOL = _SlotPool()
    return _POOL


# main process: (pool token, slot index) -> (worker pid, uint8 tensor over the slot), kept mapped while the
# worker lives
_MAPPED_SLOTS: dict[tuple[str, int], tuple[int, torch.Tensor]] = {}


def _forget_dead_workers() -> None:
    for key, (pid, _) in list(_MAPPED_SLOTS.items()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            del _MAPPED_SLOTS[key]
        except PermissionError:
            pass


class _SlotTensor(torch.Tensor):
    """A stacked tensor living in a pooled shared buffer.  In the worker it behaves as a plain tensor (ops
    return plain tensors); pickled, it unpickles in the main process as a tensor on the same buffer, which is
    handed back to the worker (for a later batch) once the main process has freed that tensor and its views."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, protocol):
        buffer, token, index, pid = self._slot
        offset = self.data_ptr() - buffer.data_ptr()
        nbytes = self.numel() * self.element_size()
        if not (self.is_contiguous() and _SLOT_HEADER <= offset and offset + nbytes <= buffer.numel()):
            return _identity, (self.as_subclass(torch.Tensor),)  # re-pointed in the worker: torch's own sharing
        layout = (offset, self.dtype, tuple(self.shape))
        if buffer[1] == 1:  # the main process has the slot mapped: send its name only
            return _receive_slot, ((token, index), None, pid) + layout
        return _receive_slot, ((token, index), buffer, pid) + layout


def _identity(x: Any) -> Any:
    return x


def _receive_slot(key: tuple[str, int], buffer: torch.Tensor | None, pid: int, offset: int, dtype: torch.dtype,
                  shape: tuple[int, ...]) -> torch.Tensor:
    """The batch as a tensor on the slot itself (no copy); the slot is handed back to the worker when the
    last tensor sharing that memory is freed (a finaliser on the numpy array under it)."""
    if buffer is None:
        try:
            buffer = _MAPPED_SLOTS[key][1]
        except KeyError:
            raise RuntimeError(f"collate: shared batch buffer {key} of worker {pid} is not mapped in this process "
                               "(a batch unpickled outside the DataLoader's main process?)") from None
    elif key not in _MAPPED_SLOTS:
        _forget_dead_workers()
        _MAPPED_SLOTS[key] = (pid, buffer)
        buffer[1] = 1
    nbytes = _nbytes(shape, dtype)
    data = buffer.numpy()[offset:offset + nbytes]  # a new array object per batch; its base keeps the mapping
    weakref.finalize(data, buffer[:1].fill_, 0)
    return torch.from_numpy(data).view(dtype).view(shape)


class _ByValueTensor(torch.Tensor):
    """A small stacked tensor (labels) that travels inside the pickle instead of through a shared-memory
    file of its own (creating one and passing its descriptor costs far more than a few bytes)."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, protocol):
        plain = self.as_subclass(torch.Tensor).contiguous()
        return _tensor_from_bytes, (plain.reshape(-1).view(torch.uint8).numpy().tobytes(), plain.dtype,
                                    tuple(plain.shape))


def _tensor_from_bytes(data: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not data:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).view(shape)


def _slot_bytes(slot: torch.UntypedStorage) -> torch.Tensor:
    """The whole slot (header included) as a uint8 tensor."""
    return torch.empty(0, dtype=torch.uint8).set_(slot)


def _batch_on_slot(index: int, slot: torch.UntypedStorage, dtype: torch.dtype,
                   shape: tuple[int, ...]) -> "_SlotTensor":
    """The ``shape`` batch at the start of slot ``index``'s data, as the tensor that pickles by the slot's name."""
    buffer = _slot_bytes(slot)
    nbytes = _nbytes(shape, dtype)
    out = buffer[_SLOT_HEADER:_SLOT_HEADER + nbytes].view(dtype).view(shape).as_subclass(_SlotTensor)
    out._slot = (buffer, _slot_pool().token, index, os.getpid())
    return out


def _nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    if torch.utils.data.get_worker_info() is None:
        return torch.stack(tensors)
    first = tensors[0]
    shape = (len(tensors),) + tuple(first.shape)
    nbytes = len(tensors) * first.numel() * first.element_size()
    if first.device.type == "cpu" and nbytes <= _BY_VALUE_BYTES:
        return torch.stack(tensors).as_subclass(_ByValueTensor)
    if first.device.type == "cpu" and nbytes >= _SlotPool.MIN_BYTES:
        acquired = _slot_pool().acquire(nbytes)
        if acquired is not None:
            out = _batch_on_slot(*acquired, first.dtype, shape)
            torch.stack(tensors, out=out)
            return out
    # torch's default_collate: stack into shared memory directly instead of copying there when pickled
    storage = first._typed_storage()._new_shared(len(tensors) * first.numel(), device=first.device)
    return torch.stack(tensors, out=first.new(storage).resize_(shape))


# ------------------------------------------------------------------------------------------- collation
def _default_collate(items: Sequence[Any], key: str = "") -> Any:
    first = items[0]
    if isinstance(first, (torch.Tensor, np.ndarray)):
        tensors = [_to_tensor(x) for x in items]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(f"collate: '{key or 'item'}' has different shapes across the batch: "
                             f"{sorted(shapes)}")
        return _stack(tensors)
    if isinstance(first, bool):
        return torch.tensor(items, dtype=torch.bool)
    if isinstance(first, (int, np.integer)):
        return torch.tensor([int(x) for x in items], dtype=torch.long)
    if isinstance(first, (float, np.floating)):
        return torch.tensor([float(x) for x in items], dtype=torch.float64)
    if isinstance(first, (str, bytes)) or first is None:
        return list(items)
    if isinstance(first, Mapping):
        return {k: (list(d[k] for d in items) if k == "img_metas"
                    else _default_collate([d[k] for d in items], k)) for k in first}
    if isinstance(first, (list, tuple)):
        if len({len(x) for x in items}) != 1:
            return list(items)
        return [_default_collate(list(group), key) for group in zip(*items)]
    return list(items)


def collate_recognition(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Default-collate a list of recognition items (``img_metas`` kept as a list of dicts)."""
    if not batch:
        raise ValueError("collate_recognition: empty batch")
    return _default_collate(list(batch))


def collate_ava(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack ``img``; keep ``proposals``/``gt_bboxes``/``gt_labels``/``img_metas`` (and others) as lists."""
    if not batch:
        raise ValueError("collate_ava: empty batch")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = _default_collate(values, key) if key in STACKED_AVA_KEYS else [_to_tensor(v) for v in values]
    return out
