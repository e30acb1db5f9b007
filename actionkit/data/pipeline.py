"""``Compose`` and the formatting ops (MMAction2 0.x ``formatting.py`` names and arguments).

* ``Compose(transforms)``: builds config dicts through ``PIPELINES`` (errors name ``pipeline[i]``) and runs
  exactly those transforms, in order, on a ``results`` dict; a transform returning ``None`` stops the chain.
* ``FormatShape(input_format, collapse=False)``: ``[M,H,W,C]`` -> ``NCTHW`` ``[crops*clips, C, L, H, W]``
  (crop-major view order) or ``NCHW`` ``[M, C, H, W]``; ``collapse=True`` drops the leading 1.  uint8 and
  float32 clips alike (:func:`clip_to_ncthw`).
* ``Collect(keys, meta_keys, meta_name='img_metas', nested=False)``: the listed keys plus a plain meta dict.
* ``ToTensor(keys)``, ``ImageToTensor(keys)``, ``Rename(mapping)``, ``ToDataContainer(fields)`` (a no-op:
  there is no DataContainer here; the AVA collate keeps per-sample lists itself).

What a dataset returns depends only on its pipeline.  Moving ``Normalize`` after the device copy is the
engine's explicit choice (``actionkit.data.preprocess.split_normalize``, used by ``engine.loaders``).

This module is imported by ``actionkit.data.transforms`` so that its ops are registered whenever the
pipeline registry loads its plugins.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

import cv2
import numpy as np
import torch

from actionkit.registry import PIPELINES, ConfigError

__all__ = ["Compose", "FormatShape", "Collect", "ToTensor", "ImageToTensor", "Rename",
           "ToDataContainer", "to_tensor", "clip_to_ncthw"]


class Compose:
    """Run the configured transforms in order on a ``results`` dict; a transform returning ``None`` stops the
    chain (and the call returns ``None``).  ``transforms`` holds the built transforms, exactly as configured."""

    def __init__(self, transforms: Sequence[Mapping[str, Any] | Callable[[dict], Any]],
                 filename: str | None = None):
        if isinstance(transforms, (Mapping, str)) or not isinstance(transforms, Sequence):
            raise ConfigError(f"a pipeline is a list of transforms, got {type(transforms).__name__}",
                              "pipeline", filename)
        self.transforms: list[Callable[[dict], Any]] = []
        for i, t in enumerate(transforms):
            if isinstance(t, Mapping):
                self.transforms.append(PIPELINES.build(t, key=f"pipeline[{i}]", filename=filename))
            elif callable(t):
                self.transforms.append(t)
            else:
                raise ConfigError(f"expected a dict with 'type' or a callable, got {type(t).__name__}",
                                  f"pipeline[{i}]", filename)

    def __call__(self, data: dict) -> dict | None:
        for t in self.transforms:
            data = t(data)
            if data is None:
                return None
        return data

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}" for t in self.transforms)
        return f"Compose({inner}\n)"


def _split_frame(frame: np.ndarray, planes: list[np.ndarray], scratch: np.ndarray) -> Sequence[np.ndarray]:
    """Write the channels of one ``[H, W, 3]`` frame (any view: crop, flip, reversed channels) into ``planes``."""
    flip_code = None
    if frame.strides[0] < 0 and frame.strides[1] < 0:
        frame, flip_code = frame[::-1, ::-1], -1
    elif frame.strides[1] < 0:
        frame, flip_code = frame[:, ::-1], 1
    elif frame.strides[0] < 0:
        frame, flip_code = frame[::-1], 0
    if frame.strides[2] < 0:
        frame, planes = frame[:, :, ::-1], planes[::-1]
    if flip_code is not None:
        # a flip is a permutation of pixels: cv2.flip into a cache-sized buffer equals numpy's reversed view
        cv2.flip(frame, flip_code, dst=scratch)
        frame = scratch
    elif not frame.flags.c_contiguous:
        # a strided view (a crop) is copied into the cache-sized scratch first: cv2.split of a strided view is
        # slow (benchmarks/frame_ops.py)
        np.copyto(scratch, frame)
        frame = scratch
    return cv2.split(frame, planes)


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _split_into(out: np.ndarray, v: int, t: int, frame: np.ndarray, reverse: bool, scratch: np.ndarray,
                check: bool) -> None:
    """Write ``frame``'s channels (reversed when ``reverse``) into ``out[v, :, t]`` of a ``[V, C, L, H, W]`` clip;
    ``check``: make sure that ``cv2.split`` wrote there (done once per clip)."""
    planes = [out[v, 0, t], out[v, 1, t], out[v, 2, t]]
    written = _split_frame(frame, planes[::-1] if reverse else planes, scratch)
    if check and {_address(a) for a in written} != {_address(a) for a in planes}:
        raise RuntimeError("cv2.split did not write into the given planes (unexpected OpenCV behaviour)")


def _is_rgb_frame_list(imgs: Any) -> bool:
    """A non-empty list / tuple of ``[H, W, 3]`` uint8 or float32 arrays of one shape and dtype."""
    if not isinstance(imgs, (list, tuple)) or not imgs or not isinstance(imgs[0], np.ndarray):
        return False
    first = imgs[0]
    return (first.ndim == 3 and first.shape[2] == 3 and first.dtype in (np.uint8, np.float32)
            and all(isinstance(f, np.ndarray) and f.shape == first.shape and f.dtype == first.dtype for f in imgs))


def clip_to_ncthw(imgs: np.ndarray | Sequence[np.ndarray], clip_len: int, reverse_channels: bool = False,
                  out: np.ndarray | None = None) -> np.ndarray:
    """``[V*L, H, W, C]`` (any view, or a list of ``V*L`` frames ``[H, W, 3]``) -> C-contiguous
    ``[V, C, L, H, W]`` (``FormatShape('NCTHW')``'s layout).

    3-channel uint8/float32 clips are split frame by frame with ``cv2.split`` straight into the output planes,
    undoing crop/flip views on the way (one pass over the pixels); other clips go through numpy's transpose
    (the same values).  ``reverse_channels`` gives the channels in reverse order (``to_bgr``).  ``out``:
    where to write (C-contiguous, of that shape and dtype); a new array when None.
    """
    if isinstance(imgs, (list, tuple)):
        if not _is_rgb_frame_list(imgs):
            imgs = np.stack([np.asarray(i) for i in imgs])
    if isinstance(imgs, (list, tuple)):
        m, (h, w, c), dtype = len(imgs), imgs[0].shape, imgs[0].dtype
    else:
        (m, h, w, c), dtype = imgs.shape, imgs.dtype
    imgs_dtype = dtype
    views = m // clip_len
    if out is None:
        out = np.empty((views, c, clip_len, h, w), dtype=imgs_dtype)
    elif out.shape != (views, c, clip_len, h, w) or out.dtype != imgs_dtype or not out.flags.c_contiguous:
        raise ValueError(f"clip_to_ncthw: out must be C-contiguous {imgs_dtype} {(views, c, clip_len, h, w)}, "
                         f"got {out.dtype} {out.shape}")
    if c != 3 or imgs_dtype not in (np.uint8, np.float32) or m == 0:
        x = imgs.reshape(views, clip_len, h, w, c).transpose(0, 4, 1, 2, 3)
        np.copyto(out, x[:, ::-1] if reverse_channels else x)
        return out
    scratch = np.empty((h, w, c), dtype=imgs_dtype)
    for i in range(m):
        _split_into(out, *divmod(i, clip_len), imgs[i], reverse_channels, scratch, check=i == 0)
    return out


def to_tensor(data: Any) -> torch.Tensor:
    """numpy / sequence / scalar -> tensor.

    Deviation from mmcv's ``to_tensor``, following docs/DEVELOPING.md (recognition items carry
    ``'label': Tensor[] long``): a Python/numpy int scalar becomes a 0-d ``int64`` tensor (mmcv: shape
    ``[1]``) and a float scalar a 0-d ``float32`` tensor, so the default collate gives ``label`` ``[B]``.
    """
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous or any(st < 0 for st in data.strides):
            data = np.ascontiguousarray(data)
        return torch.from_numpy(data)
    if isinstance(data, (bool, np.bool_)):
        return torch.tensor(bool(data))
    if isinstance(data, (int, np.integer)):
        return torch.tensor(int(data), dtype=torch.int64)
    if isinstance(data, (float, np.floating)):
        return torch.tensor(float(data), dtype=torch.float32)
    if isinstance(data, Sequence) and not isinstance(data, str):
        return torch.tensor(data)
    raise TypeError(f"type {type(data).__name__} cannot be converted to a tensor")


@PIPELINES.register()
class ToTensor:
    """Convert ``results[k]`` for every ``k`` in ``keys`` to a ``torch.Tensor``."""

    def __init__(self, keys: Sequence[str]):
        self.keys = [keys] if isinstance(keys, str) else list(keys)

    def __call__(self, results: dict) -> dict:
        for key in self.keys:
            if key not in results:
                raise KeyError(f"ToTensor: results has no key {key!r} (keys: {sorted(results)})")
            results[key] = to_tensor(results[key])
        return results

    def __repr__(self) -> str:
        return f"ToTensor(keys={self.keys})"


@PIPELINES.register()
class ImageToTensor:
    """``[H,W,C]`` image -> ``[C,H,W]`` tensor for every key."""

    def __init__(self, keys: Sequence[str]):
        self.keys = [keys] if isinstance(keys, str) else list(keys)

    def __call__(self, results: dict) -> dict:
        for key in self.keys:
            results[key] = to_tensor(np.ascontiguousarray(np.asarray(results[key]).transpose(2, 0, 1)))
        return results

    def __repr__(self) -> str:
        return f"ImageToTensor(keys={self.keys})"


@PIPELINES.register()
class Rename:
    """Rename keys: ``mapping={'imgs': 'img'}``; absent keys are skipped, clobbering is an error."""

    def __init__(self, mapping: Mapping[str, str]):
        if not isinstance(mapping, Mapping):
            raise TypeError(f"Rename: mapping must be a dict, got {type(mapping).__name__}")
        for k, v in mapping.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"Rename: keys and new names must be str, got {k!r} -> {v!r}")
        self.mapping = dict(mapping)

    def __call__(self, results: dict) -> dict:
        for key, value in self.mapping.items():
            if key in results:
                if value in results:
                    raise KeyError(f"Rename: the new name {value!r} already exists in results")
                results[value] = results.pop(key)
        return results

    def __repr__(self) -> str:
        return f"Rename(mapping={self.mapping})"


@PIPELINES.register()
class ToDataContainer:
    """Accepted for config compatibility; does nothing (no mmcv DataContainer in actionkit)."""

    def __init__(self, fields: Any = ()):
        self.fields = fields

    def __call__(self, results: dict) -> dict:
        return results

    def __repr__(self) -> str:
        return f"ToDataContainer(fields={self.fields})"


_DEFAULT_META_KEYS = ("filename", "label", "original_shape", "img_shape", "pad_shape",
                      "flip_direction", "img_norm_cfg")


@PIPELINES.register()
class Collect:
    """Keep ``keys``; gather ``meta_keys`` into ``data[meta_name]`` (a plain dict); ``nested`` wraps in lists."""

    def __init__(self, keys: Sequence[str], meta_keys: Sequence[str] = _DEFAULT_META_KEYS,
                 meta_name: str = "img_metas", nested: bool = False):
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.meta_keys = [meta_keys] if isinstance(meta_keys, str) else list(meta_keys)
        self.meta_name = meta_name
        self.nested = bool(nested)

    def __call__(self, results: dict) -> dict:
        data = {}
        for key in self.keys:
            if key not in results:
                raise KeyError(f"Collect: results has no key {key!r} (keys: {sorted(results)})")
            data[key] = results[key]
        if self.meta_keys:
            meta = {}
            for key in self.meta_keys:
                if key not in results:
                    raise KeyError(f"Collect: results has no meta key {key!r} (keys: {sorted(results)})")
                meta[key] = results[key]
            data[self.meta_name] = meta
        if self.nested:
            data = {k: [v] for k, v in data.items()}
        return data

    def __repr__(self) -> str:
        return (f"Collect(keys={self.keys}, meta_keys={self.meta_keys}, meta_name={self.meta_name!r}, "
                f"nested={self.nested})")


@PIPELINES.register()
class FormatShape:
    """Arrange the clip array for the model.

    ``NCTHW``: ``[M,H,W,C]`` with ``M = crops*clips*L`` -> reshape ``(crops, clips, L, H, W, C)`` ->
    transpose ``(crops, clips, C, L, H, W)`` -> ``[crops*clips, C, L, H, W]`` (view ``v = crop*clips + clip``).
    ``NCHW``: ``[M, C, H, W]``.  ``collapse=True`` requires ``num_clips == 1`` and a single view and
    returns ``[C, L, H, W]`` (AVA).  Sets ``results['input_shape']``.
    """

    _FORMATS = ("NCTHW", "NCHW")

    def __init__(self, input_format: str, collapse: bool = False):
        if input_format not in self._FORMATS:
            raise ValueError(f"FormatShape: input_format must be one of {self._FORMATS}, got {input_format!r}")
        self.input_format = input_format
        self.collapse = bool(collapse)

    def _check_collapse(self, results: dict) -> None:
        if self.collapse and results.get("num_clips", 1) != 1:
            raise ValueError(f"FormatShape(collapse=True) needs num_clips == 1, got {results['num_clips']}")

    def ncthw_clip_len(self, results: dict, m: int) -> int:
        """``clip_len`` after checking that ``m`` frames split into ``num_clips * clip_len`` groups."""
        self._check_collapse(results)
        num_clips = int(results["num_clips"])
        clip_len = int(results["clip_len"])
        if m % (num_clips * clip_len):
            raise ValueError(f"FormatShape: {m} frames is not a multiple of num_clips*clip_len "
                             f"= {num_clips}*{clip_len}")
        return clip_len

    def collapse_views(self, imgs: np.ndarray) -> np.ndarray:
        if not self.collapse:
            return imgs
        if imgs.shape[0] != 1:
            raise ValueError(f"FormatShape(collapse=True) needs a single view, got {imgs.shape[0]}")
        return imgs[0]

    def __call__(self, results: dict) -> dict:
        imgs = results["imgs"]
        if self.input_format == "NCTHW" and _is_rgb_frame_list(imgs):
            # a list of per-frame views (multi-view crops): read once, straight into the output layout
            results["imgs"] = imgs = self.collapse_views(clip_to_ncthw(imgs, self.ncthw_clip_len(results, len(imgs))))
            results["input_shape"] = imgs.shape
            return results
        if not isinstance(imgs, np.ndarray):
            imgs = np.stack([np.asarray(i) for i in imgs])
        if imgs.ndim != 4:
            raise ValueError(f"FormatShape: expected imgs [M,H,W,C], got shape {imgs.shape}")
        if self.input_format == "NCTHW":
            imgs = clip_to_ncthw(imgs, self.ncthw_clip_len(results, imgs.shape[0]))
        else:  # NCHW
            self._check_collapse(results)
            imgs = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))
        imgs = self.collapse_views(imgs)
        results["imgs"] = imgs
        results["input_shape"] = imgs.shape
        return results

    def __repr__(self) -> str:
        return f"FormatShape(input_format={self.input_format!r}, collapse={self.collapse})"
