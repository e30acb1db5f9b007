"""``Recognizer3D`` (MMAction2 0.x) with test-time clip averaging."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from actionkit.models.common import build_module
from actionkit.registry import ConfigError, MODELS

_AVERAGE_CLIPS = ("score", "prob", None)


@MODELS.register()
class Recognizer3D(nn.Module):
    """backbone (+ optional neck) + cls_head.

    ``forward(imgs, label=None, return_loss=True)`` with ``imgs`` [B, V, C, T, H, W]:
    train -> ``{'top1_acc', 'top5_acc', 'loss_cls'}``; test -> ``forward_test(imgs)``, a tensor [B, K] for
    ``average_clips`` 'prob' / 'score' or the raw logits [B*V, K] for ``None`` (0.x).
    The constructor reads no file and runs no init: :meth:`init_weights` does (the builder calls it once).
    """

    def __init__(self, backbone: Mapping[str, Any] | nn.Module, cls_head: Mapping[str, Any] | nn.Module,
                 neck: Mapping[str, Any] | nn.Module | None = None,
                 train_cfg: Mapping[str, Any] | None = None, test_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = build_module(backbone, "model.backbone")
        if neck is not None:
            self.neck = build_module(neck, "model.neck")
        self.cls_head = build_module(cls_head, "model.cls_head")
        self.train_cfg = dict(train_cfg) if train_cfg is not None else None
        self.test_cfg = dict(test_cfg) if test_cfg is not None else {}
        if self.train_cfg and self.train_cfg.get("blending") is not None:
            raise ConfigError("train_cfg.blending (mixup/cutmix) is not supported", "model.train_cfg.blending")
        self.average_clips: str | None = self.test_cfg.get("average_clips", None)
        if self.average_clips not in _AVERAGE_CLIPS:
            raise ConfigError(f"average_clips must be one of {list(_AVERAGE_CLIPS)}, got {self.average_clips!r}",
                              "model.test_cfg.average_clips")
        mtv = self.test_cfg.get("max_testing_views", None)
        if mtv is not None and (not isinstance(mtv, int) or isinstance(mtv, bool) or mtv < 1):
            raise ConfigError(f"max_testing_views must be a positive int, got {mtv!r}",
                              "model.test_cfg.max_testing_views")
        self.max_testing_views: int | None = mtv
        self.feature_extraction: bool = bool(self.test_cfg.get("feature_extraction", False))

    @property
    def with_neck(self) -> bool:
        return hasattr(self, "neck") and self.neck is not None

    def init_weights(self) -> None:
        """MMAction2's init of the backbone (which reads its ``pretrained`` file, if any), head and neck."""
        self.backbone.init_weights()
        self.cls_head.init_weights()
        if self.with_neck and hasattr(self.neck, "init_weights"):
            self.neck.init_weights()

    # ------------------------------------------------------------------------------------------
    def extract_feat(self, imgs: torch.Tensor) -> Any:
        """Backbone features of ``imgs`` [N, C, T, H, W] (a tensor, or (slow, fast) for SlowFast)."""
        return self.backbone(imgs)

    def average_clip(self, cls_score: torch.Tensor, num_segs: int = 1) -> torch.Tensor:
        mode = self.average_clips
        if mode not in _AVERAGE_CLIPS:
            raise ValueError(f"average_clips must be one of {list(_AVERAGE_CLIPS)}, got {mode!r}")
        if mode is None:
            return cls_score
        cls_score = cls_score.view(cls_score.shape[0] // num_segs, num_segs, -1)
        if mode == "prob":
            return F.softmax(cls_score, dim=2).mean(dim=1)
        return cls_score.mean(dim=1)

    def forward(self, imgs: torch.Tensor, label: torch.Tensor | None = None, return_loss: bool = True,
                img_metas: Any = None) -> Any:
        """``img_metas`` is accepted (recognition pipelines may collect it) and ignored."""
        if return_loss:
            if label is None:
                raise ValueError("Label should not be None.")
            return self.forward_train(imgs, label)
        return self.forward_test(imgs)

    def forward_train(self, imgs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        imgs = imgs.reshape((-1,) + tuple(imgs.shape[2:]))
        losses: dict[str, torch.Tensor] = {}
        x = self.extract_feat(imgs)
        if self.with_neck:
            x, loss_aux = self.neck(x, labels.squeeze())
            losses.update(loss_aux)
        cls_score = self.cls_head(x)
        losses.update(self.cls_head.loss(cls_score, labels.squeeze()))
        return losses

    def _features(self, imgs: torch.Tensor) -> Any:
        if self.max_testing_views is None:
            feat = self.extract_feat(imgs)
            if self.with_neck:
                feat, _ = self.neck(feat)
            return feat
        feats = []
        for start in range(0, imgs.shape[0], self.max_testing_views):
            x = self.extract_feat(imgs[start:start + self.max_testing_views])
            if self.with_neck:
                x, _ = self.neck(x)
            feats.append(x)
        if isinstance(feats[0], (tuple, list)):
            return tuple(torch.cat([f[i] for f in feats]) for i in range(len(feats[0])))
        return torch.cat(feats)

    def _do_test(self, imgs: torch.Tensor) -> torch.Tensor:
        batches, num_segs = imgs.shape[0], imgs.shape[1]
        imgs = imgs.reshape((-1,) + tuple(imgs.shape[2:]))
        feat = self._features(imgs)
        if self.feature_extraction:
            parts = feat if isinstance(feat, (tuple, list)) else (feat,)
            pooled = []
            for p in parts:
                if p.dim() == 5:
                    p = F.adaptive_avg_pool3d(p, 1)
                elif p.dim() != 2:
                    raise ValueError(f"feature_extraction expects 5-D or 2-D features, got {tuple(p.shape)}")
                pooled.append(p.reshape(p.shape[0], -1))
            f = torch.cat(pooled, dim=1)
            return f.reshape(batches, num_segs, -1).mean(dim=1)
        cls_score = self.cls_head(feat)
        return self.average_clip(cls_score, num_segs)

    def forward_test(self, imgs: torch.Tensor) -> torch.Tensor:
        return self._do_test(imgs)

    def forward_dummy(self, imgs: torch.Tensor, softmax: bool = False) -> tuple[torch.Tensor]:
        imgs = imgs.reshape((-1,) + tuple(imgs.shape[2:]))
        x = self.extract_feat(imgs)
        if self.with_neck:
            x, _ = self.neck(x)
        outs = self.cls_head(x)
        if softmax:
            outs = F.softmax(outs, dim=1)
        return (outs,)
