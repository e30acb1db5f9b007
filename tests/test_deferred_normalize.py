"""Deferred normalisation (uint8 clips out of the pipeline without its ``Normalize``, ``BatchNormalize`` applied
to the batch) is bit-identical to normalising in the pipeline; the fast formatting, resize and decode paths
equal their references."""
from __future__ import annotations

import pickle
import random
import weakref
from multiprocessing.reduction import ForkingPickler

import cv2
import numpy as np
import pytest
import torch

import torch.multiprocessing  # noqa: F401  (registers torch's reducers in ForkingPickler)
from actionkit.data import collate as collate_mod
from actionkit.data.collate import collate_ava, collate_recognition
from actionkit.data.decode import FrameFolderReader, decode_image
from actionkit.data.pipeline import Compose, clip_to_ncthw
from actionkit.data.preprocess import (BATCH_NORMALIZE_KEY, BatchNormalize, ReusedOutputs, apply_batch_normalize,
                                       attach_batch_normalize, split_normalize)
from actionkit.data.transforms import Normalize, imresize_clip
from actionkit.engine.test import prepare_batch
from actionkit.engine.loaders import auto_collate, build_test_loader, build_train_loader, split_dataset_normalize

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
NORM = dict(type="Normalize", mean=MEAN, std=STD, to_bgr=False)
TAIL = [dict(type="FormatShape", input_format="NCTHW"),
        dict(type="Collect", keys=["imgs", "label"], meta_keys=[]),
        dict(type="ToTensor", keys=["imgs", "label"])]


class FakeDecode:
    """Stands in for a decoder: picks ``frame_inds`` from the in-memory video ``results['video']``."""

    def __call__(self, results):
        idx = results["frame_inds"] - results["start_index"]
        results["imgs"] = results["video"][idx]
        results["img_shape"] = results["original_shape"] = results["video"].shape[1:3]
        return results


def random_video(frames=24, h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)


def train_pipeline(norm=NORM, size=24, short_side=32):
    return [dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=1), FakeDecode(),
            dict(type="Resize", scale=(-1, short_side)),
            dict(type="MultiScaleCrop", input_size=size, scales=(1, 0.875, 0.75), random_crop=False,
                 max_wh_scale_gap=1),
            dict(type="Resize", scale=(size, size), keep_ratio=False),
            dict(type="Flip", flip_ratio=0.5), norm] + TAIL


def multi_view_pipeline(crop="ThreeCrop", norm=NORM):
    return [dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=3, test_mode=True), FakeDecode(),
            dict(type="Resize", scale=(-1, 32)), dict(type=crop, crop_size=32 if crop == "ThreeCrop" else 24),
            norm] + TAIL


def item(video, label=1):
    return {"video": video, "total_frames": len(video), "start_index": 0, "label": label, "modality": "RGB"}


def run(pipeline, results, seed, defer):
    """The pipeline's output; with ``defer`` that of the pipeline without its Normalize (None when it cannot be
    split), the BatchNormalize attached as the engine's loaders attach it to a batch."""
    np.random.seed(seed)
    random.seed(seed)
    if not defer:
        return pipeline(dict(results))
    steps, step = split_normalize(pipeline.transforms)
    out = Compose(steps)(dict(results))
    return out if step is None else attach_batch_normalize(out, step)


def collate_deferred(collate, items):
    """Collate items made by ``run(..., defer=True)``: the step is the batch's, not the items'."""
    step = items[0][BATCH_NORMALIZE_KEY]
    assert all(it[BATCH_NORMALIZE_KEY] == step for it in items)
    return attach_batch_normalize(collate([{k: v for k, v in it.items() if k != BATCH_NORMALIZE_KEY}
                                           for it in items]), step)


def reference_run(ops, results, seed):
    """The transforms one by one (no fusion) up to FormatShape, done with numpy's transpose: the results
    dict before Collect as the pipeline computed it before the fused and deferred steps."""
    np.random.seed(seed)
    random.seed(seed)
    pipe = Compose(ops)
    r = dict(results)
    for t in pipe.transforms:
        if type(t).__name__ == "FormatShape":
            imgs = r["imgs"]
            clip_len = r["clip_len"]
            x = imgs.reshape((-1, r["num_clips"], clip_len) + imgs.shape[1:]).transpose(0, 1, 5, 2, 3, 4)
            x = np.ascontiguousarray(x).reshape((-1,) + x.shape[2:])
            r["imgs"] = x[0] if t.collapse else x
            return r
        r = t(r)
    raise AssertionError("no FormatShape in the pipeline")


# ------------------------------------------------------------------------------------- the table
@pytest.mark.parametrize("mean,std,to_bgr", [(MEAN, STD, False), (MEAN[::-1], STD[::-1], True),
                                             ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], False),
                                             ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5], False),
                                             ([0.5, 255.0, 1e-3], [3.3, 0.01, 1000.0], False)])
def test_table_equals_normalize_for_every_value_and_channel(mean, std, to_bgr):
    """Exhaustive: all 256 values x 3 channels through Normalize vs the table, the cv2 and the torch lookups."""
    values = np.arange(256, dtype=np.uint8)
    img = np.stack([np.stack([values, np.roll(values, 85), np.roll(values, 170)], axis=-1)] * 2)  # [2, 256, 3]
    clip = img[:, None]  # [M=2, H=1, W=256, 3]
    expected = Normalize(mean, std, to_bgr)({"imgs": clip, "modality": "RGB"})["imgs"]  # [2, 1, 256, 3]
    spec = BatchNormalize(tuple(np.float32(mean).tolist()), tuple(np.float32(std).tolist()), to_bgr)
    x = torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))[None]  # [1, C, T, H, W], RGB
    want = torch.from_numpy(np.ascontiguousarray(expected.transpose(3, 0, 1, 2)))[None]
    for got in (spec.normalize(x), spec.normalize_torch(x), spec({"imgs": x})["imgs"]):
        assert got.dtype == torch.float32
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # bit for bit (signed zeros too)


def test_spec_rejects_non_uint8_and_mixed_batches():
    spec = BatchNormalize((1.0, 2.0, 3.0), (1.0, 1.0, 1.0))
    with pytest.raises(TypeError):
        spec.normalize(torch.zeros(1, 3, 2, 2, 2))
    other = BatchNormalize((1.0, 2.0, 3.0), (2.0, 1.0, 1.0))
    batch = {"imgs": torch.zeros(1, 3, 1, 1, 1, dtype=torch.uint8), BATCH_NORMALIZE_KEY: spec}
    with pytest.raises(ValueError, match="another"):
        attach_batch_normalize(batch, other)
    assert apply_batch_normalize({"imgs": 1}) == {"imgs": 1}
    assert pickle.loads(pickle.dumps(spec)) == spec


# ------------------------------------------------------------------------------------- recognition
@pytest.mark.parametrize("to_bgr", [False, True])
def test_train_pipeline_deferred_equals_in_pipeline_and_reference(to_bgr):
    ops = train_pipeline(dict(NORM, to_bgr=to_bgr))
    pipe = Compose(ops)
    assert split_normalize(pipe.transforms)[1] is not None
    video = random_video()
    flips = set()
    for seed in range(8):
        normal = run(pipe, item(video), seed, defer=False)
        deferred = run(pipe, item(video), seed, defer=True)
        ref = reference_run(ops, item(video), seed)
        assert normal["imgs"].dtype == torch.float32 and BATCH_NORMALIZE_KEY not in normal
        assert deferred["imgs"].dtype == torch.uint8 and deferred["imgs"].shape == normal["imgs"].shape
        assert torch.equal(normal["imgs"], torch.from_numpy(ref["imgs"]))
        batch = apply_batch_normalize(collate_deferred(collate_recognition, [deferred, deferred]))
        assert BATCH_NORMALIZE_KEY not in batch and batch["label"].tolist() == [1, 1]
        assert torch.equal(batch["imgs"], torch.stack([normal["imgs"]] * 2))
        flips.add(bool(ref["flip"]))
    assert flips == {False, True}


@pytest.mark.parametrize("crop", ["ThreeCrop", "TenCrop"])
def test_multi_view_test_pipeline_deferred_equals_in_pipeline(crop):
    ops = multi_view_pipeline(crop)
    pipe = Compose(ops)
    video = random_video(frames=30)
    normal = run(pipe, item(video), 0, defer=False)
    deferred = run(pipe, item(video), 0, defer=True)
    views = 3 * (3 if crop == "ThreeCrop" else 10)
    assert tuple(normal["imgs"].shape) == (views, 3, 4, 32 if crop == "ThreeCrop" else 24,
                                           32 if crop == "ThreeCrop" else 24)
    assert torch.equal(normal["imgs"], torch.from_numpy(reference_run(ops, item(video), 0)["imgs"]))
    batch = apply_batch_normalize(collate_deferred(auto_collate, [deferred]))
    assert torch.equal(batch["imgs"][0], normal["imgs"])


def test_dataset_without_deferral_returns_the_pre_fusion_result():
    """``dataset[i]`` (tests, users) gives float32, equal to the steps one by one; the engine's split copy gives
    the uint8 clip and leaves the dataset as it was."""

    class Dataset:
        def __init__(self):
            self.pipeline = Compose(train_pipeline())
            self.video = random_video(seed=3)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            np.random.seed(i)
            random.seed(i)
            return self.pipeline(item(self.video, label=i))

    ds = Dataset()
    for i in range(4):
        out = ds[i]
        assert set(out) == {"imgs", "label"} and out["imgs"].dtype == torch.float32
        assert torch.equal(out["imgs"], torch.from_numpy(reference_run(train_pipeline(), item(ds.video), i)["imgs"]))
        uint8_ds, step = split_dataset_normalize(ds)
        assert torch.equal(ds[i]["imgs"], out["imgs"])
        wrapped = uint8_ds[i]
        assert wrapped["imgs"].dtype == torch.uint8
        assert torch.equal(step(wrapped)["imgs"], out["imgs"])


def test_pipelines_that_cannot_defer_are_unchanged():
    """A transform after FormatShape may read the pixels: no split there (float32 from the engine's loaders)."""
    video = random_video()
    custom = Compose(train_pipeline()[:-2] + [lambda r: r, dict(type="ToTensor", keys=["imgs"])])
    not_collected = Compose(train_pipeline()[:-2] + [dict(type="Collect", keys=["label"], meta_keys=[])])
    unfused = Compose(train_pipeline()[:-4] + [dict(type="Flip", flip_ratio=0.0)] + [NORM] + TAIL)
    for pipe in (custom, not_collected):
        assert split_normalize(pipe.transforms)[1] is None
        out = run(pipe, item(video), 0, defer=True)
        assert BATCH_NORMALIZE_KEY not in out
        if "imgs" in out:
            assert out["imgs"].dtype == torch.float32
    assert split_normalize(unfused.transforms)[1] is not None
    # a float clip reaching the engine-side step is refused with the way out (normalise in the workers)
    pipe = Compose([NORM] + TAIL)
    imgs = np.random.default_rng(0).random((4, 6, 5, 3)).astype(np.float32) * 255
    out = run(pipe, dict(imgs=imgs, num_clips=1, clip_len=4, label=0, modality="RGB"), 0, defer=True)
    with pytest.raises(TypeError, match="defer_normalize=False"):
        apply_batch_normalize(out)
    assert run(pipe, dict(imgs=imgs, num_clips=1, clip_len=4, label=0, modality="RGB"), 0,
               defer=False)["imgs"].dtype == torch.float32


# ------------------------------------------------------------------------------------- detection (AVA)
AVA_TRAIN = [FakeDecode(), dict(type="RandomRescale", scale_range=(40, 48)), dict(type="RandomCrop", size=32),
             dict(type="Flip", flip_ratio=0.5), NORM, dict(type="FormatShape", input_format="NCTHW", collapse=True),
             dict(type="Rename", mapping=dict(imgs="img")),
             dict(type="ToTensor", keys=["img", "proposals", "gt_bboxes", "gt_labels"]),
             dict(type="ToDataContainer", fields=[dict(key=["proposals", "gt_bboxes", "gt_labels"], stack=False)]),
             dict(type="Collect", keys=["img", "proposals", "gt_bboxes", "gt_labels"], meta_keys=["scores"])]
AVA_TEST = [FakeDecode(), dict(type="Resize", scale=(-1, 45)), NORM,
            dict(type="FormatShape", input_format="NCTHW", collapse=True),
            dict(type="Rename", mapping=dict(imgs="img")),
            dict(type="ToTensor", keys=["img", "proposals"]),
            dict(type="ToDataContainer", fields=[dict(key="proposals", stack=False)]),
            dict(type="Collect", keys=["img", "proposals"], meta_keys=["scores", "img_shape"], nested=True)]


def ava_item(seed):
    rng = np.random.default_rng(seed)
    return {"video": rng.integers(0, 256, (8, 90, 160, 3), dtype=np.uint8), "frame_inds": np.arange(4),
            "start_index": 0, "clip_len": 4, "num_clips": 1, "modality": "RGB",
            "gt_bboxes": np.array([[16, 9, 80, 81]], np.float32), "proposals": np.array([[0, 0, 160, 90]], np.float32),
            "gt_labels": np.zeros((1, 81), np.float32), "scores": np.ones(1)}


def test_ava_train_pipeline_deferred_equals_in_pipeline():
    pipe = Compose(AVA_TRAIN)
    normal, deferred = [], []
    for seed in range(4):
        normal.append(run(pipe, ava_item(seed), seed, defer=False))
        deferred.append(run(pipe, ava_item(seed), seed, defer=True))
        assert deferred[-1][BATCH_NORMALIZE_KEY].key == "img" and deferred[-1]["img"].dtype == torch.uint8
        assert torch.equal(deferred[-1]["gt_bboxes"], normal[-1]["gt_bboxes"])
    for collate in (collate_ava, auto_collate):
        batch = apply_batch_normalize(collate_deferred(collate, deferred))
        assert torch.equal(batch["img"], torch.stack([n["img"] for n in normal]))
        assert BATCH_NORMALIZE_KEY not in batch and len(batch["proposals"]) == 4


def test_ava_nested_test_pipeline_deferred_equals_in_pipeline():
    pipe = Compose(AVA_TEST)
    normal = [run(pipe, ava_item(s), 0, defer=False) for s in range(3)]
    deferred = [run(pipe, ava_item(s), 0, defer=True) for s in range(3)]
    assert isinstance(deferred[0]["img"], list)  # nested: the step maps over the augmentations
    batch = apply_batch_normalize(collate_deferred(auto_collate, deferred))  # {key: [batch of augmentation 0]}
    reference = auto_collate(normal)
    assert set(batch) == set(reference)
    assert torch.equal(batch["img"][0], reference["img"][0])


# ------------------------------------------------------------------------------------- through the engine's loaders
class PipelineDataset(torch.utils.data.Dataset):
    """Random videos through the train (or test) pipeline; train clips (1.1 MB uint8) use the shared buffer pool."""

    def __init__(self, test_mode=False, n=7):
        self.test_mode = test_mode
        self.pipeline = Compose(multi_view_pipeline() if test_mode else train_pipeline(size=300, short_side=320))
        self.videos = [random_video(frames=24, h=100, w=132, seed=s) for s in range(n)]

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        np.random.seed(i)  # the same augmentation in any process
        random.seed(i)
        return self.pipeline(item(self.videos[i], label=i % 3))


@pytest.mark.parametrize("workers", [0, 1])
def test_engine_loaders_deferred_batches_equal_in_worker_batches(workers):
    cfg = {"data": {"videos_per_gpu": 2, "workers_per_gpu": workers}}
    device = torch.device("cpu")
    train = PipelineDataset()
    loaders = [build_train_loader(train, cfg, seed=5, defer_normalize=d)[0] for d in (True, False)]
    for epoch_batches in zip(*loaders):
        deferred, normal = (prepare_batch(b, device) for b in epoch_batches)
        assert deferred["imgs"].dtype == torch.float32 and deferred["imgs"].shape[1:] == (1, 3, 4, 300, 300)
        assert torch.equal(deferred["imgs"], normal["imgs"]) and torch.equal(deferred["label"], normal["label"])
    test = PipelineDataset(test_mode=True, n=3)
    off = {"data": {"workers_per_gpu": workers, "test_dataloader": {"defer_normalize": False}}}
    for a, b in zip(build_test_loader(test, {"data": {"workers_per_gpu": workers}}), build_test_loader(test, off)):
        assert a["imgs"].dtype == torch.uint8 and b["imgs"].dtype == torch.float32
        assert torch.equal(prepare_batch(a, device)["imgs"], b["imgs"])


def test_worker_buffer_pool_reuses_slots_without_corrupting_batches():
    """Batches of ~1.3 MB go through reused shared buffers; every batch arrives intact, in order."""
    ds = PipelineDataset(n=12)
    reference = [ds[i] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate_recognition,
                                         sampler=list(range(len(ds))) * 2)
    for k, batch in enumerate(loader):
        assert torch.equal(batch["imgs"][0], reference[k % len(ds)]["imgs"])
        assert type(batch["imgs"]) is torch.Tensor and type(batch["label"]) is torch.Tensor


def test_slot_and_by_value_tensors_pickle_to_plain_tensors(monkeypatch):
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # collate as in a worker
    monkeypatch.setattr(collate_mod, "_POOL", None)
    monkeypatch.setattr(collate_mod, "_MAPPED_SLOTS", {})
    clips = [torch.randint(0, 256, (3, 4, 192, 192), dtype=torch.uint8) for _ in range(4)]  # 1.8 MB: pooled
    stacked = collate_mod._stack(clips)
    assert isinstance(stacked, collate_mod._SlotTensor) and torch.equal(stacked, torch.stack(clips))
    slot = collate_mod._POOL.slots[0]
    assert slot[0] == 1 and slot[1] == 0
    first = ForkingPickler.dumps(stacked)  # with the buffer (its file descriptor)
    again = ForkingPickler.loads(first)
    assert type(again) is torch.Tensor and torch.equal(again, torch.stack(clips))
    assert slot[1] == 1  # the "main process" keeps the slot mapped
    view = again[1:]
    del again
    assert slot[0] == 1  # a view still uses the slot
    del view
    assert slot[0] == 0  # freed: back to the worker
    clips2 = [c.flip(0) for c in clips[:3]]  # a smaller batch reuses the free slot
    stacked2 = collate_mod._stack(clips2)
    assert stacked2.untyped_storage().data_ptr() == stacked.untyped_storage().data_ptr() and slot[0] == 1
    second = ForkingPickler.dumps(stacked2)  # by name only
    assert len(second) < len(first)
    received = ForkingPickler.loads(second)
    assert torch.equal(received, torch.stack(clips2)) and slot[0] == 1
    del received
    assert slot[0] == 0
    busy = [collate_mod._stack(clips) for _ in range(collate_mod._SlotPool.MAX_SLOTS)]
    assert all(isinstance(b, collate_mod._SlotTensor) for b in busy)
    assert not isinstance(collate_mod._stack(clips), collate_mod._SlotTensor)  # pool exhausted: a fresh buffer
    labels = collate_mod._stack([torch.tensor(i) for i in range(4)])
    assert isinstance(labels, collate_mod._ByValueTensor)
    back = ForkingPickler.loads(ForkingPickler.dumps(labels))
    assert type(back) is torch.Tensor and back.tolist() == [0, 1, 2, 3]


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


# ------------------------------------------------------------------------------------- the fast paths
def test_clip_to_ncthw_equals_numpy_for_crop_and_flip_views():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (6, 20, 30, 3), dtype=np.uint8)
    views = {"contiguous": base, "crop": base[:, 2:18, 5:25], "hflip": base[:, :, ::-1],
             "vflip": base[:, ::-1], "both": base[:, ::-1, ::-1], "bgr view": base[..., ::-1],
             "crop+hflip": base[:, 1:15, 3:29][:, :, ::-1], "float32": base.astype(np.float32)[:, :, ::-1],
             "two channels": base[..., :2], "frame-strided": base[::2]}
    for name, v in views.items():
        for reverse in (False, True):
            want = v.reshape((-1, 3) + v.shape[1:]).transpose(0, 4, 1, 2, 3)
            want = np.ascontiguousarray(want[:, ::-1] if reverse else want)
            got = clip_to_ncthw(v, 3, reverse_channels=reverse)
            assert got.flags.c_contiguous and got.dtype == v.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "area", "bicubic"])
def test_resize_clip_equals_per_frame_cv2_resize(interpolation):
    flag = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "area": cv2.INTER_AREA,
            "bicubic": cv2.INTER_CUBIC}[interpolation]
    rng = np.random.default_rng(2)
    clip = rng.integers(0, 256, (5, 33, 47, 3), dtype=np.uint8)
    for imgs in (clip, clip[:, 3:30, 4:40], clip[:, :, ::-1], clip[..., 0], clip[..., :1]):
        got = imresize_clip(imgs, (21, 19), interpolation)
        want = np.stack([cv2.resize(np.ascontiguousarray(f), (21, 19), interpolation=flag).reshape(got.shape[1:])
                         for f in imgs])
        np.testing.assert_array_equal(got, want)
    if interpolation not in ("bilinear", "nearest"):
        return  # OpenCV resizes more than 4 channels only with these
    # one call on the frames stacked along the channels gives the same pixels; per frame is kept (faster)
    stacked = cv2.resize(np.ascontiguousarray(clip.transpose(1, 2, 0, 3)).reshape(33, 47, 15), (21, 19),
                         interpolation=flag)
    np.testing.assert_array_equal(stacked.reshape(19, 21, 5, 3).transpose(2, 0, 1, 3),
                                  imresize_clip(clip, (21, 19), interpolation))


@pytest.mark.parametrize("backend", ["cv2", "pillow"])
def test_frame_folder_decodes_like_decode_image(tmp_path, backend):
    rng = np.random.default_rng(3)
    for i in range(1, 6):
        cv2.imwrite(str(tmp_path / f"img_{i:05}.jpg"), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    reader = FrameFolderReader(tmp_path, decoding_backend=backend)
    inds = np.array([3, 0, 0, 4, 2])
    want = np.stack([decode_image((tmp_path / f"img_{i + 1:05}.jpg").read_bytes(), backend) for i in inds])
    np.testing.assert_array_equal(reader.get_frames(inds), want)
