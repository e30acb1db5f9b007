"""Spatio-temporal action detection on any video, streaming.

One sequential decode of the video; a bounded buffer of the frames that the pending keyframes still need
(their clip frames, the keyframe itself and the output frames around it), so memory does not grow with the
video's length; nothing is written to disk but the outputs.

Keyframes (1-based frame numbers) are MMAction2's demo keyframes
``np.arange(window // 2, num_frames + 1 - window // 2, predict_stepsize)`` with ``window = clip_len *
frame_interval`` from the config's ``SampleAVAFrames`` in ``data.val.pipeline``, or, for an AVA proposal file,
the seconds it lists for the video (frame ``fps * (second - timestamp_start) + 1`` with the ``fps`` and
``timestamp_start`` of ``data.val``, as ``AVADataset`` computes them).

The clip of a keyframe is what the config's AVA val pipeline produces for it: the pipeline's own
``SampleAVAFrames`` picks the frames (``keyframe - (clip_len // 2) * frame_interval + k * frame_interval``,
clipped to the video as it clips to the shot), and every transform after the decode op (``Resize``,
``Normalize``, ``FormatShape``, ``Collect``...) runs unchanged on the RGB frames of the streaming decode (the
same pixels as the dataset's random-access reader; ``Normalize`` after the device copy, as in the engine), so a
keyframe's scores equal those of ``tools/test.py`` on an AVA-format dataset of the same video (``action_thr`` 0).
"""
from __future__ import annotations

import copy
import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..data.ava import AVAFormatError, SampleAVAFrames
from ..data.ava_proposals import load_proposals
from ..data.collate import collate_ava
from ..data.decode import DecodeError, record_decoded_shape
from ..data.pipeline import Compose
from ..data.preprocess import attach_batch_normalize, split_normalize

__all__ = [
    "DetectInputError", "Keyframe", "KeyframeResult", "PersonBoxes", "ProposalFileBoxes", "CsvBoxes",
    "DetectorBoxes", "RememberedBoxes", "load_person_boxes", "val_sampler", "demo_keyframes", "output_frame_numbers",
    "KeyframeClipPipeline", "ActionDetector", "detect_video", "top_labels", "DECODE_OP_TYPES", "with_seconds",
    "video_fps", "iter_video_frames", "is_lfb_config", "infer_video_bank", "lfb_config_for_bank",
]

# decode ops of a val pipeline that the streaming decode replaces (and the *Init ops that open a reader)
DECODE_OP_TYPES = ("RawFrameDecode", "DecordDecode", "PyAVDecode", "OpenCVDecode", "VideoDecode")
INIT_OP_TYPES = ("DecordInit", "PyAVInit", "OpenCVInit", "VideoInit")
_FRAMES_KEY = "_detect_frames"


class DetectInputError(ValueError):
    """Bad input to ``detect`` / ``proposals``; the message names the file (and line or key)."""


@dataclass(frozen=True)
class Keyframe:
    """A keyframe: its 1-based frame number, the ``timestamp`` written to the results csv (the AVA second for
    keyframes of a proposal file, otherwise the frame number) and the whole ``second`` it lies in (the
    timestamp of its ``img_key``, which a feature bank is indexed by; ``None``: the timestamp)."""

    frame: int
    timestamp: int
    second: int | None = None

    @property
    def key_second(self) -> int:
        return self.timestamp if self.second is None else self.second


def with_seconds(keyframes: Sequence[Keyframe], video_fps: float) -> list[Keyframe]:
    """Keyframes with ``second`` set: kept where known (proposal files), else ``int((frame - 1) / video_fps)``."""
    if not video_fps or video_fps <= 0:
        video_fps = 30.0
    return [k if k.second is not None else Keyframe(k.frame, k.timestamp, int((k.frame - 1) / video_fps))
            for k in keyframes]


@dataclass
class KeyframeResult:
    """What ``detect_video`` yields per keyframe, in video order.

    ``persons``: float32 ``[N, 5]`` normalised ``x1, y1, x2, y2, person score``; ``class_results``: the
    detector's output for the keyframe (a list over classes of ``[k, 5]`` arrays, normalised, MMAction2's
    ``bbox2result``); ``action_scores``: ``[N, num_classes - 1]`` (column ``l`` = output class ``l``);
    ``output_frames``: ``(frame number, RGB uint8 [H, W, 3])`` of the frames to draw this keyframe's boxes on.
    """

    keyframe: Keyframe
    persons: np.ndarray
    class_results: list[np.ndarray]
    action_scores: np.ndarray
    output_frames: list[tuple[int, np.ndarray]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ keyframes

def val_sampler(cfg: Mapping[str, Any]) -> SampleAVAFrames:
    """The ``SampleAVAFrames`` of ``data.val.pipeline`` (test mode), built as the dataset builds it."""
    from ..registry import ConfigError

    filename = getattr(cfg, "filename", None)
    try:
        pipeline = cfg["data"]["val"]["pipeline"]
    except (KeyError, TypeError):
        raise ConfigError("is required for detection on a video (an AVA val pipeline)", "data.val.pipeline",
                          filename) from None
    for step in pipeline:
        if isinstance(step, Mapping) and step.get("type") == "SampleAVAFrames":
            args = {k: v for k, v in step.items() if k != "type"}
            args["test_mode"] = True
            return SampleAVAFrames(**args)
    raise ConfigError("has no SampleAVAFrames step: not an AVA detection config", "data.val.pipeline", filename)


def demo_keyframes(num_frames: int, window: int, predict_stepsize: int) -> list[int]:
    """MMAction2's demo keyframes (1-based): ``arange(window // 2, num_frames + 1 - window // 2, stepsize)``."""
    return [int(t) for t in np.arange(window // 2, num_frames + 1 - window // 2, predict_stepsize)]


def output_frame_numbers(keyframe: int, predict_stepsize: int, output_stepsize: int, num_frames: int) -> list[int]:
    """The ``predict_stepsize // output_stepsize`` output frames of a keyframe, spread around it at
    ``output_stepsize`` (MMAction2's ``dense_timestamps``), clipped to ``[1, num_frames]``."""
    n = predict_stepsize // output_stepsize
    start = keyframe - output_stepsize * (n - 1) / 2
    return [min(max(int(start + j * output_stepsize), 1), num_frames) for j in range(n)]


def clip_frame_numbers(sampler: SampleAVAFrames, keyframe: int, num_frames: int) -> np.ndarray:
    """1-based frame numbers of a keyframe's clip: the config's ``SampleAVAFrames`` (test mode) around the
    keyframe, clipped to the video as the dataset clips to the shot."""
    results = sampler(dict(fps=1, timestamp=keyframe - 1, timestamp_start=0, shot_info=(1, num_frames + 1),
                           start_index=0))
    return results["frame_inds"]


# ------------------------------------------------------------------------------------------------ person boxes

class PersonBoxes:
    """Where the person boxes of the keyframes come from."""

    def keyframes(self, num_frames: int, demo: list[int]) -> list[Keyframe]:
        """The keyframes to predict (``demo``: the demo keyframes of this video)."""
        return [Keyframe(t, t) for t in demo]

    def boxes(self, keyframe: Keyframe, frame: np.ndarray) -> np.ndarray:
        """float ``[N, 5]``: normalised boxes and person scores of the keyframe (``frame``: RGB, original size)."""
        raise NotImplementedError

    @property
    def needs_frame(self) -> bool:
        return False


def _select_like_dataset(props: np.ndarray, thr: float, num_max: int) -> np.ndarray:
    """``AVADataset``'s choice: boxes with score ``>= min(thr, best score)``, at most ``num_max``."""
    if props.shape[1] == 4:
        return np.concatenate([props[:num_max], np.ones((min(len(props), num_max), 1))], 1)
    keep_thr = min(thr, float(props[:, 4].max()))
    return props[props[:, 4] >= keep_thr][:num_max]


class ProposalFileBoxes(PersonBoxes):
    """An AVA proposal file (``.pkl`` via the restricted loader, or ``.npz``): ``'<video_id>,<%04d second>'`` ->
    ``[N, 5]``. Its seconds for ``video_id`` are the keyframes; boxes are chosen as ``AVADataset`` does."""

    def __init__(self, path: str | os.PathLike, video_id: str, fps: int, timestamp_start: int,
                 det_score_thr: float, num_max_proposals: int = 1000):
        self.path = Path(path)
        self.video_id = video_id
        self.fps = int(fps)
        self.timestamp_start = int(timestamp_start)
        self.det_score_thr = float(det_score_thr)
        self.num_max = int(num_max_proposals)
        props = load_proposals(self.path)
        self.by_second: dict[int, np.ndarray] = {}
        videos = set()
        for key, arr in props.items():
            vid, sec = key.rsplit(",", 1)
            videos.add(vid)
            if vid == video_id:
                self.by_second[int(sec)] = arr
        if not self.by_second:
            shown = ", ".join(sorted(videos)[:5]) + (" ..." if len(videos) > 5 else "")
            raise DetectInputError(f"{self.path}: no person boxes for video '{video_id}' (the file is for "
                                   f"{shown or 'no video'}): is it the boxes file of another video?")

    def keyframes(self, num_frames: int, demo: list[int]) -> list[Keyframe]:
        out = []
        for sec in sorted(self.by_second):
            frame = int(self.fps * (sec - self.timestamp_start) + 1)
            if frame < 1 or frame > num_frames:
                raise DetectInputError(
                    f"{self.path}: key '{self.video_id},{sec:04d}' is frame {frame} at {self.fps} fps from second "
                    f"{self.timestamp_start}, outside the video's {num_frames} frames: is it the boxes file of "
                    "another video?")
            out.append(Keyframe(frame, sec, sec))
        return out

    def boxes(self, keyframe: Keyframe, frame: np.ndarray) -> np.ndarray:
        props = self.by_second.get(keyframe.timestamp)
        if props is None or len(props) == 0:
            return np.zeros((0, 5))
        return _select_like_dataset(props, self.det_score_thr, self.num_max)


class CsvBoxes(PersonBoxes):
    """A csv of ``frame,x1,y1,x2,y2,score`` rows (frames from 1, boxes normalised to [0, 1]; a header line
    starting with ``frame`` is allowed). Boxes with ``score >= det_score_thr`` are kept. Every listed frame must
    be a keyframe of the video."""

    def __init__(self, path: str | os.PathLike, det_score_thr: float):
        self.path = Path(path)
        self.det_score_thr = float(det_score_thr)
        self.rows: dict[int, list[list[float]]] = {}
        self.first_line: dict[int, int] = {}
        with open(self.path, encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.reader(f), 1):
                if not row or not "".join(row).strip():
                    continue
                if lineno == 1 and row[0].strip().lower() == "frame":
                    continue
                if len(row) != 6:
                    raise DetectInputError(f"{self.path}:{lineno}: expected 6 columns frame,x1,y1,x2,y2,score, "
                                           f"got {len(row)}")
                try:
                    frame = int(row[0])
                    vals = [float(v) for v in row[1:]]
                except ValueError:
                    raise DetectInputError(f"{self.path}:{lineno}: not numbers: {','.join(row)!r}") from None
                if frame < 1:
                    raise DetectInputError(f"{self.path}:{lineno}: frame numbers start at 1, got {frame}")
                if not all(np.isfinite(vals)) or min(vals[:4]) < 0 or max(vals[:4]) > 1:
                    raise DetectInputError(f"{self.path}:{lineno}: box {vals[:4]} is not normalised to [0, 1]")
                if vals[2] < vals[0] or vals[3] < vals[1]:
                    raise DetectInputError(f"{self.path}:{lineno}: box has x2 < x1 or y2 < y1")
                self.rows.setdefault(frame, []).append(vals)
                self.first_line.setdefault(frame, lineno)

    def keyframes(self, num_frames: int, demo: list[int]) -> list[Keyframe]:
        demo_set = set(demo)
        for frame in sorted(self.rows):
            if frame > num_frames:
                raise DetectInputError(f"{self.path}:{self.first_line[frame]}: frame {frame} is past the video's "
                                       f"{num_frames} frames: is it the boxes file of another video?")
            if frame not in demo_set:
                raise DetectInputError(
                    f"{self.path}:{self.first_line[frame]}: frame {frame} is not a keyframe (keyframes: "
                    f"{', '.join(map(str, demo[:4]))}{' ...' if len(demo) > 4 else ''}; set by the clip window and "
                    "--predict-stepsize)")
        return super().keyframes(num_frames, demo)

    def boxes(self, keyframe: Keyframe, frame: np.ndarray) -> np.ndarray:
        rows = np.array(self.rows.get(keyframe.frame, []), dtype=np.float64).reshape(-1, 5)
        return rows[rows[:, 4] >= self.det_score_thr]


class DetectorBoxes(PersonBoxes):
    """A person detector (``frame -> [N, 5]`` normalised, already thresholded) run on each keyframe."""

    def __init__(self, detector: Callable[[np.ndarray], np.ndarray]):
        self.detector = detector

    @property
    def needs_frame(self) -> bool:
        return True

    def boxes(self, keyframe: Keyframe, frame: np.ndarray) -> np.ndarray:
        return np.asarray(self.detector(frame), dtype=np.float64).reshape(-1, 5)


class RememberedBoxes(PersonBoxes):
    """Another source's boxes, kept per keyframe after the first call (for a second pass over the video)."""

    def __init__(self, source: PersonBoxes):
        self.source = source
        self.memory: dict[int, np.ndarray] = {}

    @property
    def needs_frame(self) -> bool:
        return self.source.needs_frame

    def keyframes(self, num_frames: int, demo: list[int]) -> list[Keyframe]:
        return self.source.keyframes(num_frames, demo)

    def boxes(self, keyframe: Keyframe, frame: np.ndarray) -> np.ndarray:
        if keyframe.frame not in self.memory:
            self.memory[keyframe.frame] = self.source.boxes(keyframe, frame)
        return self.memory[keyframe.frame]


def load_person_boxes(path: str | os.PathLike, video_id: str, fps: int, timestamp_start: int,
                      det_score_thr: float, num_max_proposals: int = 1000) -> PersonBoxes:
    """A ``--person-boxes`` file: ``.csv`` -> :class:`CsvBoxes`, otherwise an AVA proposal ``.pkl`` / ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise DetectInputError(f"{path}: person boxes file not found")
    if path.suffix.lower() == ".csv":
        return CsvBoxes(path, det_score_thr)
    try:
        return ProposalFileBoxes(path, video_id, fps, timestamp_start, det_score_thr, num_max_proposals)
    except AVAFormatError as e:
        raise DetectInputError(str(e)) from None


# ------------------------------------------------------------------------------------------------ clips

class _BufferedDecode:
    """Stands in for the val pipeline's decode op: the frames ``results['frame_inds']`` (1-based) come from the
    streaming decode's buffer (RGB), with the keys a decode op sets (``original_shape``, ``img_shape``, boxes)."""

    @staticmethod
    def _positions(results: dict) -> tuple[dict[int, np.ndarray], list[int], list[list[int]]]:
        frames = results.pop(_FRAMES_KEY)
        inds = np.asarray(results["frame_inds"]).reshape(-1).astype(np.int64)
        uniq, inverse = np.unique(inds, return_inverse=True)
        positions: list[list[int]] = [[] for _ in range(len(uniq))]
        for j, u in enumerate(inverse.reshape(-1).tolist()):
            positions[u].append(j)
        return frames, uniq.tolist(), positions

    def __call__(self, results: dict) -> dict:
        frames, uniq, positions = self._positions(results)
        first = frames[uniq[0]]
        imgs = np.empty((sum(len(p) for p in positions),) + first.shape, np.uint8)
        for frame_no, pos in zip(uniq, positions):
            imgs[pos] = frames[frame_no]
        results["imgs"] = imgs
        record_decoded_shape(results, *imgs.shape[1:3])
        return results

    def __repr__(self) -> str:
        return "BufferedDecode()"


class KeyframeClipPipeline:
    """The config's ``data.val.pipeline`` with its decode op reading the streaming decode's frames.

    ``Normalize`` is split off as in the engine (``data.preprocess.split_normalize``): ``uint8_item(keyframe,
    frames, boxes)`` (``boxes``: normalised ``[N, 4]`` + scores) is ``compose``'s uint8 output, ``item(...)`` that
    with ``batch_normalize`` applied (None: not split): ``AVADataset[i]`` for that keyframe (``img``, ...).
    """

    def __init__(self, cfg: Mapping[str, Any], video_id: str, num_frames: int):
        self.sampler = val_sampler(cfg)
        steps: list[Any] = []
        decode_seen = False
        for step in cfg["data"]["val"]["pipeline"]:
            kind = step.get("type") if isinstance(step, Mapping) else None
            if kind == "SampleAVAFrames" or kind in INIT_OP_TYPES:
                continue
            if kind in DECODE_OP_TYPES:
                steps.append(_BufferedDecode())
                decode_seen = True
                continue
            steps.append(copy.deepcopy(dict(step)) if isinstance(step, Mapping) else step)
        if not decode_seen:
            from ..registry import ConfigError

            raise ConfigError(f"has no decode op ({', '.join(DECODE_OP_TYPES)})", "data.val.pipeline",
                              getattr(cfg, "filename", None))
        configured = Compose(steps, filename=getattr(cfg, "filename", None))
        uint8_steps, self.batch_normalize = split_normalize(configured.transforms)
        self.compose = Compose(uint8_steps)
        self.video_id = video_id
        self.num_frames = int(num_frames)

    @property
    def window(self) -> int:
        return self.sampler.clip_len * self.sampler.frame_interval

    def clip_frames(self, keyframe: int) -> np.ndarray:
        return clip_frame_numbers(self.sampler, keyframe, self.num_frames)

    def item(self, keyframe: Keyframe, frames: Mapping[int, np.ndarray], boxes: np.ndarray) -> dict:
        out = self.uint8_item(keyframe, frames, boxes)
        return out if self.batch_normalize is None else self.batch_normalize(out)

    def uint8_item(self, keyframe: Keyframe, frames: Mapping[int, np.ndarray], boxes: np.ndarray) -> dict:
        results = self.sampler(dict(fps=1, timestamp=keyframe.frame - 1, timestamp_start=0,
                                    shot_info=(1, self.num_frames + 1), start_index=0))
        results.update(frame_dir=f"{self.video_id}.mp4", video_id=self.video_id, timestamp=keyframe.timestamp,
                       img_key=f"{self.video_id},{keyframe.key_second:04d}", modality="RGB",
                       filename_tmpl="img_{:05}.jpg", proposals=boxes[:, :4], scores=boxes[:, 4])
        results[_FRAMES_KEY] = frames
        return self.compose(results)


class ActionDetector:
    """An AVA detector (config + checkpoint) applied to keyframe clips; ``predict`` -> per-class ``[k, 5]``."""

    def __init__(self, cfg: Any, checkpoint: str | os.PathLike | None, device: str = "cpu",
                 model: torch.nn.Module | None = None):
        from ..models.builder import build_model_from_config

        cfg = copy.deepcopy(cfg)
        test_cfg = cfg["model"].setdefault("test_cfg", {}) or {}
        cfg["model"]["test_cfg"] = test_cfg
        test_cfg.setdefault("rcnn", {})
        test_cfg["rcnn"]["action_thr"] = 0.0
        self.cfg = cfg
        self.model = model if model is not None else build_model_from_config(cfg, checkpoint, device=device)
        self.model.eval()
        self.device = torch.device(device)
        self.num_classes = int(cfg["model"]["roi_head"]["bbox_head"].get("num_classes", 81))

    def predict(self, pipeline: KeyframeClipPipeline, keyframe: Keyframe, frames: Mapping[int, np.ndarray],
                boxes: np.ndarray) -> list[np.ndarray]:
        from ..engine.test import prepare_batch, split_result

        if len(boxes) == 0:
            return [np.zeros((0, 5), np.float32) for _ in range(self.num_classes - 1)]
        batch, step = collate_ava([pipeline.uint8_item(keyframe, frames, boxes)]), pipeline.batch_normalize
        data = prepare_batch(batch if step is None else attach_batch_normalize(batch, step), self.device)
        with torch.no_grad():
            out = self.model(return_loss=False, **data)
        return split_result(out, 1)[0]


def action_score_matrix(class_results: Sequence[np.ndarray], num_boxes: int) -> np.ndarray:
    """``[num_boxes, len(class_results)]`` scores from a ``bbox2result`` output at ``action_thr`` 0 (each class
    lists the boxes in proposal order; a box missing from a class, a score of exactly 0, scores 0)."""
    scores = np.zeros((num_boxes, len(class_results)), np.float32)
    if num_boxes == 0:
        return scores
    ref = None
    for arr in class_results:
        if len(arr) == num_boxes:
            ref = arr[:, :4]
            break
    for c, arr in enumerate(class_results):
        if len(arr) == num_boxes:
            scores[:, c] = arr[:, 4]
        elif len(arr) and ref is not None:
            j = 0
            for row in arr:
                while j < num_boxes and not np.array_equal(ref[j], row[:4]):
                    j += 1
                if j < num_boxes:
                    scores[j, c] = row[4]
                    j += 1
    return scores


def top_labels(scores: np.ndarray, action_ids: Sequence[int], thr: float, max_labels: int = 5
               ) -> list[list[tuple[int, float]]]:
    """Per box: ``(action id, score)`` of the classes with score ``> thr``, best first, at most ``max_labels``."""
    out = []
    for row in np.asarray(scores):
        order = np.argsort(-row, kind="stable")
        out.append([(int(action_ids[c]), float(row[c])) for c in order if row[c] > thr][:max_labels])
    return out


# ------------------------------------------------------------------------------------------------ streaming

@dataclass
class _Plan:
    keyframe: Keyframe
    needed: set[int]
    first: int
    last: int
    outputs: list[int]


def _plans(keyframes: Sequence[Keyframe], pipeline: KeyframeClipPipeline, predict_stepsize: int,
           output_stepsize: int, num_frames: int) -> Iterator[_Plan]:
    for kf in keyframes:
        clip = [int(i) for i in pipeline.clip_frames(kf.frame)]
        outputs = output_frame_numbers(kf.frame, predict_stepsize, output_stepsize, num_frames)
        needed = set(clip) | set(outputs) | {kf.frame}
        yield _Plan(kf, needed, min(needed), max(needed), outputs)


def video_fps(path: str | os.PathLike) -> float:
    """The average frame rate of a video (0.0 when the file does not say)."""
    from ..data.decode import PyAVReader

    with PyAVReader(path) as reader:
        return float(reader.fps)


def iter_video_frames(path: str | os.PathLike, chunk: int = 256) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    """``(num_frames, iterator of (1-based frame number, RGB frame))``: one sequential decode with the
    frame-accurate PyAV reader (the pixels the dataset's reader gives for the same frames)."""
    from ..data.decode import PyAVReader

    reader = PyAVReader(path)
    n = reader.num_frames
    if n == 0:
        reader.close()
        raise DecodeError(f"{path}: the video has no frames", str(path))

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        try:
            for start in range(0, n, chunk):
                for positions, img, is_bgr in reader.iter_frames(np.arange(start, min(start + chunk, n))):
                    yield start + positions[0] + 1, img
        finally:
            reader.close()

    return n, frames()


def detect_video(video: str | os.PathLike, pipeline: KeyframeClipPipeline, detector: ActionDetector,
                 person_boxes: PersonBoxes, keyframes: Sequence[Keyframe], predict_stepsize: int,
                 output_stepsize: int, frames: Iterator[tuple[int, np.ndarray]] | None = None
                 ) -> Iterator[KeyframeResult]:
    """Run ``detector`` on every keyframe of ``video`` while decoding it once; yields one
    :class:`KeyframeResult` per keyframe in order. Only the frames that pending keyframes still need are held."""
    num_frames = pipeline.num_frames
    if frames is None:
        _, frames = iter_video_frames(video)
    plans = _plans(sorted(keyframes, key=lambda k: k.frame), pipeline, predict_stepsize, output_stepsize,
                   num_frames)
    pending: list[_Plan] = []
    upcoming = next(plans, None)
    buffer: dict[int, np.ndarray] = {}
    for frame_no, img in frames:
        while upcoming is not None and upcoming.first <= frame_no:
            pending.append(upcoming)
            upcoming = next(plans, None)
        if any(frame_no in p.needed for p in pending):
            buffer[frame_no] = img
        while pending and pending[0].last <= frame_no:
            plan = pending.pop(0)
            yield _run_plan(plan, buffer, pipeline, detector, person_boxes)
            keep = set().union(*(p.needed for p in pending)) if pending else set()
            for k in [k for k in buffer if k not in keep]:
                del buffer[k]
        if upcoming is None and not pending:
            break
    close = getattr(frames, "close", None)
    if callable(close):
        close()
    if pending or upcoming is not None:
        missing = (pending[0] if pending else upcoming).last
        raise DecodeError(f"{video}: frame {missing} could not be decoded (the video ended early)", str(video),
                          missing)


def _run_plan(plan: _Plan, buffer: Mapping[int, np.ndarray], pipeline: KeyframeClipPipeline,
              detector: ActionDetector, person_boxes: PersonBoxes) -> KeyframeResult:
    kf = plan.keyframe
    persons = person_boxes.boxes(kf, buffer[kf.frame])
    class_results = detector.predict(pipeline, kf, buffer, persons)
    scores = action_score_matrix(class_results, len(persons))
    return KeyframeResult(kf, persons.astype(np.float32), class_results, scores,
                          [(f, buffer[f]) for f in plan.outputs])


# ------------------------------------------------------------------------------------------------ LFB

VIDEO_BANK_MODE = "video"


def is_lfb_config(cfg: Mapping[str, Any]) -> bool:
    """Whether the detector's shared head samples a long-term feature bank (``FBOHead`` with ``lfb_cfg``)."""
    roi_head = (cfg.get("model") or {}).get("roi_head") or {}
    shared = roi_head.get("shared_head") or {}
    return isinstance(shared, Mapping) and "lfb_cfg" in shared


def infer_video_bank(cfg: Any, baseline: str | os.PathLike, video: str | os.PathLike,
                     pipeline: KeyframeClipPipeline, person_boxes: PersonBoxes, keyframes: Sequence[Keyframe],
                     bank_root: str | os.PathLike, device: str = "cpu",
                     show_progress: bool | None = None) -> Path:
    """The feature bank of one video: the LFB config's bank-inference model (``actionkit lfb``'s
    ``build_infer_config``: the shared head replaced by ``LFBInferHead``, the baseline's bbox head width) with
    the ``baseline`` checkpoint over every keyframe (one streaming decode), written as
    ``{bank_root}/lfb_video`` (keys ``video_id, keyframe second``). Returns the bank directory."""
    from ..engine.lfb_workflow import _baseline_in_channels, build_infer_config
    from ..engine.logging import progress

    baseline = Path(baseline)
    if not baseline.is_file():
        raise DetectInputError(f"{baseline}: LFB baseline checkpoint not found")
    mode = next(m for m in ("val", "test", "train") if m in (cfg.get("data") or {}))
    icfg = build_infer_config(cfg, mode, _baseline_in_channels(baseline))
    icfg.model.roi_head.shared_head["lfb_prefix_path"] = str(bank_root)
    icfg.model.roi_head.shared_head["dataset_mode"] = VIDEO_BANK_MODE
    infer = ActionDetector(icfg, baseline, device)
    n_boxes = 0
    for res in progress(detect_video(video, pipeline, infer, person_boxes, keyframes, 1, 1),
                        total=len(keyframes), desc=f"feature bank {Path(video).name}", enabled=show_progress):
        n_boxes += len(res.persons)
    if n_boxes == 0:
        raise DetectInputError(f"{video}: no person found at any keyframe, so there is no feature bank for the "
                               "LFB model")
    banks = [m.write_bank() for m in infer.model.modules() if callable(getattr(m, "write_bank", None))]
    return Path(banks[0])


def lfb_config_for_bank(cfg: Any, bank_root: str | os.PathLike) -> Any:
    """The LFB config reading the video's bank (``{bank_root}/lfb_video``) instead of the dataset's."""
    out = copy.deepcopy(cfg)
    lfb_cfg = out["model"]["roi_head"]["shared_head"]["lfb_cfg"]
    lfb_cfg["lfb_prefix_path"] = str(bank_root)
    lfb_cfg["dataset_modes"] = (VIDEO_BANK_MODE,)
    return out
