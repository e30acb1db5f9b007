"""The engine's data loaders: collation, per-sample seeding, worker set-up and the train / test loaders.

``build_train_loader`` iterates :class:`~actionkit.engine.distributed.EpochBatchSampler` batches (order a pure
function of ``(seed, epoch)``); ``build_test_loader`` keeps dataset order (a padded shard per rank when
distributed).  Both read ``cfg.data.{train,val,test}_dataloader`` over ``cfg.data``.

The path from ``dataset[i]`` to the model input (:func:`loader_data`):

1. with ``defer_normalize`` (config ``data.defer_normalize`` / ``data.<which>_dataloader.defer_normalize``,
   default True), :func:`split_dataset_normalize` gives a shallow copy of the dataset whose pipeline is the
   configured one without its ``Normalize`` (:func:`actionkit.data.preprocess.split_normalize`: only where
   ``Normalize`` directly precedes ``FormatShape('NCTHW')`` and only key-moving ops follow), and that
   ``Normalize`` as a :class:`~actionkit.data.preprocess.BatchNormalize`;
2. :class:`~actionkit.engine.distributed.SeededDataset` seeds each sample from ``(seed, epoch, index)``;
3. the collate (the dataset's ``collate_fn``, else :func:`auto_collate`) stacks the uint8 clips; a
   :class:`BatchNormalizeCollate` then attaches the ``BatchNormalize`` under
   ``actionkit.data.preprocess.BATCH_NORMALIZE_KEY``;
4. :func:`~actionkit.engine.test.prepare_batch` moves the batch to the device and applies the step there (bit
   for bit what the pipeline's ``Normalize`` gives).
"""
from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

from ..data.collate import collate_ava, collate_recognition
from ..data.pipeline import Compose
from ..data.preprocess import BatchNormalize, attach_batch_normalize, split_normalize
from .distributed import DistributedTestSampler, EpochBatchSampler, SeededDataset, get_dist_info, is_dist

__all__ = ["auto_collate", "dataset_collate", "WorkerInit", "LoaderData", "loader_data", "split_dataset_normalize",
           "BatchNormalizeCollate", "build_train_loader", "build_test_loader", "build_precise_bn_loader"]

_LOG = logging.getLogger("actionkit")


_BOX_KEYS = ("proposals", "gt_bboxes", "gt_labels")


def auto_collate(batch: Sequence[Any]) -> Any:
    """Collate for datasets without a ``collate_fn``: AVA-style items (boxes, ``img``) go through
    ``actionkit.data.collate.collate_ava``, recognition items through ``collate_recognition`` (``img_metas``
    kept as a list), anything else through torch's ``default_collate``."""
    first = batch[0] if len(batch) else None
    if isinstance(first, Mapping):
        if first and all(isinstance(v, (list, tuple)) for v in first.values()):
            # ``Collect(nested=True)`` (test time): every value is a list over augmentations; collate each
            # augmentation separately -> ``{key: [batch_of_aug0, ...]}`` (mmcv's collate of nested items)
            n_aug = len(next(iter(first.values())))
            per_aug = [auto_collate([{k: item[k][a] for k in first} for item in batch]) for a in range(n_aug)]
            return {k: [p[k] for p in per_aug] for k in first}
        if any(k in first for k in _BOX_KEYS):
            return collate_ava(batch)
        return collate_recognition(batch)
    return default_collate(batch)


def dataset_collate(dataset: Any) -> Callable:
    """The dataset's ``collate_fn`` attribute when it has one, else :func:`auto_collate`."""
    fn = getattr(dataset, "collate_fn", None)
    return fn if callable(fn) else auto_collate


class WorkerInit:
    """Seeds each loader worker from ``(seed, rank, worker_id)`` (augmentation is seeded per sample anyway)
    and sets OpenCV's thread count in it (``cfg.opencv_num_threads``, 0 = no OpenCV threads, as MMAction2's
    ``setup_multi_processes``: workers run side by side, threads inside each only oversubscribe the cores)."""

    def __init__(self, seed: int, rank: int, num_workers: int, opencv_num_threads: int | None = 0):
        self.seed, self.rank, self.num_workers = int(seed), rank, num_workers
        self.opencv_num_threads = opencv_num_threads

    def __call__(self, worker_id: int) -> None:
        s = (self.num_workers * self.rank + worker_id + self.seed) % 2 ** 32
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        if self.opencv_num_threads is not None:
            cv2.setNumThreads(int(self.opencv_num_threads))


def _loader_settings(cfg: Mapping, which: str) -> dict:
    data = cfg.get("data", {})
    override = dict(data.get(f"{which}_dataloader", {}) or {})
    default_vpg = data.get("videos_per_gpu", 1) if which == "train" else 1
    return {
        "videos_per_gpu": override.get("videos_per_gpu", default_vpg),
        "workers_per_gpu": override.get("workers_per_gpu", data.get("workers_per_gpu", 1)),
        "drop_last": override.get("drop_last", False),
        "pin_memory": override.get("pin_memory", torch.cuda.is_available()),
        "persistent_workers": override.get("persistent_workers", data.get("persistent_workers", False)),
        "defer_normalize": override.get("defer_normalize", data.get("defer_normalize", True)),
    }


def split_dataset_normalize(dataset: Any) -> tuple[Any, BatchNormalize | None]:
    """``(dataset whose items hold uint8 clips, the BatchNormalize to apply to its batches)``, or
    ``(dataset, None)`` where its pipeline keeps its ``Normalize`` (see ``data.preprocess.split_normalize``).

    A dataset with a ``split_normalize()`` method of its own (several pipelines, e.g. ``RecognitionInputs``) is
    asked; otherwise a ``Compose`` under ``dataset.pipeline`` is split and the dataset shallow-copied with the
    split pipeline (``dataset`` itself is left as it is: ``dataset[i]`` still gives float32 clips).
    """
    own = getattr(dataset, "split_normalize", None)
    if callable(own):
        return own()
    pipeline = getattr(dataset, "pipeline", None)
    if not isinstance(pipeline, Compose):
        return dataset, None
    steps, step = split_normalize(pipeline.transforms)
    if step is None:
        return dataset, None
    uint8_dataset = copy.copy(dataset)
    uint8_dataset.pipeline = Compose(steps)
    return uint8_dataset, step


class BatchNormalizeCollate:
    """``collate_fn(items)`` with ``step`` attached to the batch (``data.preprocess.attach_batch_normalize``)."""

    def __init__(self, collate_fn: Callable, step: BatchNormalize):
        self.collate_fn, self.step = collate_fn, step

    def __call__(self, items: Sequence[Any]) -> Any:
        return attach_batch_normalize(self.collate_fn(items), self.step)

    def __repr__(self) -> str:
        return f"BatchNormalizeCollate({self.collate_fn!r}, {self.step!r})"


@dataclass(frozen=True)
class LoaderData:
    """What an engine loader iterates: the seeded dataset, its collate and the step moved to the device."""

    dataset: SeededDataset
    collate_fn: Callable
    batch_normalize: BatchNormalize | None


_LOGGED_STEPS: set[str] = set()  # log lines written already: each moved step is logged once per process


def _log_moved_step(dataset: Any, step: BatchNormalize) -> None:
    line = (f"data: the Normalize(mean={list(step.mean)}, std={list(step.std)}, to_bgr={step.to_bgr}) of "
            f"{type(dataset).__name__}'s pipeline runs after the device copy (BatchNormalize of '{step.key}'; "
            "the loader's items hold uint8 clips)")
    if line not in _LOGGED_STEPS:
        _LOGGED_STEPS.add(line)
        _LOG.info(line)


def loader_data(dataset: Any, seed: int, defer_normalize: bool) -> LoaderData:
    """The dataset, collate and device step of an engine loader (see the module doc for the path)."""
    step = None
    if defer_normalize:
        dataset, step = split_dataset_normalize(dataset)
    collate = dataset_collate(dataset)
    if step is not None:
        _log_moved_step(dataset, step)
        collate = BatchNormalizeCollate(collate, step)
    return LoaderData(SeededDataset(dataset, seed), collate, step)


def build_train_loader(dataset: Any, cfg: Mapping, seed: int,
                       defer_normalize: bool | None = None) -> tuple[DataLoader, EpochBatchSampler]:
    """``defer_normalize`` (default: ``cfg.data.train_dataloader.defer_normalize``, else
    ``cfg.data.defer_normalize``, else True): see :func:`loader_data`."""
    s = _loader_settings(cfg, "train")
    defer = bool(s["defer_normalize"] if defer_normalize is None else defer_normalize)
    rank, world = get_dist_info()
    bs = EpochBatchSampler(len(dataset), s["videos_per_gpu"], shuffle=True, seed=seed, rank=rank,
                           world_size=world, drop_last=s["drop_last"])
    workers = int(s["workers_per_gpu"])
    g = torch.Generator()
    g.manual_seed(seed)
    init = WorkerInit(seed, rank, workers, cfg.get("opencv_num_threads", 0))
    data = loader_data(dataset, seed, defer)
    loader = DataLoader(data.dataset, batch_sampler=bs, num_workers=workers,
                        collate_fn=data.collate_fn, pin_memory=bool(s["pin_memory"]),
                        worker_init_fn=init, generator=g,
                        persistent_workers=bool(s["persistent_workers"]) and workers > 0)
    return loader, bs


def build_test_loader(dataset: Any, cfg: Mapping, which: str = "test", distributed: bool | None = None,
                      seed: int = 0, defer_normalize: bool | None = None) -> DataLoader:
    """Loader in dataset order; a padded :class:`DistributedTestSampler` shard per rank when distributed.
    ``defer_normalize`` as in :func:`build_train_loader` (``cfg.data.{which}_dataloader``)."""
    s = _loader_settings(cfg, which)
    defer = bool(s["defer_normalize"] if defer_normalize is None else defer_normalize)
    distributed = is_dist() if distributed is None else distributed
    sampler = DistributedTestSampler(len(dataset)) if distributed else None
    workers = int(s["workers_per_gpu"])
    g = torch.Generator()
    g.manual_seed(seed)
    init = WorkerInit(seed, get_dist_info()[0], workers, cfg.get("opencv_num_threads", 0))
    data = loader_data(dataset, seed, defer)
    return DataLoader(data.dataset, batch_size=s["videos_per_gpu"], shuffle=False,
                      sampler=sampler, num_workers=workers, collate_fn=data.collate_fn,
                      pin_memory=bool(s["pin_memory"]), generator=g, worker_init_fn=init)


def build_precise_bn_loader(dataset: Any, train_loader: DataLoader, train_sampler: EpochBatchSampler, seed: int,
                            epoch: int) -> DataLoader:
    """The train data in a PreciseBN order of its own (``seed``, ``epoch``), with the train loader's batch size,
    workers, collate and normalisation placement, so that the statistics see what training sees."""
    rank, world = get_dist_info()
    sampler = EpochBatchSampler(len(dataset), train_sampler.batch_size, True, seed, rank, world,
                                train_sampler.drop_last)
    sampler.set_epoch(epoch)
    defer = isinstance(train_loader.collate_fn, BatchNormalizeCollate)
    data = loader_data(dataset, seed, defer)
    return DataLoader(data.dataset, batch_sampler=sampler,
                      num_workers=train_loader.num_workers, collate_fn=data.collate_fn,
                      worker_init_fn=train_loader.worker_init_fn, generator=torch.Generator())
