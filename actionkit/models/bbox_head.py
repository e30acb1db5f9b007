"""``BBoxHeadAVA`` and ``bbox2result``.

Forward: dropout (on the 5-D RoI tensor when ``dropout_before_pool``) -> temporal pool -> spatial pool -> ``fc_cls``.
Loss: column 0 dropped, only RoIs with at least one positive label, (focal) BCE-with-logits mean; recall / precision
at threshold 0.5 and at top-k are logged (detached).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from actionkit.models.roi import SamplingResult, bbox_target
from actionkit.registry import MODELS

__all__ = ["BBoxHeadAVA", "bbox2result", "cross_entropy_loss"]


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Soft-target cross entropy ``-(target * log_softmax(logits)).sum(-1)`` (single-label AVA variant)."""
    loss = -(logits.log_softmax(dim=-1) * target).sum(dim=-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


@MODELS.register()
class BBoxHeadAVA(nn.Module):
    """Classification-only RoI head for AVA (no box regression).

    ``background_class`` and ``mlp_head`` are the MMAction2 1.x arguments (``background_class=True`` and
    ``mlp_head=False`` are the 0.x behaviour and the defaults here).
    """

    def __init__(self, temporal_pool_type: str = "avg", spatial_pool_type: str = "max", in_channels: int = 2048,
                 focal_gamma: float = 0.0, focal_alpha: float = 1.0, num_classes: int = 81,
                 dropout_ratio: float = 0.0, dropout_before_pool: bool = True,
                 topk: int | Sequence[int] | None = (3, 5), multilabel: bool = True,
                 background_class: bool = True, mlp_head: bool = False) -> None:
        super().__init__()
        if temporal_pool_type not in ("max", "avg"):
            raise ValueError(f"temporal_pool_type must be 'avg' or 'max', got {temporal_pool_type!r}")
        if spatial_pool_type not in ("max", "avg"):
            raise ValueError(f"spatial_pool_type must be 'avg' or 'max', got {spatial_pool_type!r}")
        self.temporal_pool_type = temporal_pool_type
        self.spatial_pool_type = spatial_pool_type
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.dropout_ratio = dropout_ratio
        self.dropout_before_pool = dropout_before_pool
        self.multilabel = multilabel
        self.focal_gamma = float(focal_gamma)
        self.focal_alpha = float(focal_alpha)
        self.background_class = background_class
        self.mlp_head = mlp_head
        if topk is None:
            self.topk: tuple[int, ...] = ()
        elif isinstance(topk, int):
            self.topk = (topk,)
        elif isinstance(topk, (tuple, list)) and all(isinstance(k, int) for k in topk):
            self.topk = tuple(topk)
        else:
            raise TypeError(f"topk should be an int, a sequence of ints or None, got {topk!r}")
        n_eval = num_classes - 1 if background_class else num_classes
        if any(k > n_eval or k < 1 for k in self.topk):
            raise ValueError(f"every topk must be in [1, {n_eval}], got {self.topk}")

        if temporal_pool_type == "avg":
            self.temporal_pool: nn.Module = nn.AdaptiveAvgPool3d((1, None, None))
        else:
            self.temporal_pool = nn.AdaptiveMaxPool3d((1, None, None))
        if spatial_pool_type == "avg":
            self.spatial_pool: nn.Module = nn.AdaptiveAvgPool3d((None, 1, 1))
        else:
            self.spatial_pool = nn.AdaptiveMaxPool3d((None, 1, 1))
        if dropout_ratio > 0:
            self.dropout = nn.Dropout(dropout_ratio)
        if mlp_head:
            self.fc_cls: nn.Module = nn.Sequential(nn.Linear(in_channels, in_channels), nn.ReLU(),
                                                   nn.Linear(in_channels, num_classes))
        else:
            self.fc_cls = nn.Linear(in_channels, num_classes)

    def init_weights(self) -> None:
        """0.x: ``fc_cls ~ N(0, 0.01)``, bias 0; the 1.x MLP head uses xavier-normal."""
        if self.mlp_head:
            for m in self.fc_cls.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
                    nn.init.zeros_(m.bias)
        else:
            nn.init.normal_(self.fc_cls.weight, 0, 0.01)
            nn.init.zeros_(self.fc_cls.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        if x.dim() != 5:
            raise ValueError(f"BBoxHeadAVA expects [R, C, T, H, W] RoI features, got shape {tuple(x.shape)}")
        if self.dropout_before_pool and self.dropout_ratio > 0:
            x = self.dropout(x)
        x = self.temporal_pool(x)
        x = self.spatial_pool(x)
        if not self.dropout_before_pool and self.dropout_ratio > 0:
            x = self.dropout(x)
        x = x.view(x.size(0), -1)
        return self.fc_cls(x), None

    # ------------------------------------------------------------------------------------------- training
    @staticmethod
    def get_targets(sampling_results: Sequence[SamplingResult], gt_bboxes: Any, gt_labels: Any,
                    rcnn_train_cfg: Mapping[str, Any] | None):
        pos = [r.pos_bboxes for r in sampling_results]
        neg = [r.neg_bboxes for r in sampling_results]
        labels = [r.pos_gt_labels for r in sampling_results]
        return bbox_target(pos, neg, labels, rcnn_train_cfg)

    @staticmethod
    def recall_prec(pred_vec: torch.Tensor, target_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct = pred_vec & target_vec
        recall = correct.sum(1) / target_vec.sum(1).float()
        prec = correct.sum(1) / (pred_vec.sum(1) + 1e-6)
        return recall.mean(), prec.mean()

    def multi_label_accuracy(self, pred: torch.Tensor, target: torch.Tensor, thr: float = 0.5):
        pred = pred.sigmoid()
        target_vec = target > 0.5
        recall_thr, prec_thr = self.recall_prec(pred > thr, target_vec)
        recalls, precs = [], []
        for k in self.topk:
            _, top = pred.topk(k, 1, True, True)
            pred_vec = torch.zeros_like(pred, dtype=torch.bool).scatter_(1, top, True)
            r, p = self.recall_prec(pred_vec, target_vec)
            recalls.append(r)
            precs.append(p)
        return recall_thr, prec_thr, recalls, precs

    def loss(self, cls_score: torch.Tensor | None, bbox_pred: Any, rois: Any, labels: torch.Tensor,
             label_weights: torch.Tensor | None = None, bbox_targets: Any = None, bbox_weights: Any = None,
             reduce: bool = True) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        if cls_score is None:
            return losses
        if self.background_class:
            labels = labels[:, 1:]
            pos = labels.sum(-1) > 0
            cls_score = cls_score[pos, 1:]
        else:
            pos = labels.sum(-1) > 0
            cls_score = cls_score[pos]
        labels = labels[pos].to(cls_score.dtype)
        if labels.shape[0] == 0:
            # no RoI with a positive label in the batch: a zero loss that keeps the graph (MMAction2 gives NaN)
            zero = cls_score.sum() * 0
            losses["recall@thr=0.5"] = zero.detach().float()
            losses["prec@thr=0.5"] = zero.detach().float()
            for k in self.topk:
                losses[f"recall@top{k}"] = zero.detach().float()
                losses[f"prec@top{k}"] = zero.detach().float()
            losses["loss_action_cls"] = zero
            return losses
        with torch.no_grad():
            recall_thr, prec_thr, recalls, precs = self.multi_label_accuracy(cls_score.detach(), labels, thr=0.5)
        losses["recall@thr=0.5"] = recall_thr
        losses["prec@thr=0.5"] = prec_thr
        for i, k in enumerate(self.topk):
            losses[f"recall@top{k}"] = recalls[i]
            losses[f"prec@top{k}"] = precs[i]
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(cls_score, labels, reduction="none")
        else:
            labels = labels / labels.sum(dim=1, keepdim=True)
            loss = cross_entropy_loss(cls_score, labels, reduction="none")
        pt = torch.exp(-loss)
        focal = self.focal_alpha * (1 - pt) ** self.focal_gamma * loss
        losses["loss_action_cls"] = focal.mean()
        return losses

    # ------------------------------------------------------------------------------------------- inference
    def get_det_bboxes(self, rois: torch.Tensor, cls_score: torch.Tensor | Sequence[torch.Tensor] | None,
                       img_shape: Sequence[int], flip: bool = False,
                       crop_quadruple: Sequence[float] | np.ndarray | None = None, cfg: Any = None):
        """``(bboxes [R, 4] normalised to [0, 1] of img_shape (h, w), scores [R, K])``; ``rois`` is not modified."""
        if isinstance(cls_score, (list, tuple)):
            cls_score = sum(cls_score) / float(len(cls_score))
        scores = None
        if cls_score is not None:
            scores = cls_score.sigmoid() if self.multilabel else cls_score.softmax(dim=-1)
        bboxes = rois[:, 1:].clone()
        img_h, img_w = int(img_shape[0]), int(img_shape[1])
        if flip:
            flipped = bboxes.clone()
            flipped[:, 0] = img_w - 1 - bboxes[:, 2]
            flipped[:, 2] = img_w - 1 - bboxes[:, 0]
            bboxes = flipped
        bboxes[:, 0::2] /= img_w
        bboxes[:, 1::2] /= img_h
        if crop_quadruple is not None:
            x1, y1, tw, th = (float(v) for v in crop_quadruple)
            decropped = bboxes.clone()
            decropped[:, 0::2] = bboxes[:, 0::2] * tw + x1
            decropped[:, 1::2] = bboxes[:, 1::2] * th + y1
            bboxes = decropped
        return bboxes, scores


def bbox2result(bboxes: torch.Tensor, scores: torch.Tensor, num_classes: int,
                thr: float | Sequence[float] = 0.01) -> list[np.ndarray]:
    """Per class ``1..num_classes-1`` a float32 ``[k, 5]`` array (x1, y1, x2, y2, score).

    Multi-label (``thr >= 0``): keep the boxes whose class score is ``> thr`` (per-class thresholds when ``thr`` is a
    sequence of ``num_classes``). A negative ``thr`` is single-label: each box goes to its argmax class (1..K-1).
    """
    if bboxes.shape[0] == 0:
        return [np.zeros((0, 5), dtype=np.float32) for _ in range(num_classes - 1)]
    b = bboxes.detach().cpu().float().numpy()
    s = scores.detach().cpu().float().numpy()
    if s.ndim != 2 or s.shape[1] != num_classes:
        raise ValueError(f"bbox2result: scores must be [n, {num_classes}], got {s.shape}")
    if isinstance(thr, (int, float)):
        multilabel = thr >= 0
        thrs = [float(thr)] * num_classes
    else:
        thrs = [float(t) for t in thr]
        if len(thrs) != num_classes:
            raise ValueError(f"bbox2result: need {num_classes} thresholds, got {len(thrs)}")
        multilabel = thrs[0] >= 0
    argmax = s[:, 1:].argmax(axis=1)
    result = []
    for i in range(num_classes - 1):
        keep = s[:, i + 1] > thrs[i + 1] if multilabel else argmax == i
        result.append(np.concatenate([b[keep, :4], s[keep, i + 1:i + 2]], axis=1).astype(np.float32))
    return result
