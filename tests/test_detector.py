"""FastRCNN / AVARoIHead end to end on tiny tensors, and ACRNHead against the golden fixtures."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from actionkit.models.acrn import ACRNHead
from actionkit.models.detector import AVARoIHead, FastRCNN
from actionkit.models.roi import bbox2roi
from actionkit.registry import MODELS, ConfigError
from tests.conftest import REPO, load_golden

NUM_CLASSES = 6


class TinyBackbone(nn.Module):
    """Stand-in backbone: spatial stride 16, keeps T: ``[N, 3, T, H, W] -> [N, C, T, H/16, W/16]``."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 4, (1, 4, 4), stride=(1, 4, 4))
        self.bn = nn.BatchNorm3d(4)
        self.conv2 = nn.Conv3d(4, channels, (1, 4, 4), stride=(1, 4, 4))
        self.init_called = False

    def init_weights(self) -> None:
        self.init_called = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


class TinyTwoPathway(nn.Module):
    """Stand-in SlowFast: ``(slow [N, C, T/4, h, w], fast [N, C/2, T, h, w])``."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.slow = nn.Conv3d(3, channels, (4, 16, 16), stride=(4, 16, 16))
        self.fast = nn.Conv3d(3, channels // 2, (1, 16, 16), stride=(1, 16, 16))

    def forward(self, x):
        return self.slow(x), self.fast(x)


class RecordingSharedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, x, feat=None, rois=None, img_metas=None):
        self.calls.append(dict(x=x, feat=feat, rois=rois, img_metas=img_metas))
        return x


def det_cfg(backbone=None, shared_head=None, in_channels=8, dropout=0.0, action_thr=0.002, temporal="avg"):
    roi_head = dict(
        type="AVARoIHead",
        bbox_roi_extractor=dict(type="SingleRoIExtractor3D", roi_layer_type="RoIAlign", output_size=8,
                                with_temporal_pool=True, temporal_pool_mode=temporal),
        bbox_head=dict(type="BBoxHeadAVA", in_channels=in_channels, num_classes=NUM_CLASSES, multilabel=True,
                       dropout_ratio=dropout, topk=(1, 2)))
    if shared_head is not None:
        roi_head["shared_head"] = shared_head
    return dict(
        type="FastRCNN",
        backbone=backbone or dict(type=TinyBackbone, channels=in_channels),
        roi_head=roi_head,
        train_cfg=dict(rcnn=dict(
            assigner=dict(type="MaxIoUAssignerAVA", pos_iou_thr=0.9, neg_iou_thr=0.9, min_pos_iou=0.9),
            sampler=dict(type="RandomSampler", num=32, pos_fraction=1, neg_pos_ub=-1, add_gt_as_proposals=True),
            pos_weight=1.0, debug=False)),
        test_cfg=dict(rcnn=dict(action_thr=action_thr)))


def make_batch(b=2, t=4, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, 3, t, h, w, generator=g)
    gt_bboxes, gt_labels, proposals, metas = [], [], [], []
    for i in range(b):
        gt = torch.tensor([[4.0 + i, 6.0, 30.0, 40.0], [34.0, 8.0 + i, 60.0, 44.0]])
        lab = torch.zeros(2, NUM_CLASSES)
        lab[0, [1, 3]] = 1
        lab[1, 2 + i] = 1
        props = torch.cat([gt + torch.tensor([0.5, 0.0, 0.0, -0.5]),           # IoU > 0.9: positives
                           torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 20.0, 50.0, 47.0],
                                         [40.0, 0.0, 63.0, 12.0]])])           # negatives
        gt_bboxes.append(gt)
        gt_labels.append(lab)
        proposals.append(props)
        metas.append(dict(img_shape=(h, w), img_key=f"vid{i},0902", scores=np.ones(len(props))))
    return img, proposals, metas, gt_bboxes, gt_labels


def build(cfg):
    model = MODELS.build(cfg, key="model")
    model.init_weights()
    return model


def test_build_and_init():
    model = build(det_cfg())
    assert isinstance(model, FastRCNN) and isinstance(model.roi_head, AVARoIHead)
    assert model.backbone.init_called
    assert model.roi_head.bbox_head.fc_cls.weight.std().item() < 0.02
    assert model.roi_head.bbox_assigner is not None and model.roi_head.test_cfg == {"action_thr": 0.002}
    keys = set(model.state_dict())
    assert {"roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_cls.bias"} <= keys
    assert not any(k.startswith("roi_head.bbox_roi_extractor") for k in keys)
    bad = det_cfg()
    bad["roi_head"]["bbox_head"]["type"] = "NoSuchHead"
    with pytest.raises(ConfigError, match="model.roi_head.bbox_head"):
        MODELS.build(bad, key="model")


def test_training_loss_decreases_and_is_deterministic():
    torch.manual_seed(0)
    model = build(det_cfg())
    model.train()
    img, props, metas, gtb, gtl = make_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    history = []
    for _ in range(5):
        losses = model(img, props, metas, gt_bboxes=gtb, gt_labels=gtl, return_loss=True)
        assert {"loss_action_cls", "recall@thr=0.5", "prec@thr=0.5", "recall@top1", "prec@top2"} <= set(losses)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0], history
    # same seed -> same sampling -> same loss
    torch.manual_seed(0)
    m1 = build(det_cfg())
    torch.manual_seed(5)
    l1 = m1(img, props, metas, gt_bboxes=gtb, gt_labels=gtl)["loss_action_cls"].item()
    torch.manual_seed(0)
    m2 = build(det_cfg())
    torch.manual_seed(5)
    l2 = m2(img, props, metas, gt_bboxes=gtb, gt_labels=gtl)["loss_action_cls"].item()
    assert l1 == l2


def test_training_rois_are_gt_then_pos_then_neg_per_image():
    rec = RecordingSharedHead()
    model = build(det_cfg(shared_head=dict(type=lambda: rec)))
    img, props, metas, gtb, gtl = make_batch()
    model(img, props, metas, gt_bboxes=gtb, gt_labels=gtl)
    call = rec.calls[-1]
    rois = call["rois"]
    # per image: 2 GTs + 2 positive proposals, then the 3 negatives (num=32 keeps all)
    assert rois.shape == (14, 5) and rois[:7, 0].eq(0).all() and rois[7:, 0].eq(1).all()
    for i in range(2):
        r = rois[7 * i:7 * (i + 1), 1:]
        torch.testing.assert_close(r[:2], gtb[i])
        torch.testing.assert_close(r[2:4], props[i][:2])
        assert sorted(map(tuple, r[4:].tolist())) == sorted(map(tuple, props[i][2:].tolist()))
    assert call["img_metas"] is metas and call["feat"].shape == (2, 8, 1, 3, 4)


def test_inference_format_and_normalisation():
    torch.manual_seed(0)
    model = build(det_cfg(action_thr=0.0)).eval()
    img, props, metas, _, _ = make_batch()
    with torch.no_grad():
        out = model(img, props, metas, return_loss=False)
        # the same computation by hand
        x = model.backbone(img)
        rois = bbox2roi(props)
        feats, _ = model.roi_head.bbox_roi_extractor(x, rois)
        scores = model.roi_head.bbox_head(feats)[0].sigmoid()
    assert isinstance(out, list) and len(out) == 2
    h, w = metas[0]["img_shape"]
    for i in range(2):
        assert isinstance(out[i], list) and len(out[i]) == NUM_CLASSES - 1
        s_i = scores[rois[:, 0] == i]
        for c, arr in enumerate(out[i]):
            assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == (5, 5)
            np.testing.assert_allclose(arr[:, :4], (props[i] / torch.tensor([w, h, w, h])).numpy(), atol=1e-6)
            np.testing.assert_allclose(arr[:, 4], s_i[:, c + 1].numpy(), atol=1e-6)
    # the threshold comes from test_cfg.rcnn.action_thr
    model.roi_head.test_cfg = {"action_thr": 0.5}
    with torch.no_grad():
        out = model(img, props, metas, return_loss=False)
    assert all((arr[:, 4] > 0.5).all() for per in out for arr in per)
    assert sum(arr.shape[0] for arr in out[0]) == int((scores[rois[:, 0] == 0][:, 1:] > 0.5).sum())


def test_batch_of_two_equals_two_batches_of_one():
    torch.manual_seed(0)
    model = build(det_cfg(dropout=0.5)).eval()
    img, props, metas, _, _ = make_batch()
    props[1] = props[1][:3]                        # different proposal counts per sample
    metas[1] = dict(metas[1], img_shape=(40, 60))   # and a different normalisation
    with torch.no_grad():
        both = model(img, props, metas, return_loss=False)
        singles = [model(img[i:i + 1], [props[i]], [metas[i]], return_loss=False)[0] for i in range(2)]
    for i in range(2):
        for a, b in zip(both[i], singles[i]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # a sample without proposals gives 5 empty arrays
    with torch.no_grad():
        out = model(img, [props[0], torch.zeros(0, 4)], metas, return_loss=False)
    assert all(a.shape == (0, 5) for a in out[1]) and sum(a.shape[0] for a in out[0]) > 0
    # MMAction2 test-time nesting ([img], [metas], [proposals]) is accepted
    with torch.no_grad():
        nested = model([img[:1]], [[props[0]]], [[metas[0]]], return_loss=False)
    for a, b in zip(nested[0], singles[0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_flip_and_crop_meta_are_undone():
    torch.manual_seed(0)
    model = build(det_cfg(action_thr=0.0)).eval()
    img, props, metas, _, _ = make_batch(b=1)
    meta = dict(metas[0], flip=True, crop_quadruple=np.array([0.1, 0.2, 0.5, 0.5]))
    with torch.no_grad():
        out = model(img, props, [meta], return_loss=False)[0]
    h, w = meta["img_shape"]
    p = props[0]
    x1 = (w - 1 - p[:, 2]) / w * 0.5 + 0.1
    y1 = p[:, 1] / h * 0.5 + 0.2
    np.testing.assert_allclose(out[0][:, 0], x1.numpy(), atol=1e-6)
    np.testing.assert_allclose(out[0][:, 1], y1.numpy(), atol=1e-6)


def test_acrn_detector_two_pathways():
    cfg = det_cfg(backbone=dict(type=TinyTwoPathway, channels=8),
                  shared_head=dict(type="ACRNHead", in_channels=24, out_channels=8), temporal="max")
    torch.manual_seed(0)
    model = build(cfg)
    img, props, metas, gtb, gtl = make_batch(t=8)
    losses = model(img, props, metas, gt_bboxes=gtb, gt_labels=gtl)
    losses["loss_action_cls"].backward()
    assert model.roi_head.shared_head.conv1.conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(img, props, metas, return_loss=False)
    assert len(out) == 2 and all(len(o) == NUM_CLASSES - 1 for o in out)
    keys = set(model.state_dict())
    assert {"roi_head.shared_head.conv1.conv.weight", "roi_head.shared_head.conv1.bn.running_var",
            "roi_head.shared_head.conv2.conv.weight", "roi_head.shared_head.conv2.bn.weight"} <= keys


def test_training_errors():
    model = build(det_cfg())
    img, props, metas, gtb, gtl = make_batch()
    with pytest.raises(ValueError, match="gt_bboxes"):
        model(img, props, metas)
    with pytest.raises(ValueError, match="proposal"):
        model(img, props[:1], metas, gt_bboxes=gtb, gt_labels=gtl)
    cfg = det_cfg()
    cfg["train_cfg"] = None
    with pytest.raises(RuntimeError, match="train_cfg"):
        build(cfg)(img, props, metas, gt_bboxes=gtb, gt_labels=gtl)


# ------------------------------------------------------------------------------------------------- ACRN golden
@pytest.mark.parametrize("name", ["acrn_head", "acrn_head_2convs_stride2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_acrn_golden(name, dtype):
    fx = load_golden(name)
    head = MODELS.build(fx["config"])
    assert isinstance(head, ACRNHead)
    head.load_state_dict(fx["state_dict"], strict=True)
    head.eval().to(dtype)
    inp = fx["inputs"]
    with torch.no_grad():
        out = head(inp["x"].to(dtype), feat=inp["feat"].to(dtype), rois=inp["rois"].to(dtype), img_metas=None)
    if dtype == torch.float32:
        torch.testing.assert_close(out, fx["outputs"]["out"], rtol=1e-4, atol=1e-3)
    else:
        torch.testing.assert_close(out, fx["outputs_f64"]["out"], rtol=0, atol=1e-8)


def test_acrn_init_and_shapes():
    head = ACRNHead(8, 4, stride=2, num_convs=3)
    head.init_weights()
    assert len(head.convs) == 2 and head.conv2.conv.stride == (1, 2, 2)
    assert head.conv1.conv.bias is None and head.conv1.bn.weight.eq(1).all()
    out = head(torch.randn(3, 4, 1, 8, 8), torch.randn(2, 4, 1, 5, 7), torch.tensor([[0.0] * 5, [1.0] * 5,
                                                                                     [1.0] * 5]))
    assert out.shape == (3, 4, 1, 3, 4)


# ------------------------------------------------------------------------------------------------- real backbones
def _have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


@pytest.mark.skipif(not _have("actionkit.models.slowfast"), reason="actionkit.models.slowfast not available")
def test_tiny_slowonly_detector_from_config():
    from actionkit.models.builder import build_model_from_config

    cfg_path = REPO / "configs/detection/ava/slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb.py"
    if not cfg_path.is_file():
        pytest.skip(f"{cfg_path} not present")
    torch.manual_seed(0)
    model = build_model_from_config(cfg_path, cfg_options={"model.backbone.base_channels": 4,
                                                           "model.backbone.depth": 50,
                                                           "model.roi_head.bbox_head.in_channels": 128})
    assert isinstance(model, FastRCNN)
    img = torch.randn(1, 3, 4, 64, 80)
    gt = torch.tensor([[8.0, 8.0, 40.0, 56.0]])
    lab = torch.zeros(1, 81)
    lab[0, [12, 80]] = 1
    props = torch.tensor([[8.0, 8.5, 40.0, 56.0], [44.0, 4.0, 79.0, 60.0]])
    meta = [dict(img_shape=(64, 80))]
    model.train()
    losses = model(img, [props], meta, gt_bboxes=[gt], gt_labels=[lab])
    losses["loss_action_cls"].backward()
    assert torch.isfinite(losses["loss_action_cls"])
    model.eval()
    with torch.no_grad():
        out = model(img, [props], meta, return_loss=False)
    assert len(out) == 1 and len(out[0]) == 80
    assert all(a.dtype == np.float32 and a.shape[1] == 5 for a in out[0])
    np.testing.assert_allclose(out[0][0][:, :4], (props / torch.tensor([80, 64, 80, 64])).numpy(), atol=1e-6)


@pytest.mark.skipif(not _have("actionkit.models.slowfast"), reason="actionkit.models.slowfast not available")
def test_tiny_slowfast_acrn_detector_from_config():
    from actionkit.models.builder import build_model_from_config

    cfg_path = REPO / "configs/detection/acrn/slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava_rgb.py"
    if not cfg_path.is_file():
        pytest.skip(f"{cfg_path} not present")
    torch.manual_seed(0)
    # the golden widths: slow base 4, fast base 2, channel ratio 2 -> slow 128 + fast 64 = 192 channels
    model = build_model_from_config(cfg_path, cfg_options={
        "model.backbone.channel_ratio": 2, "model.backbone.slow_pathway.base_channels": 4,
        "model.backbone.fast_pathway.base_channels": 2, "model.roi_head.shared_head.in_channels": 384,
        "model.roi_head.shared_head.out_channels": 192, "model.roi_head.bbox_head.in_channels": 192})
    img = torch.randn(2, 3, 32, 32, 48)
    gt = [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.tensor([[20.0, 4.0, 46.0, 28.0]])]
    lab = [torch.zeros(1, 81), torch.zeros(1, 81)]
    lab[0][0, 12] = 1
    lab[1][0, [5, 80]] = 1
    props = [torch.tensor([[8.0, 8.5, 40.0, 30.0], [30.0, 4.0, 47.0, 31.0]]), torch.tensor([[0.0, 0.0, 30.0, 30.0]])]
    metas = [dict(img_shape=(32, 48)), dict(img_shape=(32, 48))]
    model.train()
    losses = model(img, props, metas, gt_bboxes=gt, gt_labels=lab)
    losses["loss_action_cls"].backward()
    assert torch.isfinite(losses["loss_action_cls"])
    assert model.roi_head.shared_head.conv2.conv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(img, props, metas, return_loss=False)
    assert [len(o) for o in out] == [80, 80]
    assert out[0][0].shape == (2, 5) and out[1][0].shape == (1, 5)


def test_training_with_a_sample_without_gt_or_proposals():
    torch.manual_seed(0)
    model = build(det_cfg())
    img, props, metas, gtb, gtl = make_batch()
    gtb[1], gtl[1] = torch.zeros(0, 4), []          # no GT: its proposals are all negatives
    losses = model(img, props, metas, gt_bboxes=gtb, gt_labels=gtl)
    assert torch.isfinite(losses["loss_action_cls"])
    props[0] = torch.zeros(0, 4)                     # no proposals: the GTs are still sampled
    losses = model(img, props, metas, gt_bboxes=gtb, gt_labels=gtl)
    assert torch.isfinite(losses["loss_action_cls"]) and losses["loss_action_cls"].item() > 0
    with pytest.raises(ValueError, match="gt_labels"):
        model(img, props, metas, gt_bboxes=gtb, gt_labels=[gtl[0][:1], []])
