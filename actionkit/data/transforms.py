"""Spatial clip + box transforms (MMAction2 0.x ``augmentations.py`` semantics, names and arguments).

Frames travel as one uint8 array ``results['imgs']`` of shape ``[M, H, W, 3]`` (RGB) until ``Normalize``;
lists of frames are accepted and stacked.  Whole-clip work is done on the array: crops are slices, flips
are reversed views, ``Normalize`` fills one float32 array, ``Resize`` runs ``cv2.resize`` per frame (into the
output array).
``results['img_shape']`` is ``(h, w)``.

Boxes: every op that moves pixels also moves ``results['gt_bboxes']`` and ``results['proposals']``
(``[n, 4]`` ``x1, y1, x2, y2`` pixels) when present:
resize multiplies by ``[sx, sy, sx, sy]``; crops shift by the offset and clip to ``[0, size - 1]`` (boxes
that fall outside become degenerate and are kept); horizontal flip maps ``x1' = W - x2``, ``x2' = W - x1``.
Multi-view crops (``ThreeCrop``/``TenCrop``) and lazy mode do not take boxes (as in MMAction2) and raise.

Each geometric transform (``Resize``, ``RandomRescale``, the crops, ``Flip``) works in two halves:
``plan(results)`` draws its random numbers and updates every key but the pixels, and returns the pixel work
as a :class:`FrameOp` (the same for every frame; None when there is none); ``__call__`` is ``plan`` followed by
``FrameOp.apply_clip``.

Lazy mode (``lazy=True`` on Resize / RandomCrop / RandomResizedCrop / MultiScaleCrop / CenterCrop / Flip,
then ``Fuse``): crops accumulate as a float box in original-image coordinates in ``results['lazy']``;
``Fuse`` crops once at the rounded box, resizes once (bilinear unless a lazy Resize set another
interpolation) to the final ``img_shape`` and applies the flip.

Random draws use the same generators as MMAction2: numpy's global RNG for ``Flip``, ``RandomCrop``,
``RandomRescale`` and the ``RandomResizedCrop`` candidates; Python's ``random`` for ``MultiScaleCrop``'s
choices and the ``RandomResizedCrop`` offsets.

Why this module is long: it mirrors MMAction2 0.x's ``augmentations.py``: every transform the configs name
(about fifteen, each with its ``plan()`` / ``FrameOp`` split and box handling) under its 0.x name, in one
place, as a user of MMAction2 looks for them.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from actionkit.registry import PIPELINES

# Formatting ops (FormatShape, Collect, ToTensor, ...) live in pipeline.py; importing it here registers
# them whenever the pipeline registry loads its plugin modules.
from actionkit.data import pipeline as _pipeline  # noqa: F401

__all__ = ["FrameOp", "CropFrames", "ResizeFrames", "FlipFrames", "MultiCropFrames",
           "Resize", "RandomRescale", "RandomCrop", "RandomResizedCrop", "MultiScaleCrop",
           "CenterCrop", "ThreeCrop", "TenCrop", "Flip", "Normalize", "Fuse", "rescale_size",
           "imresize_clip"]

_INTERP = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _pair(x: Any, name: str, owner: str) -> tuple[int, int]:
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return int(x), int(x)
    if isinstance(x, (tuple, list)) and len(x) == 2:
        return int(x[0]), int(x[1])
    raise TypeError(f"{owner}: {name} must be an int or a pair (w, h), got {x!r}")


def _get_clip(results: dict) -> np.ndarray:
    imgs = results["imgs"]
    if not isinstance(imgs, np.ndarray):
        imgs = np.stack([np.asarray(i) for i in imgs])
        results["imgs"] = imgs
    return imgs


def _init_lazy_if_proper(results: dict, lazy: bool) -> None:
    """Set ``img_shape`` from the frames when missing; open the lazy record on the first lazy op."""
    if "img_shape" not in results:
        results["img_shape"] = tuple(_get_clip(results).shape[1:3])
    if lazy:
        if "lazy" not in results:
            img_h, img_w = results["img_shape"]
            results["lazy"] = {
                "original_shape": tuple(results["img_shape"]),
                "crop_bbox": np.array([0, 0, img_w, img_h], dtype=np.float32),
                "flip": False,
                "flip_direction": None,
                "interpolation": None,
            }
    elif "lazy" in results:
        raise RuntimeError("a non-lazy transform follows lazy ones: put Fuse after the lazy operations")


def _has_boxes(results: dict) -> bool:
    return results.get("gt_bboxes") is not None or results.get("proposals") is not None


def _check_boxes(box: np.ndarray, key: str) -> np.ndarray:
    box = np.asarray(box)
    if box.ndim != 2 or box.shape[1] != 4:
        raise ValueError(f"results['{key}'] must be [n, 4] boxes, got shape {box.shape}")
    return box


def _map_boxes(results: dict, fn) -> None:
    for key in ("gt_bboxes", "proposals"):
        if results.get(key) is not None:
            results[key] = fn(_check_boxes(results[key], key))


def box_crop(box: np.ndarray, crop_bbox: Sequence[float]) -> np.ndarray:
    """Shift boxes into a crop ``[x1, y1, x2, y2]`` and clip to ``[0, w-1] x [0, h-1]`` (kept if degenerate)."""
    x1, y1, x2, y2 = crop_bbox
    w, h = x2 - x1, y2 - y1
    out = box.copy()
    out[..., 0::2] = np.clip(box[..., 0::2] - x1, 0, w - 1)
    out[..., 1::2] = np.clip(box[..., 1::2] - y1, 0, h - 1)
    return out


def box_flip(box: np.ndarray, img_width: int) -> np.ndarray:
    """Horizontal flip of ``x1, y1, x2, y2`` boxes: ``x1' = W - x2``, ``x2' = W - x1``."""
    out = box.copy()
    out[..., 0::4] = img_width - box[..., 2::4]
    out[..., 2::4] = img_width - box[..., 0::4]
    return out


def rescale_size(old_size: tuple[int, int], scale: float | tuple[float, float]) -> tuple[int, int]:
    """mmcv ``rescale_size``: ``old_size=(w, h)`` -> new ``(w, h)`` keeping the aspect ratio.

    A number is a scale factor; a pair bounds the long edge by ``max(scale)`` and the short edge by
    ``min(scale)``.  The new size is ``int(w*sf + 0.5), int(h*sf + 0.5)``.
    """
    w, h = old_size
    if isinstance(scale, (int, float, np.integer, np.floating)):
        if scale <= 0:
            raise ValueError(f"invalid scale {scale}, must be positive")
        sf = float(scale)
    else:
        max_long_edge, max_short_edge = max(scale), min(scale)
        sf = min(max_long_edge / max(h, w), max_short_edge / min(h, w))
    return int(w * sf + 0.5), int(h * sf + 0.5)


def imresize_clip(imgs: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize every frame of ``[M, H, W, (C)]`` to ``size=(w, h)`` with ``cv2.resize`` (mmcv ``imresize``).

    A same-size resize returns the input unchanged (cv2 copies pixels unchanged in that case).
    """
    if interpolation not in _INTERP:
        raise ValueError(f"unknown interpolation {interpolation!r}; one of {sorted(_INTERP)}")
    new_w, new_h = size
    if imgs.shape[1] == new_h and imgs.shape[2] == new_w:
        return imgs
    out = np.empty((imgs.shape[0], new_h, new_w) + imgs.shape[3:], dtype=imgs.dtype)
    _resize_frames(imgs, out, _INTERP[interpolation])
    return out


def _resize_frames(imgs: np.ndarray, out: np.ndarray, flag: int) -> None:
    """``out[i] = cv2.resize(imgs[i])`` for every frame, written in place for 3-channel clips.

    One call per frame gives MMAction2's pixels (the same ``cv2.resize`` per image as mmcv) and keeps each call
    cache-sized; torch's uint8 bilinear ``interpolate`` is not used because it differs by one level.
    """
    size = (out.shape[2], out.shape[1])
    in_place = out.ndim == 4 and out.shape[3] == 3
    for i in range(imgs.shape[0]):
        if in_place:
            res = cv2.resize(imgs[i], size, dst=out[i], interpolation=flag)
            if i == 0 and not np.shares_memory(res, out):
                in_place = False  # this OpenCV build allocated instead: copy like the other clips
                out[i] = res
        else:
            out[i] = cv2.resize(imgs[i], size, interpolation=flag).reshape(out.shape[1:])


def _update_crop_quadruple(results: dict, left: int, top: int, new_w: int, new_h: int,
                           img_w: int, img_h: int) -> None:
    if "crop_quadruple" not in results:
        results["crop_quadruple"] = np.array([0, 0, 1, 1], dtype=np.float32)
    x_ratio, y_ratio = left / img_w, top / img_h
    w_ratio, h_ratio = new_w / img_w, new_h / img_h
    old_x, old_y, old_w, old_h = (float(v) for v in results["crop_quadruple"])
    results["crop_quadruple"] = np.array(
        [old_x + x_ratio * old_w, old_y + y_ratio * old_h, w_ratio * old_w, h_ratio * old_h],
        dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# The pixel work of a planned transform
# ----------------------------------------------------------------------------------------------
class FrameOp:
    """The pixel work of one transform call: the same on every frame of the clip.

    ``apply_clip(imgs)`` works on a whole ``[M, H, W, C]`` clip (what ``__call__`` does).
    """

    def apply_clip(self, imgs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class CropFrames(FrameOp):
    """A ``width`` x ``height`` window at ``(left, top)``: a view, no copy."""

    def __init__(self, left: int, top: int, width: int, height: int):
        self.left, self.top, self.width, self.height = left, top, width, height

    def apply_clip(self, imgs: np.ndarray) -> np.ndarray:
        return imgs[:, self.top:self.top + self.height, self.left:self.left + self.width]


class ResizeFrames(FrameOp):
    """``cv2.resize`` of every frame to ``size = (w, h)`` (none when the size is unchanged)."""

    def __init__(self, size: tuple[int, int], interpolation: str):
        self.size, self.interpolation = size, interpolation

    def apply_clip(self, imgs: np.ndarray) -> np.ndarray:
        return imresize_clip(imgs, self.size, self.interpolation)


class FlipFrames(FrameOp):
    """A reversed view along x (``horizontal``) or y; Flow clips also get their x-flow frames inverted."""

    def __init__(self, direction: str, invert_x_flow: bool = False):
        self.direction, self.invert_x_flow = direction, invert_x_flow

    def apply_clip(self, imgs: np.ndarray) -> np.ndarray:
        imgs = imgs[:, :, ::-1] if self.direction == "horizontal" else imgs[:, ::-1]
        if self.invert_x_flow:
            imgs = imgs.copy()
            imgs[0::2] = 255 - imgs[0::2]
        return imgs


class MultiCropFrames(FrameOp):
    """Several ``crop_w`` x ``crop_h`` windows (each followed by its horizontal flip when ``with_flip``).

    The clip comes out crop-major (all frames of view 0, then view 1, ...) as a list of per-frame views of the
    input (MMAction2's ``ThreeCrop`` / ``TenCrop`` also hand on a list): nothing is copied here, so that
    ``FormatShape`` reads each view once into the model's layout.  A later transform that needs one array stacks
    the list (``_get_clip``).
    """

    def __init__(self, offsets: Sequence[tuple[int, int]], crop_w: int, crop_h: int, with_flip: bool):
        self.offsets, self.crop_w, self.crop_h, self.with_flip = list(offsets), crop_w, crop_h, with_flip

    def _windows(self, frame: np.ndarray) -> list[np.ndarray]:
        out = []
        for x, y in self.offsets:
            crop = frame[..., y:y + self.crop_h, x:x + self.crop_w, :]
            out.append(crop)
            if self.with_flip:
                out.append(crop[..., ::-1, :])
        return out

    @property
    def num_views(self) -> int:
        return len(self.offsets) * (2 if self.with_flip else 1)

    def apply_clip(self, imgs: np.ndarray) -> list[np.ndarray]:
        return [frame for view in self._windows(imgs) for frame in view]


def _apply_plan(results: dict, op: FrameOp | None) -> dict:
    """``__call__`` of a planned transform: the pixel work on the whole clip, if there are pixels."""
    if op is not None and "imgs" in results:
        results["imgs"] = op.apply_clip(_get_clip(results))
    return results


# ----------------------------------------------------------------------------------------------
# Resize family
# ----------------------------------------------------------------------------------------------
@PIPELINES.register()
class Resize:
    """Resize the clip (and boxes).

    ``scale``: a positive number (scale factor, keep_ratio only) or a pair ``(w, h)``; a ``-1`` in the pair
    means "no bound": ``(-1, 256)`` becomes ``(inf, 256)``, i.e. short side 256.  With ``keep_ratio`` the
    new size is ``rescale_size((w, h), scale)``; otherwise exactly ``scale``.
    """

    def __init__(self, scale: float | Sequence[float], keep_ratio: bool = True,
                 interpolation: str = "bilinear", lazy: bool = False):
        if isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool):
            if scale <= 0:
                raise ValueError(f"Resize: invalid scale {scale}, must be positive")
            if not keep_ratio:
                raise ValueError("Resize: a scale factor needs keep_ratio=True")
            self.scale: float | tuple[float, float] = float(scale)
        elif isinstance(scale, (tuple, list)) and len(scale) == 2:
            long_edge, short_edge = max(scale), min(scale)
            if long_edge <= 0:
                raise ValueError(f"Resize: invalid scale {tuple(scale)}")
            if short_edge == -1:
                self.scale = (np.inf, long_edge)
                if not keep_ratio:
                    raise ValueError(f"Resize: scale {tuple(scale)} with -1 needs keep_ratio=True")
            elif short_edge <= 0:
                raise ValueError(f"Resize: invalid scale {tuple(scale)}")
            else:
                self.scale = (scale[0], scale[1])
        else:
            raise TypeError(f"Resize: scale must be a number or a pair, got {scale!r}")
        if interpolation not in _INTERP:
            raise ValueError(f"Resize: unknown interpolation {interpolation!r}; one of {sorted(_INTERP)}")
        self.keep_ratio = bool(keep_ratio)
        self.interpolation = interpolation
        self.lazy = bool(lazy)

    def __call__(self, results: dict) -> dict:
        return _apply_plan(results, self.plan(results))

    def plan(self, results: dict) -> FrameOp | None:
        _init_lazy_if_proper(results, self.lazy)
        if "scale_factor" not in results:
            results["scale_factor"] = np.array([1, 1], dtype=np.float32)
        img_h, img_w = results["img_shape"]
        if self.keep_ratio:
            new_w, new_h = rescale_size((img_w, img_h), self.scale)
        else:
            new_w, new_h = int(self.scale[0]), int(self.scale[1])
        scale_factor = np.array([new_w / img_w, new_h / img_h], dtype=np.float32)
        results["img_shape"] = (new_h, new_w)
        results["keep_ratio"] = self.keep_ratio
        results["scale_factor"] = results["scale_factor"] * scale_factor
        op = None
        if not self.lazy:
            op = ResizeFrames((new_w, new_h), self.interpolation)
        else:
            lazyop = results["lazy"]
            if lazyop["flip"]:
                raise NotImplementedError("lazy Resize after a lazy Flip: put Flip last")
            lazyop["interpolation"] = self.interpolation
        if _has_boxes(results):
            if self.lazy:
                raise ValueError("Resize: lazy mode does not support gt_bboxes/proposals")
            factor = np.concatenate([scale_factor, scale_factor])
            _map_boxes(results, lambda b: (b * factor).astype(np.result_type(b.dtype, np.float32)))
        return op

    def __repr__(self) -> str:
        return (f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio}, "
                f"interpolation={self.interpolation!r}, lazy={self.lazy})")


@PIPELINES.register()
class RandomRescale:
    """Resize so that the short side is ``randint(lo, hi + 1)`` (inclusive range), keeping the ratio."""

    def __init__(self, scale_range: Sequence[int], interpolation: str = "bilinear"):
        if len(scale_range) != 2 or not scale_range[0] < scale_range[1] or min(scale_range) <= 0:
            raise ValueError(f"RandomRescale: scale_range must be (lo, hi) with 0 < lo < hi, got {scale_range}")
        self.scale_range = (int(scale_range[0]), int(scale_range[1]))
        self.keep_ratio = True
        self.interpolation = interpolation

    def __call__(self, results: dict) -> dict:
        return _apply_plan(results, self.plan(results))

    def plan(self, results: dict) -> FrameOp | None:
        short_edge = int(np.random.randint(self.scale_range[0], self.scale_range[1] + 1))
        op = Resize((-1, short_edge), keep_ratio=True, interpolation=self.interpolation).plan(results)
        results["short_edge"] = short_edge
        return op

    def __repr__(self) -> str:
        return f"RandomRescale(scale_range={self.scale_range}, interpolation={self.interpolation!r})"


# ----------------------------------------------------------------------------------------------
# Single-view crops
# ----------------------------------------------------------------------------------------------
@PIPELINES.register()
class RandomCrop:
    """Square random crop of ``size``: offsets ``randint(0, H - size)`` (0 when H == size), same for x."""

    def __init__(self, size: int, lazy: bool = False):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
            raise TypeError(f"RandomCrop: size must be an int, got {size!r}")
        if size <= 0:
            raise ValueError(f"RandomCrop: size must be positive, got {size}")
        self.size = int(size)
        self.lazy = bool(lazy)

    def __call__(self, results: dict) -> dict:
        return _apply_plan(results, self.plan(results))

    def _crop(self, results: dict, left: int, top: int, new_w: int, new_h: int) -> FrameOp | None:
        """Shared crop bookkeeping: crop_bbox, img_shape, crop_quadruple, lazy box, boxes; the pixel op."""
        img_h, img_w = results["img_shape"]
        left, top, new_w, new_h = int(left), int(top), int(new_w), int(new_h)
        if left < 0 or top < 0 or left + new_w > img_w or top + new_h > img_h:
            raise ValueError(f"{type(self).__name__}: crop {new_w}x{new_h} at ({left}, {top}) does not fit "
                             f"in a {img_w}x{img_h} image")
        _update_crop_quadruple(results, left, top, new_w, new_h, img_w, img_h)
        crop_bbox = np.array([left, top, left + new_w, top + new_h])
        results["crop_bbox"] = crop_bbox
        results["img_shape"] = (new_h, new_w)
        op = None
        if not self.lazy:
            op = CropFrames(left, top, new_w, new_h)
        else:
            lazyop = results["lazy"]
            if lazyop["flip"]:
                raise NotImplementedError("lazy crop after a lazy Flip: put Flip last")
            l_left, l_top, l_right, l_bottom = (float(v) for v in lazyop["crop_bbox"])
            sx = (l_right - l_left) / img_w
            sy = (l_bottom - l_top) / img_h
            lazyop["crop_bbox"] = np.array(
                [l_left + left * sx, l_top + top * sy,
                 l_left + (left + new_w) * sx, l_top + (top + new_h) * sy], dtype=np.float32)
        if _has_boxes(results):
            if self.lazy:
                raise ValueError(f"{type(self).__name__}: lazy mode does not support gt_bboxes/proposals")
            _map_boxes(results, lambda b: box_crop(b, crop_bbox))
        return op

    def plan(self, results: dict) -> FrameOp | None:
        _init_lazy_if_proper(results, self.lazy)
        img_h, img_w = results["img_shape"]
        if self.size > img_h or self.size > img_w:
            raise ValueError(f"RandomCrop: size {self.size} exceeds the image {img_w}x{img_h}")
        y_offset = int(np.random.randint(0, img_h - self.size)) if img_h > self.size else 0
        x_offset = int(np.random.randint(0, img_w - self.size)) if img_w > self.size else 0
        return self._crop(results, x_offset, y_offset, self.size, self.size)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, lazy={self.lazy})"


@PIPELINES.register()
class RandomResizedCrop(RandomCrop):
    """Inception-style crop: area fraction ~ U(area_range), log-uniform aspect ratio; 10 tries, then the
    centred square of side ``min(H, W)``."""

    def __init__(self, area_range: Sequence[float] = (0.08, 1.0),
                 aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3), lazy: bool = False):
        if not 0 < area_range[0] <= area_range[1] <= 1:
            raise ValueError(f"RandomResizedCrop: area_range must satisfy 0 < a <= b <= 1, got {area_range}")
        if not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
            raise ValueError(f"RandomResizedCrop: bad aspect_ratio_range {aspect_ratio_range}")
        self.area_range = (float(area_range[0]), float(area_range[1]))
        self.aspect_ratio_range = (float(aspect_ratio_range[0]), float(aspect_ratio_range[1]))
        self.lazy = bool(lazy)

    @staticmethod
    def get_crop_bbox(img_shape: tuple[int, int], area_range: Sequence[float],
                      aspect_ratio_range: Sequence[float], max_attempts: int = 10) -> tuple[int, int, int, int]:
        img_h, img_w = img_shape
        area = img_h * img_w
        min_ar, max_ar = aspect_ratio_range
        aspect_ratios = np.exp(np.random.uniform(np.log(min_ar), np.log(max_ar), size=max_attempts))
        target_areas = np.random.uniform(*area_range, size=max_attempts) * area
        cand_w = np.round(np.sqrt(target_areas * aspect_ratios)).astype(np.int32)
        cand_h = np.round(np.sqrt(target_areas / aspect_ratios)).astype(np.int32)
        for i in range(max_attempts):
            crop_w, crop_h = int(cand_w[i]), int(cand_h[i])
            if crop_h <= img_h and crop_w <= img_w:
                x_offset = random.randint(0, img_w - crop_w)
                y_offset = random.randint(0, img_h - crop_h)
                return x_offset, y_offset, x_offset + crop_w, y_offset + crop_h
        crop_size = min(img_h, img_w)
        x_offset = (img_w - crop_size) // 2
        y_offset = (img_h - crop_size) // 2
        return x_offset, y_offset, x_offset + crop_size, y_offset + crop_size

    def plan(self, results: dict) -> FrameOp | None:
        _init_lazy_if_proper(results, self.lazy)
        left, top, right, bottom = self.get_crop_bbox(tuple(results["img_shape"]), self.area_range,
                                                      self.aspect_ratio_range)
        return self._crop(results, left, top, right - left, bottom - top)

    def __repr__(self) -> str:
        return (f"RandomResizedCrop(area_range={self.area_range}, "
                f"aspect_ratio_range={self.aspect_ratio_range}, lazy={self.lazy})")


@PIPELINES.register()
class MultiScaleCrop(RandomCrop):
    """TSN multi-scale crop.

    Crop sizes ``int(min(H, W) * s)`` for ``s`` in ``scales``; (w, h) pairs whose scale indices differ by at
    most ``max_wh_scale_gap`` are candidates (``random.choice``); a side within 3 px of ``input_size`` snaps
    to it.  Offsets: ``random.randint`` when ``random_crop``, otherwise ``random.choice`` among 5 (or 13)
    fixed offsets on the ``(W - cw)//4``, ``(H - ch)//4`` grid.
    """

    def __init__(self, input_size: int | Sequence[int], scales: Sequence[float] = (1,),
                 max_wh_scale_gap: int = 1, random_crop: bool = False, num_fixed_crops: int = 5,
                 lazy: bool = False):
        self.input_size = _pair(input_size, "input_size", "MultiScaleCrop")
        if not isinstance(scales, (tuple, list)) or not scales:
            raise TypeError(f"MultiScaleCrop: scales must be a non-empty tuple, got {scales!r}")
        if num_fixed_crops not in (5, 13):
            raise ValueError(f"MultiScaleCrop: num_fixed_crops must be 5 or 13, got {num_fixed_crops}")
        self.scales = tuple(scales)
        self.max_wh_scale_gap = int(max_wh_scale_gap)
        self.random_crop = bool(random_crop)
        self.num_fixed_crops = int(num_fixed_crops)
        self.lazy = bool(lazy)

    @staticmethod
    def fixed_offsets(img_w: int, img_h: int, crop_w: int, crop_h: int,
                      num_fixed_crops: int = 5) -> list[tuple[int, int]]:
        w_step = (img_w - crop_w) // 4
        h_step = (img_h - crop_h) // 4
        offsets = [
            (0, 0),  # upper left
            (4 * w_step, 0),  # upper right
            (0, 4 * h_step),  # lower left
            (4 * w_step, 4 * h_step),  # lower right
            (2 * w_step, 2 * h_step),  # center
        ]
        if num_fixed_crops == 13:
            offsets += [
                (0, 2 * h_step),  # center left
                (4 * w_step, 2 * h_step),  # center right
                (2 * w_step, 4 * h_step),  # lower center
                (2 * w_step, 0),  # upper center
                (1 * w_step, 1 * h_step),  # upper left quarter
                (3 * w_step, 1 * h_step),  # upper right quarter
                (1 * w_step, 3 * h_step),  # lower left quarter
                (3 * w_step, 3 * h_step),  # lower right quarter
            ]
        return offsets

    def candidate_sizes(self, img_h: int, img_w: int) -> list[list[int]]:
        base_size = min(img_h, img_w)
        crop_sizes = [int(base_size * s) for s in self.scales]
        return [[w, h] for i, h in enumerate(crop_sizes) for j, w in enumerate(crop_sizes)
                if abs(i - j) <= self.max_wh_scale_gap]

    def plan(self, results: dict) -> FrameOp | None:
        _init_lazy_if_proper(results, self.lazy)
        img_h, img_w = results["img_shape"]
        crop_size = list(random.choice(self.candidate_sizes(img_h, img_w)))
        for i in range(2):
            if abs(crop_size[i] - self.input_size[i]) < 3:
                crop_size[i] = self.input_size[i]
        crop_w, crop_h = crop_size
        if self.random_crop:
            x_offset = random.randint(0, img_w - crop_w)
            y_offset = random.randint(0, img_h - crop_h)
        else:
            x_offset, y_offset = random.choice(
                self.fixed_offsets(img_w, img_h, crop_w, crop_h, self.num_fixed_crops))
        op = self._crop(results, x_offset, y_offset, crop_w, crop_h)
        results["scales"] = self.scales
        return op

    def __repr__(self) -> str:
        return (f"MultiScaleCrop(input_size={self.input_size}, scales={self.scales}, "
                f"max_wh_scale_gap={self.max_wh_scale_gap}, random_crop={self.random_crop}, "
                f"num_fixed_crops={self.num_fixed_crops}, lazy={self.lazy})")


@PIPELINES.register()
class CenterCrop(RandomCrop):
    """Centre crop: ``left = (W - cw)//2``, ``top = (H - ch)//2``; ``crop_size`` is an int or ``(w, h)``."""

    def __init__(self, crop_size: int | Sequence[int], lazy: bool = False):
        self.crop_size = _pair(crop_size, "crop_size", "CenterCrop")
        self.lazy = bool(lazy)

    def plan(self, results: dict) -> FrameOp | None:
        _init_lazy_if_proper(results, self.lazy)
        img_h, img_w = results["img_shape"]
        crop_w, crop_h = self.crop_size
        left = (img_w - crop_w) // 2
        top = (img_h - crop_h) // 2
        return self._crop(results, left, top, crop_w, crop_h)

    def __repr__(self) -> str:
        return f"CenterCrop(crop_size={self.crop_size}, lazy={self.lazy})"


# ----------------------------------------------------------------------------------------------
# Multi-view crops (test time); output is crop-major: all M frames of crop 0, then crop 1, ...
# ----------------------------------------------------------------------------------------------
def _multi_crop(results: dict, offsets: list[tuple[int, int]], crop_w: int, crop_h: int,
                with_flip: bool, owner: str) -> FrameOp:
    if _has_boxes(results):
        raise ValueError(f"{owner}: multi-view crops do not support gt_bboxes/proposals")
    _init_lazy_if_proper(results, False)
    op = MultiCropFrames(offsets, crop_w, crop_h, with_flip)
    m = _num_frames(results)
    bboxes = [[x, y, x + crop_w, y + crop_h] for x, y in offsets for _ in range(2 if with_flip else 1)
              for _ in range(m)]
    results["crop_bbox"] = np.array(bboxes)
    results["img_shape"] = (crop_h, crop_w)
    return op


def _num_frames(results: dict) -> int:
    """Frames in the clip: ``len(imgs)``, or ``len(frame_inds)`` while the frames are still to come."""
    if "imgs" in results:
        return _get_clip(results).shape[0]
    return int(np.asarray(results["frame_inds"]).size)


@PIPELINES.register()
class ThreeCrop:
    """Three crops along the long side: x-offsets ``[0, 2*step, step]`` (left, right, middle) when
    ``crop_h == H`` (else the same along y); ``step = (W - cw)//2``."""

    def __init__(self, crop_size: int | Sequence[int]):
        self.crop_size = _pair(crop_size, "crop_size", "ThreeCrop")

    def __call__(self, results: dict) -> dict:
        return _apply_plan(results, self.plan(results))

    def plan(self, results: dict) -> FrameOp:
        _init_lazy_if_proper(results, False)
        img_h, img_w = results["img_shape"]
        crop_w, crop_h = self.crop_size
        if crop_h == img_h and crop_w <= img_w:
            w_step = (img_w - crop_w) // 2
            offsets = [(0, 0), (2 * w_step, 0), (w_step, 0)]
        elif crop_w == img_w and crop_h <= img_h:
            h_step = (img_h - crop_h) // 2
            offsets = [(0, 0), (0, 2 * h_step), (0, h_step)]
        else:
            raise ValueError(f"ThreeCrop: crop {crop_w}x{crop_h} needs crop_h == H or crop_w == W "
                             f"(and to fit) for a {img_w}x{img_h} clip")
        return _multi_crop(results, offsets, crop_w, crop_h, False, "ThreeCrop")

    def __repr__(self) -> str:
        return f"ThreeCrop(crop_size={self.crop_size})"


@PIPELINES.register()
class TenCrop:
    """Five crops (corners + centre on the ``//4`` grid) each followed by its horizontal flip."""

    def __init__(self, crop_size: int | Sequence[int]):
        self.crop_size = _pair(crop_size, "crop_size", "TenCrop")

    def __call__(self, results: dict) -> dict:
        return _apply_plan(results, self.plan(results))

    def plan(self, results: dict) -> FrameOp:
        _init_lazy_if_proper(results, False)
        img_h, img_w = results["img_shape"]
        crop_w, crop_h = self.crop_size
        if crop_w > img_w or crop_h > img_h:
            raise ValueError(f"TenCrop: crop {crop_w}x{crop_h} exceeds the {img_w}x{img_h} clip")
        offsets = MultiScaleCrop.fixed_offsets(img_w, img_h, crop_w, crop_h, 5)
        return _multi_crop(results, offsets, crop_w, crop_h, True, "TenCrop")

    def __repr__(self) -> str:
        return f"TenCrop(crop_size={self.crop_size})"


# ----------------------------------------------------------------------------------------------
# Flip, Normalize, Fuse
# ----------------------------------------------------------------------------------------------
@PIPELINES.register()
class Flip:
    """Flip the whole clip with probability ``flip_ratio`` (one ``np.random.rand()`` draw per call).

    ``flip_label_map`` remaps ``results['label']`` when flipped; horizontal flips move boxes.  Flow clips
    (``modality='Flow'``, x/y frames interleaved) get their x-flow frames (even indices) inverted.
    """

    _directions = ("horizontal", "vertical")

    def __init__(self, flip_ratio: float = 0.5, direction: str = "horizontal",
                 flip_label_map: Mapping[int, int] | None = None, lazy: bool = False):
        if direction not in self._directions:
            raise ValueError(f"Flip: direction must be one of {self._directions}, got {direction!r}")
        self.flip_ratio = float(flip_ratio)
        self.direction = direction
        self.flip_label_map = ({int(k): int(v) for k, v in flip_label_map.items()}
                               if flip_label_map is not None else None)
        self.lazy = bool(lazy)

    def __call__(self, results: dict) -> dict:
        return _apply_plan(results, self.plan(results))

    def plan(self, results: dict) -> FrameOp | None:
        _init_lazy_if_proper(results, self.lazy)
        modality = results.get("modality", "RGB")
        if modality == "Flow" and self.direction != "horizontal":
            raise ValueError("Flip: only horizontal flips are supported for Flow")
        flip = bool(np.random.rand() < self.flip_ratio)
        results["flip"] = flip
        results["flip_direction"] = self.direction
        if self.flip_label_map is not None and flip and "label" in results:
            label = results["label"]
            if isinstance(label, (int, np.integer)):
                results["label"] = self.flip_label_map.get(int(label), label)
        op = None
        if not self.lazy:
            if flip:
                op = FlipFrames(self.direction, invert_x_flow=modality == "Flow")
        else:
            lazyop = results["lazy"]
            if lazyop["flip"]:
                raise NotImplementedError("use one lazy Flip")
            lazyop["flip"] = flip
            lazyop["flip_direction"] = self.direction
        if flip and _has_boxes(results):
            if self.lazy:
                raise ValueError("Flip: lazy mode does not support gt_bboxes/proposals")
            if self.direction != "horizontal":
                raise ValueError("Flip: boxes are only supported with direction='horizontal'")
            width = results["img_shape"][1]
            _map_boxes(results, lambda b: box_flip(b, width))
        return op

    def __repr__(self) -> str:
        return (f"Flip(flip_ratio={self.flip_ratio}, direction={self.direction!r}, "
                f"flip_label_map={self.flip_label_map}, lazy={self.lazy})")


@PIPELINES.register()
class Normalize:
    """``(img - mean) / std`` per channel into float32 (RGB clips).

    Numbers match MMAction2 0.x bit for bit because the same calls run: each frame is copied into a
    float32 buffer, then ``cv2.subtract(img, float64(mean))`` and ``cv2.multiply(img, 1/float64(std))`` in
    place (``mmcv.imnormalize_``; cv2 computes in float64 for a float64 scalar and rounds to float32 after
    each op; ``mean``/``std`` are first stored as float32).  The whole clip goes into one preallocated
    ``[M, H, W, 3]`` float32 array, frame by frame (cache-sized pieces; the input may be float after a
    transform).  When the engine moves this step to the device (``data.preprocess.split_normalize``),
    ``BatchNormalize`` gives the same numbers for uint8 clips through a 256-entry table built with these very
    calls.  1.x's torch ``(x - mean)/std`` differs from these numbers by <= 1 ulp.
    ``to_bgr=True`` reverses the channel order before normalising (mean/std are then given in BGR order).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_bgr: bool = False):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)
        if self.mean.shape != (3,) or self.std.shape != (3,):
            raise ValueError(f"Normalize: mean and std need 3 values (RGB), got {mean} / {std}")
        if np.any(self.std == 0):
            raise ValueError(f"Normalize: std must be non-zero, got {std}")
        self.to_bgr = bool(to_bgr)
        self._mean64 = np.float64(self.mean.reshape(1, -1))
        self._stdinv64 = 1 / np.float64(self.std.reshape(1, -1))

    def __call__(self, results: dict) -> dict:
        modality = results.get("modality", "RGB")
        if modality != "RGB":
            raise ValueError(f"Normalize: only RGB clips are supported, got modality {modality!r}")
        imgs = _get_clip(results)
        if imgs.ndim != 4 or imgs.shape[-1] != 3:
            raise ValueError(f"Normalize: expected imgs [M, H, W, 3], got shape {imgs.shape}")
        if self.to_bgr:
            imgs = imgs[..., ::-1]
        out = np.empty(imgs.shape, dtype=np.float32)
        for i in range(imgs.shape[0]):
            frame = out[i]
            frame[...] = imgs[i]
            cv2.subtract(frame, self._mean64, frame)
            cv2.multiply(frame, self._stdinv64, frame)
        results["imgs"] = out
        results["img_norm_cfg"] = dict(mean=self.mean, std=self.std, to_bgr=self.to_bgr)
        return results

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()}, to_bgr={self.to_bgr})"


@PIPELINES.register()
class Fuse:
    """Apply the accumulated lazy ops: crop once at the rounded box, resize once to ``img_shape``, flip."""

    def __init__(self):
        pass

    def __call__(self, results: dict) -> dict:
        if "lazy" not in results:
            raise ValueError("Fuse: no lazy operation before it (set lazy=True on the preceding ops)")
        lazyop = results.pop("lazy")
        imgs = _get_clip(results)
        left, top, right, bottom = np.round(lazyop["crop_bbox"]).astype(int)
        imgs = imgs[:, top:bottom, left:right]
        img_h, img_w = results["img_shape"]
        interpolation = lazyop["interpolation"] or "bilinear"
        flag = _INTERP[interpolation]
        out = np.empty((imgs.shape[0], img_h, img_w) + imgs.shape[3:], dtype=imgs.dtype)
        _resize_frames(imgs, out, flag)  # mmcv resizes even when the size is unchanged (a copy)
        if lazyop["flip"]:
            out = out[:, :, ::-1] if lazyop["flip_direction"] == "horizontal" else out[:, ::-1]
        results["imgs"] = out
        return results

    def __repr__(self) -> str:
        return "Fuse()"
