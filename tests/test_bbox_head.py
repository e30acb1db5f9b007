"""BBoxHeadAVA against the MMAction2 golden fixtures, plus loss / inference details and ``bbox2result``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from actionkit.models.bbox_head import BBoxHeadAVA, bbox2result
from actionkit.registry import MODELS
from tests.conftest import load_golden

FIXTURES = ["bbox_head_ava", "bbox_head_ava_focal_alpha3_gamma1"]


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bbox_head_golden(name, dtype):
    fx = load_golden(name)
    head = MODELS.build(fx["config"])
    head.load_state_dict(fx["state_dict"], strict=True)
    head.eval().to(dtype)
    inp = fx["inputs"]
    outs = fx["outputs"] if dtype == torch.float32 else fx["outputs_f64"]
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=0, atol=1e-8)
    with torch.no_grad():
        cls_score, bbox_pred = head(inp["x"].to(dtype))
        assert bbox_pred is None
        torch.testing.assert_close(cls_score, outs["cls_score"], **tol)
        rois = inp["rois"].to(dtype)
        rois_before = rois.clone()
        losses = head.loss(cls_score, None, rois, inp["labels"].to(dtype), None)
        assert set(losses) == set(outs["loss"])
        for k, v in outs["loss"].items():
            torch.testing.assert_close(losses[k], v, **tol, msg=k)
        bboxes, scores = head.get_det_bboxes(rois, cls_score, inp["img_shape"], flip=False,
                                             crop_quadruple=[0, 0, 1, 1])
        torch.testing.assert_close(bboxes, outs["pred_bboxes"], **tol)
        torch.testing.assert_close(scores, outs["pred_scores"], **tol)
        assert torch.equal(rois, rois_before)  # the RoIs are not normalised in place


def test_loss_positives_only_and_class0_untouched():
    torch.manual_seed(0)
    head = BBoxHeadAVA(in_channels=8, num_classes=6, topk=(1, 2))
    head.init_weights()
    x = torch.randn(5, 8, 2, 3, 3)
    labels = torch.zeros(5, 6)
    labels[0, [1, 3]] = 1
    labels[1, 2] = 1
    labels[2, 0] = 1          # only the reserved class 0: dropped like the negatives
    cls_score, _ = head(x)
    cls_score.retain_grad()
    losses = head.loss(cls_score, None, None, labels)
    sel = torch.tensor([0, 1])
    expect = F.binary_cross_entropy_with_logits(cls_score[sel, 1:], labels[sel, 1:])
    torch.testing.assert_close(losses["loss_action_cls"], expect)
    losses["loss_action_cls"].backward()
    assert cls_score.grad[:, 0].abs().sum() == 0 and cls_score.grad[2:].abs().sum() == 0
    assert cls_score.grad[:2, 1:].abs().sum() > 0
    assert set(losses) == {"loss_action_cls", "recall@thr=0.5", "prec@thr=0.5", "recall@top1", "prec@top1",
                           "recall@top2", "prec@top2"}
    assert not any(v.requires_grad for k, v in losses.items() if "loss" not in k)


def test_topk_metrics_by_hand():
    head = BBoxHeadAVA(in_channels=2, num_classes=5, topk=(1, 2))
    cls_score = torch.tensor([[0.0, 3.0, 1.0, -2.0, -1.0],    # sigmoid > 0.5: classes 1, 2; top1 = 1, top2 = 1, 2
                              [0.0, -1.0, -3.0, 2.0, 0.5]])   # > 0.5: 3, 4;          top1 = 3, top2 = 3, 4
    labels = torch.tensor([[0.0, 1, 0, 0, 1], [0.0, 0, 0, 1, 0]])
    out = head.loss(cls_score, None, None, labels)
    # thr: row0 hits {1} of {1,4} -> recall .5, prec 1/2; row1 hits {3} of {3} -> recall 1, prec 1/2
    torch.testing.assert_close(out["recall@thr=0.5"], torch.tensor(0.75))
    torch.testing.assert_close(out["prec@thr=0.5"], torch.tensor(0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["recall@top1"], torch.tensor(0.75))
    torch.testing.assert_close(out["prec@top1"], torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["recall@top2"], torch.tensor(0.75))
    torch.testing.assert_close(out["prec@top2"], torch.tensor(0.5), atol=1e-5, rtol=0)


def test_focal_and_single_label_losses():
    torch.manual_seed(1)
    cls_score = torch.randn(3, 5)
    labels = torch.tensor([[0.0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
    focal = BBoxHeadAVA(in_channels=2, num_classes=5, topk=1, focal_alpha=3.0, focal_gamma=1.0)
    bce = F.binary_cross_entropy_with_logits(cls_score[:2, 1:], labels[:2, 1:], reduction="none")
    expect = (3.0 * (1 - torch.exp(-bce)) * bce).mean()
    torch.testing.assert_close(focal.loss(cls_score, None, None, labels)["loss_action_cls"], expect)
    single = BBoxHeadAVA(in_channels=2, num_classes=5, topk=1, multilabel=False)
    t = labels[:2, 1:] / labels[:2, 1:].sum(1, keepdim=True)
    ce = -(t * cls_score[:2, 1:].log_softmax(-1)).sum(-1)
    torch.testing.assert_close(single.loss(cls_score, None, None, labels)["loss_action_cls"], ce.mean())
    # no positive RoI at all: a finite zero loss that still backpropagates
    s = cls_score.clone().requires_grad_(True)
    out = focal.loss(s, None, None, torch.zeros(3, 5))
    assert out["loss_action_cls"].item() == 0.0
    out["loss_action_cls"].backward()
    assert s.grad is not None


def test_forward_pooling_order_and_dropout():
    head = BBoxHeadAVA(in_channels=4, num_classes=3, topk=1, dropout_ratio=0.5)
    x = torch.randn(2, 4, 3, 5, 5)
    head.eval()
    s, _ = head(x)
    feat = x.mean(2).amax((2, 3))                   # temporal avg, then spatial max
    torch.testing.assert_close(s, head.fc_cls(feat))
    head.train()
    torch.manual_seed(0)
    s_train, _ = head(x)
    assert not torch.allclose(s_train, s)
    avg = BBoxHeadAVA(in_channels=4, num_classes=3, topk=1, temporal_pool_type="max", spatial_pool_type="avg")
    torch.testing.assert_close(avg(x)[0], avg.fc_cls(x.amax(2).mean((2, 3))))
    mlp = BBoxHeadAVA(in_channels=4, num_classes=3, topk=1, mlp_head=True)
    assert sorted(mlp.state_dict()) == ["fc_cls.0.bias", "fc_cls.0.weight", "fc_cls.2.bias", "fc_cls.2.weight"]
    with pytest.raises(ValueError):
        BBoxHeadAVA(in_channels=4, num_classes=3, topk=(3,))


def test_init_weights():
    head = BBoxHeadAVA(in_channels=256, num_classes=81)
    head.init_weights()
    assert abs(head.fc_cls.weight.std().item() - 0.01) < 1e-3 and head.fc_cls.bias.abs().sum() == 0


def test_get_det_bboxes_flip_and_crop():
    head = BBoxHeadAVA(in_channels=2, num_classes=3, topk=1)
    rois = torch.tensor([[0, 10.0, 20.0, 50.0, 60.0]])
    score = torch.tensor([[0.0, 1.0, -1.0]])
    b, s = head.get_det_bboxes(rois, score, (100, 200), flip=True, crop_quadruple=[0.1, 0.2, 0.5, 0.25])
    # flip: x1' = 199 - 50, x2' = 199 - 10; normalise by (w=200, h=100); then x*0.5+0.1, y*0.25+0.2
    expect = torch.tensor([[149 / 200 * 0.5 + 0.1, 0.2 * 0.25 + 0.2, 189 / 200 * 0.5 + 0.1, 0.6 * 0.25 + 0.2]])
    torch.testing.assert_close(b, expect)
    torch.testing.assert_close(s, score.sigmoid())
    torch.testing.assert_close(head.get_det_bboxes(rois, [score, 3 * score], (100, 200))[1], (2 * score).sigmoid())


def test_bbox2result():
    bboxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    scores = torch.tensor([[0.9, 0.8, 0.001, 0.3], [0.1, 0.002, 0.5, 0.0025], [0.5, 0.0, 0.0, 0.7]],
                          dtype=torch.float64)
    res = bbox2result(bboxes, scores, 4, thr=0.002)
    assert len(res) == 3 and all(r.dtype == np.float32 and r.shape[1] == 5 for r in res)
    assert res[0].shape == (1, 5) and np.allclose(res[0], [[0.1, 0.1, 0.5, 0.5, 0.8]])   # 0.002 is not > 0.002
    assert res[1].shape == (1, 5) and np.allclose(res[1][0, 4], 0.5)
    assert res[2].shape == (3, 5) and np.allclose(res[2][:, 4], [0.3, 0.0025, 0.7])
    # per-class thresholds
    res = bbox2result(bboxes, scores, 4, thr=[0, 0.5, 0.9, 0.5])
    assert [r.shape[0] for r in res] == [1, 0, 1]
    # negative thr: single-label argmax over classes 1..K-1
    res = bbox2result(bboxes, scores, 4, thr=-1)
    assert [r.shape[0] for r in res] == [1, 1, 1] and np.allclose(res[1][0, :4], [0.2, 0.2, 0.9, 0.9])
    empty = bbox2result(torch.zeros(0, 4), torch.zeros(0, 4), 4, 0.002)
    assert len(empty) == 3 and all(r.shape == (0, 5) and r.dtype == np.float32 for r in empty)
