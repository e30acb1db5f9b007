"""AVA data: annotation / exclusion parsers, ``AVADataset`` and ``SampleAVAFrames``.

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
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

from ..registry import DATASETS, PIPELINES, ConfigError
from .annotations import UnreadableSkips, read_text_lines, resolve_under_prefix
from .ava_csv import AVAFormatError, read_labelmap, results2csv
from .ava_proposals import load_proposals

_LOG = logging.getLogger("actionkit")


__all__ = ["AVAFormatError", "AVARow", "read_ava_csv", "read_exclusions", "read_label_ids", "AVADataset",
           "SampleAVAFrames"]

# ------------------------------------------------------------------------------------------------ csv parsers

class AVARow(NamedTuple):
    video_id: str
    timestamp: int
    box: tuple[float, float, float, float]   # x1, y1, x2, y2 normalized
    action_id: int
    person_id: int                           # -1 when the 7-column form has no person id
    lineno: int


def _parse_box(path: Path, lineno: int, fields: Sequence[str]) -> tuple[float, float, float, float]:
    vals = []
    for name, text in zip(("x1", "y1", "x2", "y2"), fields):
        try:
            v = float(text)
        except ValueError:
            raise AVAFormatError(f"{path}:{lineno}: box coordinate {name} is not a number: {text.strip()!r}") from None
        if not np.isfinite(v):
            raise AVAFormatError(f"{path}:{lineno}: box coordinate {name} is not finite: {text.strip()!r}")
        if v < 0.0 or v > 1.0:
            raise AVAFormatError(f"{path}:{lineno}: box coordinate {name}={v} is outside [0, 1] "
                                 "(boxes must be normalized by the frame size)")
        vals.append(v)
    x1, y1, x2, y2 = vals
    if x2 < x1:
        raise AVAFormatError(f"{path}:{lineno}: box has x2 < x1 ({x2} < {x1})")
    if y2 < y1:
        raise AVAFormatError(f"{path}:{lineno}: box has y2 < y1 ({y2} < {y1})")
    return x1, y1, x2, y2


def _parse_int(path: Path, lineno: int, what: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AVAFormatError(f"{path}:{lineno}: {what} must be an integer, got {text.strip()!r}") from None


def read_label_ids(label_file: str | os.PathLike) -> list[int]:
    """The class ids of a label map (pbtxt ``item``/``label`` blocks or ``N: name`` lines).

    Text that is not UTF-8 is refused naming the file and line (the parser itself is
    :func:`actionkit.data.ava_csv.read_labelmap`).
    """

    read_text_lines(label_file, "label map", AVAFormatError)
    return list(read_labelmap(label_file)[1])


def read_ava_csv(path: str | os.PathLike, label_ids: Iterable[int] | str | os.PathLike | None = None,
                 max_action_id: int | None = None) -> list[AVARow]:
    """Parse an AVA annotation csv into :class:`AVARow` s (file order).

    ``label_ids``: the admitted action ids (an iterable of ints, or a label-map path); a row with another id
    is an error. ``max_action_id``: the largest admitted id (ids must also be >= 1). Blank lines are skipped.
    """
    path = Path(path)
    if label_ids is not None and isinstance(label_ids, (str, os.PathLike)):
        label_ids = read_label_ids(label_ids)
    allowed = None if label_ids is None else set(int(i) for i in label_ids)
    rows: list[AVARow] = []
    for lineno, line in enumerate(read_text_lines(path, "AVA annotation csv", AVAFormatError), 1):
        line = line.strip()
        if not line:
            continue
        cols = line.split(",")
        if len(cols) not in (7, 8):
            raise AVAFormatError(
                f"{path}:{lineno}: expected 7 or 8 comma-separated columns (video_id, timestamp, x1, y1, x2, y2, "
                f"action_id[, person_id]), got {len(cols)}")
        video_id = cols[0].strip()
        if not video_id:
            raise AVAFormatError(f"{path}:{lineno}: empty video id")
        timestamp = _parse_int(path, lineno, "timestamp", cols[1])
        box = _parse_box(path, lineno, cols[2:6])
        action_id = _parse_int(path, lineno, "action id", cols[6])
        if action_id < 1:
            raise AVAFormatError(f"{path}:{lineno}: action id must be >= 1, got {action_id}")
        if max_action_id is not None and action_id > max_action_id:
            raise AVAFormatError(f"{path}:{lineno}: action id {action_id} is larger than {max_action_id} "
                                 "(num_classes - 1)")
        if allowed is not None and action_id not in allowed:
            raise AVAFormatError(f"{path}:{lineno}: action id {action_id} is not in the label map")
        person_id = _parse_int(path, lineno, "person id", cols[7]) if len(cols) == 8 else -1
        rows.append(AVARow(video_id, timestamp, box, action_id, person_id, lineno))
    return rows


def read_exclusions(path: str | os.PathLike | None) -> set[tuple[str, int]]:
    """Excluded keyframes as a set of ``(video_id, timestamp)``; ``None`` gives an empty set."""
    if path is None:
        return set()
    path = Path(path)
    out: set[tuple[str, int]] = set()
    for lineno, line in enumerate(read_text_lines(path, "excluded-timestamps csv", AVAFormatError), 1):
        line = line.strip()
        if not line:
            continue
        cols = line.split(",")
        if len(cols) != 2:
            raise AVAFormatError(f"{path}:{lineno}: expected 2 columns (video_id, timestamp), got {len(cols)}")
        out.add((cols[0].strip(), _parse_int(path, lineno, "timestamp", cols[1])))
    return out


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
        rows = read_ava_csv(self.ann_file, max_action_id=max_id)
        shot_info = (0, (self.timestamp_end - self.timestamp_start) * self.fps)
        groups: dict[str, list[tuple[np.ndarray, int, int]]] = {}
        first_line: dict[str, int] = {}
        for r in rows:
            self._check_on_timeline(r)
            label = r.action_id
            if self.custom_classes is not None:
                if label not in self.custom_classes:
                    continue
                label = self.custom_classes.index(label)
            img_key = f"{r.video_id},{r.timestamp:04d}"
            groups.setdefault(img_key, []).append((np.array(r.box, dtype=np.float64), label, r.person_id))
            first_line.setdefault(img_key, r.lineno)
        infos = []
        for img_key, records in groups.items():
            video_id, ts = img_key.rsplit(",", 1)
            gt_bboxes, gt_labels, entity_ids = self._parse_img_record(records)
            frame_dir = resolve_under_prefix(self.data_prefix, video_id + (self.video_suffix or ""),
                                             self.ann_file, first_line[img_key])
            infos.append(dict(frame_dir=frame_dir, video_id=video_id, timestamp=int(ts), img_key=img_key,
                              shot_info=shot_info, fps=self.fps,
                              ann=dict(gt_bboxes=gt_bboxes, gt_labels=gt_labels, entity_ids=entity_ids)))
        return infos

    def _check_on_timeline(self, row: AVARow) -> None:
        """Refuse a row whose keyframe is not on ``timestamp_start <= t < timestamp_end`` (``<file>:<line>``)."""
        if not self.timestamp_start <= row.timestamp < self.timestamp_end:
            raise AVAFormatError(
                f"{self.ann_file}:{row.lineno}: timestamp {row.timestamp} is outside the timeline "
                f"[{self.timestamp_start}, {self.timestamp_end}) of the dataset (set timestamp_start / "
                "timestamp_end to the span of the videos)")

    def _parse_img_record(self, records: list[tuple[np.ndarray, int, int]]):
        bboxes, labels, entity_ids = [], [], []
        remaining = list(records)
        while remaining:
            box = remaining[0][0]
            same = [r for r in remaining if np.array_equal(r[0], box)]
            remaining = [r for r in remaining if not np.array_equal(r[0], box)]
            label = np.zeros(self.num_classes, dtype=np.float32)
            label[[r[1] for r in same]] = 1.0
            bboxes.append(box)
            labels.append(label)
            entity_ids.append(same[0][2])
        return np.stack(bboxes), np.stack(labels), np.array(entity_ids, dtype=np.int64)

    def _filter_excluded(self, infos: list[dict]) -> list[dict]:
        excluded = read_exclusions(self.exclude_file)
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
