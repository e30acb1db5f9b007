"""AVA data: ``AVADataset`` and ``SampleAVAFrames`` (the csv files are read by :mod:`.ava_csv`).

Formats (AVA v2.1 / v2.2):

* annotation csv, no header, one row per (person box, action):
  ``video_id, timestamp, x1, y1, x2, y2, action_id[, person_id]`` with normalized boxes (8 columns in
  v2.1 / v2.2; 7 columns, without the person id, are accepted too).
* excluded timestamps: ``video_id, timestamp`` rows.
* proposals: read by :mod:`.ava_proposals` (restricted unpickler, range checks, ``.npz``).

The csv files and label maps are UTF-8 text (a byte-order mark is accepted); every format error names the file
and the line (or the proposal key).
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..registry import DATASETS, PIPELINES, ConfigError
from .annotations import UnreadableSkips, read_text_lines, resolve_under_prefix
from .ava_csv import (
    AVAAnnotations,
    AVAFormatError,
    AVARow,
    read_ava_annotations,
    read_excluded_keyframes,
    read_labelmap,
    results2csv,
)
from .ava_proposals import load_proposals

_LOG = logging.getLogger("actionkit")


__all__ = ["AVAFormatError", "AVARow", "read_ava_csv", "read_exclusions", "read_label_ids", "AVADataset",
           "SampleAVAFrames"]

# ------------------------------------------------------------------------------------------------ csv files

def read_label_ids(label_file: str | os.PathLike) -> list[int]:
    """The class ids of a label map (pbtxt ``item``/``label`` blocks or ``N: name`` lines).

    Text that is not UTF-8 is refused naming the file and line (the parser itself is
    :func:`actionkit.data.ava_csv.read_labelmap`).
    """

    read_text_lines(label_file, "label map", AVAFormatError)
    return list(read_labelmap(label_file)[1])


def read_ava_csv(path: str | os.PathLike, label_ids: Iterable[int] | str | os.PathLike | None = None,
                 max_action_id: int | None = None) -> list[AVARow]:
    """The rows of an AVA annotation csv as :class:`AVARow` s (file order), read by
    :func:`actionkit.data.ava_csv.read_ava_annotations`.

    ``label_ids``: the admitted action ids (an iterable of ints, or a label-map path); a row with another id
    is an error. ``max_action_id``: the largest admitted id (ids must also be >= 1). Blank lines are skipped.
    """
    if label_ids is not None and isinstance(label_ids, (str, os.PathLike)):
        label_ids = read_label_ids(label_ids)
    return read_ava_annotations(path, label_ids, max_action_id).rows()


def read_exclusions(path: str | os.PathLike | None) -> set[tuple[str, int]]:
    """Excluded keyframes as a set of ``(video_id, timestamp)``; ``None`` gives an empty set
    (:func:`actionkit.data.ava_csv.read_excluded_keyframes`)."""
    return read_excluded_keyframes(path)


# ------------------------------------------------------------------------------------------------ pipeline op

@PIPELINES.register("SampleAVAFrames")
class SampleAVAFrames:
    """Frame indices around an AVA keyframe.

    ``center = fps*(timestamp - timestamp_start) + 1``; ``clip_len`` indices at stride ``frame_interval`` from
    ``center - (clip_len//2)*frame_interval``; in training each index gets an independent jitter
    ``randint(-FI//2, (FI+1)//2)``; then clipped to ``[shot_info[0], shot_info[1]-1]`` and offset by ``start_index``.
    """

    def __init__(self, clip_len: int, frame_interval: int = 2, test_mode: bool = False):
        if int(clip_len) < 1 or int(frame_interval) < 1:
            raise ValueError(f"SampleAVAFrames: clip_len and frame_interval must be >= 1, got "
                             f"{clip_len}, {frame_interval}")
        self.clip_len = int(clip_len)
        self.frame_interval = int(frame_interval)
        self.test_mode = bool(test_mode)

    def _get_clips(self, center_index: int, skip_offsets: np.ndarray, shot_info: Sequence[int]) -> np.ndarray:
        start = center_index - (self.clip_len // 2) * self.frame_interval
        end = center_index + ((self.clip_len + 1) // 2) * self.frame_interval
        frame_inds = np.arange(start, end, self.frame_interval, dtype=np.int64)
        if not self.test_mode:
            frame_inds = frame_inds + skip_offsets
        return np.clip(frame_inds, shot_info[0], shot_info[1] - 1)

    def __call__(self, results: dict) -> dict:
        fps = results["fps"]
        timestamp = results["timestamp"]
        timestamp_start = results["timestamp_start"]
        shot_info = results["shot_info"]
        center_index = int(fps * (timestamp - timestamp_start) + 1)
        # drawn in test mode too (and then unused), as MMAction2 does, so the random stream matches
        skip_offsets = np.random.randint(-self.frame_interval // 2, (self.frame_interval + 1) // 2,
                                         size=self.clip_len)
        frame_inds = self._get_clips(center_index, skip_offsets, shot_info)
        results["frame_inds"] = (frame_inds + results.get("start_index", 0)).astype(np.int64)
        results["clip_len"] = self.clip_len
        results["frame_interval"] = self.frame_interval
        results["num_clips"] = 1
        results["crop_quadruple"] = np.array([0, 0, 1, 1], dtype=np.float32)
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(clip_len={self.clip_len}, frame_interval={self.frame_interval}, "
                f"test_mode={self.test_mode})")


# ------------------------------------------------------------------------------------------------ dataset

def _build_pipeline(pipeline: Sequence[Any] | Callable | None) -> Callable[[dict], Any]:
    from .pipeline import Compose

    if pipeline is None:
        pipeline = []
    if callable(pipeline) and not isinstance(pipeline, (list, tuple)):
        return pipeline
    return Compose(list(pipeline))


@DATASETS.register("AVADataset")
class AVADataset:
    """AVA keyframes with their GT boxes and person proposals (MMAction2 0.x ``AVADataset``).

    One sample per annotated keyframe (``video_id,timestamp``). Rows with exactly equal boxes are merged into one
    GT with a multi-hot ``[num_classes]`` label (slot 0 never set). ``custom_classes`` keeps only those ids and
    renumbers them 1..len. Excluded timestamps are dropped in training only. ``video_suffix`` (e.g. ``'.mp4'``)
    makes ``frame_dir`` the video file ``data_prefix/<video_id><suffix>``; the decode op then reads frames from it.
    Action ids must lie in ``1..num_classes-1`` (all 80 AVA ids are used in training, whatever the label map;
    ``label_file`` only sets the evaluated classes and checks ``custom_classes``). Proposals: a keyframe missing
    from the proposal file (or with an empty array) gets the whole frame ``[0, 0, 1, 1]`` with score 1; otherwise
    boxes with ``score >= min(person_det_score_thr, max score)`` are kept, at most ``num_max_proposals``.
    ``proposal_file`` may be the published ``.pkl`` (read with a restricted unpickler) or the ``.npz`` form.

    Checked on load, naming ``<ann_file>:<line>``: every timestamp lies on the timeline
    ``timestamp_start <= t < timestamp_end`` (a keyframe outside it would be clamped to the first / last frame),
    and with ``data_prefix`` no video id is absolute or leaves the prefix (``../x``). In training a keyframe
    whose frames cannot be decoded is skipped like an unreadable Kinetics sample (another random keyframe, a
    counted warning, more than ``max_skips`` distinct bad keyframes raise); in test mode errors propagate.
    """

    def __init__(self, ann_file: str, exclude_file: str | None, pipeline: Sequence[Any] | None,
                 label_file: str | None = None, filename_tmpl: str = "img_{:05}.jpg", start_index: int = 0,
                 proposal_file: str | None = None, person_det_score_thr: float = 0.9, num_classes: int = 81,
                 custom_classes: Sequence[int] | None = None, data_prefix: str | None = None,
                 test_mode: bool = False, modality: str = "RGB", num_max_proposals: int = 1000,
                 timestamp_start: int = 900, timestamp_end: int = 1800, fps: int = 30,
                 video_suffix: str | None = None, max_skips: int = 100):
        self.ann_file = str(ann_file)
        self.exclude_file = None if exclude_file is None else str(exclude_file)
        self.label_file = None if label_file is None else str(label_file)
        self.filename_tmpl = filename_tmpl
        self.start_index = int(start_index)
        self.proposal_file = None if proposal_file is None else str(proposal_file)
        self.person_det_score_thr = float(person_det_score_thr)
        self.num_classes = int(num_classes)
        self.data_prefix = None if data_prefix is None else str(data_prefix)
        self.test_mode = bool(test_mode)
        self.modality = modality
        self.num_max_proposals = int(num_max_proposals)
        self.timestamp_start = int(timestamp_start)
        self.timestamp_end = int(timestamp_end)
        self.fps = int(fps)
        self.video_suffix = video_suffix
        if modality != "RGB":
            raise ConfigError(f"AVADataset supports modality='RGB' only, got {modality!r}", "modality")
        if self.timestamp_end <= self.timestamp_start:
            raise ConfigError(f"timestamp_end ({timestamp_end}) must be > timestamp_start ({timestamp_start})",
                              "timestamp_end")
        self.custom_classes: tuple[int, ...] | None = None
        if custom_classes is not None:
            custom = [int(c) for c in custom_classes]
            if 0 in custom:
                raise ConfigError("custom_classes must not contain 0 (the reserved background slot)", "custom_classes")
            if len(set(custom)) != len(custom):
                raise ConfigError(f"custom_classes has duplicates: {custom}", "custom_classes")
            if self.num_classes != len(custom) + 1:
                raise ConfigError(f"num_classes ({self.num_classes}) must be len(custom_classes) + 1 "
                                  f"({len(custom) + 1})", "num_classes")
            if self.label_file is not None:
                ids = set(read_label_ids(self.label_file))
                extra = [c for c in custom if c not in ids]
                if extra:
                    raise ConfigError(f"custom_classes {extra} are not in the label map {self.label_file}",
                                      "custom_classes")
            self.custom_classes = (0, *custom)
        self.pipeline = _build_pipeline(pipeline)
        self.video_infos = self.load_annotations()
        if not self.test_mode:
            self.video_infos = self._filter_excluded(self.video_infos)
        self.proposals = load_proposals(self.proposal_file) if self.proposal_file is not None else None
        self.max_skips = int(max_skips)
        self._skips = UnreadableSkips(self.ann_file, self.max_skips)
        self.skipped: dict[int, str] = self._skips.errors  # index -> error of keyframes skipped in this process

    # -- annotations
    def load_annotations(self) -> list[dict]:
        max_id = None if self.custom_classes is not None else self.num_classes - 1
        ann = read_ava_annotations(self.ann_file, max_action_id=max_id)
        self._check_on_timeline(ann)
        labels = ann.labels
        keep = np.ones(len(ann), bool)
        if self.custom_classes is not None:
            custom = np.array(self.custom_classes[1:], np.int64)
            keep = np.isin(labels, custom)
            position = {c: i for i, c in enumerate(self.custom_classes)}
            labels = np.array([position.get(int(a), 0) for a in labels.tolist()], np.int64)
        rows = np.flatnonzero(keep)
        # keyframes in the order of their first kept row; each keyframe's rows in file order
        group_of_row = ann.key[rows]
        first = np.full(len(ann.keys), len(rows), np.int64)
        np.minimum.at(first, group_of_row, np.arange(len(rows)))
        groups = np.flatnonzero(first < len(rows))
        groups = groups[np.argsort(first[groups], kind="stable")]
        rank = np.empty(len(ann.keys), np.int64)
        rank[groups] = np.arange(len(groups))
        rows = rows[np.argsort(rank[group_of_row], kind="stable")]
        bounds = np.searchsorted(rank[ann.key[rows]], np.arange(len(groups) + 1))
        vids, timestamps = ann.key_parts()
        shot_info = (0, (self.timestamp_end - self.timestamp_start) * self.fps)
        boxes, persons, linenos = ann.boxes.tolist(), ann.person_ids.tolist(), ann.lineno.tolist()
        labels_l = labels.tolist()
        infos = []
        for g, a, z in zip(groups.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
            records = [(boxes[r], labels_l[r], persons[r]) for r in rows[a:z].tolist()]
            gt_bboxes, gt_labels, entity_ids = self._parse_img_record(records)
            frame_dir = resolve_under_prefix(self.data_prefix, vids[g] + (self.video_suffix or ""),
                                             self.ann_file, linenos[rows[a]])
            infos.append(dict(frame_dir=frame_dir, video_id=vids[g], timestamp=int(timestamps[g]),
                              img_key=ann.keys[g], shot_info=shot_info, fps=self.fps,
                              ann=dict(gt_bboxes=gt_bboxes, gt_labels=gt_labels, entity_ids=entity_ids)))
        return infos

    def _check_on_timeline(self, ann: AVAAnnotations) -> None:
        """Refuse a row whose keyframe is not on ``timestamp_start <= t < timestamp_end`` (``<file>:<line>``)."""
        ts = ann.timestamps
        off = (ts < self.timestamp_start) | (ts >= self.timestamp_end)
        if off.any():
            i = int(np.argmax(off))
            raise AVAFormatError(
                f"{self.ann_file}:{ann.lineno[i]}: timestamp {ts[i]} is outside the timeline "
                f"[{self.timestamp_start}, {self.timestamp_end}) of the dataset (set timestamp_start / "
                "timestamp_end to the span of the videos)")

    def _parse_img_record(self, records: list[tuple[list[float], int, int]]):
        """One GT per distinct box (exactly equal boxes merged, first-appearance order): the box, the multi-hot
        label of its rows and the person id of its first row."""
        merged: dict[tuple[float, ...], tuple[list[int], int]] = {}
        for box, label, person in records:
            merged.setdefault(tuple(box), ([], person))[0].append(label)
        labels = np.zeros((len(merged), self.num_classes), dtype=np.float32)
        for i, (ids, _) in enumerate(merged.values()):
            labels[i, ids] = 1.0
        return (np.array(list(merged), dtype=np.float64).reshape(-1, 4), labels,
                np.array([p for _, p in merged.values()], dtype=np.int64))

    def _filter_excluded(self, infos: list[dict]) -> list[dict]:
        excluded = read_excluded_keyframes(self.exclude_file)
        if not excluded:
            return infos
        return [v for v in infos if (v["video_id"], v["timestamp"]) not in excluded]

    # -- samples
    def __len__(self) -> int:
        return len(self.video_infos)

    def get_raw(self, idx: int) -> dict:
        """The ``results`` dict fed to the pipeline, before any transform."""
        results = copy.deepcopy(self.video_infos[idx])
        img_key = results["img_key"]
        results["filename_tmpl"] = self.filename_tmpl
        results["modality"] = self.modality
        results["start_index"] = self.start_index
        results["timestamp_start"] = self.timestamp_start
        results["timestamp_end"] = self.timestamp_end
        if self.proposals is not None:
            props = self.proposals.get(img_key)
            if props is None or len(props) == 0:
                results["proposals"] = np.array([[0.0, 0.0, 1.0, 1.0]])
                results["scores"] = np.array([1.0])
            elif props.shape[1] == 5:
                thr = min(self.person_det_score_thr, float(props[:, 4].max()))
                props = props[props[:, 4] >= thr][:self.num_max_proposals]
                results["proposals"] = props[:, :4]
                results["scores"] = props[:, 4]
            else:  # [N, 4] without scores
                props = props[:self.num_max_proposals]
                results["proposals"] = props
                results["scores"] = np.ones(len(props))
        ann = results.pop("ann")
        results["gt_bboxes"] = ann["gt_bboxes"]
        results["gt_labels"] = ann["gt_labels"]
        results["entity_ids"] = ann["entity_ids"]
        return results

    def prepare_train_frames(self, idx: int) -> Any:
        return self.pipeline(self.get_raw(idx))

    def prepare_test_frames(self, idx: int) -> Any:
        return self.pipeline(self.get_raw(idx))

    def __getitem__(self, idx: int) -> Any:
        if self.test_mode:
            return self.prepare_test_frames(idx)
        return self._skips.prepare(idx, len(self), self.prepare_train_frames)

    # -- results
    @property
    def _custom_ids(self) -> list[int] | None:
        return None if self.custom_classes is None else list(self.custom_classes[1:])

    def _check_results(self, results: Sequence[Any]) -> None:
        if len(results) != len(self):
            raise ValueError(f"got {len(results)} results for {len(self)} keyframes of {self.ann_file}")

    def dump_results(self, results: Sequence[Any], out: str | os.PathLike) -> None:
        """Write the detections as the AVA results csv; ``out`` must end with ``.csv``.

        ``results[i]`` (dataset order) is the detector output of keyframe ``i``: a list over the classes of
        ``[k, 5]`` arrays ``x1, y1, x2, y2, score`` (normalized); class index ``l`` is action ``l+1`` or, with
        ``custom_classes``, the original id ``custom_classes[l]``. Floats are written with 3 decimals.
        """
        if not str(out).endswith(".csv"):
            raise ValueError(f"AVA results must be dumped to a .csv file, got {out}")
        self._check_results(results)

        results2csv(results, self.video_infos, out, self._custom_ids)

    def evaluate(self, results: Sequence[Any], metrics: str | Sequence[str] = ("mAP",), logger: Any = None,
                 **kwargs: Any) -> dict[str, float]:
        """Frame mAP@0.5 (MMAction2 0.x ``ava_eval``) of the detections against ``ann_file`` over the classes of
        ``label_file`` (or ``custom_classes``), excluded timestamps skipped: returns ``{'mAP@0.5IOU': value}``.

        As in MMAction2 the results are rounded as the 3-decimal results csv rounds them; they go to
        :class:`~actionkit.evaluation.ava_map.AVAFrameEvaluator` in memory (no temporary file).
        """
        if isinstance(metrics, str):
            metrics = [metrics]
        metrics = list(metrics)
        if metrics != ["mAP"]:
            raise ValueError(f"AVADataset supports only the metric 'mAP', got {metrics}")
        if self.label_file is None:
            raise ConfigError("AVADataset.evaluate needs a label_file (the evaluated classes)", "label_file")
        self._check_results(results)
        from ..evaluation.ava_map import AVAFrameEvaluator  # the metric, as MMAction2's dataset.evaluate

        evaluator = AVAFrameEvaluator(self.ann_file, self.label_file, self.exclude_file, mode="mmaction", iou=0.5,
                                      custom_classes=self._custom_ids, decimals=3)
        evaluator.process(self.video_infos, results)
        res = evaluator.evaluate(logger=logger)
        if logger is not None:
            for k, v in res.to_dict(by_category=True).items():
                logger.info("%s=%.4f", k, v)
        return {"mAP@0.5IOU": float(res.mAP)}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(ann_file={self.ann_file!r}, {len(self)} keyframes, "
                f"test_mode={self.test_mode})")
