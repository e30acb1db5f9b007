"""``Compose`` and the formatting ops (MMAction2 0.x ``formatting.py`` names and arguments).

* ``Compose(transforms)``: builds config dicts through ``PIPELINES`` (errors name ``pipeline[i]``).
* ``FormatShape(input_format, collapse=False)``: ``[M,H,W,C]`` -> ``NCTHW`` ``[crops*clips, C, L, H, W]``
  (crop-major view order) or ``NCHW`` ``[M, C, H, W]``; ``collapse=True`` drops the leading 1.
* ``Collect(keys, meta_keys, meta_name='img_metas', nested=False)``: the listed keys plus a plain meta dict.
* ``ToTensor(keys)``, ``ImageToTensor(keys)``, ``Rename(mapping)``, ``ToDataContainer(fields)`` (a no-op:
  there is no DataContainer here; the AVA collate keeps per-sample lists itself).

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
           "ToDataContainer", "to_tensor"]


class Compose:
    """Run transforms in order on a ``results`` dict; a transform returning ``None`` stops the chain."""

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

        self._run = _fuse_normalize_format(self.transforms)

    def __call__(self, data: dict) -> dict | None:
        for t in self._run:
            data = t(data)
            if data is None:
                return None
        return data

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}" for t in self.transforms)
        return f"Compose({inner}\n)"


def _fuse_normalize_format(transforms: list) -> list:
    """Replace each ``Normalize`` directly followed by ``FormatShape('NCTHW')`` with one fused step."""
    out: list = []
    i = 0
    while i < len(transforms):
        t = transforms[i]
        nxt = transforms[i + 1] if i + 1 < len(transforms) else None
        if (type(t).__name__ == "Normalize" and hasattr(t, "_mean64") and isinstance(nxt, FormatShape)
                and nxt.input_format == "NCTHW"):
            out.append(NormalizeFormatShape(t, nxt))
            i += 2
        else:
            out.append(t)
            i += 1
    return out


class NormalizeFormatShape:
    """``Normalize`` then ``FormatShape('NCTHW')`` with the same numbers, several times faster.

    The clip is rearranged while still uint8 (a quarter of the bytes to move) and then normalised
    with a per-channel 256-entry lookup table that was computed with the very ``cv2.subtract`` /
    ``cv2.multiply`` calls of ``Normalize``: a uint8 pixel can only take 256 values, so the table
    reproduces ``Normalize`` bit for bit.  Non-uint8 input falls back to the two steps.
    """

    def __init__(self, normalize, format_shape: "FormatShape"):
        self.normalize = normalize
        self.format_shape = format_shape
        table = np.arange(256, dtype=np.float32).reshape(1, 256, 1).repeat(3, axis=2)
        cv2.subtract(table, normalize._mean64, table)
        cv2.multiply(table, normalize._stdinv64, table)
        self._luts = [np.ascontiguousarray(table[0, :, c]).reshape(1, 256) for c in range(3)]

    def __call__(self, results: dict) -> dict:
        imgs = results.get("imgs")
        if not (isinstance(imgs, np.ndarray) and imgs.dtype == np.uint8 and imgs.ndim == 4 and imgs.shape[-1] == 3
                and results.get("modality", "RGB") == "RGB"):
            return self.format_shape(self.normalize(results))
        if self.normalize.to_bgr:
            results["imgs"] = imgs[..., ::-1]
        results = self.format_shape(results)
        x = results["imgs"]  # uint8 [V, C, T, H, W] (or [C, T, H, W] collapsed)
        planes = x.reshape((-1,) + x.shape[-4:]) if x.ndim == 5 else x[None]
        out = np.empty(planes.shape, dtype=np.float32)
        width = planes.shape[-1]
        for v in range(planes.shape[0]):
            for c in range(planes.shape[1]):
                cv2.LUT(planes[v, c].reshape(-1, width), self._luts[c], dst=out[v, c].reshape(-1, width))
        results["imgs"] = out.reshape(x.shape)
        results["img_norm_cfg"] = dict(mean=self.normalize.mean, std=self.normalize.std, to_bgr=self.normalize.to_bgr)
        return results

    def __repr__(self) -> str:
        return f"NormalizeFormatShape({self.normalize!r}, {self.format_shape!r})"


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

    def __call__(self, results: dict) -> dict:
        imgs = results["imgs"]
        if not isinstance(imgs, np.ndarray):
            imgs = np.stack([np.asarray(i) for i in imgs])
        if imgs.ndim != 4:
            raise ValueError(f"FormatShape: expected imgs [M,H,W,C], got shape {imgs.shape}")
        if self.collapse and results.get("num_clips", 1) != 1:
            raise ValueError(f"FormatShape(collapse=True) needs num_clips == 1, got {results['num_clips']}")
        if self.input_format == "NCTHW":
            num_clips = int(results["num_clips"])
            clip_len = int(results["clip_len"])
            m = imgs.shape[0]
            if m % (num_clips * clip_len):
                raise ValueError(f"FormatShape: {m} frames is not a multiple of num_clips*clip_len "
                                 f"= {num_clips}*{clip_len}")
            x = imgs.reshape((-1, num_clips, clip_len) + imgs.shape[1:])
            x = x.transpose(0, 1, 5, 2, 3, 4)
            imgs = np.ascontiguousarray(x).reshape((-1,) + x.shape[2:])
        else:  # NCHW
            imgs = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))
        if self.collapse:
            if imgs.shape[0] != 1:
                raise ValueError(f"FormatShape(collapse=True) needs a single view, got {imgs.shape[0]}")
            imgs = imgs[0]
        results["imgs"] = imgs
        results["input_shape"] = imgs.shape
        return results

    def __repr__(self) -> str:
        return f"FormatShape(input_format={self.input_format!r}, collapse={self.collapse})"
