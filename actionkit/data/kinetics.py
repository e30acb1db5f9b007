"""Kinetics-format recognition datasets: ``VideoDataset`` and ``RawframeDataset`` (MMAction2 0.x).

Annotation formats (one sample per line, whitespace separated, ``#`` comments and blank lines ignored):

* ``VideoDataset``: ``path/to/video.mp4 label`` (``multi_class``: ``path l1 l2 ...``)
* ``RawframeDataset``: ``frame_dir total_frames label`` (``with_offset``: ``frame_dir offset total_frames
  label``); frames are ``frame_dir/filename_tmpl.format(i)``, ``i`` from ``start_index`` (K400
  ``img_{:05}.jpg``, sthv1 ``{:05}.jpg``).

Lists and label maps are UTF-8 text (a byte-order mark is accepted).  Bad lines raise
``ValueError("<ann_file>:<line>: ...")``: other encodings, paths that are absolute or leave ``data_prefix``,
labels that are not integers or lie outside ``[0, num_classes)``.  The class count comes from ``num_classes``
or ``label_map``; when neither is set, :meth:`BaseRecognitionDataset.check_num_classes` (called by the engine
with the classifier head's ``num_classes``, see :func:`check_labels_fit_model`) checks the labels later, and
``evaluate`` checks them against the width of the score vectors.  During training a sample whose files cannot
be decoded (:class:`~actionkit.data.decode.DecodeError`) is skipped by the shared policy of
:class:`~actionkit.data.annotations.UnreadableSkips`: another random index is used, the failure is counted and
logged, and more than ``max_skips`` distinct bad samples raise.  In test mode errors propagate (evaluation
must see every sample).
"""
from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..registry import DATASETS, ConfigError
from .annotations import UnreadableSkips, read_text_lines, resolve_under_prefix

_LOG = logging.getLogger("actionkit")

__all__ = ["BaseRecognitionDataset", "VideoDataset", "RawframeDataset", "load_label_map",
           "check_labels_fit_model"]


def load_label_map(label_map: str | os.PathLike | Sequence[str]) -> list[str]:
    """Class names from a UTF-8 file (one per line; ``index name`` or ``name``) or a list."""
    if isinstance(label_map, (list, tuple)):
        return [str(x) for x in label_map]
    path = str(label_map)
    names: list[str] = []
    for line in read_text_lines(path, "label map"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names.append(line)
    if not names:
        raise ValueError(f"{path}: empty label map")
    return names


class BaseRecognitionDataset:
    """Shared machinery of :class:`VideoDataset` and :class:`RawframeDataset`."""

    def __init__(self, ann_file: str | os.PathLike, pipeline: Sequence[dict] | Any,
                 data_prefix: str | os.PathLike | None = None, test_mode: bool = False,
                 multi_class: bool = False, num_classes: int | None = None, start_index: int = 0,
                 modality: str = "RGB", sample_by_class: bool = False, power: float = 0.0,
                 dynamic_length: bool = False, label_map: str | os.PathLike | Sequence[str] | None = None,
                 max_skips: int = 100, check_files: bool = False):
        self.ann_file = str(ann_file)
        self.data_prefix = None if data_prefix is None else os.path.abspath(str(data_prefix))
        self.test_mode = bool(test_mode)
        self.multi_class = bool(multi_class)
        self.start_index = int(start_index)
        self.modality = modality
        self.sample_by_class = bool(sample_by_class)
        self.power = float(power)
        self.dynamic_length = bool(dynamic_length)
        self.max_skips = int(max_skips)
        self.class_names = load_label_map(label_map) if label_map is not None else None
        if num_classes is None and self.class_names is not None:
            num_classes = len(self.class_names)
        if num_classes is not None and self.class_names is not None and num_classes != len(self.class_names):
            raise ConfigError(f"num_classes={num_classes} but the label map lists {len(self.class_names)} "
                              "classes", "num_classes")
        self.num_classes = num_classes
        if self.multi_class and self.num_classes is None:
            raise ConfigError("multi_class=True needs num_classes (or a label_map)", "num_classes")
        if modality not in ("RGB", "Flow"):
            raise ConfigError(f"modality must be 'RGB' or 'Flow', got '{modality}'", "modality")
        if isinstance(pipeline, (list, tuple)):
            from .pipeline import Compose

            self.pipeline = Compose(list(pipeline))
        else:
            self.pipeline = pipeline  # a callable (e.g. an already built Compose)
        self.video_infos = self.load_annotations()
        if self.num_classes is not None:
            what = "the label map" if self.class_names is not None else "num_classes"
            self._check_label_range(self.num_classes, what)
        if check_files:
            self._check_files()
        self._skips = UnreadableSkips(self.ann_file, self.max_skips)
        self.skipped: dict[int, str] = self._skips.errors  # index -> error of samples skipped in this process
        if self.sample_by_class:
            self.video_infos_by_class = self.parse_by_class()
            counts = np.array([len(v) for _, v in sorted(self.video_infos_by_class.items())], np.float64)
            prob = counts ** self.power
            self.class_prob = dict(zip(sorted(self.video_infos_by_class), (prob / prob.sum()).tolist()))

    # ---- annotations ----------------------------------------------------------------------------
    def _read_lines(self) -> list[tuple[int, list[str]]]:
        rows = []
        for lineno, line in enumerate(read_text_lines(self.ann_file, "annotation file"), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            rows.append((lineno, s.split()))
        if not rows:
            raise ValueError(f"{self.ann_file}: empty annotation file (no samples)")
        return rows

    def _resolve(self, rel: str, lineno: int) -> str:
        return resolve_under_prefix(self.data_prefix, rel, self.ann_file, lineno)

    def _parse_labels(self, tokens: list[str], lineno: int) -> int | list[int]:
        labels = []
        for tok in tokens:
            try:
                lab = int(tok)
            except ValueError:
                raise ValueError(f"{self.ann_file}:{lineno}: label '{tok}' is not an integer") from None
            if lab < 0:
                raise ValueError(f"{self.ann_file}:{lineno}: negative label {lab}")
            labels.append(lab)
        if not self.multi_class:
            if len(labels) != 1:
                raise ValueError(f"{self.ann_file}:{lineno}: expected one label, got {len(labels)} "
                                 "(set multi_class=True for several)")
            return labels[0]
        return labels

    def load_annotations(self) -> list[dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_label_range(self, num_classes: int, what: str) -> None:
        """Raise ``ValueError("<ann_file>:<line>: ...")`` for the first label outside ``[0, num_classes)``."""
        for info in self.video_infos:
            label = info["label"]
            for lab in (label if isinstance(label, list) else [label]):
                if lab >= num_classes:
                    raise ValueError(f"{self.ann_file}:{info['lineno']}: label {lab} outside "
                                     f"[0, {num_classes}) ({what})")

    def check_num_classes(self, num_classes: int, source: str = "the model") -> None:
        """Check the labels against the class count ``num_classes`` of ``source`` (e.g. the classifier head).

        A dataset that already knows its class count (``num_classes`` / ``label_map``) must agree with it
        (``ConfigError`` otherwise); every label must lie in ``[0, num_classes)`` (``ValueError`` naming the
        list file and line). A dataset without a class count adopts ``num_classes``.
        """
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ConfigError(f"{source}: num_classes must be >= 1, got {num_classes}", "num_classes")
        if self.num_classes is not None and self.num_classes != num_classes:
            what = "its label map" if self.class_names is not None else "its num_classes"
            raise ConfigError(f"{self.ann_file}: the dataset has {self.num_classes} classes ({what}) but "
                              f"{source} has num_classes={num_classes}", "num_classes")
        self._check_label_range(num_classes, source)
        self.num_classes = num_classes

    def _check_files(self) -> None:
        for info in self.video_infos:
            p = info.get("filename", info.get("frame_dir"))
            if not os.path.exists(p):
                raise FileNotFoundError(f"{self.ann_file}:{info['lineno']}: {p} not found")

    def parse_by_class(self) -> dict[int, list[dict]]:
        by_class: dict[int, list[dict]] = {}
        for info in self.video_infos:
            label = info["label"]
            for lab in (label if isinstance(label, list) else [label]):
                by_class.setdefault(lab, []).append(info)
        return by_class

    # ---- items --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.video_infos)

    def _results(self, idx: int) -> dict:
        results = copy.deepcopy(self.video_infos[idx])
        results["modality"] = self.modality
        results["start_index"] = self.start_index
        if self.multi_class and isinstance(results["label"], list):
            onehot = np.zeros(self.num_classes, np.float32)
            onehot[results["label"]] = 1.0
            results["label"] = onehot
        return results

    def prepare_frames(self, idx: int) -> dict:
        return self.pipeline(self._results(idx))

    prepare_train_frames = prepare_frames
    prepare_test_frames = prepare_frames

    def __getitem__(self, idx: int) -> dict:
        if self.test_mode:
            return self.prepare_frames(idx)
        return self._skips.prepare(idx, len(self), self.prepare_frames)

    # ---- evaluation ---------------------------------------------------------------------------
    def _labels(self) -> np.ndarray:
        return np.array([info["label"] for info in self.video_infos])

    def evaluate(self, results: Sequence[np.ndarray], metrics: str | Sequence[str] = ("top_k_accuracy",
                 "mean_class_accuracy"), topk: int | Sequence[int] = (1, 5), logger: Any = None,
                 metric_options: dict | None = None, **deprecated: Any) -> dict[str, float]:
        """Top-k / mean-class accuracy of the per-video scores ``results`` (dataset order).

        Returns ``{'top1_acc', 'top5_acc', 'mean_class_accuracy'}`` (as requested).
        """
        from ..evaluation.accuracy import mean_class_accuracy, top_k_accuracy

        if len(results) != len(self):
            raise ValueError(f"{self.ann_file}: {len(results)} results for {len(self)} samples")
        if isinstance(metrics, str):
            metrics = [metrics]
        if metric_options and "top_k_accuracy" in metric_options:
            topk = metric_options["top_k_accuracy"].get("topk", topk)
        if "topk" in deprecated:
            topk = deprecated.pop("topk")
        if isinstance(topk, int):
            topk = (topk,)
        allowed = ("top_k_accuracy", "mean_class_accuracy")
        for m in metrics:
            if m not in allowed:
                raise KeyError(f"metric '{m}' is not supported; expected one of {allowed}")
        if self.multi_class:
            raise ConfigError("top_k_accuracy / mean_class_accuracy need single-label annotations "
                              "(multi_class=False)", "metrics")
        scores = np.stack([np.asarray(r, dtype=np.float64).reshape(-1) for r in results])
        self._check_label_range(scores.shape[1], f"the results have {scores.shape[1]} scores per video")
        labels = self._labels()
        out: dict[str, float] = {}
        for m in metrics:
            if m == "top_k_accuracy":
                accs = top_k_accuracy(scores, labels, tuple(topk))
                for k, a in zip(topk, accs):
                    out[f"top{k}_acc"] = float(a)
            elif m == "mean_class_accuracy":
                out["mean_class_accuracy"] = float(mean_class_accuracy(scores, labels))
        log = logger if logger is not None else _LOG
        msg = "  ".join(f"{k}: {v:.4f}" for k, v in out.items())
        if hasattr(log, "info"):
            log.info("Evaluating %s: %s", ", ".join(metrics), msg)
        return out

    def dump_results(self, results: Sequence[Any], out: str | os.PathLike) -> None:
        """Write ``results`` to ``out`` atomically: ``.json`` (lists of floats) or ``.npy`` (stacked)."""
        from ..utils import atomic_write

        out = str(out)
        ext = os.path.splitext(out)[1].lower()
        if ext == ".json":
            payload = json.dumps([_to_jsonable(r) for r in results])
            with atomic_write(out, "w", encoding="utf-8") as f:
                f.write(payload)
        elif ext == ".npy":
            arr = np.stack([np.asarray(r) for r in results])
            with atomic_write(out, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        elif ext in (".pkl", ".pickle"):
            raise ConfigError(f"{out}: pickle output is not supported (unsafe to load); use .json or .npy",
                              "out")
        else:
            raise ConfigError(f"{out}: unsupported output format '{ext}'; use .json or .npy", "out")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(ann_file='{self.ann_file}', {len(self)} samples, "
                f"test_mode={self.test_mode})")


def check_labels_fit_model(dataset: Any, model_cfg: Mapping[str, Any], key: str = "model") -> None:
    """Check a recognition dataset's labels against the classifier head of the model config ``model_cfg``.

    MMAction2 configs give the class count only to the head (``model.cls_head.num_classes``), so the engine
    calls this after building a dataset: a label ``>= num_classes`` raises ``ValueError`` naming the list file
    and line (instead of an ``IndexError`` in the loss, or silently wrong test metrics), and a class count that
    the dataset already has (``num_classes`` / ``label_map``) must agree (``ConfigError``). Datasets without
    :meth:`BaseRecognitionDataset.check_num_classes` (AVA checks its own ``num_classes``) and models without
    ``cls_head.num_classes`` are left alone.
    """
    check = getattr(dataset, "check_num_classes", None)
    head = model_cfg.get("cls_head") if isinstance(model_cfg, Mapping) else None
    if check is None or not isinstance(head, Mapping) or head.get("num_classes") is None:
        return
    check(int(head["num_classes"]), f"{key}.cls_head.num_classes")


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().cpu().tolist()
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    return x


@DATASETS.register()
class VideoDataset(BaseRecognitionDataset):
    """Videos listed as ``path label`` (``start_index`` 0: video frames are 0-based)."""

    def __init__(self, ann_file: str | os.PathLike, pipeline: Sequence[dict] | Any,
                 data_prefix: str | os.PathLike | None = None, test_mode: bool = False,
                 multi_class: bool = False, num_classes: int | None = None, start_index: int = 0,
                 modality: str = "RGB", sample_by_class: bool = False, power: float = 0.0,
                 dynamic_length: bool = False, filename_tmpl: str = "img_{:05}.jpg",
                 label_map: str | os.PathLike | Sequence[str] | None = None, max_skips: int = 100,
                 check_files: bool = False):
        self.filename_tmpl = filename_tmpl
        super().__init__(ann_file, pipeline, data_prefix=data_prefix, test_mode=test_mode,
                         multi_class=multi_class, num_classes=num_classes, start_index=start_index,
                         modality=modality, sample_by_class=sample_by_class, power=power,
                         dynamic_length=dynamic_length, label_map=label_map, max_skips=max_skips,
                         check_files=check_files)

    def load_annotations(self) -> list[dict]:
        infos = []
        for lineno, cols in self._read_lines():
            if len(cols) < 2:
                raise ValueError(f"{self.ann_file}:{lineno}: expected 'path label', got {len(cols)} column(s)")
            infos.append(dict(filename=self._resolve(cols[0], lineno),
                              label=self._parse_labels(cols[1:], lineno), lineno=lineno))
        return infos

    def _results(self, idx: int) -> dict:
        results = super()._results(idx)
        results["filename_tmpl"] = self.filename_tmpl
        return results


@DATASETS.register()
class RawframeDataset(BaseRecognitionDataset):
    """Frame folders listed as ``frame_dir total_frames label`` (``start_index`` 1: ``img_00001.jpg``)."""

    def __init__(self, ann_file: str | os.PathLike, pipeline: Sequence[dict] | Any,
                 data_prefix: str | os.PathLike | None = None, test_mode: bool = False,
                 filename_tmpl: str = "img_{:05}.jpg", with_offset: bool = False, multi_class: bool = False,
                 num_classes: int | None = None, start_index: int = 1, modality: str = "RGB",
                 sample_by_class: bool = False, power: float = 0.0, dynamic_length: bool = False,
                 label_map: str | os.PathLike | Sequence[str] | None = None, max_skips: int = 100,
                 check_files: bool = False):
        self.filename_tmpl = filename_tmpl
        self.with_offset = bool(with_offset)
        super().__init__(ann_file, pipeline, data_prefix=data_prefix, test_mode=test_mode,
                         multi_class=multi_class, num_classes=num_classes, start_index=start_index,
                         modality=modality, sample_by_class=sample_by_class, power=power,
                         dynamic_length=dynamic_length, label_map=label_map, max_skips=max_skips,
                         check_files=check_files)

    def load_annotations(self) -> list[dict]:
        infos = []
        need = 4 if self.with_offset else 3
        fmt = "frame_dir offset total_frames label" if self.with_offset else "frame_dir total_frames label"
        for lineno, cols in self._read_lines():
            if len(cols) < need:
                raise ValueError(f"{self.ann_file}:{lineno}: expected '{fmt}', got {len(cols)} column(s)")
            info: dict[str, Any] = dict(frame_dir=self._resolve(cols[0], lineno), lineno=lineno)
            pos = 1
            if self.with_offset:
                info["offset"] = _int_field(cols[1], "offset", self.ann_file, lineno)
                pos = 2
            total = _int_field(cols[pos], "total_frames", self.ann_file, lineno)
            if total <= 0:
                raise ValueError(f"{self.ann_file}:{lineno}: total_frames must be positive, got {total}")
            info["total_frames"] = total
            info["label"] = self._parse_labels(cols[pos + 1:], lineno)
            infos.append(info)
        return infos

    def _results(self, idx: int) -> dict:
        results = super()._results(idx)
        results["filename_tmpl"] = self.filename_tmpl
        return results


def _int_field(tok: str, name: str, ann_file: str, lineno: int) -> int:
    try:
        return int(tok)
    except ValueError:
        raise ValueError(f"{ann_file}:{lineno}: {name} '{tok}' is not an integer") from None
