"""Batch arenas (``collate.shared_batch_items``): in a DataLoader worker the pipeline writes each item's final clip
straight into the pooled shared buffer of its batch and the collate copies nothing.  Batches must be exactly those
of the main process, whatever the collate, however long the main process keeps them, with retried samples and
with clips whose shape changes; and the reuse pool of the CPU deferred ``Normalize``."""
from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from actionkit.data import collate as collate_mod
from actionkit.data.collate import collate_recognition, shared_batch_items
from actionkit.data.kinetics import RawframeDataset
from actionkit.data.pipeline import ReusedOutputs, deferred_normalization
from actionkit.synthetic.kinetics import write_frame_folder
from actionkit.engine.test import prepare_batch
from actionkit.engine.loaders import loader_dataset

NORM = dict(type="Normalize", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)


def train_pipeline(size: int = 32) -> list[dict]:
    return [dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=1), dict(type="RawFrameDecode"),
            dict(type="Resize", scale=(-1, 40)),
            dict(type="MultiScaleCrop", input_size=size, scales=(1, 0.8), random_crop=False, max_wh_scale_gap=0),
            dict(type="Resize", scale=(size, size), keep_ratio=False), dict(type="Flip", flip_ratio=0.5), NORM,
            dict(type="FormatShape", input_format="NCTHW"), dict(type="Collect", keys=["imgs", "label"], meta_keys=[]),
            dict(type="ToTensor", keys=["imgs", "label"])]


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("arena_frames")
    rng = np.random.default_rng(0)
    for i in range(6):
        write_frame_folder(root / f"v{i}", rng.integers(0, 256, (12, 40, 52, 3), dtype=np.uint8))
    (root / "list.txt").write_text("".join(f"v{i} 12 {i % 3}\n" for i in range(6)))
    return root


@pytest.fixture(autouse=True)
def small_slots(monkeypatch):
    """Pool (and arena) batches from 1 KiB, so that these small clips use them (workers are forked: they inherit it)."""
    monkeypatch.setattr(collate_mod._SlotPool, "MIN_BYTES", 1 << 10)


def frames_dataset(root, size: int = 32) -> RawframeDataset:
    return RawframeDataset(root / "list.txt", train_pipeline(size), data_prefix=root)


def reporting_collate(items: list[dict]) -> dict:
    """``collate_recognition`` plus whether the batch is on the memory its first item was written to (no copy)."""
    out = collate_recognition(items)
    out["in_place"] = torch.tensor(out["imgs"].data_ptr() == items[0]["imgs"].data_ptr())
    return out


def batches(dataset, workers: int, batch_size: int, order: list[int], collate=reporting_collate) -> list:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                                         sampler=order)
    return list(loader)  # every batch kept alive: the worker must not write into memory the main process holds


def normalised(batch: dict) -> torch.Tensor:
    return prepare_batch({k: v for k, v in batch.items() if k != "in_place"}, torch.device("cpu"))["imgs"]


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("defer", [True, False])
def test_worker_batches_equal_main_process_batches_and_are_built_in_place(frames_root, batch_size, defer):
    ds = loader_dataset(frames_dataset(frames_root), seed=3, defer_normalize=defer)
    order = [0, 1, 2, 3, 4, 5] * 2
    reference = batches(ds, 0, batch_size, order)
    got = batches(ds, 1, batch_size, order)
    assert len(got) == len(reference) == 12 // batch_size
    for a, b in zip(got, reference):
        assert a["imgs"].dtype == (torch.uint8 if defer else torch.float32)
        assert torch.equal(normalised(a), normalised(b)) and torch.equal(a["label"], b["label"])
    assert not any(bool(b["in_place"]) for b in reference)  # no arena in the main process
    # from the second batch on, while the worker's pool has free slots (the main process keeps every batch here)
    flags = [bool(b["in_place"]) for b in got]
    assert flags[0] is False and flags[1] is True, flags


def test_batches_dropped_at_once_keep_their_slots_in_use(frames_root):
    ds = loader_dataset(frames_dataset(frames_root), seed=3, defer_normalize=True)
    reference = [normalised(b) for b in batches(ds, 0, 2, list(range(6)) * 4)]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=reporting_collate,
                                         sampler=list(range(6)) * 4)
    flags = []
    for k, batch in enumerate(loader):
        assert torch.equal(normalised(batch), reference[k])
        flags.append(bool(batch["in_place"]))
        del batch
    assert flags[1:] == [True] * (len(flags) - 1)


@pytest.mark.parametrize("collate", ["default_collate", "items_as_they_are"])
def test_custom_collate_gets_correct_batches(frames_root, collate):
    """A collate that is not ours may copy the clips or pass them on as they are (then they leave the worker on
    the arena's memory): either way no batch is overwritten later."""
    ds = loader_dataset(frames_dataset(frames_root), seed=3, defer_normalize=False)
    fn = (torch.utils.data.default_collate if collate == "default_collate"
          else (lambda items: [item["imgs"] for item in items]))
    order = [0, 1, 2, 3, 4, 5] * 3
    reference = batches(ds, 0, 2, order, collate=fn)
    got = batches(ds, 1, 2, order, collate=fn)
    for a, b in zip(got, reference):
        if collate == "default_collate":
            assert torch.equal(a["imgs"], b["imgs"])
        else:
            assert all(torch.equal(x, y) for x, y in zip(a, b))


def _span(t: torch.Tensor) -> range:
    return range(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())


def test_an_arena_left_to_a_custom_collate_is_never_written_again(frames_root, monkeypatch):
    """The worker's queue pickles a batch in a thread, after the worker has moved on to the next one: memory that
    a custom collate passed on uncopied must not be written by a later batch."""
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as in a worker
    for name, value in (("_POOL", None), ("_ARENA", None), ("_ARENA_SPEC", None), ("_ARENA_MISSES", 0)):
        monkeypatch.setattr(collate_mod, name, value)
    ds = loader_dataset(frames_dataset(frames_root), seed=3, defer_normalize=True)
    shared_batch_items(ds, [0, 1])  # learns the clip shape
    kept = [item["imgs"] for item in shared_batch_items(ds, [2, 3])]  # on an arena, never collated by us
    assert _span(kept[1]).start == _span(kept[0]).stop  # the places of one batch, in order
    copies = [t.clone() for t in kept]
    for _ in range(3):
        later = [item["imgs"] for item in shared_batch_items(ds, [4, 5])]
        assert not any(set(_span(a)) & set(_span(b)) for a in later for b in kept)
    assert all(torch.equal(t, c) for t, c in zip(kept, copies))
    assert collate_mod._ARENA_MISSES == collate_mod._MAX_ARENA_MISSES  # then this worker stops using arenas
    last = shared_batch_items(ds, [4, 5])
    slots = [torch.empty(0, dtype=torch.uint8).set_(s) for s in collate_mod._POOL.slots if s is not None]
    assert not any(_span(item["imgs"]).start in _span(slot) for item in last for slot in slots)


def test_an_arena_taken_by_the_collate_stays_busy_until_the_batch_is_freed(frames_root, monkeypatch):
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    for name, value in (("_POOL", None), ("_ARENA", None), ("_ARENA_SPEC", None), ("_ARENA_MISSES", 0)):
        monkeypatch.setattr(collate_mod, name, value)
    ds = loader_dataset(frames_dataset(frames_root), seed=3, defer_normalize=True)
    collate_recognition(shared_batch_items(ds, [0, 1]))
    items = shared_batch_items(ds, [2, 3])
    batch = collate_recognition(items)
    assert isinstance(batch["imgs"], collate_mod._SlotTensor)
    assert batch["imgs"].data_ptr() == items[0]["imgs"].data_ptr()
    index = batch["imgs"]._slot[2]
    slot = collate_mod._POOL.slots[index]
    assert slot[0] == 1
    later = collate_recognition(shared_batch_items(ds, [4, 5]))
    assert later["imgs"]._slot[2] != index  # the first batch's slot is busy: another one
    # (in the main process, freeing the unpickled batch sets the flag back: test_deferred_normalize.py)


class RetryingDataset(torch.utils.data.Dataset):
    """Odd items are built twice (as a skipped sample is): the arena place of the first build is handed out once."""

    def __init__(self, root):
        self.ds = loader_dataset(frames_dataset(root), seed=3, defer_normalize=True)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        with deferred_normalization():
            if i % 2:
                self.ds.dataset[i]
            return self.ds.dataset[i]

    def __getitems__(self, keys):
        return shared_batch_items(self, keys)


def test_retried_items_fall_back_to_the_copy(frames_root):
    ds = RetryingDataset(frames_root)
    order = [0, 2, 1, 3, 4, 0] * 2  # batches of 2: (0, 2), (1, 3) retried, (4, 0), then again
    reference = batches(ds, 0, 2, order)
    got = batches(ds, 1, 2, order)
    for a, b in zip(got, reference):
        assert torch.equal(normalised(a), normalised(b))
    assert [bool(b["in_place"]) for b in got] == [False, False, True, True, False, True]


class TwoSizes(torch.utils.data.Dataset):
    """Items 0-3 are 32x32 crops, 4-7 24x24: the arena learns a shape from one batch and meets another."""

    def __init__(self, root):
        self.parts = [loader_dataset(frames_dataset(root, size), seed=3, defer_normalize=True) for size in (32, 24)]

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.parts[i // 4][i % 4]

    def __getitems__(self, keys):
        return shared_batch_items(self, keys)


def test_a_new_clip_shape_falls_back_to_the_copy_then_is_learnt(frames_root):
    ds = TwoSizes(frames_root)
    order = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    reference = batches(ds, 0, 2, order)
    got = batches(ds, 1, 2, order)
    for a, b in zip(got, reference):
        assert torch.equal(normalised(a), normalised(b))
    assert [bool(b["in_place"]) for b in got] == [False, True, False, True, False]


class AVAItems(torch.utils.data.Dataset):
    """AVA-style items (boxes, ``img``) through a pipeline without a decode op: the step-by-step fused
    ``NormalizeFormatShape`` asks for the output buffer; ``collate_ava`` stacks ``img`` and lists the rest."""

    PIPELINE = [dict(type="RandomRescale", scale_range=(40, 48)), dict(type="RandomCrop", size=32),
                dict(type="Flip", flip_ratio=0.5), NORM, dict(type="FormatShape", input_format="NCTHW", collapse=True),
                dict(type="Rename", mapping=dict(imgs="img")),
                dict(type="ToTensor", keys=["img", "proposals", "gt_bboxes", "gt_labels"]),
                dict(type="Collect", keys=["img", "proposals", "gt_bboxes", "gt_labels"], meta_keys=["scores"])]

    def __init__(self, defer: bool):
        from actionkit.data.pipeline import Compose

        self.pipeline, self.defer = Compose(self.PIPELINE), defer

    def __len__(self):
        return 6

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        np.random.seed(i)
        results = {"imgs": rng.integers(0, 256, (4, 45, 80, 3), dtype=np.uint8), "modality": "RGB", "clip_len": 4,
                   "num_clips": 1, "img_shape": (45, 80), "original_shape": (45, 80),
                   "gt_bboxes": np.array([[8, 4, 40, 40]], np.float32),
                   "proposals": np.array([[0, 0, 80, 45]], np.float32),
                   "gt_labels": np.zeros((1, 81), np.float32), "scores": np.ones(1)}
        with deferred_normalization(self.defer):
            return self.pipeline(results)

    def __getitems__(self, keys):
        return shared_batch_items(self, keys)


def reporting_collate_ava(items: list[dict]) -> dict:
    out = collate_mod.collate_ava(items)
    out["in_place"] = out["img"].data_ptr() == items[0]["img"].data_ptr()
    return out


@pytest.mark.parametrize("defer", [True, False])
def test_ava_batches_through_a_worker_equal_main_process_batches(defer):
    ds = AVAItems(defer)
    order = [0, 1, 2, 3, 4, 5, 1, 0]
    reference = batches(ds, 0, 2, order, collate=reporting_collate_ava)
    got = batches(ds, 1, 2, order, collate=reporting_collate_ava)
    for a, b in zip(got, reference):
        a, b = (prepare_batch({k: v for k, v in x.items() if k != "in_place"}, torch.device("cpu")) for x in (a, b))
        assert a["img"].dtype == torch.float32 and torch.equal(a["img"], b["img"])
        assert all(torch.equal(x, y) for x, y in zip(a["gt_bboxes"], b["gt_bboxes"]))
        assert len(a["proposals"]) == 2
    assert [b["in_place"] for b in got] == [False, True, True, True]


def test_reused_outputs_hand_out_memory_only_once_every_tensor_on_it_is_freed():
    pool = ReusedOutputs(min_bytes=1 << 20, max_arrays=2)
    a = pool.empty((4, 1 << 18), torch.float32)
    first, first_array = a.data_ptr(), weakref.ref(pool._arrays[0])
    b = pool.empty((4, 1 << 18), torch.float32)
    assert b.data_ptr() != first  # a is in use
    view = a[1:]
    del a
    c = pool.empty((4, 1 << 18), torch.float32)  # a's view is alive and the pool is full: not pooled
    assert c.data_ptr() not in (first, b.data_ptr())
    del view
    d = pool.empty((4, 1 << 18), torch.float32)
    assert d.data_ptr() == first and d.shape == (4, 1 << 18) and d.dtype == torch.float32
    as_numpy = d.numpy()
    del d
    assert pool.empty((4, 1 << 18), torch.float32).data_ptr() != first  # a numpy view holds it
    del as_numpy
    assert pool.empty((2, 1 << 19), torch.float32).data_ptr() == first  # same size in bytes: reused
    assert len(pool._arrays) == 2
    e = pool.empty((3, 1 << 18), torch.float32)  # another size: the free array goes, b (in use) stays
    assert e.shape == (3, 1 << 18) and len(pool._arrays) == 2
    assert any(arr.__array_interface__["data"][0] == b.data_ptr() for arr in pool._arrays)
    assert first_array() is None  # dropped (its memory may serve e: addresses say nothing here)
    del e
    assert pool.empty((3, 1 << 18), torch.float32).shape == (3, 1 << 18)
    assert pool.empty((8,), torch.float32).shape == (8,)  # small: not pooled
