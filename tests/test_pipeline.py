"""Compose, formatting ops and whole pipelines on synthetic in-memory clips (fake decode)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from actionkit.data.pipeline import (Collect, Compose, FormatShape, ImageToTensor, Rename, ToDataContainer,
                                     ToTensor, to_tensor)
from actionkit.registry import PIPELINES, ConfigError

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
NORM = dict(type="Normalize", mean=MEAN, std=STD, to_bgr=False)


class FakeDecode:
    """Stands in for RawFrameDecode: picks ``frame_inds`` from an in-memory video ``[F, H, W, 3]``."""

    def __call__(self, results):
        video = results["video"]
        idx = results["frame_inds"] - results["start_index"]
        results["imgs"] = video[idx]
        results["img_shape"] = results["original_shape"] = video.shape[1:3]
        return results


def video_with_frame_ids(num_frames, h, w):
    """Frame k is filled with a gradient plus k in the red channel so that views can be traced."""
    v = np.zeros((num_frames, h, w, 3), np.uint8)
    v[..., 0] = np.arange(num_frames, dtype=np.uint8)[:, None, None]
    v[..., 1] = (np.arange(w) % 256).astype(np.uint8)[None, None, :]
    v[..., 2] = (np.arange(h) % 256).astype(np.uint8)[None, :, None]
    return v


# ---------------------------------------------------------------- FormatShape
def test_format_shape_ncthw_crop_major():
    crops, clips, L, H, W = 3, 2, 4, 5, 6
    m = crops * clips * L
    imgs = np.zeros((m, H, W, 3), np.float32)
    for crop in range(crops):
        for clip in range(clips):
            for t in range(L):
                imgs[(crop * clips + clip) * L + t] = [crop, clip, t]
    r = FormatShape("NCTHW")({"imgs": imgs, "num_clips": clips, "clip_len": L})
    out = r["imgs"]
    assert out.shape == (crops * clips, 3, L, H, W) and r["input_shape"] == out.shape
    for v in range(crops * clips):
        for t in range(L):
            np.testing.assert_array_equal(out[v, :, t, 0, 0], [v // clips, v % clips, t])


def test_format_shape_collapse_nchw_and_errors():
    imgs = np.random.default_rng(0).random((4, 5, 6, 3)).astype(np.float32)
    r = FormatShape("NCTHW", collapse=True)({"imgs": imgs.copy(), "num_clips": 1, "clip_len": 4})
    assert r["imgs"].shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(r["imgs"], imgs.transpose(3, 0, 1, 2))
    r = FormatShape("NCHW")({"imgs": imgs.copy()})
    np.testing.assert_array_equal(r["imgs"], imgs.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError):
        FormatShape("NTCHW")
    with pytest.raises(ValueError):
        FormatShape("NCTHW", collapse=True)({"imgs": imgs, "num_clips": 2, "clip_len": 2})
    with pytest.raises(ValueError, match="multiple"):
        FormatShape("NCTHW")({"imgs": imgs, "num_clips": 1, "clip_len": 3})
    # lists of frames are accepted
    r = FormatShape("NCTHW")({"imgs": list(imgs), "num_clips": 1, "clip_len": 4})
    assert r["imgs"].shape == (1, 3, 4, 5, 6)


# ---------------------------------------------------------------- formatting ops
def test_to_tensor_rules():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = to_tensor(a)
    assert t.dtype == torch.float32 and t.shape == (2, 3)
    t = to_tensor(a[:, ::-1])  # negative strides are copied
    np.testing.assert_array_equal(t.numpy(), a[:, ::-1])
    lab = to_tensor(5)
    assert lab.dtype == torch.int64 and lab.shape == () and int(lab) == 5
    assert to_tensor(np.int64(3)).shape == ()
    assert to_tensor(0.5).dtype == torch.float32
    assert to_tensor([1, 2]).tolist() == [1, 2]
    t0 = torch.ones(2)
    assert to_tensor(t0) is t0
    with pytest.raises(TypeError):
        to_tensor("label")
    r = ToTensor(["imgs", "label"])({"imgs": a, "label": 3})
    assert isinstance(r["imgs"], torch.Tensor) and r["label"].shape == ()
    with pytest.raises(KeyError):
        ToTensor(["missing"])({})
    r = ImageToTensor(["img"])({"img": np.zeros((4, 5, 3), np.uint8)})
    assert r["img"].shape == (3, 4, 5)


def test_rename_collect_todatacontainer():
    r = Rename({"imgs": "img", "absent": "x"})({"imgs": 1, "b": 2})
    assert r == {"img": 1, "b": 2}
    with pytest.raises(KeyError):
        Rename({"a": "b"})({"a": 1, "b": 2})
    results = {"img": 1, "proposals": 2, "scores": 3, "img_shape": (4, 5), "junk": 0}
    assert ToDataContainer(fields=[dict(key="proposals", stack=False)])(results) is results
    data = Collect(["img", "proposals"], meta_keys=["scores", "img_shape"])(dict(results))
    assert data == {"img": 1, "proposals": 2, "img_metas": {"scores": 3, "img_shape": (4, 5)}}
    data = Collect(["img", "proposals"], meta_keys=["scores", "img_shape"], nested=True)(dict(results))
    assert data == {"img": [1], "proposals": [2], "img_metas": [{"scores": 3, "img_shape": (4, 5)}]}
    data = Collect(["img"], meta_keys=[])(dict(results))
    assert data == {"img": 1}
    data = Collect(["img"], meta_keys=["scores"], meta_name="meta")(dict(results))
    assert data["meta"] == {"scores": 3}
    with pytest.raises(KeyError, match="meta key"):
        Collect(["img"], meta_keys=["filename"])(dict(results))


# ---------------------------------------------------------------- Compose
def test_compose_builds_and_names_bad_keys():
    c = Compose([dict(type="Rename", mapping={"a": "b"}), lambda r: {**r, "c": 1}])
    assert c({"a": 0}) == {"b": 0, "c": 1}
    assert Compose([lambda r: None, dict(type="Rename", mapping={})])({"a": 1}) is None
    with pytest.raises(ConfigError, match=r"pipeline\[1\]"):
        Compose([dict(type="Rename", mapping={}), dict(type="NoSuchOp")])
    with pytest.raises(ConfigError, match=r"pipeline\[0\]"):
        Compose([dict(type="Resize", scale=(-1, 256), bogus=1)])
    with pytest.raises(ConfigError):
        Compose(dict(type="Resize"))
    with pytest.raises(ConfigError, match=r"pipeline\[0\]"):
        Compose([42])
    for name in ["Collect", "ToTensor", "Rename", "ToDataContainer", "ImageToTensor", "FormatShape"]:
        assert name in PIPELINES


# ---------------------------------------------------------------- full pipelines
def test_i3d_test_pipeline_shapes_and_views():
    """The i3d test protocol (10 clips x ThreeCrop(256) on 340x256) with clip_len 4 instead of 32."""
    L, I, N, F = 4, 2, 10, 60
    video = video_with_frame_ids(F, 256, 340)
    pipeline = Compose([
        dict(type="SampleFrames", clip_len=L, frame_interval=I, num_clips=N, test_mode=True),
        FakeDecode(),
        dict(type="Resize", scale=(-1, 256)),
        dict(type="ThreeCrop", crop_size=256),
        NORM,
        dict(type="FormatShape", input_format="NCTHW"),
        dict(type="Collect", keys=["imgs", "label"], meta_keys=[]),
        dict(type="ToTensor", keys=["imgs"]),
    ])
    out = pipeline({"video": video, "total_frames": F, "start_index": 1, "label": 7, "modality": "RGB"})
    assert set(out) == {"imgs", "label"}
    imgs = out["imgs"]
    assert isinstance(imgs, torch.Tensor) and imgs.dtype == torch.float32
    assert tuple(imgs.shape) == (30, 3, L, 256, 256)
    # 0.x offsets: avg = (60 - 8 + 1)/10 = 5.3 -> int(i*5.3 + 2.65)
    offsets = (np.arange(N) * 5.3 + 2.65).astype(int)
    x_off = [0, 84, 42]
    for v in range(30):
        crop, clip = divmod(v, N)
        for t in range(L):
            frame = offsets[clip] + t * I
            red = (imgs[v, 0, t, 0, 0].item() * np.float32(STD[0])) + np.float32(MEAN[0])
            assert round(red) == frame
            green = imgs[v, 1, t, 0, 0].item() * np.float32(STD[1]) + np.float32(MEAN[1])
            assert round(green) == x_off[crop]


@pytest.mark.slow  # fast, but ~400 MB of frames: kept out of the default suite
def test_i3d_test_pipeline_full_clip_len_shape():
    """The real i3d test shape [30, 3, 32, 256, 256] (uint8 until FormatShape, no Normalize to stay light)."""
    F = 80
    video = np.zeros((F, 256, 340, 3), np.uint8)
    pipeline = Compose([
        dict(type="SampleFrames", clip_len=32, frame_interval=2, num_clips=10, test_mode=True),
        FakeDecode(),
        dict(type="Resize", scale=(-1, 256)),
        dict(type="ThreeCrop", crop_size=256),
        dict(type="FormatShape", input_format="NCTHW"),
    ])
    out = pipeline({"video": video, "total_frames": F, "start_index": 0})
    assert out["imgs"].shape == (30, 3, 32, 256, 256)


def test_dense_test_pipeline_view_count():
    video = video_with_frame_ids(100, 64, 80)
    pipeline = Compose([
        dict(type="DenseSampleFrames", clip_len=2, frame_interval=2, num_clips=1, test_mode=True),
        FakeDecode(),
        dict(type="Resize", scale=(-1, 32)),
        dict(type="ThreeCrop", crop_size=32),
        NORM,
        dict(type="FormatShape", input_format="NCTHW"),
    ])
    out = pipeline({"video": video, "total_frames": 100, "start_index": 0})
    assert out["imgs"].shape == (30, 3, 2, 32, 32)


def test_i3d_train_pipeline_eager_and_lazy():
    video = video_with_frame_ids(40, 256, 340)

    def build(lazy):
        ops = [dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=1), FakeDecode(),
               dict(type="Resize", scale=(-1, 256), lazy=lazy),
               dict(type="MultiScaleCrop", input_size=224, scales=(1, 0.8), random_crop=False,
                    max_wh_scale_gap=0, lazy=lazy),
               dict(type="Resize", scale=(224, 224), keep_ratio=False, lazy=lazy),
               dict(type="Flip", flip_ratio=0.5, lazy=lazy)]
        if lazy:
            ops.append(dict(type="Fuse"))
        ops += [NORM, dict(type="FormatShape", input_format="NCTHW"),
                dict(type="Collect", keys=["imgs", "label"], meta_keys=[]),
                dict(type="ToTensor", keys=["imgs", "label"])]
        return Compose(ops)

    outs = []
    for lazy in (False, True):
        np.random.seed(1)
        random.seed(1)
        outs.append(build(lazy)({"video": video, "total_frames": 40, "start_index": 0, "label": 3,
                                 "modality": "RGB"}))
    for o in outs:
        assert tuple(o["imgs"].shape) == (1, 3, 4, 224, 224) and o["label"].shape == ()
    torch.testing.assert_close(outs[0]["imgs"], outs[1]["imgs"], rtol=0, atol=0)


def test_ava_train_and_test_pipelines_with_boxes():
    video = video_with_frame_ids(8, 90, 160)
    gt = np.array([[16, 9, 80, 81], [100, 30, 159, 89]], np.float32)
    prop = np.array([[0, 0, 160, 90]], np.float32)
    train = Compose([
        FakeDecode(),
        dict(type="RandomRescale", scale_range=(40, 48)),
        dict(type="RandomCrop", size=32),
        dict(type="Flip", flip_ratio=0.5),
        NORM,
        dict(type="FormatShape", input_format="NCTHW", collapse=True),
        dict(type="Rename", mapping=dict(imgs="img")),
        dict(type="ToTensor", keys=["img", "proposals", "gt_bboxes", "gt_labels"]),
        dict(type="ToDataContainer", fields=[dict(key=["proposals", "gt_bboxes", "gt_labels"], stack=False)]),
        dict(type="Collect", keys=["img", "proposals", "gt_bboxes", "gt_labels"],
             meta_keys=["scores", "entity_ids"]),
    ])
    for seed in range(5):
        np.random.seed(seed)
        out = train({"video": video, "frame_inds": np.arange(4), "start_index": 0, "clip_len": 4,
                     "num_clips": 1, "gt_bboxes": gt.copy(), "proposals": prop.copy(),
                     "gt_labels": np.zeros((2, 81), np.float32), "scores": np.ones(1),
                     "entity_ids": np.arange(2), "modality": "RGB"})
        assert tuple(out["img"].shape) == (3, 4, 32, 32)
        assert tuple(out["gt_bboxes"].shape) == (2, 4)  # kept even when outside the crop
        assert out["gt_bboxes"].min() >= 0 and out["gt_bboxes"].max() <= 32
        assert out["img_metas"]["entity_ids"].tolist() == [0, 1]

    test = Compose([
        FakeDecode(),
        dict(type="Resize", scale=(-1, 45)),
        NORM,
        dict(type="FormatShape", input_format="NCTHW", collapse=True),
        dict(type="Rename", mapping=dict(imgs="img")),
        dict(type="ToTensor", keys=["img", "proposals"]),
        dict(type="ToDataContainer", fields=[dict(key="proposals", stack=False)]),
        dict(type="Collect", keys=["img", "proposals"], meta_keys=["scores", "img_shape"], nested=True),
    ])
    out = test({"video": video, "frame_inds": np.arange(4), "start_index": 0, "clip_len": 4, "num_clips": 1,
                "gt_bboxes": gt.copy(), "proposals": prop.copy(), "scores": np.ones(1), "modality": "RGB"})
    assert tuple(out["img"][0].shape) == (3, 4, 45, 80)  # 160*45/90 = 80
    assert out["img_metas"][0]["img_shape"] == (45, 80)
    np.testing.assert_allclose(out["proposals"][0].numpy(), [[0, 0, 80, 45]], rtol=1e-6)


def test_compose_runs_exactly_the_configured_transforms():
    """No rewriting: ``Compose.transforms`` are the configured steps in order, and calling the pipeline equals
    calling them one by one (Normalize + FormatShape included, with and without to_bgr / collapse)."""
    import numpy as np

    from actionkit.data.pipeline import Compose, FormatShape
    from actionkit.data.transforms import Normalize

    norm = dict(type='Normalize', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
    for to_bgr, collapse, clips in ((False, False, 2), (True, False, 1), (False, True, 1)):
        steps = [dict(norm, to_bgr=to_bgr), dict(type='FormatShape', input_format='NCTHW', collapse=collapse)]
        pipe = Compose(steps)
        assert [type(t) for t in pipe.transforms] == [Normalize, FormatShape]
        rng = np.random.default_rng(0)
        imgs = rng.integers(0, 256, (3 * clips * 4, 6, 5, 3), dtype=np.uint8) if not collapse else \
            rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
        base = dict(num_clips=clips, clip_len=4, modality='RGB')
        a = pipe(dict(base, imgs=imgs.copy()))
        b = dict(base, imgs=imgs.copy())
        for t in pipe.transforms:
            b = t(b)
        assert a['imgs'].dtype == np.float32 and a['imgs'].shape == b['imgs'].shape
        assert np.array_equal(a['imgs'], b['imgs'])
        assert a['input_shape'] == b['input_shape']
    assert Compose([lambda r: None, lambda r: 1 / 0])({}) is None  # a step returning None stops the chain


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("crop", ["ThreeCrop", "TenCrop"])
def test_format_shape_reads_a_list_of_crop_views_like_the_stacked_clip(crop, dtype):
    """Multi-view crops hand on per-frame views (flipped ones for TenCrop); FormatShape gives the same
    [V, C, L, H, W] clip from them as from the stacked array."""
    from actionkit.data.transforms import TenCrop, ThreeCrop

    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (2 * 4, 40, 52, 3))).astype(dtype)
    op = ThreeCrop(40) if crop == "ThreeCrop" else TenCrop(32)
    r = op({"imgs": x, "img_shape": (40, 52), "num_clips": 2, "clip_len": 4})
    assert isinstance(r["imgs"], list)
    stacked = dict(r, imgs=np.stack(r["imgs"]))
    from_list = FormatShape("NCTHW")(dict(r))["imgs"]
    from_array = FormatShape("NCTHW")(stacked)["imgs"]
    assert from_list.dtype == dtype and from_list.flags.c_contiguous
    np.testing.assert_array_equal(from_list, from_array)
