"""torch.distributed helpers: init from the torchrun environment, samplers, ordered result gathering."""
from __future__ import annotations

import datetime
import math
import os
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..utils import barrier, get_dist_info  # noqa: F401 - part of this module's interface


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    return get_dist_info()[0] == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_dist(backend: str | None = None, timeout_s: int = 1800) -> tuple[int, int]:
    """Initialise the process group from RANK / WORLD_SIZE / LOCAL_RANK (torchrun); gloo on CPU, nccl on GPU."""
    if is_dist():
        return get_dist_info()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("distributed launch requested but RANK/WORLD_SIZE are not set; start with torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank % max(torch.cuda.device_count(), 1))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return get_dist_info()



def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def sync_random_seed(seed: int | None = None) -> int:
    """A seed shared by all ranks: ``seed`` if given, else a random one drawn on rank 0 and broadcast."""
    if seed is None:
        seed = int(np.random.randint(2 ** 31)) if is_main_process() else 0
        seed = int(broadcast_object(seed))
    return int(seed)


def all_gather_object(obj: Any) -> list[Any]:
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def collect_results(part: list[Any], size: int) -> list[Any] | None:
    """Gather per-rank results of :class:`DistributedTestSampler` shards into dataset order.

    Rank ``r`` holds samples ``r, r + W, r + 2W, ...`` (padded); the result interleaves the parts and
    drops the padding, so every sample appears exactly once.  Returns the list on rank 0, None elsewhere
    (all ranks return it when not distributed).
    """
    parts = all_gather_object(part)
    rank, _ = get_dist_info()
    if rank != 0:
        return None
    ordered: list[Any] = []
    for group in zip(*parts):
        ordered.extend(group)
    # longer shards (unequal lengths) cannot happen with padding, but keep any tail
    longest = max(len(p) for p in parts)
    if any(len(p) != longest for p in parts):
        for i in range(min(len(p) for p in parts), longest):
            ordered.extend(p[i] for p in parts if i < len(p))
    return ordered[:size]


def reduce_mean(value: float | torch.Tensor) -> float:
    if not is_dist():
        return float(value)
    t = torch.tensor(float(value), dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


class DistributedTestSampler(Sampler[int]):
    """Rank ``r`` gets indices ``r::W`` of ``0..n-1`` padded (by wrapping) to a multiple of ``W``."""

    def __init__(self, size: int, rank: int | None = None, world_size: int | None = None):
        r, w = get_dist_info()
        self.size = size
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size
        self.num_samples = math.ceil(size / self.world_size) if size else 0
        self.total_size = self.num_samples * self.world_size

    def __iter__(self) -> Iterator[int]:
        idx = list(range(self.size))
        if self.size:
            while len(idx) < self.total_size:
                idx += idx[: self.total_size - len(idx)]
        return iter(idx[self.rank:self.total_size:self.world_size])

    def __len__(self) -> int:
        return self.num_samples


class EpochBatchSampler(Sampler[list]):
    """Batches of ``(epoch, index)`` pairs; the order is a pure function of ``(seed, epoch)``.

    Shuffles with a generator seeded by ``seed + epoch`` (as MMAction2's DistributedSampler), pads to a
    multiple of ``world_size`` and keeps ``rank::world_size``.  ``set_epoch(e)`` selects the epoch and
    ``set_start_batch(k)`` skips the first ``k`` batches (mid-epoch resume).  Each index travels with its
    epoch so that :class:`SeededDataset` can seed per-sample augmentation reproducibly.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, drop_last: bool = False):
        r, w = get_dist_info()
        self.size = size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0
        self.num_samples = math.ceil(size / self.world_size)
        self.total_size = self.num_samples * self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start_batch(self, k: int) -> None:
        self.start_batch = int(k)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            idx = torch.randperm(self.size, generator=g).tolist()
        else:
            idx = list(range(self.size))
        while len(idx) < self.total_size:
            idx += idx[: self.total_size - len(idx)]
        return idx[self.rank:self.total_size:self.world_size]

    @property
    def num_batches(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[list]:
        idx = self.indices()
        for b in range(self.start_batch, self.num_batches):
            chunk = idx[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(self.epoch, i) for i in chunk]

    def __len__(self) -> int:
        return max(self.num_batches - self.start_batch, 0)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(1)[0])


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a dataset: ``ds[(epoch, i)]`` seeds python/numpy/torch from ``(seed, epoch, i)`` then returns
    ``dataset[i]``, making random augmentation independent of worker count and resume position.  In the
    main process (no workers) the global RNG states are restored afterwards."""

    def __init__(self, dataset: Any, seed: int):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        import random

        if isinstance(key, tuple):
            epoch, index = key
        else:
            epoch, index = 0, key
        s = sample_seed(self.seed, epoch, index)
        in_main = torch.utils.data.get_worker_info() is None
        if in_main:
            saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(s)
        np.random.seed(s)
        torch.default_generator.manual_seed(s)
        try:
            return self.dataset[index]
        finally:
            if in_main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])
