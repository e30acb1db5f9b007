"""Batch collation for the DataLoader.

* :func:`collate_recognition`: like ``torch.utils.data.default_collate`` (tensors and numpy arrays are
  stacked, numbers become tensors, dicts are collated per key), except that ``img_metas`` stays a list
  of per-sample dicts.  Recognition items ``{'imgs': [V,C,T,H,W], 'label': []}`` give ``imgs [B,V,C,T,H,W]``.
* :func:`collate_ava`: ``img`` is stacked to ``[B, C, T, H, W]``; ``proposals``, ``gt_bboxes``,
  ``gt_labels``, ``img_metas`` and every other key become lists (their sizes differ per sample).

Inside a DataLoader worker, stacked tensors are written straight into shared memory (as torch's
``default_collate`` does), so that sending the batch to the main process copies nothing more.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["collate_recognition", "collate_ava", "STACKED_AVA_KEYS"]

STACKED_AVA_KEYS = ("img",)


def _to_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    if torch.utils.data.get_worker_info() is None:
        return torch.stack(tensors)
    # torch's default_collate: stack into shared memory directly instead of copying there when pickled
    first = tensors[0]
    shape = (len(tensors),) + tuple(first.shape)
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
