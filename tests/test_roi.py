"""RoIAlign / RoIPool against scalar references, the extractor against MMAction2 golden fixtures, and the
assigner / sampler / target plumbing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actionkit.models.roi import (AssignResult, MaxIoUAssignerAVA, RandomSampler, SingleRoIExtractor3D,
                                  bbox2roi, bbox_overlaps, bbox_target, roi_align, roi_pool)
from actionkit.registry import MODELS
from tests.conftest import load_golden


# ----------------------------------------------------------------------------------------- scalar references
def _bilinear(f: np.ndarray, y: float, x: float, clamp_outside: bool = False) -> float:
    """Detectron2 / mmcv bilinear sample: 0 outside [-1, H] x [-1, W] (``clamp_outside``: torchvision's python
    fallback, which clamps those points to the border instead)."""
    h, w = f.shape
    if (y < -1.0 or y > h or x < -1.0 or x > w) and not clamp_outside:
        return 0.0
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(math.floor(y)), int(math.floor(x))
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * f[y_low, x_low] + hy * lx * f[y_low, x_high]
            + ly * hx * f[y_high, x_low] + ly * lx * f[y_high, x_high])


def ref_roi_align(feat, rois, out, scale, sampling_ratio=0, aligned=True, pool_mode="avg", clamp_outside=False):
    feat = feat.double().numpy()
    rois = rois.double().numpy()
    r_n, c_n = rois.shape[0], feat.shape[1]
    out_h, out_w = (out, out) if isinstance(out, int) else out
    res = np.zeros((r_n, c_n, out_h, out_w))
    off = 0.5 if aligned else 0.0
    for r in range(r_n):
        b = int(rois[r, 0])
        x1, y1, x2, y2 = (float(v) * scale - off for v in rois[r, 1:])
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / out_w, rh / out_h
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / out_h))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / out_w))
        count = max(gh * gw, 1)
        for c in range(c_n):
            for ph in range(out_h):
                for pw in range(out_w):
                    vals = []
                    for iy in range(gh):
                        y = y1 + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = x1 + pw * bw + (ix + 0.5) * bw / gw
                            vals.append(_bilinear(feat[b, c], y, x, clamp_outside))
                    if pool_mode == "avg":
                        res[r, c, ph, pw] = sum(vals) / count
                    else:
                        res[r, c, ph, pw] = max([-10000.0] + vals)
    return torch.from_numpy(res)


def ref_roi_pool(feat, rois, out, scale):
    feat = feat.double().numpy()
    rois = rois.double().numpy()
    _, c_n, h, w = feat.shape
    res = np.zeros((rois.shape[0], c_n, out, out))
    for r in range(rois.shape[0]):
        b = int(rois[r, 0])
        x1, y1 = rois[r, 1] * scale, rois[r, 2] * scale
        x2, y2 = (rois[r, 3] + 1) * scale, (rois[r, 4] + 1) * scale
        rw, rh = x2 - x1, y2 - y1
        if rw <= 0 or rh <= 0:
            continue
        bw, bh = rw / out, rh / out
        for ph in range(out):
            for pw in range(out):
                ys = min(max(math.floor(ph * bh + y1), 0), h)
                ye = min(max(math.ceil((ph + 1) * bh + y1), 0), h)
                xs = min(max(math.floor(pw * bw + x1), 0), w)
                xe = min(max(math.ceil((pw + 1) * bw + x1), 0), w)
                if ye <= ys or xe <= xs:
                    continue
                res[r, :, ph, pw] = feat[b, :, ys:ye, xs:xe].reshape(c_n, -1).max(1)
    return torch.from_numpy(res)


# feature map 7 x 9 (stride 4 -> a 28 x 36 input); boxes: inside, sticking out on every side, tiny (< 1 cell),
# zero width, huge (much larger than the map), covering the map, fully outside.
ROIS = torch.tensor([
    [0, 3.0, 5.0, 20.0, 17.0],
    [1, -10.0, -6.0, 14.0, 9.0],
    [0, 25.0, 20.0, 50.0, 40.0],
    [1, 10.2, 11.7, 10.9, 12.1],
    [0, 8.0, 8.0, 8.0, 16.0],
    [1, -300.0, -200.0, 500.0, 380.0],
    [0, 0.0, 0.0, 36.0, 28.0],
    [1, 40.0, 30.0, 60.0, 45.0],
    [0, -7.5, 13.3, 3.1, 27.9],
], dtype=torch.float64)


@pytest.fixture(scope="module")
def feat64():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("pool_mode", ["avg", "max"])
def test_roi_align_matches_scalar_reference(feat64, aligned, sampling_ratio, pool_mode):
    out = roi_align(feat64, ROIS, 3, 0.25, sampling_ratio=sampling_ratio, aligned=aligned, pool_mode=pool_mode)
    ref = ref_roi_align(feat64, ROIS, 3, 0.25, sampling_ratio, aligned, pool_mode)
    assert out.shape == (ROIS.shape[0], 3, 3, 3)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_roi_align_float32_and_rectangular_output(feat64):
    out = roi_align(feat64.float(), ROIS.float(), (2, 4), 0.25)
    assert out.dtype == torch.float32 and out.shape == (ROIS.shape[0], 3, 2, 4)
    ref = ref_roi_align(feat64, ROIS, (2, 4), 0.25)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(roi_align(feat64, ROIS, (4, 2), 0.25), ref_roi_align(feat64, ROIS, (4, 2), 0.25),
                               rtol=0, atol=1e-12)


def test_roi_align_out_of_frame_is_zero_not_clamped(feat64):
    # a box fully to the right of the map (x > W + 1 in feature units): every sample point is outside -> 0
    rois = torch.tensor([[0, 100.0, 0.0, 140.0, 20.0]], dtype=torch.float64)
    assert roi_align(feat64, rois, 2, 0.25).abs().max().item() == 0.0
    # a box that sticks out: samples beyond W count in the average with value 0, so the result differs from
    # clamping them to the border (the torchvision pure-python fallback)
    rois = torch.tensor([[0, 20.0, 4.0, 60.0, 20.0]], dtype=torch.float64)
    out = roi_align(feat64, rois, 2, 0.25)
    torch.testing.assert_close(out, ref_roi_align(feat64, rois, 2, 0.25), rtol=0, atol=1e-12)
    clamped = ref_roi_align(feat64, rois, 2, 0.25, clamp_outside=True)
    assert (out - clamped).abs().max().item() > 0.1


def test_roi_align_rejects_negative_size_and_bad_batch(feat64):
    with pytest.raises(ValueError, match="negative size"):
        roi_align(feat64, torch.tensor([[0, 10.0, 10.0, 5.0, 20.0]], dtype=torch.float64), 2, 0.25)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(feat64, torch.tensor([[2, 1.0, 1.0, 5.0, 5.0]], dtype=torch.float64), 2, 0.25)
    assert roi_align(feat64, torch.zeros(0, 5, dtype=torch.float64), 2, 0.25).shape == (0, 3, 2, 2)


@pytest.mark.parametrize("pool_mode", ["avg", "max"])
def test_roi_align_gradcheck(pool_mode):
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 2.0, 17.0, 13.0], [1, -6.0, 3.0, 9.0, 30.0], [0, 5.5, 5.5, 7.0, 8.0]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, 0.25, pool_mode=pool_mode), (feat,))


def test_roi_pool_matches_mmcv_rule(feat64):
    rois = torch.cat([ROIS, torch.tensor([[0, 10.0, 10.0, 2.0, 20.0]], dtype=torch.float64)])  # malformed -> 0
    out = roi_pool(feat64, rois, 3, 0.25)
    torch.testing.assert_close(out, ref_roi_pool(feat64, rois, 3, 0.25), rtol=0, atol=0)
    # differentiable (max picks one input per bin)
    f = feat64.clone().requires_grad_(True)
    roi_pool(f, ROIS, 2, 0.25).sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------- golden extractor
EXTRACTOR_FIXTURES = ["roi_extractor3d_avg", "roi_extractor3d_global", "roi_extractor3d_max",
                      "roi_extractor3d_no_temporal_pool", "roi_extractor3d_slowfast_avg",
                      "roi_extractor3d_slowfast_global", "roi_extractor3d_slowfast_max"]


@pytest.mark.parametrize("name", EXTRACTOR_FIXTURES)
def test_extractor_golden(name):
    fx = load_golden(name)
    m = MODELS.build(fx["config"])
    assert isinstance(m, SingleRoIExtractor3D) and len(m.state_dict()) == 0
    feat, rois = fx["inputs"]["feat"], fx["inputs"]["rois"]
    with torch.no_grad():
        roi_feats, out_feat = m(tuple(feat) if isinstance(feat, list) else feat, rois)
        torch.testing.assert_close(roi_feats, fx["outputs"]["roi_feats"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(out_feat, fx["outputs"]["feat"], rtol=1e-4, atol=1e-3)
        f64 = [x.double() for x in feat] if isinstance(feat, list) else feat.double()
        roi64, _ = m(f64, rois.double())
        torch.testing.assert_close(roi64, fx["outputs_f64"]["roi_feats"], rtol=0, atol=1e-8)


def test_extractor_roipool_and_shapes():
    feat = torch.randn(2, 4, 3, 6, 5)
    rois = torch.tensor([[0, 0.0, 0.0, 40.0, 50.0], [1, 8.0, 8.0, 70.0, 90.0]])
    m = SingleRoIExtractor3D(roi_layer_type="RoIPool", output_size=4, with_temporal_pool=False, with_global=True)
    r, f = m(feat, rois)
    assert r.shape == (2, 8, 3, 4, 4) and f.shape == feat.shape
    for t in range(3):
        torch.testing.assert_close(r[:, :4, t], roi_pool(feat[:, :, t], rois, 4, 1 / 16))
    with pytest.raises(ValueError):
        SingleRoIExtractor3D(roi_layer_type="PSRoIAlign")


# ----------------------------------------------------------------------------------------- boxes
def test_bbox2roi_and_overlaps():
    rois = bbox2roi([torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]]), torch.zeros(0, 4),
                     torch.tensor([[1.0, 2, 3, 4, 0.9]])])
    assert rois.tolist() == [[0, 0, 0, 10, 10], [0, 5, 5, 15, 15], [2, 1, 2, 3, 4]]
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 0, 0]])
    b = torch.tensor([[5.0, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]])
    iou = bbox_overlaps(a, b)
    torch.testing.assert_close(iou, torch.tensor([[25 / 175, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    iof = bbox_overlaps(a[:1], b, mode="iof")
    torch.testing.assert_close(iof, torch.tensor([[0.25, 1.0, 0.0]]))
    torch.testing.assert_close(bbox_overlaps(a, b[:2], is_aligned=True), torch.tensor([25 / 175, 0.0]))
    assert bbox_overlaps(a, torch.zeros(0, 4)).shape == (2, 0)


def _labels(*hot, k=6):
    t = torch.zeros(len(hot), k)
    for i, cls in enumerate(hot):
        t[i, list(cls)] = 1
    return t


def test_assigner_thresholds_low_quality_and_labels():
    gt = torch.tensor([[0.0, 0, 100, 100], [200, 200, 300, 300]])
    gt_labels = _labels([1, 3], [2])
    props = torch.tensor([
        [0.0, 0, 100, 95],      # IoU 0.95 with gt0 -> pos (gt 1)
        [0.0, 0, 100, 50],      # IoU 0.5 -> neg
        [200.0, 200, 300, 290],  # IoU 0.9 with gt1 -> pos (>= thr)
        [500.0, 500, 600, 600],  # no overlap -> neg
    ])
    a = MODELS.build(dict(type="MaxIoUAssignerAVA", pos_iou_thr=0.9, neg_iou_thr=0.9, min_pos_iou=0.9))
    res = a.assign(props, gt, None, gt_labels)
    assert res.gt_inds.tolist() == [1, 0, 2, 0]
    assert res.labels.shape == (4, 6) and res.labels.dtype == torch.float32
    torch.testing.assert_close(res.labels, torch.stack([gt_labels[0], torch.zeros(6), gt_labels[1], torch.zeros(6)]))
    # low-quality matching: with pos_iou_thr above every IoU, the proposals tied at a gt's max IoU (>= min_pos_iou)
    # are still assigned to it
    a2 = MaxIoUAssignerAVA(pos_iou_thr=0.99, neg_iou_thr=0.5, min_pos_iou=0.9)
    props2 = torch.tensor([[0.0, 0, 100, 95], [0, 5, 100, 100], [0, 0, 100, 60]])
    assert a2.assign(props2, gt[:1], None, gt_labels[:1]).gt_inds.tolist() == [1, 1, -1]
    # no GT: everything negative
    res0 = a.assign(props, torch.zeros(0, 4), None, torch.zeros(0, 6))
    assert res0.gt_inds.tolist() == [0, 0, 0, 0] and res0.labels.shape == (4, 6)


def test_sampler_gt_first_caps_and_determinism():
    gt = torch.tensor([[0.0, 0, 100, 100]])
    gt_labels = _labels([1, 4])
    pos_props = torch.tensor([[0.0, 0, 100, 99]] * 3) + torch.arange(3.0).view(3, 1) * torch.tensor([0, 0, 0, -0.1])
    neg_props = torch.tensor([[300.0, 300, 400, 400]]) + torch.arange(10.0).view(10, 1)
    props = torch.cat([neg_props[:5], pos_props, neg_props[5:]])
    assigner = MaxIoUAssignerAVA(pos_iou_thr=0.9, neg_iou_thr=0.9, min_pos_iou=0.9)
    sampler = MODELS.build(dict(type="RandomSampler", num=6, pos_fraction=1, neg_pos_ub=-1,
                                add_gt_as_proposals=True))

    def run(seed):
        torch.manual_seed(seed)
        return sampler.sample(assigner.assign(props, gt, None, gt_labels), props, gt, gt_labels)

    s = run(0)
    assert s.pos_inds.numel() == 4 and s.neg_inds.numel() == 2           # gt + 3 positives, then 6 - 4 negatives
    assert s.pos_inds.tolist() == [0, 6, 7, 8] and bool(s.pos_is_gt[0]) and not bool(s.pos_is_gt[1:].any())
    torch.testing.assert_close(s.pos_bboxes[0], gt[0])
    torch.testing.assert_close(s.pos_gt_labels, gt_labels.expand(4, 6))
    assert (s.bboxes[:4] == s.pos_bboxes).all() and (s.bboxes[4:] == s.neg_bboxes).all()
    assert all(int(i) in [*range(1, 6), *range(9, 14)] for i in s.neg_inds)
    s2 = run(0)
    assert s2.neg_inds.tolist() == s.neg_inds.tolist()
    negs = {tuple(run(seed).neg_inds.tolist()) for seed in range(8)}
    assert len(negs) > 1
    # more positives than num: a random subset of num
    small = RandomSampler(num=2, pos_fraction=1)
    torch.manual_seed(0)
    s3 = small.sample(assigner.assign(props, gt, None, gt_labels), props, gt, gt_labels)
    assert s3.pos_inds.numel() == 2 and s3.neg_inds.numel() == 0
    # neg_pos_ub caps the negatives relative to the positives; a private generator is deterministic too
    ub = RandomSampler(num=20, pos_fraction=0.25, neg_pos_ub=1, generator=torch.Generator().manual_seed(3))
    s4 = ub.sample(assigner.assign(props, gt, None, gt_labels), props, gt, gt_labels)
    assert s4.pos_inds.numel() == 4 and s4.neg_inds.numel() == 4


def test_bbox_target():
    labels, weights = bbox_target([torch.zeros(2, 4), torch.zeros(1, 4)], [torch.zeros(3, 4), torch.zeros(0, 4)],
                                  [_labels([1], [2, 3]), _labels([5])], {"pos_weight": 2.0})
    assert labels.shape == (6, 6)
    torch.testing.assert_close(labels[:2], _labels([1], [2, 3]))
    assert labels[2:5].abs().sum() == 0
    torch.testing.assert_close(labels[5:], _labels([5]))
    assert weights.tolist() == [2, 2, 1, 1, 1, 2]


def test_assign_result_add_gt():
    r = AssignResult(1, torch.tensor([0, 1]), torch.tensor([0.1, 0.95]), _labels([], [1]))
    r.add_gt_(_labels([1]))
    assert r.gt_inds.tolist() == [1, 0, 1] and r.max_overlaps.tolist()[0] == 1.0 and r.labels.shape == (3, 6)
