"""Inference over a data loader, with results returned in dataset order (single process or distributed)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ..checkpoint import unwrap_model
from ..data.preprocess import apply_batch_normalize
from .distributed import collect_results, get_dist_info
from .logging import progress


def model_device(model: nn.Module) -> torch.device:
    for p in unwrap_model(model).parameters():
        return p.device
    for b in unwrap_model(model).buffers():
        return b.device
    return torch.device("cpu")


def to_device(data: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``; everything else is left as is."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=True) if data.device != device else data
    if isinstance(data, Mapping):
        return type(data)((k, to_device(v, device)) for k, v in data.items()) if isinstance(data, dict) \
            else {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, list):
        return [to_device(v, device) for v in data]
    if isinstance(data, tuple):
        return tuple(to_device(v, device) for v in data)
    return data


def prepare_batch(data: Any, device: torch.device) -> Any:
    """What the model receives: the batch on ``device``, then its
    :class:`~actionkit.data.preprocess.BatchNormalize` (``batch['batch_normalize']``, attached by the engine's
    loaders, see ``actionkit.engine.loaders``) applied there; a batch without one is only moved."""
    return apply_batch_normalize(to_device(data, device))


def batch_size_of(data: Any) -> int:
    """Number of samples in a collated batch (first tensor's leading dim, or first list's length)."""
    if isinstance(data, Mapping):
        for v in data.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])
        for v in data.values():  # test-time nesting: {key: [batch_of_aug0, ...]}
            if isinstance(v, (list, tuple)) and v and isinstance(v[0], torch.Tensor) and v[0].dim() > 0:
                return int(v[0].shape[0])
        for v in data.values():
            if isinstance(v, (list, tuple)) and v and isinstance(v[0], (list, tuple)):
                return len(v[0])
        for v in data.values():
            if isinstance(v, (list, tuple)):
                return len(v)
    if isinstance(data, torch.Tensor):
        return int(data.shape[0])
    return 1


def autocast_context(enabled: bool, device: torch.device):
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def split_result(result: Any, batch_size: int) -> list[Any]:
    """One entry per sample: a recognizer tensor ``[B, K]`` -> B numpy ``[K]`` vectors (``[B*V, K]`` raw
    logits, i.e. ``average_clips=None``, -> B numpy ``[V, K]``); a detector list -> its items."""
    if isinstance(result, torch.Tensor):
        result = result.detach().float().cpu().numpy()
    if isinstance(result, np.ndarray):
        if result.ndim >= 1 and result.shape[0] == batch_size:
            return list(result)
        if result.ndim >= 1 and batch_size > 0 and result.shape[0] % batch_size == 0:
            return list(result.reshape(batch_size, result.shape[0] // batch_size, *result.shape[1:]))
        raise ValueError(f"model output of shape {result.shape} does not match a batch of {batch_size}")
    if isinstance(result, (list, tuple)):
        if len(result) != batch_size:
            raise ValueError(f"model returned {len(result)} results for a batch of {batch_size}")
        return list(result)
    if batch_size == 1:
        return [result]
    raise TypeError(f"cannot split a model output of type {type(result).__name__} into {batch_size} samples")


def _run(model: nn.Module, data_loader: Iterable, amp: bool, show_progress: bool | None, desc: str) -> list[Any]:
    net = unwrap_model(model)
    net.eval()
    device = model_device(net)
    results: list[Any] = []
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    with torch.no_grad():
        for data in progress(data_loader, total=total, desc=desc, enabled=show_progress):
            data = prepare_batch(data, device)
            with autocast_context(amp, device):
                result = net(return_loss=False, **data)
            results.extend(split_result(result, batch_size_of(data)))
    return results


def single_gpu_test(model: nn.Module, data_loader: Iterable, amp: bool = False,
                    show_progress: bool | None = None) -> list[Any]:
    """Run ``model(return_loss=False, **batch)`` over the loader; one result per sample, loader order."""
    return _run(model, data_loader, amp, show_progress, "test")


def multi_gpu_test(model: nn.Module, data_loader: Any, tmpdir: str | None = None, gpu_collect: bool = False,
                   amp: bool = False, show_progress: bool | None = None) -> list[Any] | None:
    """Each rank runs its shard (:class:`~actionkit.engine.distributed.DistributedTestSampler`); the results are
    gathered to rank 0 in dataset order with the padding dropped (None on other ranks).

    ``tmpdir`` / ``gpu_collect`` are accepted for MMAction2 compatibility; results always travel through
    ``all_gather_object``.
    """
    rank, _ = get_dist_info()
    part = _run(model, data_loader, amp, show_progress if show_progress is not None else None, f"test[{rank}]")
    return collect_results(part, len(data_loader.dataset))
