"""Temporal sampling of frame indices: ``SampleFrames`` and ``DenseSampleFrames`` (MMAction2 0.x), and
``ShuffleFrames`` (not in MMAction2: a temporal-order ablation that permutes the frames of every clip).

Both read ``results['total_frames']`` and ``results['start_index']`` and write
``results['frame_inds']`` (int64, flattened clip-major: clip 0's ``clip_len`` indices, then clip 1's, ...),
``clip_len``, ``frame_interval`` and ``num_clips``.  Randomness comes from numpy's global RNG
(``np.random.randint``), as in MMAction2, so ``np.random.seed`` reproduces a draw.

Test-mode offsets follow **0.x**:
``avg = (F - L*I + 1) / N``; ``offsets = int(arange(N)*avg + avg/2)`` when ``F > L*I - 1``, else zeros.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from actionkit.registry import PIPELINES

__all__ = ["SampleFrames", "DenseSampleFrames", "ShuffleFrames"]

_OUT_OF_BOUND_OPTS = ("loop", "repeat_last")


def _check_positive_int(name: str, value: Any, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


@PIPELINES.register()
class SampleFrames:
    """Sample ``num_clips`` clips of ``clip_len`` frames, ``frame_interval`` apart.

    Args:
        clip_len: frames per clip (L).
        frame_interval: temporal stride between sampled frames (I).
        num_clips: clips per video (N).
        temporal_jitter: add ``randint(frame_interval)`` to every index (train-time jitter).
        twice_sample: test mode only: also append the un-shifted base offsets (2N clips, as TSM uses).
        out_of_bound_opt: ``'loop'`` (indices modulo F) or ``'repeat_last'`` (out-of-range indices of a
            clip are replaced by the clip's last in-range index).
        test_mode: deterministic 0.x test offsets instead of random train offsets.
        start_index: deprecated in MMAction2 (the dataset sets ``results['start_index']``); accepted and
            used only when ``results`` has no ``start_index``.
        keep_tail_frames: train mode: float-spaced offsets that can reach the last frames (0.x option).
    """

    def __init__(self, clip_len: int, frame_interval: int = 1, num_clips: int = 1,
                 temporal_jitter: bool = False, twice_sample: bool = False,
                 out_of_bound_opt: str = "loop", test_mode: bool = False,
                 start_index: int | None = None, keep_tail_frames: bool = False):
        name = type(self).__name__
        self.clip_len = _check_positive_int("clip_len", clip_len, name)
        self.frame_interval = _check_positive_int("frame_interval", frame_interval, name)
        self.num_clips = _check_positive_int("num_clips", num_clips, name)
        self.temporal_jitter = bool(temporal_jitter)
        self.twice_sample = bool(twice_sample)
        if out_of_bound_opt not in _OUT_OF_BOUND_OPTS:
            raise ValueError(f"{name}: out_of_bound_opt must be one of {_OUT_OF_BOUND_OPTS}, "
                             f"got {out_of_bound_opt!r}")
        self.out_of_bound_opt = out_of_bound_opt
        self.test_mode = bool(test_mode)
        self.keep_tail_frames = bool(keep_tail_frames)
        if start_index is not None:
            warnings.warn(f"{name}: 'start_index' belongs to the dataset (results['start_index']); "
                          "the argument is only a fallback", stacklevel=2)
        self.start_index = start_index

    # -- offsets -------------------------------------------------------------------------------
    def _get_train_clips(self, num_frames: int) -> np.ndarray:
        ori_clip_len = self.clip_len * self.frame_interval
        n = self.num_clips
        if self.keep_tail_frames:
            avg_interval = (num_frames - ori_clip_len + 1) / float(n)
            if num_frames > ori_clip_len - 1:
                base = np.arange(n) * avg_interval
                return (base + np.random.uniform(0, avg_interval, n)).astype(np.int64)
            return np.zeros((n,), dtype=np.int64)
        avg_interval = (num_frames - ori_clip_len + 1) // n
        if avg_interval > 0:
            base = np.arange(n) * avg_interval
            return base + np.random.randint(avg_interval, size=n)
        if num_frames > max(n, ori_clip_len):
            return np.sort(np.random.randint(num_frames - ori_clip_len + 1, size=n))
        if avg_interval == 0:
            ratio = (num_frames - ori_clip_len + 1.0) / n
            return np.around(np.arange(n) * ratio)
        return np.zeros((n,), dtype=np.int64)

    def _get_test_clips(self, num_frames: int) -> np.ndarray:
        ori_clip_len = self.clip_len * self.frame_interval
        avg_interval = (num_frames - ori_clip_len + 1) / float(self.num_clips)
        if num_frames > ori_clip_len - 1:
            base = np.arange(self.num_clips) * avg_interval
            offsets = (base + avg_interval / 2.0).astype(np.int64)
            if self.twice_sample:
                offsets = np.concatenate([offsets, base.astype(np.int64)])
            return offsets
        return np.zeros((self.num_clips,), dtype=np.int64)

    def _sample_clips(self, num_frames: int) -> np.ndarray:
        if self.test_mode:
            return self._get_test_clips(num_frames)
        return self._get_train_clips(num_frames)

    # -- indices -------------------------------------------------------------------------------
    def _offsets_to_inds(self, clip_offsets: np.ndarray, total_frames: int) -> np.ndarray:
        frame_inds = (np.asarray(clip_offsets)[:, None]
                      + np.arange(self.clip_len)[None, :] * self.frame_interval)
        frame_inds = frame_inds.reshape(-1)
        if self.temporal_jitter:
            frame_inds = frame_inds + np.random.randint(self.frame_interval, size=len(frame_inds))
        frame_inds = frame_inds.reshape(-1, self.clip_len)
        if self.out_of_bound_opt == "loop":
            frame_inds = np.mod(frame_inds, total_frames)
        else:  # repeat_last
            safe = frame_inds < total_frames
            last = np.max(np.where(safe, frame_inds, 0), axis=1, keepdims=True)
            frame_inds = np.where(safe, frame_inds, last)
        return frame_inds.reshape(-1).astype(np.int64)

    def _start_index(self, results: dict) -> int:
        if "start_index" in results:
            return int(results["start_index"])
        if self.start_index is not None:
            return int(self.start_index)
        raise KeyError(f"{type(self).__name__}: results has no 'start_index' "
                       "(the dataset sets it: 1 for RawframeDataset, 0 for VideoDataset)")

    def __call__(self, results: dict) -> dict:
        if "total_frames" not in results:
            raise KeyError(f"{type(self).__name__}: results has no 'total_frames'")
        total_frames = int(results["total_frames"])
        if total_frames <= 0:
            where = results.get("filename") or results.get("frame_dir") or "<video>"
            raise ValueError(f"{where}: {type(self).__name__} needs total_frames > 0, got {total_frames}")
        clip_offsets = self._sample_clips(total_frames)
        frame_inds = self._offsets_to_inds(clip_offsets, total_frames)
        results["frame_inds"] = frame_inds + self._start_index(results)
        results["clip_len"] = self.clip_len
        results["frame_interval"] = self.frame_interval
        results["num_clips"] = self.num_clips
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(clip_len={self.clip_len}, frame_interval={self.frame_interval}, "
                f"num_clips={self.num_clips}, temporal_jitter={self.temporal_jitter}, "
                f"twice_sample={self.twice_sample}, out_of_bound_opt={self.out_of_bound_opt!r}, "
                f"test_mode={self.test_mode})")


@PIPELINES.register()
class DenseSampleFrames(SampleFrames):
    """Dense sampling inside a ``sample_range`` window (I3D 'dense' configs; same in 0.x and 1.x).

    ``pos = max(1, 1 + F - sample_range)``, ``interval = sample_range // num_clips``.
    Train: one random window start ``randint(0, pos - 1)`` (0 when pos == 1).
    Test: ``num_sample_positions`` starts ``linspace(0, pos - 1, dtype=int)``; all their clips are
    concatenated while ``results['num_clips']`` stays ``num_clips`` (so ``FormatShape`` yields
    ``num_sample_positions * num_clips`` views per crop).
    """

    def __init__(self, clip_len: int, frame_interval: int = 1, num_clips: int = 1,
                 sample_range: int = 64, num_sample_positions: int = 10,
                 temporal_jitter: bool = False, out_of_bound_opt: str = "loop",
                 test_mode: bool = False, start_index: int | None = None):
        super().__init__(clip_len, frame_interval, num_clips, temporal_jitter=temporal_jitter,
                         out_of_bound_opt=out_of_bound_opt, test_mode=test_mode,
                         start_index=start_index)
        self.sample_range = _check_positive_int("sample_range", sample_range, "DenseSampleFrames")
        self.num_sample_positions = _check_positive_int("num_sample_positions", num_sample_positions,
                                                        "DenseSampleFrames")

    def _get_train_clips(self, num_frames: int) -> np.ndarray:
        sample_position = max(1, 1 + num_frames - self.sample_range)
        interval = self.sample_range // self.num_clips
        start_idx = 0 if sample_position == 1 else np.random.randint(0, sample_position - 1)
        base = np.arange(self.num_clips) * interval
        return (base + start_idx) % num_frames

    def _get_test_clips(self, num_frames: int) -> np.ndarray:
        sample_position = max(1, 1 + num_frames - self.sample_range)
        interval = self.sample_range // self.num_clips
        starts = np.linspace(0, sample_position - 1, num=self.num_sample_positions, dtype=int)
        base = np.arange(self.num_clips) * interval
        return np.concatenate([(base + s) % num_frames for s in starts]).astype(np.int64)

    def __repr__(self) -> str:
        return (f"DenseSampleFrames(clip_len={self.clip_len}, frame_interval={self.frame_interval}, "
                f"num_clips={self.num_clips}, sample_range={self.sample_range}, "
                f"num_sample_positions={self.num_sample_positions}, test_mode={self.test_mode})")


@PIPELINES.register()
class ShuffleFrames:
    """Randomly permute the frame indices *inside* every clip (after ``SampleFrames``, before decoding).

    Not an MMAction2 op: an ablation that keeps every sampled frame but destroys temporal order, e.g. to check
    that a model (or a data set) really depends on motion.  Reads ``results['frame_inds']`` (clip-major, as
    written by :class:`SampleFrames`) and ``results['clip_len']``; each clip gets its own permutation drawn from
    numpy's global RNG (seeded per sample by the engine, so a run is reproducible).  With ``keep_first=True``
    the first frame of every clip stays in place.
    """

    def __init__(self, keep_first: bool = False):
        self.keep_first = bool(keep_first)

    def __call__(self, results: dict) -> dict:
        if "frame_inds" not in results:
            raise KeyError("ShuffleFrames: results has no 'frame_inds' (put it after SampleFrames)")
        inds = np.asarray(results["frame_inds"])
        clip_len = int(results.get("clip_len", inds.size))
        if clip_len < 1 or inds.size % clip_len:
            raise ValueError(f"ShuffleFrames: {inds.size} frame indices do not split into clips of {clip_len}")
        clips = inds.reshape(-1, clip_len).copy()
        first = 1 if self.keep_first else 0
        for clip in clips:
            clip[first:] = clip[first:][np.random.permutation(clip_len - first)]
        results["frame_inds"] = clips.reshape(inds.shape)
        return results

    def __repr__(self) -> str:
        return f"ShuffleFrames(keep_first={self.keep_first})"
