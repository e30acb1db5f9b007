"""Clip + box transforms against the spec formulas (spec-recognition.md §A3.3, spec-detection.md §3.5-3.6)."""
from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from actionkit.data.transforms import (CenterCrop, Flip, Fuse, MultiScaleCrop, Normalize, RandomCrop,
                                       RandomRescale, RandomResizedCrop, Resize, TenCrop, ThreeCrop,
                                       box_crop, box_flip, imresize_clip, rescale_size)
from actionkit.registry import PIPELINES

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def noise_clip(m, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (m, h, w, 3), dtype=np.uint8)


def smooth_clip(m, h, w):
    """A smooth image (interpolation differences stay small on it)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for t in range(m):
        r = 127 + 100 * np.sin(xx / 23.0 + t)
        g = 127 + 100 * np.cos(yy / 17.0 - t)
        b = (xx + yy + 10 * t) % 256
        frames.append(np.stack([r, g, b], -1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def res(imgs, **kw):
    r = {"imgs": imgs, "img_shape": imgs.shape[1:3], "modality": "RGB"}
    r.update(kw)
    return r


def per_frame_resize(imgs, size):
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in imgs])


# ---------------------------------------------------------------- Resize
def test_rescale_size_rounding():
    inf = (np.inf, 256)
    assert rescale_size((340, 256), inf) == (340, 256)
    assert rescale_size((320, 240), inf) == (341, 256)  # 320*256/240 = 341.33
    assert rescale_size((256, 340), inf) == (256, 340)
    assert rescale_size((1920, 1080), inf) == (455, 256)  # 16:9 AVA test: 455.1
    assert rescale_size((640, 480), (340, 256)) == (340, 255)  # sf = min(340/640, 256/480); 255.5 -> 255
    assert rescale_size((100, 51), 0.5) == (50, 26)  # int(25.5 + 0.5)


def test_resize_short_side_and_identity():
    x = noise_clip(3, 256, 340)
    r = Resize((-1, 256))(res(x))
    assert r["img_shape"] == (256, 340)
    np.testing.assert_array_equal(r["imgs"], x)
    np.testing.assert_array_equal(r["scale_factor"], [1, 1])
    # cv2 leaves a same-size image unchanged, so skipping the call is exact
    np.testing.assert_array_equal(cv2.resize(x[0], (340, 256), interpolation=cv2.INTER_LINEAR), x[0])

    x = noise_clip(3, 240, 320)
    r = Resize((-1, 256))(res(x))
    assert r["img_shape"] == (256, 341) and r["imgs"].shape == (3, 256, 341, 3)
    assert r["imgs"].dtype == np.uint8
    np.testing.assert_array_equal(r["imgs"], per_frame_resize(x, (341, 256)))
    np.testing.assert_allclose(r["scale_factor"], [341 / 320, 256 / 240], rtol=1e-6)
    assert r["keep_ratio"] is True


def test_resize_fixed_and_factor():
    x = noise_clip(2, 204, 204)
    r = Resize((224, 224), keep_ratio=False)(res(x))
    np.testing.assert_array_equal(r["imgs"], per_frame_resize(x, (224, 224)))
    r = Resize((300, 200), keep_ratio=False)(res(noise_clip(1, 50, 60)))
    assert r["img_shape"] == (200, 300)
    r = Resize(0.5)(res(noise_clip(1, 51, 100)))
    assert r["img_shape"] == (26, 50)
    with pytest.raises(ValueError):
        Resize(0.5, keep_ratio=False)
    with pytest.raises(ValueError):
        Resize((-1, 256), interpolation="cubic-ish")
    r = Resize([-1, 128])(res(noise_clip(1, 256, 340)))  # configs may give lists
    assert r["img_shape"] == (128, 170)


def test_resize_moves_boxes_and_accumulates_scale_factor():
    x = noise_clip(2, 240, 320)
    gt = np.array([[32, 24, 160, 120]], np.float32)
    prop = np.array([[0, 0, 320, 240], [10, 20, 30, 40]], np.float32)
    r = Resize((-1, 256))(res(x, gt_bboxes=gt, proposals=prop))
    sx, sy = np.float32(341 / 320), np.float32(256 / 240)
    np.testing.assert_allclose(r["gt_bboxes"], gt * [sx, sy, sx, sy], rtol=1e-6)
    np.testing.assert_allclose(r["proposals"][0], [0, 0, 341, 256], rtol=1e-6)
    assert r["gt_bboxes"].dtype == np.float32
    r = Resize((170, 128), keep_ratio=False)(r)
    np.testing.assert_allclose(r["scale_factor"], [170 / 320, 128 / 240], rtol=1e-5)
    np.testing.assert_allclose(r["proposals"][0], [0, 0, 170, 128], rtol=1e-5)


def test_random_rescale_range_and_boxes():
    x = noise_clip(1, 90, 160)
    seen = set()
    for seed in range(30):
        np.random.seed(seed)
        expected_short = np.random.randint(20, 25)
        np.random.seed(seed)
        gt = np.array([[16, 9, 160, 90]], np.float32)
        r = RandomRescale((20, 24))(res(x, gt_bboxes=gt, proposals=gt.copy()))
        short = r["short_edge"]
        assert short == expected_short
        seen.add(short)
        h, w = r["img_shape"]
        assert h == short and w == int(160 * short / 90 + 0.5)
        assert r["imgs"].shape[1:3] == (h, w)
        np.testing.assert_allclose(r["gt_bboxes"], gt * [w / 160, h / 90, w / 160, h / 90], rtol=1e-5)
        np.testing.assert_allclose(r["proposals"], r["gt_bboxes"])
    assert seen == {20, 21, 22, 23, 24}  # both ends are inclusive
    with pytest.raises(ValueError):
        RandomRescale((300, 256))


def test_resize_clip_per_frame_equivalence_nearest():
    x = noise_clip(4, 30, 40)
    out = imresize_clip(x, (17, 11), "nearest")
    np.testing.assert_array_equal(out, np.stack([cv2.resize(f, (17, 11), interpolation=cv2.INTER_NEAREST)
                                                 for f in x]))


# ---------------------------------------------------------------- RandomCrop + boxes + crop_quadruple
def test_box_crop_and_flip_formulas():
    crop = [10, 20, 266, 276]
    b = np.array([[0, 0, 50, 50], [300, 300, 400, 400], [20, 30, 100, 200]], np.float32)
    np.testing.assert_array_equal(box_crop(b, crop), [[0, 0, 40, 30], [255, 255, 255, 255],
                                                      [10, 10, 90, 180]])
    np.testing.assert_array_equal(box_flip(np.array([[10, 5, 50, 60]], np.float32), 256),
                                  [[206, 5, 246, 60]])


def test_random_crop_offsets_boxes_quadruple():
    x = noise_clip(2, 280, 300)
    gt = np.array([[0, 0, 50, 50], [290, 270, 299, 279], [100, 100, 120, 130]], np.float32)
    for seed in range(5):
        np.random.seed(seed)
        y_off = np.random.randint(0, 280 - 256)
        x_off = np.random.randint(0, 300 - 256)
        np.random.seed(seed)
        r = RandomCrop(256)(res(x, gt_bboxes=gt, proposals=gt[:1].copy()))
        np.testing.assert_array_equal(r["crop_bbox"], [x_off, y_off, x_off + 256, y_off + 256])
        np.testing.assert_array_equal(r["imgs"], x[:, y_off:y_off + 256, x_off:x_off + 256])
        assert r["img_shape"] == (256, 256)
        exp = gt.copy()
        exp[:, 0::2] = np.clip(gt[:, 0::2] - x_off, 0, 255)
        exp[:, 1::2] = np.clip(gt[:, 1::2] - y_off, 0, 255)
        np.testing.assert_array_equal(r["gt_bboxes"], exp)
        assert len(r["gt_bboxes"]) == 3  # degenerate boxes are kept
        np.testing.assert_array_equal(r["proposals"], exp[:1])
        np.testing.assert_allclose(r["crop_quadruple"], [x_off / 300, y_off / 280, 256 / 300, 256 / 280],
                                   rtol=1e-6)
    # exact size: no randomness, offsets 0
    r = RandomCrop(256)(res(noise_clip(1, 256, 256)))
    np.testing.assert_array_equal(r["crop_bbox"], [0, 0, 256, 256])
    with pytest.raises(ValueError):
        RandomCrop(300)(res(noise_clip(1, 256, 400)))


def test_crop_quadruple_composes():
    r = CenterCrop(100)(res(noise_clip(1, 200, 300)))  # left 100, top 50
    np.testing.assert_allclose(r["crop_quadruple"], [1 / 3, 0.25, 1 / 3, 0.5], rtol=1e-6)
    r = CenterCrop(50)(r)  # left 25, top 25 inside the 100x100 crop
    np.testing.assert_allclose(r["crop_quadruple"], [1 / 3 + 0.25 / 3, 0.25 + 0.125, 1 / 6, 0.25], rtol=1e-6)


# ---------------------------------------------------------------- MultiScaleCrop
def test_multiscale_crop_sizes_and_offsets():
    x = noise_clip(2, 256, 340)
    op = MultiScaleCrop(224, scales=(1, 0.8), random_crop=False, max_wh_scale_gap=0)
    assert op.candidate_sizes(256, 340) == [[256, 256], [204, 204]]
    # 256: w_step 21, h_step 0; 204: w_step 34, h_step 13
    expected = {(256, 256): {(0, 0), (84, 0), (42, 0)},
                (204, 204): {(0, 0), (136, 0), (0, 52), (136, 52), (68, 26)}}
    seen = {k: set() for k in expected}
    for seed in range(120):
        random.seed(seed)
        r = op(res(x))
        x1, y1, x2, y2 = r["crop_bbox"]
        size = (x2 - x1, y2 - y1)
        assert (int(x1), int(y1)) in expected[size]
        seen[size].add((int(x1), int(y1)))
        np.testing.assert_array_equal(r["imgs"], x[:, y1:y2, x1:x2])
        assert r["img_shape"] == (size[1], size[0]) and r["scales"] == (1, 0.8)
    assert seen == expected
    # the draw order is size then offset, both random.choice
    random.seed(4)
    size = random.choice([[256, 256], [204, 204]])
    w_step, h_step = (340 - size[0]) // 4, (256 - size[1]) // 4
    off = random.choice([(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step),
                         (2 * w_step, 2 * h_step)])
    random.seed(4)
    r = op(res(x))
    np.testing.assert_array_equal(r["crop_bbox"], [off[0], off[1], off[0] + size[0], off[1] + size[1]])


def test_multiscale_crop_snap_gap_and_13_crops():
    op = MultiScaleCrop(224, scales=(1,))
    r = op(res(noise_clip(1, 226, 300)))  # 226 is within 3 px of 224 -> snaps
    assert r["img_shape"] == (224, 224)
    op = MultiScaleCrop(224, scales=(1, 0.875, 0.75), max_wh_scale_gap=1)
    assert op.candidate_sizes(256, 340) == [[256, 256], [224, 256], [256, 224], [224, 224], [192, 224],
                                            [224, 192], [192, 192]]
    offs = MultiScaleCrop.fixed_offsets(340, 256, 204, 204, 13)
    assert offs == [(0, 0), (136, 0), (0, 52), (136, 52), (68, 26), (0, 26), (136, 26), (68, 52), (68, 0),
                    (34, 13), (102, 13), (34, 39), (102, 39)]
    op = MultiScaleCrop(100, scales=(1, 0.5), random_crop=True)
    for seed in range(20):
        random.seed(seed)
        r = op(res(noise_clip(1, 100, 160)))
        x1, y1, x2, y2 = r["crop_bbox"]
        assert 0 <= x1 and x2 <= 160 and 0 <= y1 and y2 <= 100
    with pytest.raises(ValueError):
        MultiScaleCrop(224, num_fixed_crops=7)


def test_multiscale_crop_moves_boxes():
    random.seed(0)
    gt = np.array([[50, 40, 200, 250]], np.float32)
    r = MultiScaleCrop(224, scales=(0.8,), max_wh_scale_gap=0)(res(noise_clip(1, 256, 340), gt_bboxes=gt))
    np.testing.assert_array_equal(r["gt_bboxes"], box_crop(gt, r["crop_bbox"]))


# ---------------------------------------------------------------- RandomResizedCrop
def test_random_resized_crop_draws_and_fallback():
    x = noise_clip(2, 100, 120)
    for seed in range(10):
        np.random.seed(seed)
        random.seed(seed)
        ar = np.exp(np.random.uniform(np.log(3 / 4), np.log(4 / 3), size=10))
        area = np.random.uniform(0.08, 1.0, size=10) * 12000
        cw = np.round(np.sqrt(area * ar)).astype(int)
        ch = np.round(np.sqrt(area / ar)).astype(int)
        i = next((k for k in range(10) if cw[k] <= 120 and ch[k] <= 100), None)
        np.random.seed(seed)
        random.seed(seed)
        r = RandomResizedCrop()(res(x))
        x1, y1, x2, y2 = r["crop_bbox"]
        if i is None:
            assert (x2 - x1, y2 - y1) == (100, 100)
        else:
            assert (x2 - x1, y2 - y1) == (cw[i], ch[i])
        assert 0 <= x1 and x2 <= 120 and 0 <= y1 and y2 <= 100
        np.testing.assert_array_equal(r["imgs"], x[:, y1:y2, x1:x2])
    # impossible draws (4:1 at full area) -> centred square of side min(H, W)
    r = RandomResizedCrop(area_range=(1.0, 1.0), aspect_ratio_range=(4.0, 4.0))(res(x))
    np.testing.assert_array_equal(r["crop_bbox"], [10, 0, 110, 100])
    np.testing.assert_array_equal(r["imgs"], x[:, :, 10:110])


# ---------------------------------------------------------------- CenterCrop / ThreeCrop / TenCrop
def test_center_crop():
    x = noise_clip(3, 256, 340)
    r = CenterCrop(224)(res(x))
    np.testing.assert_array_equal(r["crop_bbox"], [58, 16, 282, 240])
    np.testing.assert_array_equal(r["imgs"], x[:, 16:240, 58:282])
    r = CenterCrop((100, 50))(res(x))  # (w, h)
    assert r["img_shape"] == (50, 100)
    gt = np.array([[60, 20, 300, 250]], np.float32)
    r = CenterCrop(224)(res(x, gt_bboxes=gt))
    np.testing.assert_array_equal(r["gt_bboxes"], [[2, 4, 223, 223]])
    with pytest.raises(ValueError):
        CenterCrop(300)(res(x))


def test_three_crop_offsets_and_order():
    x = noise_clip(4, 256, 340)
    r = ThreeCrop(256)(res(x))
    # a list of per-frame views, as MMAction2 hands it on: nothing copied before FormatShape
    assert isinstance(r["imgs"], list) and all(np.shares_memory(f, x) for f in r["imgs"])
    imgs = np.stack(r["imgs"])
    assert imgs.shape == (12, 256, 256, 3) and r["img_shape"] == (256, 256)
    for k, off in enumerate([0, 84, 42]):  # [0, 2*w_step, w_step], w_step = 42
        np.testing.assert_array_equal(imgs[4 * k:4 * k + 4], x[:, :, off:off + 256])
    assert r["crop_bbox"].shape == (12, 4)
    np.testing.assert_array_equal(r["crop_bbox"][4], [84, 0, 340, 256])
    # portrait: along y
    x = noise_clip(2, 340, 256)
    imgs = np.stack(ThreeCrop(256)(res(x))["imgs"])
    for k, off in enumerate([0, 84, 42]):
        np.testing.assert_array_equal(imgs[2 * k:2 * k + 2], x[:, off:off + 256])
    with pytest.raises(ValueError):
        ThreeCrop(224)(res(noise_clip(1, 256, 340)))
    with pytest.raises(ValueError, match="boxes|gt_bboxes"):
        ThreeCrop(256)(res(noise_clip(1, 256, 340), gt_bboxes=np.zeros((1, 4), np.float32)))


def test_ten_crop():
    x = noise_clip(2, 256, 340)
    r = TenCrop(224)(res(x))
    r["imgs"] = np.stack(r["imgs"])
    assert r["imgs"].shape == (20, 224, 224, 3)
    w_step, h_step = (340 - 224) // 4, (256 - 224) // 4
    offs = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
    for k, (ox, oy) in enumerate(offs):
        crop = x[:, oy:oy + 224, ox:ox + 224]
        np.testing.assert_array_equal(r["imgs"][4 * k:4 * k + 2], crop)
        np.testing.assert_array_equal(r["imgs"][4 * k + 2:4 * k + 4], crop[:, :, ::-1])


# ---------------------------------------------------------------- Flip
def test_flip_clip_boxes_and_decision():
    x = noise_clip(5, 32, 40)
    gt = np.array([[10, 5, 30, 20]], np.float32)
    r = Flip(flip_ratio=1.0)(res(x, gt_bboxes=gt, proposals=np.array([[0, 0, 40, 32]], np.float32)))
    assert r["flip"] is True and r["flip_direction"] == "horizontal"
    np.testing.assert_array_equal(r["imgs"], x[:, :, ::-1])  # every frame of the clip
    np.testing.assert_array_equal(r["gt_bboxes"], [[10, 5, 30, 20]])  # 40-30, 40-10
    np.testing.assert_array_equal(r["proposals"], [[0, 0, 40, 32]])
    gt2 = np.array([[2, 5, 12, 20]], np.float32)
    r = Flip(flip_ratio=1.0)(res(x, gt_bboxes=gt2))
    np.testing.assert_array_equal(r["gt_bboxes"], [[28, 5, 38, 20]])
    r = Flip(flip_ratio=0.0)(res(x, gt_bboxes=gt2))
    assert r["flip"] is False
    np.testing.assert_array_equal(r["imgs"], x)
    np.testing.assert_array_equal(r["gt_bboxes"], gt2)
    # the decision is one np.random.rand() draw per clip
    for seed in range(10):
        np.random.seed(seed)
        expected = np.random.rand() < 0.5
        np.random.seed(seed)
        r = Flip(0.5)(res(x))
        assert r["flip"] == expected
        np.testing.assert_array_equal(r["imgs"], x[:, :, ::-1] if expected else x)
    r = Flip(1.0, direction="vertical")(res(x))
    np.testing.assert_array_equal(r["imgs"], x[:, ::-1])


def test_flip_label_map():
    x = noise_clip(1, 8, 8)
    op = Flip(1.0, flip_label_map={2: 4, 4: 2, 30: 41})
    assert op(res(x, label=2))["label"] == 4
    assert op(res(x, label=np.int64(4)))["label"] == 2
    assert op(res(x, label=7))["label"] == 7
    assert Flip(0.0, flip_label_map={2: 4})(res(x, label=2))["label"] == 2


def test_flip_flow_inverts_x():
    x = np.random.default_rng(0).integers(0, 256, (4, 6, 7), dtype=np.uint8)
    r = Flip(1.0)({"imgs": x, "modality": "Flow"})
    np.testing.assert_array_equal(r["imgs"][0::2], 255 - x[0::2, :, ::-1])
    np.testing.assert_array_equal(r["imgs"][1::2], x[1::2, :, ::-1])


# ---------------------------------------------------------------- Normalize
def mmcv_reference(x, mean, std, to_bgr):
    """Frame by frame what MMAction2 0.x does (float32 copy, cv2.subtract, cv2.multiply)."""
    mean32, std32 = np.array(mean, np.float32), np.array(std, np.float32)
    out = []
    for f in x:
        img = f.astype(np.float32)
        if to_bgr:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        cv2.subtract(img, np.float64(mean32.reshape(1, -1)), img)
        cv2.multiply(img, 1 / np.float64(std32.reshape(1, -1)), img)
        out.append(img)
    return np.stack(out)


@pytest.mark.parametrize("to_bgr", [False, True])
def test_normalize_matches_mmcv_bitwise(to_bgr):
    x = noise_clip(3, 17, 23)
    x[0, 0, :4] = [[0, 0, 0], [255, 255, 255], [1, 128, 254], [123, 116, 103]]
    r = Normalize(MEAN, STD, to_bgr=to_bgr)(res(x))
    ref = mmcv_reference(x, MEAN, STD, to_bgr)
    assert r["imgs"].dtype == np.float32 and r["imgs"].shape == x.shape
    np.testing.assert_array_equal(r["imgs"], ref)
    # float64 maths is within 1 ulp (the 1.x torch path)
    src = x[..., ::-1] if to_bgr else x
    np.testing.assert_allclose(r["imgs"], (src - np.array(MEAN)) / np.array(STD), rtol=1e-6, atol=1e-6)
    assert r["img_norm_cfg"]["to_bgr"] is to_bgr


def test_normalize_float_input_and_views():
    x = noise_clip(2, 9, 11)
    view = x[:, ::-1, 1:]  # negative-stride view, as left by Flip/crops
    r = Normalize(MEAN, STD)(res(view))
    np.testing.assert_array_equal(r["imgs"], mmcv_reference(np.ascontiguousarray(view), MEAN, STD, False))
    r = Normalize(MEAN, STD)(res(x.astype(np.float32)))
    np.testing.assert_array_equal(r["imgs"], mmcv_reference(x, MEAN, STD, False))
    with pytest.raises(ValueError):
        Normalize([1, 2], [1, 2])


# ---------------------------------------------------------------- Lazy + Fuse
def eager_and_lazy(x, ops_factory, seed=0):
    out = []
    for lazy in (False, True):
        random.seed(seed)
        np.random.seed(seed)
        r = res(x)
        for op in ops_factory(lazy):
            r = op(r)
        if lazy:
            assert "lazy" in r
            r = Fuse()(r)
            assert "lazy" not in r
        out.append(r)
    return out


def i3d_train_ops(lazy):
    return [Resize((-1, 256), lazy=lazy),
            MultiScaleCrop(224, scales=(1, 0.8), random_crop=False, max_wh_scale_gap=0, lazy=lazy),
            Resize((224, 224), keep_ratio=False, lazy=lazy),
            Flip(flip_ratio=0.5, lazy=lazy)]


def test_lazy_fuse_exact_when_first_resize_is_identity():
    x = noise_clip(3, 256, 340)
    for seed in range(6):
        eager, lazy = eager_and_lazy(x, i3d_train_ops, seed)
        assert eager["flip"] == lazy["flip"]
        np.testing.assert_array_equal(eager["crop_bbox"], lazy["crop_bbox"])
        assert lazy["img_shape"] == eager["img_shape"] == (224, 224)
        np.testing.assert_array_equal(lazy["imgs"], eager["imgs"])


def test_lazy_fuse_close_to_eager_with_rescale():
    x = smooth_clip(2, 240, 320)
    for seed in range(4):
        eager, lazy = eager_and_lazy(x, i3d_train_ops, seed)
        assert lazy["imgs"].shape == eager["imgs"].shape == (2, 224, 224, 3)
        diff = np.abs(lazy["imgs"].astype(float) - eager["imgs"].astype(float))
        assert diff.mean() < 3.0, diff.mean()


def test_lazy_crop_geometry_in_original_coordinates():
    x = noise_clip(1, 240, 320)
    r = Resize((-1, 256), lazy=True)(res(x))
    r = CenterCrop(224, lazy=True)(r)
    # 341x256 -> centre crop (58, 16, 282, 240); back to 320x240 by 320/341 and 240/256
    sx, sy = 320 / 341, 240 / 256
    np.testing.assert_allclose(r["lazy"]["crop_bbox"], [58 * sx, 16 * sy, 282 * sx, 240 * sy], rtol=1e-6)
    np.testing.assert_array_equal(r["imgs"], x)  # nothing moved yet
    r = Fuse()(r)
    left, top, right, bottom = np.round(np.array([58 * sx, 16 * sy, 282 * sx, 240 * sy],
                                                 np.float32)).astype(int)
    np.testing.assert_array_equal(r["imgs"], per_frame_resize(x[:, top:bottom, left:right], (224, 224)))


def test_lazy_errors():
    x = noise_clip(1, 64, 64)
    with pytest.raises(RuntimeError, match="Fuse"):
        CenterCrop(32)(Resize((-1, 48), lazy=True)(res(x)))
    with pytest.raises(ValueError, match="lazy"):
        RandomResizedCrop(lazy=True)(res(x, gt_bboxes=np.zeros((1, 4), np.float32)))
    with pytest.raises(NotImplementedError):
        CenterCrop(32, lazy=True)(Flip(1.0, lazy=True)(res(x)))
    with pytest.raises(ValueError, match="lazy"):
        Fuse()(res(x))


def test_registry_names_and_args():
    names = ["Resize", "RandomRescale", "RandomCrop", "RandomResizedCrop", "MultiScaleCrop", "CenterCrop",
             "ThreeCrop", "TenCrop", "Flip", "Normalize", "Fuse"]
    for n in names:
        assert n in PIPELINES
    op = PIPELINES.build(dict(type="MultiScaleCrop", input_size=224, scales=(1, 0.8), random_crop=False,
                              max_wh_scale_gap=0, lazy=True))
    assert op.lazy
    op = PIPELINES.build(dict(type="Flip", flip_ratio=0.5,
                              flip_label_map={2: 4, 4: 2, 30: 41, 41: 30, 52: 66, 66: 52}))
    assert op.flip_label_map[52] == 66
    op = PIPELINES.build(dict(type="Normalize", mean=MEAN, std=STD, to_bgr=False))
    assert isinstance(op, Normalize)
