"""AVA detector: ``AVARoIHead`` (mmdet ``StandardRoIHead`` as MMAction2 uses it) and ``FastRCNN`` (no RPN).

Interface: docs/DEVELOPING.md (``FastRCNN.forward``).
Training: per image, proposals are assigned (``MaxIoUAssignerAVA``) and sampled (``RandomSampler``, GTs added as
proposals, positives first then negatives); one RoI forward over the batch; ``BBoxHeadAVA.loss``.
Inference: one RoI forward over the whole batch, then per sample ``get_det_bboxes`` (boxes normalised by that sample's
``img_shape``) and ``bbox2result`` with ``test_cfg.rcnn.action_thr``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from actionkit.models.bbox_head import bbox2result
from actionkit.models.common import build_module
from actionkit.models.roi import bbox2roi
from actionkit.registry import MODELS, ConfigError

__all__ = ["AVARoIHead", "FastRCNN"]


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def _as_boxes(b: Any, name: str, i: int) -> torch.Tensor:
    t = torch.as_tensor(b)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, 4)
    if t.dim() != 2 or t.shape[1] < 4:
        raise ValueError(f"{name}[{i}] must be [n, 4] boxes in input pixels, got shape {tuple(t.shape)}")
    return t[:, :4].float()


@MODELS.register()
class AVARoIHead(nn.Module):
    """RoI head: extractor -> optional shared head -> ``BBoxHeadAVA``.

    ``train_cfg`` / ``test_cfg`` are the ``rcnn`` parts of the detector configs (``assigner``, ``sampler``,
    ``pos_weight`` / ``action_thr``).
    """

    def __init__(self, bbox_roi_extractor: Any, bbox_head: Any, shared_head: Any = None,
                 train_cfg: Mapping[str, Any] | None = None, test_cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.bbox_roi_extractor = build_module(bbox_roi_extractor, "model.roi_head.bbox_roi_extractor")
        self.shared_head = build_module(shared_head, "model.roi_head.shared_head") if shared_head is not None else None
        self.bbox_head = build_module(bbox_head, "model.roi_head.bbox_head")
        self.bbox_assigner = None
        self.bbox_sampler = None
        if train_cfg is not None:
            if "assigner" not in train_cfg or "sampler" not in train_cfg:
                raise ConfigError("train_cfg.rcnn needs 'assigner' and 'sampler'", "model.train_cfg.rcnn")
            self.bbox_assigner = MODELS.build(train_cfg["assigner"], key="model.train_cfg.rcnn.assigner")
            self.bbox_sampler = MODELS.build(train_cfg["sampler"], key="model.train_cfg.rcnn.sampler")

    @property
    def with_shared_head(self) -> bool:
        return self.shared_head is not None

    def init_weights(self) -> None:
        for m in (self.bbox_roi_extractor, self.shared_head, self.bbox_head):
            if m is not None and hasattr(m, "init_weights"):
                m.init_weights()

    def _bbox_forward(self, x: Any, rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]]) -> dict:
        bbox_feat, global_feat = self.bbox_roi_extractor(x, rois)
        if self.shared_head is not None:
            bbox_feat = self.shared_head(bbox_feat, feat=global_feat, rois=rois, img_metas=img_metas)
        cls_score, bbox_pred = self.bbox_head(bbox_feat)
        return {"cls_score": cls_score, "bbox_pred": bbox_pred, "bbox_feats": bbox_feat}

    def forward_train(self, x: Any, img_metas: Sequence[Mapping[str, Any]], proposal_list: Sequence[torch.Tensor],
                      gt_bboxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor],
                      gt_bboxes_ignore: Sequence[torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        if self.bbox_assigner is None or self.bbox_sampler is None:
            raise RuntimeError("AVARoIHead.forward_train needs train_cfg (model.train_cfg.rcnn) with an assigner "
                               "and a sampler")
        n = len(img_metas)
        if not len(proposal_list) == len(gt_bboxes) == len(gt_labels) == n:
            raise ValueError(f"forward_train: got {len(proposal_list)} proposal sets, {len(gt_bboxes)} gt_bboxes, "
                             f"{len(gt_labels)} gt_labels for {n} images")
        if gt_bboxes_ignore is None:
            gt_bboxes_ignore = [None] * n
        sampling_results = []
        for i in range(n):
            assign = self.bbox_assigner.assign(proposal_list[i], gt_bboxes[i], gt_bboxes_ignore[i], gt_labels[i])
            sampling_results.append(self.bbox_sampler.sample(assign, proposal_list[i], gt_bboxes[i], gt_labels[i]))
        rois = bbox2roi([res.bboxes for res in sampling_results])
        results = self._bbox_forward(x, rois, img_metas)
        targets = self.bbox_head.get_targets(sampling_results, gt_bboxes, gt_labels, self.train_cfg)
        return self.bbox_head.loss(results["cls_score"], results["bbox_pred"], rois, *targets)

    def simple_test(self, x: Any, proposal_list: Sequence[torch.Tensor], img_metas: Sequence[Mapping[str, Any]],
                    img_shapes: Sequence[Sequence[int]] | None = None) -> list[list[np.ndarray]]:
        """Per sample, a list over the ``num_classes - 1`` classes of float32 ``[k, 5]`` arrays."""
        n = len(proposal_list)
        if len(img_metas) != n:
            raise ValueError(f"simple_test: {len(proposal_list)} proposal sets for {len(img_metas)} img_metas")
        num_classes = self.bbox_head.num_classes
        thr = _get(self.test_cfg, "action_thr", 0.002)
        rois = bbox2roi(proposal_list)
        if rois.shape[0] == 0:
            return [bbox2result(rois[:, 1:], rois.new_zeros(0, num_classes), num_classes, thr) for _ in range(n)]
        cls_score = self._bbox_forward(x, rois, img_metas)["cls_score"]
        out = []
        for i in range(n):
            sel = rois[:, 0] == i
            meta = img_metas[i]
            if "img_shape" in meta:
                img_shape = tuple(meta["img_shape"])[:2]
            elif img_shapes is not None:
                img_shape = tuple(img_shapes[i])[:2]
            else:
                raise ValueError(f"img_metas[{i}] has no 'img_shape' to normalise the boxes")
            crop_quadruple = meta.get("crop_quadruple", np.array([0, 0, 1, 1]))
            flip = bool(meta.get("flip", False))
            bboxes, scores = self.bbox_head.get_det_bboxes(rois[sel], cls_score[sel], img_shape, flip=flip,
                                                           crop_quadruple=crop_quadruple, cfg=self.test_cfg)
            out.append(bbox2result(bboxes, scores, num_classes, thr))
        return out


@MODELS.register()
class FastRCNN(nn.Module):
    """Two-stage detector without RPN: backbone (+ neck) -> ``AVARoIHead`` on the given proposals."""

    def __init__(self, backbone: Any, roi_head: Any, train_cfg: Mapping[str, Any] | None = None,
                 test_cfg: Mapping[str, Any] | None = None, neck: Any = None, pretrained: str | None = None) -> None:
        super().__init__()
        if pretrained is not None and isinstance(backbone, Mapping):
            backbone = {**backbone, "pretrained": pretrained}
        self.backbone = build_module(backbone, "model.backbone")
        self.neck = build_module(neck, "model.neck") if neck is not None else None
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        if isinstance(roi_head, Mapping):
            roi_head = dict(roi_head)
            rcnn_train = _get(train_cfg, "rcnn")
            if rcnn_train is not None or "train_cfg" not in roi_head:
                roi_head["train_cfg"] = rcnn_train
            rcnn_test = _get(test_cfg, "rcnn")
            if rcnn_test is not None or "test_cfg" not in roi_head:
                roi_head["test_cfg"] = rcnn_test
        self.roi_head = build_module(roi_head, "model.roi_head")

    @property
    def with_neck(self) -> bool:
        return self.neck is not None

    def init_weights(self) -> None:
        for m in (self.backbone, self.neck, self.roi_head):
            if m is not None and hasattr(m, "init_weights"):
                m.init_weights()

    def extract_feat(self, img: torch.Tensor) -> Any:
        x = self.backbone(img)
        if self.neck is not None:
            x = self.neck(x)
        return x

    def forward(self, img: torch.Tensor, proposals: Sequence[Any], img_metas: Sequence[Mapping[str, Any]],
                gt_bboxes: Sequence[Any] | None = None, gt_labels: Sequence[Any] | None = None,
                return_loss: bool = True, gt_bboxes_ignore: Sequence[Any] | None = None):
        if isinstance(img, (list, tuple)):  # MMAction2 test-time nesting (one augmentation)
            if len(img) != 1:
                raise ValueError(f"test-time augmentation is not supported (got {len(img)} augmentations)")
            img = img[0]
            img_metas = img_metas[0]
            proposals = proposals[0]
        if img.dim() != 5:
            raise ValueError(f"FastRCNN expects img [B, 3, T, H, W], got shape {tuple(img.shape)}")
        b = img.shape[0]
        if proposals is None or len(proposals) != b:
            raise ValueError(f"FastRCNN expects one proposal tensor per sample ({b}), got "
                             f"{None if proposals is None else len(proposals)}")
        if len(img_metas) != b:
            raise ValueError(f"FastRCNN expects one img_metas dict per sample ({b}), got {len(img_metas)}")
        dev = img.device
        props = [_as_boxes(p, "proposals", i).to(dev) for i, p in enumerate(proposals)]
        if return_loss:
            if gt_bboxes is None or gt_labels is None:
                raise ValueError("training needs gt_bboxes and gt_labels")
            if len(gt_bboxes) != b or len(gt_labels) != b:
                raise ValueError(f"expected {b} gt_bboxes / gt_labels, got {len(gt_bboxes)} / {len(gt_labels)}")
            gtb = [_as_boxes(g, "gt_bboxes", i).to(dev) for i, g in enumerate(gt_bboxes)]
            k = self.roi_head.bbox_head.num_classes
            gtl = []
            for i, g in enumerate(gt_labels):
                t = torch.as_tensor(g).float().to(dev)
                if t.numel() == 0:
                    t = t.reshape(0, k)
                if t.dim() != 2 or t.shape[0] != gtb[i].shape[0]:
                    raise ValueError(f"gt_labels[{i}] must be multi-hot [{gtb[i].shape[0]}, {k}], "
                                     f"got shape {tuple(t.shape)}")
                gtl.append(t)
            return self.forward_train(img, img_metas, props, gtb, gtl, gt_bboxes_ignore)
        return self.forward_test(img, img_metas, props)

    def forward_train(self, img: torch.Tensor, img_metas: Sequence[Mapping[str, Any]],
                      proposals: Sequence[torch.Tensor], gt_bboxes: Sequence[torch.Tensor],
                      gt_labels: Sequence[torch.Tensor],
                      gt_bboxes_ignore: Sequence[Any] | None = None) -> dict[str, torch.Tensor]:
        x = self.extract_feat(img)
        return self.roi_head.forward_train(x, img_metas, proposals, gt_bboxes, gt_labels, gt_bboxes_ignore)

    def forward_test(self, img: torch.Tensor, img_metas: Sequence[Mapping[str, Any]],
                     proposals: Sequence[torch.Tensor]) -> list[list[np.ndarray]]:
        return self.simple_test(img, img_metas, proposals)

    def simple_test(self, img: torch.Tensor, img_metas: Sequence[Mapping[str, Any]],
                    proposals: Sequence[torch.Tensor]) -> list[list[np.ndarray]]:
        x = self.extract_feat(img)
        shapes = [tuple(img.shape[-2:])] * img.shape[0]
        return self.roi_head.simple_test(x, proposals, img_metas, img_shapes=shapes)
