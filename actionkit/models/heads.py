"""Recognition heads: ``BaseHead`` (loss + top-k logging), ``I3DHead`` and ``SlowFastHead``."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actionkit.evaluation.accuracy import top_k_accuracy
from actionkit.registry import MODELS


class CrossEntropyLoss(nn.Module):
    """MMAction2 ``CrossEntropyLoss``: hard labels -> ``F.cross_entropy``; soft labels (same shape as the
    scores) -> ``-(label * log_softmax).sum(1).mean()``; times ``loss_weight``."""

    def __init__(self, loss_weight: float = 1.0, class_weight: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.class_weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float32)

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if cls_score.size() == label.size():
            if cls_score.dim() != 2:
                raise ValueError("soft labels must be 2-D [N, num_classes]")
            lsm = F.log_softmax(cls_score, 1)
            if self.class_weight is not None:
                cw = self.class_weight.to(cls_score)
                lsm = lsm * cw.unsqueeze(0)
                loss = -(label * lsm).sum(1)
                loss = loss.sum() / torch.sum(cw.unsqueeze(0) * label)
            else:
                loss = (-(label * lsm).sum(1)).mean()
        else:
            weight = None if self.class_weight is None else self.class_weight.to(cls_score)
            loss = F.cross_entropy(cls_score, label, weight=weight)
        return loss * self.loss_weight


def _build_loss(cfg: Mapping[str, Any] | nn.Module | None) -> nn.Module:
    if cfg is None:
        return CrossEntropyLoss()
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = dict(cfg)
    kind = cfg.pop("type", "CrossEntropyLoss")
    if kind != "CrossEntropyLoss":
        raise ValueError(f"unsupported loss_cls type {kind!r} (expected 'CrossEntropyLoss')")
    return CrossEntropyLoss(**cfg)


class BaseHead(nn.Module):
    """Shared head logic: ``loss(cls_score, labels) -> {'top1_acc', 'top5_acc', 'loss_cls'}`` like 0.x."""

    def __init__(self, num_classes: int, in_channels: int,
                 loss_cls: Mapping[str, Any] | None = None, multi_class: bool = False,
                 label_smooth_eps: float = 0.0, topk: int | Sequence[int] = (1, 5)) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.loss_cls = _build_loss(loss_cls)
        self.multi_class = bool(multi_class)
        self.label_smooth_eps = float(label_smooth_eps)
        topk = (topk,) if isinstance(topk, int) else tuple(topk)
        if any(k <= 0 for k in topk):
            raise ValueError(f"topk entries must be positive, got {topk}")
        self.topk = topk

    def init_weights(self) -> None:
        """``fc_cls`` weight ~ N(0, init_std), bias 0 (mmcv ``normal_init``)."""
        fc = getattr(self, "fc_cls", None)
        if fc is not None:
            nn.init.normal_(fc.weight, 0.0, getattr(self, "init_std", 0.01))
            nn.init.zeros_(fc.bias)

    def loss(self, cls_score: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        if labels.shape == torch.Size([]):
            labels = labels.unsqueeze(0)
        elif labels.dim() == 1 and labels.size(0) == self.num_classes and cls_score.size(0) == 1:
            labels = labels.unsqueeze(0)  # soft label with batch size 1
        if not self.multi_class and cls_score.size() != labels.size():
            # float(): under CPU autocast the scores are bfloat16, which numpy has no type for
            accs = top_k_accuracy(cls_score.detach().float().cpu().numpy(), labels.detach().cpu().numpy(), self.topk)
            for k, a in zip(self.topk, accs):
                losses[f"top{k}_acc"] = torch.tensor(a, device=cls_score.device)
        elif self.multi_class and self.label_smooth_eps != 0:
            labels = (1 - self.label_smooth_eps) * labels + self.label_smooth_eps / self.num_classes
        losses["loss_cls"] = self.loss_cls(cls_score, labels)
        return losses


@MODELS.register()
class I3DHead(BaseHead):
    """AdaptiveAvgPool3d(1) -> Dropout -> flatten -> ``fc_cls``."""

    def __init__(self, num_classes: int, in_channels: int, loss_cls: Mapping[str, Any] | None = None,
                 spatial_type: str | None = "avg", dropout_ratio: float = 0.5, init_std: float = 0.01,
                 multi_class: bool = False, label_smooth_eps: float = 0.0,
                 topk: int | Sequence[int] = (1, 5)) -> None:
        super().__init__(num_classes, in_channels, loss_cls, multi_class, label_smooth_eps, topk)
        self.spatial_type = spatial_type
        self.dropout_ratio = float(dropout_ratio)
        self.init_std = float(init_std)
        self.dropout = nn.Dropout(p=self.dropout_ratio) if self.dropout_ratio != 0 else None
        self.fc_cls = nn.Linear(self.in_channels, self.num_classes)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1)) if spatial_type == "avg" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.avg_pool is not None:
            x = self.avg_pool(x)
        if self.dropout is not None:
            x = self.dropout(x)
        x = x.view(x.shape[0], -1)
        return self.fc_cls(x)


@MODELS.register()
class SlowFastHead(I3DHead):
    """Pools both pathways, concatenates **[fast, slow]** on channels, Dropout, ``fc_cls``."""

    def __init__(self, num_classes: int, in_channels: int, loss_cls: Mapping[str, Any] | None = None,
                 spatial_type: str | None = "avg", dropout_ratio: float = 0.8, init_std: float = 0.01,
                 multi_class: bool = False, label_smooth_eps: float = 0.0,
                 topk: int | Sequence[int] = (1, 5)) -> None:
        # MMAction2's class default dropout is 0.8 (the configs set 0.5)
        super().__init__(num_classes, in_channels, loss_cls, spatial_type, dropout_ratio, init_std,
                         multi_class, label_smooth_eps, topk)

    def forward(self, x: Sequence[torch.Tensor]) -> torch.Tensor:
        x_slow, x_fast = x
        if self.avg_pool is not None:
            x_slow = self.avg_pool(x_slow)
            x_fast = self.avg_pool(x_fast)
        feat = torch.cat((x_fast, x_slow), dim=1)
        if self.dropout is not None:
            feat = self.dropout(feat)
        feat = feat.view(feat.size(0), -1)
        return self.fc_cls(feat)
