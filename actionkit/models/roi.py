"""RoI operators and the AVA RoI plumbing: RoIAlign / RoIPool in pure PyTorch, ``bbox2roi``,
``bbox_overlaps``, ``SingleRoIExtractor3D``, ``MaxIoUAssignerAVA``, ``RandomSampler`` and ``bbox_target``.

Semantics follow mmcv / mmdet 2.x as MMAction2 0.x uses them:

* ``roi_align`` reproduces the mmcv / Detectron2 CPU kernel: ``start = box * scale - 0.5`` (aligned), adaptive
  ``ceil(roi / out)`` samples per bin, bilinear samples that are 0 outside ``[-1, H] x [-1, W]`` (but still counted in
  the average), coordinates in ``[-1, 0)`` clamped to 0 and the upper neighbour clamped to the last row / column.
  It is computed as a separable linear map (``out = Wy @ F @ Wx^T`` per RoI), which is exact and differentiable
  with respect to the feature map.
* ``roi_pool`` reproduces mmcv's ``RoIPool`` (floor / ceil bin edges, ``x2 + 1`` box ends, empty bins give 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actionkit.registry import MODELS

__all__ = [
    "roi_align", "roi_pool", "RoIAlign", "RoIPool", "bbox2roi", "bbox_overlaps", "SingleRoIExtractor3D",
    "AssignResult", "MaxIoUAssignerAVA", "SamplingResult", "RandomSampler", "bbox_target",
]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise ValueError(f"expected an int or 2 ints, got {v!r}")
    return t  # type: ignore[return-value]


def _check_rois(feat: torch.Tensor, rois: torch.Tensor) -> None:
    if feat.dim() != 4:
        raise ValueError(f"expected a feature map [N, C, H, W], got shape {tuple(feat.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"expected rois [R, 5] = (batch_idx, x1, y1, x2, y2), got shape {tuple(rois.shape)}")
    if rois.numel():
        b = rois[:, 0]
        if bool((b < 0).any()) or bool((b >= feat.shape[0]).any()) or bool((b != b.floor()).any()):
            raise ValueError(f"roi batch indices must be integers in [0, {feat.shape[0]}), got {b.tolist()}")


# ----------------------------------------------------------------------------------------------- RoIAlign
def _axis_samples(start: torch.Tensor, size: torch.Tensor, pooled: int, sampling_ratio: int, length: int):
    """Per-RoI sample positions along one axis.

    Returns ``(low, high, w_low, w_high, grid)``: int64 ``[R, pooled, G]`` neighbour indices, their bilinear weights
    (0 for padded samples and for samples outside ``[-1, length]``), and the per-RoI sample count ``grid [R]``.
    """
    r = start.shape[0]
    dtype = start.dtype
    bin_size = size / pooled
    if sampling_ratio > 0:
        grid = torch.full((r,), sampling_ratio, dtype=torch.int64, device=start.device)
    else:
        # mmcv: ceilf(roi / pooled) evaluated in single precision whatever the tensor dtype
        grid = torch.ceil((size / pooled).float()).to(torch.int64).clamp_min(0)
    g_max = int(grid.max().item()) if r else 0
    g_max = max(g_max, 1)
    p = torch.arange(pooled, dtype=dtype, device=start.device).view(1, pooled, 1)
    i = torch.arange(g_max, dtype=torch.int64, device=start.device).view(1, 1, g_max)
    grid_f = grid.to(dtype).clamp_min(1).view(r, 1, 1)
    pos = start.view(r, 1, 1) + p * bin_size.view(r, 1, 1) + (i.to(dtype) + 0.5) * bin_size.view(r, 1, 1) / grid_f
    present = i < grid.view(r, 1, 1)                                       # padding mask
    valid = present & (pos >= -1.0) & (pos <= float(length))              # Detectron2 rule: 0 outside
    pos = pos.clamp_min(0.0)
    low = pos.floor().to(torch.int64)
    at_end = low >= length - 1
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    high = torch.where(at_end, low, low + 1)
    pos = torch.where(at_end, low.to(dtype), pos)
    frac = pos - low.to(dtype)
    zero = torch.zeros((), dtype=dtype, device=start.device)
    w_low = torch.where(valid, 1.0 - frac, zero)
    w_high = torch.where(valid, frac, zero)
    low = low.clamp(0, length - 1)
    high = high.clamp(0, length - 1)
    return low, high, w_low, w_high, grid


def _interp_matrix(low, high, w_low, w_high, length: int, reduce_samples: bool) -> torch.Tensor:
    """Dense interpolation matrix ``[R, P, length]`` (samples summed) or ``[R, P*G, length]`` (one row per sample)."""
    r, p, g = low.shape
    if reduce_samples:
        m = w_low.new_zeros(r, p, length)
        m.scatter_add_(2, low, w_low)
        m.scatter_add_(2, high, w_high)
        return m
    m = w_low.new_zeros(r, p * g, length)
    m.scatter_add_(2, low.reshape(r, p * g, 1), w_low.reshape(r, p * g, 1))
    m.scatter_add_(2, high.reshape(r, p * g, 1), w_high.reshape(r, p * g, 1))
    return m


def _per_image(feat: torch.Tensor, bidx: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn(feat_n [C,H,W], sel)`` per image and put the results back in RoI order."""
    outs, orders = [], []
    for n in torch.unique(bidx).tolist():
        sel = torch.nonzero(bidx == n, as_tuple=False).squeeze(1)
        outs.append(fn(feat[n], sel))
        orders.append(sel)
    out = torch.cat(outs, 0)
    order = torch.cat(orders, 0)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    return out[inv]


def roi_align(feat: torch.Tensor, rois: torch.Tensor, output_size: int | Sequence[int], spatial_scale: float,
              sampling_ratio: int = 0, aligned: bool = True, pool_mode: str = "avg") -> torch.Tensor:
    """RoIAlign as mmcv.ops.roi_align: ``feat [N, C, H, W]``, ``rois [R, 5]`` -> ``[R, C, out_h, out_w]``."""
    _check_rois(feat, rois)
    if pool_mode not in ("avg", "max"):
        raise ValueError(f"pool_mode must be 'avg' or 'max', got {pool_mode!r}")
    out_h, out_w = _pair(output_size)
    n, c, height, width = feat.shape
    r = rois.shape[0]
    if r == 0:
        return feat.new_zeros(0, c, out_h, out_w)
    dtype = feat.dtype
    with torch.no_grad():
        boxes = rois.detach().to(device=feat.device, dtype=dtype)
        scale = torch.tensor(float(spatial_scale), dtype=torch.float32).to(dtype)
        offset = 0.5 if aligned else 0.0
        x1 = boxes[:, 1] * scale - offset
        y1 = boxes[:, 2] * scale - offset
        x2 = boxes[:, 3] * scale - offset
        y2 = boxes[:, 4] * scale - offset
        roi_w = x2 - x1
        roi_h = y2 - y1
        if aligned:
            bad = (roi_w < 0) | (roi_h < 0)
            if bool(bad.any()):
                raise ValueError("RoIAlign(aligned=True) got RoIs with negative size: "
                                 f"{rois[bad].tolist()}")
        else:
            roi_w = roi_w.clamp_min(1.0)
            roi_h = roi_h.clamp_min(1.0)
        ys = _axis_samples(y1, roi_h, out_h, sampling_ratio, height)
        xs = _axis_samples(x1, roi_w, out_w, sampling_ratio, width)
        gy, gx = ys[4], xs[4]
        bidx = boxes[:, 0].to(torch.int64)

    if pool_mode == "avg":
        with torch.no_grad():
            wy = _interp_matrix(*ys[:4], height, True)                       # [R, P, H]
            wx = _interp_matrix(*xs[:4], width, True)                        # [R, Q, W]
            count = (gy * gx).clamp_min(1).to(dtype)
            wy = wy / count.view(r, 1, 1)

        def fn(f: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
            t = torch.matmul(wy[sel].unsqueeze(1), f.unsqueeze(0))          # [r, C, P, W]
            return torch.matmul(t, wx[sel].transpose(1, 2).unsqueeze(1))   # [r, C, P, Q]

        return _per_image(feat, bidx, fn)

    # max mode: every sample value, then the max per bin (mmcv starts the max at -10000)
    with torch.no_grad():
        sy = _interp_matrix(*ys[:4], height, False)                           # [R, P*Gy, H]
        sx = _interp_matrix(*xs[:4], width, False)                            # [R, Q*Gx, W]
        g_y, g_x = ys[0].shape[2], xs[0].shape[2]
        ar_y = torch.arange(g_y, device=feat.device).view(1, g_y)
        ar_x = torch.arange(g_x, device=feat.device).view(1, g_x)
        present = ((ar_y < gy.view(r, 1)).view(r, 1, 1, g_y, 1, 1)
                   & (ar_x < gx.view(r, 1)).view(r, 1, 1, 1, 1, g_x))

    def fn_max(f: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        t = torch.matmul(sy[sel].unsqueeze(1), f.unsqueeze(0))              # [r, C, P*Gy, W]
        v = torch.matmul(t, sx[sel].transpose(1, 2).unsqueeze(1))          # [r, C, P*Gy, Q*Gx]
        v = v.view(sel.numel(), c, out_h, g_y, out_w, g_x)
        v = v.masked_fill(~present[sel], float("-inf"))
        return v.amax(dim=(3, 5)).clamp_min(-10000.0)

    return _per_image(feat, bidx, fn_max)


# ----------------------------------------------------------------------------------------------- RoIPool
def roi_pool(feat: torch.Tensor, rois: torch.Tensor, output_size: int | Sequence[int],
             spatial_scale: float) -> torch.Tensor:
    """RoIPool as mmcv.ops.roi_pool (max over floor/ceil bins; empty bins and malformed RoIs give 0)."""
    _check_rois(feat, rois)
    out_h, out_w = _pair(output_size)
    n, c, height, width = feat.shape
    r = rois.shape[0]
    if r == 0:
        return feat.new_zeros(0, c, out_h, out_w)
    dtype = feat.dtype
    with torch.no_grad():
        boxes = rois.detach().to(device=feat.device, dtype=dtype)
        scale = torch.tensor(float(spatial_scale), dtype=torch.float32).to(dtype)
        x1 = boxes[:, 1] * scale
        y1 = boxes[:, 2] * scale
        x2 = (boxes[:, 3] + 1) * scale
        y2 = (boxes[:, 4] + 1) * scale
        rw, rh = x2 - x1, y2 - y1
        ok = (rw > 0) & (rh > 0)

        def edges(start, size, pooled, length):
            p = torch.arange(pooled, dtype=dtype, device=feat.device).view(1, pooled)
            b = (size / pooled).view(-1, 1)
            lo = torch.floor(p * b + start.view(-1, 1)).clamp(0, length).to(torch.int64)
            hi = torch.ceil((p + 1) * b + start.view(-1, 1)).clamp(0, length).to(torch.int64)
            idx = torch.arange(length, device=feat.device).view(1, 1, length)
            return (idx >= lo.unsqueeze(2)) & (idx < hi.unsqueeze(2))          # [R, pooled, length]

        my = edges(y1, rh, out_h, height) & ok.view(r, 1, 1)
        mx = edges(x1, rw, out_w, width) & ok.view(r, 1, 1)
        bidx = boxes[:, 0].to(torch.int64)

    def fn(f: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        k = sel.numel()
        cols = []
        for q in range(out_w):  # max over the columns of bin q: [k, C, H]
            m = mx[sel, q].view(k, 1, 1, width)
            v = f.unsqueeze(0).masked_fill(~m, float("-inf")).amax(-1)
            cols.append(v)
        colmax = torch.stack(cols, -1)                                       # [k, C, H, Q]
        rows = []
        for p in range(out_h):
            m = my[sel, p].view(k, 1, height, 1)
            rows.append(colmax.masked_fill(~m, float("-inf")).amax(2))      # [k, C, Q]
        out = torch.stack(rows, 2)                                           # [k, C, P, Q]
        return torch.where(torch.isneginf(out), torch.zeros_like(out), out)

    return _per_image(feat, bidx, fn)


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` (mmcv.ops.RoIAlign argument names)."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float = 1.0, sampling_ratio: int = 0,
                 pool_mode: str = "avg", aligned: bool = True) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.pool_mode = pool_mode
        self.aligned = bool(aligned)
        if pool_mode not in ("avg", "max"):
            raise ValueError(f"pool_mode must be 'avg' or 'max', got {pool_mode!r}")

    def forward(self, feat: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_align(feat, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                         self.aligned, self.pool_mode)


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool`."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float = 1.0) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, feat: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_pool(feat, rois, self.output_size, self.spatial_scale)


# ----------------------------------------------------------------------------------------------- boxes
def bbox2roi(bbox_list: Sequence[torch.Tensor]) -> torch.Tensor:
    """List of per-image boxes ``[n_i, >=4]`` -> rois ``[sum n_i, 5]`` = (image index, x1, y1, x2, y2)."""
    rois = []
    for i, b in enumerate(bbox_list):
        if b.dim() != 2 or (b.shape[0] and b.shape[1] < 4):
            raise ValueError(f"bbox2roi: boxes of image {i} must be [n, 4], got shape {tuple(b.shape)}")
        if b.shape[0] > 0:
            rois.append(torch.cat([b.new_full((b.shape[0], 1), float(i)), b[:, :4]], dim=-1))
        else:
            rois.append(b.new_zeros((0, 5)))
    if not rois:
        return torch.zeros((0, 5))
    return torch.cat(rois, 0)


def bbox_overlaps(bboxes1: torch.Tensor, bboxes2: torch.Tensor, mode: str = "iou", is_aligned: bool = False,
                  eps: float = 1e-6) -> torch.Tensor:
    """IoU / IoF of ``[m, 4]`` and ``[n, 4]`` boxes (mmdet 2.x ``bbox_overlaps``: no +1, union floored at eps)."""
    if mode not in ("iou", "iof"):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    m, n = bboxes1.shape[0], bboxes2.shape[0]
    if is_aligned and m != n:
        raise ValueError(f"is_aligned needs the same number of boxes, got {m} and {n}")
    if m == 0 or n == 0:
        return bboxes1.new_zeros((m,) if is_aligned else (m, n))
    area1 = (bboxes1[:, 2] - bboxes1[:, 0]) * (bboxes1[:, 3] - bboxes1[:, 1])
    area2 = (bboxes2[:, 2] - bboxes2[:, 0]) * (bboxes2[:, 3] - bboxes2[:, 1])
    if is_aligned:
        lt = torch.max(bboxes1[:, :2], bboxes2[:, :2])
        rb = torch.min(bboxes1[:, 2:4], bboxes2[:, 2:4])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[:, 0] * wh[:, 1]
        union = area1 + area2 - overlap if mode == "iou" else area1
    else:
        lt = torch.max(bboxes1[:, None, :2], bboxes2[None, :, :2])
        rb = torch.min(bboxes1[:, None, 2:4], bboxes2[None, :, 2:4])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        union = area1[:, None] + area2[None, :] - overlap if mode == "iou" else area1[:, None].expand(m, n)
    union = torch.max(union, union.new_tensor([eps]))
    return overlap / union


# ----------------------------------------------------------------------------------------------- extractor
@MODELS.register()
class SingleRoIExtractor3D(nn.Module):
    """Temporal pooling of the whole map, then one 2-D RoI op per remaining time step.

    ``forward(feat, rois)``: ``feat`` a tensor ``[N, C, T, H, W]`` or a tuple/list of pathways (SlowFast); returns
    ``(roi_feats [R, C', T', out, out], feat [N, C, T', H, W])``.
    """

    def __init__(self, roi_layer_type: str = "RoIAlign", featmap_stride: int = 16, output_size: int = 16,
                 sampling_ratio: int = 0, pool_mode: str = "avg", aligned: bool = True,
                 with_temporal_pool: bool = True, temporal_pool_mode: str = "avg",
                 with_global: bool = False) -> None:
        super().__init__()
        if roi_layer_type not in ("RoIAlign", "RoIPool"):
            raise ValueError(f"roi_layer_type must be 'RoIAlign' or 'RoIPool', got {roi_layer_type!r}")
        if temporal_pool_mode not in ("avg", "max"):
            raise ValueError(f"temporal_pool_mode must be 'avg' or 'max', got {temporal_pool_mode!r}")
        self.roi_layer_type = roi_layer_type
        self.featmap_stride = featmap_stride
        self.spatial_scale = 1.0 / featmap_stride
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.pool_mode = pool_mode
        self.aligned = aligned
        self.with_temporal_pool = with_temporal_pool
        self.temporal_pool_mode = temporal_pool_mode
        self.with_global = with_global
        if roi_layer_type == "RoIPool":
            self.roi_layer: nn.Module = RoIPool(output_size, self.spatial_scale)
        else:
            self.roi_layer = RoIAlign(output_size, self.spatial_scale, sampling_ratio=sampling_ratio,
                                      pool_mode=pool_mode, aligned=aligned)
        self.global_pool = nn.AdaptiveAvgPool2d(output_size)

    def init_weights(self) -> None:
        """No parameters."""

    def forward(self, feat: torch.Tensor | Sequence[torch.Tensor], rois: torch.Tensor):
        feats = list(feat) if isinstance(feat, (tuple, list)) else [feat]
        if len(feats) >= 2:
            max_t = max(x.shape[2] for x in feats)
            size = (max_t,) + tuple(feats[0].shape[3:])
            feats = [F.interpolate(x, size=size, mode="nearest").contiguous() for x in feats]
        if self.with_temporal_pool:
            if self.temporal_pool_mode == "avg":
                feats = [x.mean(2, keepdim=True) for x in feats]
            else:
                feats = [x.max(2, keepdim=True)[0] for x in feats]
        x = torch.cat(feats, dim=1).contiguous()
        roi_feats = []
        for t in range(x.shape[2]):
            frame = x[:, :, t].contiguous()
            r = self.roi_layer(frame, rois)
            if self.with_global:
                g = self.global_pool(frame)[rois[:, 0].long()]
                r = torch.cat([r, g], dim=1).contiguous()
            roi_feats.append(r)
        return torch.stack(roi_feats, dim=2), x


# ----------------------------------------------------------------------------------------------- assigner
@dataclass
class AssignResult:
    """``gt_inds [n]``: 0 negative, -1 ignored, k>0 assigned to gt k-1; ``labels [n, K]`` multi-hot float."""

    num_gts: int
    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor
    labels: torch.Tensor | None = None

    def add_gt_(self, gt_labels: torch.Tensor) -> None:
        """Prepend the GTs as proposals assigned to themselves (IoU 1, their own labels)."""
        g = gt_labels.shape[0]
        self_inds = torch.arange(1, g + 1, dtype=torch.long, device=self.gt_inds.device)
        self.gt_inds = torch.cat([self_inds, self.gt_inds])
        self.max_overlaps = torch.cat([self.max_overlaps.new_ones(g), self.max_overlaps])
        if self.labels is not None:
            self.labels = torch.cat([gt_labels.to(self.labels.dtype), self.labels])


@MODELS.register()
class MaxIoUAssignerAVA:
    """mmdet ``MaxIoUAssigner`` with multi-hot labels (MMAction2 ``MaxIoUAssignerAVA``)."""

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float | Sequence[float], min_pos_iou: float = 0.0,
                 gt_max_assign_all: bool = True, ignore_iof_thr: float = -1, ignore_wrt_candidates: bool = True,
                 match_low_quality: bool = True) -> None:
        self.pos_iou_thr = float(pos_iou_thr)
        if isinstance(neg_iou_thr, (int, float)):
            self.neg_iou_thr: float | tuple[float, float] = float(neg_iou_thr)
        else:
            t = tuple(float(v) for v in neg_iou_thr)
            if len(t) != 2:
                raise ValueError(f"neg_iou_thr must be a float or (low, high), got {neg_iou_thr!r}")
            self.neg_iou_thr = t  # type: ignore[assignment]
        self.min_pos_iou = float(min_pos_iou)
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality

    def assign(self, bboxes: torch.Tensor, gt_bboxes: torch.Tensor, gt_bboxes_ignore: torch.Tensor | None = None,
               gt_labels: torch.Tensor | None = None) -> AssignResult:
        bboxes = bboxes[:, :4]
        overlaps = bbox_overlaps(gt_bboxes, bboxes)
        if (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0
                and gt_bboxes.numel() > 0 and bboxes.numel() > 0):
            if self.ignore_wrt_candidates:
                iofs = bbox_overlaps(bboxes, gt_bboxes_ignore, mode="iof").max(dim=1).values
            else:
                iofs = bbox_overlaps(gt_bboxes_ignore, bboxes, mode="iof").max(dim=0).values
            overlaps[:, iofs > self.ignore_iof_thr] = -1
        return self.assign_wrt_overlaps(overlaps, gt_labels)

    def assign_wrt_overlaps(self, overlaps: torch.Tensor, gt_labels: torch.Tensor | None = None) -> AssignResult:
        num_gts, num_bboxes = overlaps.shape
        assigned = overlaps.new_full((num_bboxes,), -1, dtype=torch.long)
        if num_gts == 0 or num_bboxes == 0:
            max_overlaps = overlaps.new_zeros((num_bboxes,))
            if num_gts == 0:
                assigned[:] = 0
            labels = None
            if gt_labels is not None:
                labels = overlaps.new_zeros((num_bboxes, gt_labels.shape[1]), dtype=torch.float32)
            return AssignResult(num_gts, assigned, max_overlaps, labels)
        max_overlaps, argmax = overlaps.max(dim=0)
        gt_max, _ = overlaps.max(dim=1)
        if isinstance(self.neg_iou_thr, float):
            assigned[(max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)] = 0
        else:
            lo, hi = self.neg_iou_thr
            assigned[(max_overlaps >= lo) & (max_overlaps < hi)] = 0
        pos = max_overlaps >= self.pos_iou_thr
        assigned[pos] = argmax[pos] + 1
        if self.match_low_quality:
            for i in range(num_gts):
                if gt_max[i] >= self.min_pos_iou:
                    if self.gt_max_assign_all:
                        assigned[overlaps[i, :] == gt_max[i]] = i + 1
                    else:
                        assigned[overlaps[i, :].argmax()] = i + 1
        labels = None
        if gt_labels is not None:
            if gt_labels.dim() != 2 or gt_labels.shape[1] < 2:
                raise ValueError(f"MaxIoUAssignerAVA needs multi-hot gt_labels [g, K], got {tuple(gt_labels.shape)}")
            labels = overlaps.new_zeros((num_bboxes, gt_labels.shape[1]), dtype=torch.float32)
            pos_inds = torch.nonzero(assigned > 0, as_tuple=False).squeeze(1)
            if pos_inds.numel() > 0:
                labels[pos_inds] = gt_labels[assigned[pos_inds] - 1].float()
        return AssignResult(num_gts, assigned, max_overlaps, labels)


# ----------------------------------------------------------------------------------------------- sampler
@dataclass
class SamplingResult:
    pos_inds: torch.Tensor
    neg_inds: torch.Tensor
    pos_bboxes: torch.Tensor
    neg_bboxes: torch.Tensor
    pos_is_gt: torch.Tensor
    pos_assigned_gt_inds: torch.Tensor
    pos_gt_bboxes: torch.Tensor
    pos_gt_labels: torch.Tensor | None

    @property
    def bboxes(self) -> torch.Tensor:
        """Positives first, then negatives."""
        return torch.cat([self.pos_bboxes, self.neg_bboxes])


@MODELS.register()
class RandomSampler:
    """mmdet 2.x ``RandomSampler`` (``BaseSampler.sample``): GTs prepended as proposals, random pos / neg subsets.

    Randomness comes from ``torch.randperm`` with ``self.generator`` (a ``torch.Generator``) when set, else the global
    torch RNG, so ``torch.manual_seed`` (``--seed``) makes sampling deterministic.
    """

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: float = -1, add_gt_as_proposals: bool = True,
                 generator: torch.Generator | None = None, **kwargs: Any) -> None:
        unknown = set(kwargs) - {"context"}
        if unknown:
            raise TypeError(f"RandomSampler got unexpected argument(s) {sorted(unknown)}")
        self.num = int(num)
        self.pos_fraction = float(pos_fraction)
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = add_gt_as_proposals
        self.generator = generator

    def random_choice(self, gallery: torch.Tensor, num: int) -> torch.Tensor:
        if num > gallery.numel():
            raise ValueError(f"cannot choose {num} of {gallery.numel()} items")
        perm = torch.randperm(gallery.numel(), generator=self.generator)[:num].to(gallery.device)
        return gallery[perm]

    def _sample_pos(self, assign_result: AssignResult, num_expected: int) -> torch.Tensor:
        pos = torch.nonzero(assign_result.gt_inds > 0, as_tuple=False).squeeze(1)
        return pos if pos.numel() <= num_expected else self.random_choice(pos, num_expected)

    def _sample_neg(self, assign_result: AssignResult, num_expected: int) -> torch.Tensor:
        neg = torch.nonzero(assign_result.gt_inds == 0, as_tuple=False).squeeze(1)
        return neg if neg.numel() <= num_expected else self.random_choice(neg, num_expected)

    def sample(self, assign_result: AssignResult, bboxes: torch.Tensor, gt_bboxes: torch.Tensor,
               gt_labels: torch.Tensor | None = None) -> SamplingResult:
        if bboxes.dim() < 2:
            bboxes = bboxes[None, :]
        bboxes = bboxes[:, :4]
        gt_flags = bboxes.new_zeros((bboxes.shape[0],), dtype=torch.uint8)
        if self.add_gt_as_proposals and gt_bboxes.shape[0] > 0:
            if gt_labels is None:
                raise ValueError("gt_labels must be given when add_gt_as_proposals is True")
            bboxes = torch.cat([gt_bboxes[:, :4].to(bboxes.dtype), bboxes], dim=0)
            assign_result.add_gt_(gt_labels)
            gt_flags = torch.cat([bboxes.new_ones(gt_bboxes.shape[0], dtype=torch.uint8), gt_flags])
        num_expected_pos = int(self.num * self.pos_fraction)
        pos_inds = self._sample_pos(assign_result, num_expected_pos).unique()
        num_pos = pos_inds.numel()
        num_expected_neg = self.num - num_pos
        if self.neg_pos_ub >= 0:
            ub = int(self.neg_pos_ub * max(1, num_pos))
            num_expected_neg = min(num_expected_neg, ub)
        neg_inds = self._sample_neg(assign_result, num_expected_neg).unique()
        pos_assigned = assign_result.gt_inds[pos_inds] - 1
        if gt_bboxes.numel() == 0:
            pos_gt_bboxes = gt_bboxes.new_zeros((0, 4))
        else:
            pos_gt_bboxes = gt_bboxes[:, :4][pos_assigned]
        pos_gt_labels = assign_result.labels[pos_inds] if assign_result.labels is not None else None
        return SamplingResult(pos_inds, neg_inds, bboxes[pos_inds], bboxes[neg_inds], gt_flags[pos_inds],
                              pos_assigned, pos_gt_bboxes, pos_gt_labels)


def bbox_target(pos_bboxes_list: Sequence[torch.Tensor], neg_bboxes_list: Sequence[torch.Tensor],
                gt_labels: Sequence[torch.Tensor], cfg: Mapping[str, Any] | None = None):
    """Targets for the AVA head: ``labels [sum(pos+neg), K]`` (negatives all-zero) and ``label_weights``."""
    if not len(pos_bboxes_list) == len(neg_bboxes_list) == len(gt_labels):
        raise ValueError("bbox_target: the per-image lists must have the same length")
    pos_weight = float((cfg or {}).get("pos_weight", 1.0))
    pos_weight = 1.0 if pos_weight <= 0 else pos_weight
    labels, weights = [], []
    for pos, neg, lab in zip(pos_bboxes_list, neg_bboxes_list, gt_labels):
        num_pos, num_neg = pos.shape[0], neg.shape[0]
        labels.append(F.pad(lab, (0, 0, 0, num_neg)))
        w = pos.new_zeros(num_pos + num_neg)
        w[:num_pos] = pos_weight
        w[num_pos:] = 1.0
        weights.append(w)
    return torch.cat(labels, 0), torch.cat(weights, 0)
