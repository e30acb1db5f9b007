"""Video and frame-folder decoding behind one reader interface, and the decoding pipeline ops.

Readers (``open_video``, :class:`PyAVReader`, :class:`OpenCVReader`, :class:`FrameFolderReader`) expose
``num_frames``, ``fps`` and ``get_frames(indices) -> uint8 ndarray [M, H, W, 3]`` (RGB), where ``indices``
are 0-based frame numbers in display order; unsorted and duplicate indices are allowed and the output
follows the order of ``indices``.  ``iter_frames(indices)`` is the same decoding one frame at a time: each
distinct index once, in ascending order, as ``(positions, frame, is_bgr)`` (a :data:`DecodedFrame`), with the
frame in the decoder's own channel order (OpenCV's BGR is not converted), so that a consumer can transform a
frame while it is still in cache (``pipeline.FramewiseClip``); ``get_frames`` is built on it.

:class:`PyAVReader` is frame-accurate: it builds an index of the video packets (display order = sorted
presentation timestamps, keyframe flags), seeks only when the keyframe at or before the next wanted frame
lies *ahead* of the current decoding position (or when it has to go back), and otherwise decodes forward,
so sorted indices are read in one pass.  The same index always gives the same pixels as decoding the
whole video sequentially.

Pipeline ops (registered with MMAction2 names in ``PIPELINES``): ``RawFrameDecode``, ``DecordInit`` /
``DecordDecode``, ``PyAVInit`` / ``PyAVDecode``, ``OpenCVInit`` / ``OpenCVDecode``, ``VideoInit`` /
``VideoDecode``.  decord is not a dependency: the Decord ops run on the PyAV reader.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..registry import PIPELINES, ConfigError

logger = logging.getLogger("actionkit")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg")
VIDEO_BACKENDS = ("pyav", "opencv")
JPEG_BACKENDS = ("cv2", "turbojpeg", "pillow")

__all__ = [
    "DecodeError", "VIDEO_EXTENSIONS", "is_video_file", "open_video", "PyAVReader", "OpenCVReader",
    "FrameFolderReader", "decode_image", "clear_index_cache",
    "RawFrameDecode", "DecordInit", "DecordDecode", "PyAVInit", "PyAVDecode", "OpenCVInit",
    "OpenCVDecode", "VideoInit", "VideoDecode",
]


class DecodeError(RuntimeError):
    """A video or frame could not be read; ``path`` names the file and ``frame`` the frame (if any)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, frame: int | None = None):
        self.path = None if path is None else str(path)
        self.frame = frame
        super().__init__(message)


def is_video_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


DecodedFrame = tuple  # (positions: list[int], frame: uint8 [H, W, 3], is_bgr: bool)


def _unique_positions(inds: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """Distinct indices in ascending order, and for each the positions in ``inds`` where it occurs."""
    uniq, inverse = np.unique(inds, return_inverse=True)
    positions: list[list[int]] = [[] for _ in range(len(uniq))]
    for j, u in enumerate(inverse.reshape(-1).tolist()):
        positions[u].append(j)
    return uniq.tolist(), positions


def check_frame_range(path: str, inds: np.ndarray, num_frames: int) -> None:
    """A :class:`DecodeError` naming the first index outside ``[0, num_frames)``."""
    if inds.size and (inds.min() < 0 or inds.max() >= num_frames):
        bad = int(inds[(inds < 0) | (inds >= num_frames)][0])
        raise DecodeError(f"{path}: frame {bad} out of range (the video has {num_frames} frames)", path, bad)


def assemble_rgb(frames: Iterable[DecodedFrame], n: int) -> np.ndarray | None:
    """Gather ``(positions, frame, is_bgr)`` into one RGB ``[n, H, W, 3]`` clip (None when there are none).

    A BGR frame is converted straight into its first slot (no RGB temporary); repeated positions copy it.
    """
    import cv2

    out = None
    for positions, img, is_bgr in frames:
        if out is None:
            out = np.empty((n,) + img.shape[:2] + (3,), np.uint8)
        first = out[positions[0]]
        if is_bgr:
            rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=first)
            if not np.shares_memory(rgb, first):  # this OpenCV build allocated instead of using dst
                first[...] = rgb
        else:
            first[...] = img
        for j in positions[1:]:
            out[j] = first
    return out


def _as_index_array(indices: Iterable[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(indices)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"frame indices must be integers, got {arr[:8]}")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# PyAV reader
# --------------------------------------------------------------------------------------------------
class _PacketIndex:
    """Display-order index of a video stream: pts of every frame and which frames are keyframes."""

    __slots__ = ("pts", "keyframes", "width", "height", "fps")

    def __init__(self, pts: np.ndarray, keyframes: list[int], width: int, height: int, fps: float):
        self.pts = pts  # int64, sorted (display order); compact so that long AVA videos cache cheaply
        self.keyframes = keyframes  # sorted display indices of keyframes
        self.width = width
        self.height = height
        self.fps = fps

    def __len__(self) -> int:
        return len(self.pts)

    def index_of(self, pts: int | None) -> int | None:
        if pts is None:
            return None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and self.pts[i] == pts else None


_INDEX_CACHE: "OrderedDict[tuple, _PacketIndex]" = OrderedDict()
_INDEX_CACHE_LOCK = threading.Lock()
_INDEX_CACHE_FILES = 512
_INDEX_CACHE_FRAMES = 8_000_000  # ~64 MB of timestamps per process at most


def clear_index_cache() -> None:
    with _INDEX_CACHE_LOCK:
        _INDEX_CACHE.clear()


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


class PyAVReader:
    """Frame-accurate random access to a video file with PyAV.

    ``num_threads`` is the decoder thread count (1 suits DataLoader workers, like decord's default).
    The packet index of a file is cached per process (keyed by path, size and mtime) so that reading
    many clips of one long video (AVA) demuxes it once.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        import av

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise DecodeError(f"{self.path}: video file not found", self.path)
        try:
            self._container = av.open(self.path)
        except Exception as e:  # av.error.FFmpegError and friends
            raise DecodeError(f"{self.path}: cannot open video ({type(e).__name__}: {e})", self.path) from e
        try:
            if not self._container.streams.video:
                raise DecodeError(f"{self.path}: no video stream", self.path)
            self._stream = self._container.streams.video[0]
            cc = self._stream.codec_context
            if num_threads and num_threads > 1:
                cc.thread_count = int(num_threads)
                cc.thread_type = "AUTO"
            else:
                cc.thread_count = 1
            self._index = self._load_index()
        except BaseException:
            self._container.close()
            raise
        self._iter = None  # live decode generator
        self._pos: int | None = None  # display index of the next frame the generator yields

    # ---- index ------------------------------------------------------------------------------
    def _load_index(self) -> _PacketIndex:
        try:
            key = _file_key(self.path)
        except OSError as e:
            raise DecodeError(f"{self.path}: {e}", self.path) from e
        with _INDEX_CACHE_LOCK:
            idx = _INDEX_CACHE.get(key)
            if idx is not None:
                _INDEX_CACHE.move_to_end(key)
                return idx
        idx = self._build_index()
        with _INDEX_CACHE_LOCK:
            _INDEX_CACHE[key] = idx
            total = sum(len(v) for v in _INDEX_CACHE.values())
            while len(_INDEX_CACHE) > 1 and (len(_INDEX_CACHE) > _INDEX_CACHE_FILES
                                             or total > _INDEX_CACHE_FRAMES):
                total -= len(_INDEX_CACHE.popitem(last=False)[1])
        return idx

    def _build_index(self) -> _PacketIndex:
        import av

        stream = self._stream
        entries: list[tuple[int, bool]] = []
        no_pts = 0
        discarded = 0
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.is_discard:
                    # before the start of an edit list (e.g. a clip cut with ``ffmpeg -ss .. -c copy``):
                    # decoded as a reference but never shown, so it is not a frame of the video
                    discarded += 1
                    continue
                if packet.pts is None:
                    no_pts += 1
                    continue
                entries.append((int(packet.pts), bool(packet.is_keyframe)))
        except av.error.FFmpegError as e:
            # A truncated file: keep the packets read so far; frames past them fail when requested.
            logger.debug("%s: demuxing stopped early: %s", self.path, e)
        if no_pts:
            raise DecodeError(f"{self.path}: {no_pts} video packets without timestamps; "
                              "frame-accurate access is impossible (remux the file, e.g. to mp4)", self.path)
        if not entries:
            raise DecodeError(f"{self.path}: the video has no decodable frames", self.path)
        fmt = self._container.format.name or ""
        declared = int(stream.frames or 0)
        if declared > len(entries) + discarded and ("mp4" in fmt or "mov" in fmt):
            raise DecodeError(f"{self.path}: truncated or corrupt video: the header lists {declared} frames "
                              f"but only {len(entries)} are present", self.path, len(entries))
        entries.sort()
        pts = np.array([p for p, _ in entries], np.int64)
        if len(pts) > 1 and not np.all(np.diff(pts) > 0):
            raise DecodeError(f"{self.path}: duplicate frame timestamps in the video stream", self.path)
        keyframes = [i for i, (_, k) in enumerate(entries) if k]
        if not keyframes or keyframes[0] != 0:
            keyframes = [0] + keyframes  # decode from the start to reach frames before the first keyframe
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        try:
            self._container.seek(0, stream=stream)
        except av.error.FFmpegError:
            pass
        return _PacketIndex(pts, keyframes, int(cc.width), int(cc.height), fps)

    # ---- public -----------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self._index)

    @property
    def fps(self) -> float:
        return self._index.fps

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(H, W) of the coded frames."""
        return self._index.height, self._index.width

    def __len__(self) -> int:
        return self.num_frames

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()
            self._iter = None
        self._container.close()

    def __enter__(self) -> "PyAVReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        inds = _as_index_array(indices)
        check_frame_range(self.path, inds, self.num_frames)
        if not inds.size:
            h, w = self.frame_shape
            return np.empty((0, h, w, 3), np.uint8)
        return assemble_rgb(self.iter_frames(inds), len(inds))

    def iter_frames(self, indices: Sequence[int] | np.ndarray) -> Iterator[DecodedFrame]:
        """Each distinct frame once, ascending (one forward pass where possible), as RGB."""
        inds = _as_index_array(indices)
        check_frame_range(self.path, inds, self.num_frames)
        h, w = self.frame_shape
        uniq, positions = _unique_positions(inds)
        for target, pos in zip(uniq, positions):
            arr = self._decode_one(target)
            if arr.shape != (h, w, 3):
                raise DecodeError(f"{self.path}: frame {target} has shape {arr.shape[:2]}, "
                                  f"expected {(h, w)} (resolution changes mid-stream)", self.path, target)
            yield pos, arr, False

    # ---- decoding -----------------------------------------------------------------------------
    def _seek_to_keyframe(self, k: int) -> None:
        import av

        if self._iter is not None:
            self._iter.close()
            self._iter = None
        try:
            self._container.seek(int(self._index.pts[k]), stream=self._stream, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            raise DecodeError(f"{self.path}: seek to frame {k} failed ({e})", self.path, k) from e
        self._iter = self._container.decode(self._stream)
        self._pos = k

    def _restart(self) -> None:
        self._seek_to_keyframe(0)

    def _next_frame(self, target: int):
        """Next decoded frame and its display index, or (None, None) at the end of the stream."""
        import av

        try:
            frame = next(self._iter)
        except StopIteration:
            return None, None
        except av.error.FFmpegError as e:
            self._iter = None
            self._pos = None
            raise DecodeError(f"{self.path}: decoding failed before frame {target} ({e})",
                              self.path, target) from e
        idx = self._index.index_of(frame.pts)
        if idx is None:
            idx = self._pos if self._pos is not None else 0
        return frame, idx

    def _decode_one(self, target: int) -> np.ndarray:
        kfs = self._index.keyframes
        k = kfs[bisect.bisect_right(kfs, target) - 1]
        if self._iter is None or self._pos is None or target < self._pos or k > self._pos:
            self._seek_to_keyframe(k)
        overshoot_retry = True
        while True:
            frame, idx = self._next_frame(target)
            if frame is None:
                self._iter = None
                self._pos = None
                raise DecodeError(f"{self.path}: frame {target} could not be decoded (the stream ended "
                                  f"early; the header lists {self.num_frames} frames)", self.path, target)
            if idx > target:
                # The demuxer landed after the target (an unusual seek): decode from the start.
                if overshoot_retry:
                    overshoot_retry = False
                    self._restart()
                    continue
                raise DecodeError(f"{self.path}: frame {target} is missing from the decoded stream",
                                  self.path, target)
            self._pos = idx + 1
            if idx == target:
                return frame.to_ndarray(format="rgb24")


# --------------------------------------------------------------------------------------------------
# OpenCV reader (sequential; exact because it never seeks)
# --------------------------------------------------------------------------------------------------
class OpenCVReader:
    """Video reader on ``cv2.VideoCapture``: decodes forward with ``grab()`` and re-opens to go back.

    Frame-exact by construction (no seeking), fast for dense sampling of short clips; random access deep
    into long videos is slower than :class:`PyAVReader`.  ``num_frames`` is the container's frame count.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        import cv2

        self.path = str(path)
        self._num_threads = num_threads
        if not os.path.isfile(self.path):
            raise DecodeError(f"{self.path}: video file not found", self.path)
        self._cap = self._open()
        self._num_frames = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if self._num_frames <= 0:
            self._cap.release()
            raise DecodeError(f"{self.path}: the video has no decodable frames", self.path)
        self._pos = 0

    def _open(self):
        import cv2

        params = [cv2.CAP_PROP_N_THREADS, int(self._num_threads or 0)] if hasattr(cv2, "CAP_PROP_N_THREADS") else []
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, params) if params else cv2.VideoCapture(self.path)
        if not cap.isOpened():
            raise DecodeError(f"{self.path}: cannot open video (OpenCV)", self.path)
        return cap

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def fps(self) -> float:
        return self._fps

    def __len__(self) -> int:
        return self._num_frames

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "OpenCVReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        inds = _as_index_array(indices)
        out = assemble_rgb(self.iter_frames(inds), len(inds))
        return np.empty((0, 0, 0, 3), np.uint8) if out is None else out

    def iter_frames(self, indices: Sequence[int] | np.ndarray) -> Iterator[DecodedFrame]:
        """Each distinct frame once, ascending, as BGR (OpenCV's order)."""
        inds = _as_index_array(indices)
        check_frame_range(self.path, inds, self._num_frames)
        uniq, positions = _unique_positions(inds)
        for target, pos in zip(uniq, positions):
            if target < self._pos:
                self._cap.release()
                self._cap = self._open()
                self._pos = 0
            while self._pos < target:
                if not self._cap.grab():
                    raise DecodeError(f"{self.path}: frame {target} could not be decoded (the stream "
                                      f"ended at frame {self._pos})", self.path, target)
                self._pos += 1
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise DecodeError(f"{self.path}: frame {target} could not be decoded", self.path, target)
            self._pos += 1
            yield pos, bgr, True


def open_video(path: str | os.PathLike, backend: str = "pyav", num_threads: int = 1,
               filename_tmpl: str = "img_{:05}.jpg", start_index: int = 1, decoding_backend: str = "cv2"):
    """Open a video for frame-accurate reading; ``backend`` is ``'pyav'`` (default) or ``'opencv'``.

    A folder is opened as a :class:`FrameFolderReader` (``filename_tmpl``, ``start_index``,
    ``decoding_backend``), so one call covers both layouts; every reader takes 0-based indices.
    """
    if os.path.isdir(path):
        return FrameFolderReader(path, filename_tmpl, start_index=start_index,
                                 decoding_backend=decoding_backend)
    backend = backend.lower()
    if backend in ("pyav", "av", "decord"):
        return PyAVReader(path, num_threads=num_threads)
    if backend in ("opencv", "cv2"):
        return OpenCVReader(path, num_threads=num_threads)
    raise ConfigError(f"unknown video backend '{backend}'; expected one of {VIDEO_BACKENDS}", "backend")


# --------------------------------------------------------------------------------------------------
# JPEG frames
# --------------------------------------------------------------------------------------------------
def decode_image(data: bytes, backend: str = "cv2", path: str | None = None) -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array [H, W, 3].

    ``'turbojpeg'`` decodes with OpenCV (its JPEG codec is libjpeg-turbo), so configs naming it work
    without PyTurboJPEG.
    """
    if backend in ("cv2", "turbojpeg"):
        import cv2

        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DecodeError(f"{path or '<bytes>'}: not a decodable image", path)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if backend == "pillow":
        import io

        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"))
        except Exception as e:
            raise DecodeError(f"{path or '<bytes>'}: not a decodable image ({e})", path) from e
    raise ConfigError(f"unknown decoding_backend '{backend}'; expected one of {JPEG_BACKENDS}",
                      "decoding_backend")


class FrameFolderReader:
    """A folder of extracted frames ``frame_dir/filename_tmpl.format(i + start_index)``.

    ``get_frames`` takes 0-based indices (like the video readers); ``get_files(file_indices)`` takes the
    numbers that appear in the file names.  ``num_frames`` is given or counted from the folder listing.
    """

    def __init__(self, frame_dir: str | os.PathLike, filename_tmpl: str = "img_{:05}.jpg",
                 start_index: int = 1, num_frames: int | None = None, decoding_backend: str = "cv2",
                 fps: float = 30.0):
        if decoding_backend not in JPEG_BACKENDS:
            raise ConfigError(f"unknown decoding_backend '{decoding_backend}'; expected one of "
                              f"{JPEG_BACKENDS}", "decoding_backend")
        self.frame_dir = str(frame_dir)
        if not os.path.isdir(self.frame_dir):
            raise DecodeError(f"{self.frame_dir}: frame folder not found", self.frame_dir)
        self.filename_tmpl = filename_tmpl
        self.start_index = int(start_index)
        self.decoding_backend = decoding_backend
        self.fps = fps
        self._num_frames = num_frames

    @property
    def num_frames(self) -> int:
        if self._num_frames is None:
            ext = os.path.splitext(self.filename_tmpl)[1]
            self._num_frames = sum(1 for e in os.scandir(self.frame_dir) if e.name.endswith(ext))
        return self._num_frames

    def __len__(self) -> int:
        return self.num_frames

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameFolderReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def path_of(self, file_index: int) -> str:
        return os.path.join(self.frame_dir, self.filename_tmpl.format(int(file_index)))

    def _read_bytes(self, file_index: int) -> bytes:
        path = self.path_of(file_index)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise DecodeError(f"{path}: frame {file_index} not found in {self.frame_dir}",
                              path, int(file_index)) from None
        except OSError as e:
            raise DecodeError(f"{path}: cannot read frame {file_index} ({e})", path, int(file_index)) from e

    def _not_decodable(self, file_index: int, cause: Exception | None = None) -> DecodeError:
        path = self.path_of(file_index)
        err = DecodeError(f"{path}: frame {file_index} is not a decodable image", path, int(file_index))
        err.__cause__ = cause
        return err

    def read_file(self, file_index: int) -> np.ndarray:
        data = self._read_bytes(file_index)
        try:
            return decode_image(data, self.decoding_backend, self.path_of(file_index))
        except DecodeError as e:
            raise self._not_decodable(file_index, e) from e

    def _read_bgr(self, file_index: int) -> np.ndarray:
        import cv2

        bgr = cv2.imdecode(np.frombuffer(self._read_bytes(file_index), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise self._not_decodable(file_index)
        return bgr

    def get_files(self, file_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        inds = _as_index_array(file_indices)
        out = assemble_rgb(self.iter_files(inds), len(inds))
        return np.empty((0, 0, 0, 3), np.uint8) if out is None else out

    def iter_files(self, file_indices: Sequence[int] | np.ndarray) -> Iterator[DecodedFrame]:
        """Each distinct file once, ascending; BGR with OpenCV (``cv2`` / ``turbojpeg``), RGB with pillow.

        Every frame must have the first one's size.
        """
        inds = _as_index_array(file_indices)
        uniq, positions = _unique_positions(inds)
        bgr = self.decoding_backend in ("cv2", "turbojpeg")
        shape = None
        for fi, pos in zip(uniq, positions):
            img = self._read_bgr(fi) if bgr else self.read_file(fi)
            if shape is None:
                shape = img.shape[:2]
            elif img.shape[:2] != shape:
                raise DecodeError(f"{self.path_of(fi)}: frame {fi} has shape {img.shape[:2]}, expected "
                                  f"{shape} like frame {uniq[0]}", self.path_of(fi), fi)
            yield pos, img, bgr

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.get_files(_as_index_array(indices) + self.start_index)

    def iter_frames(self, indices: Sequence[int] | np.ndarray) -> Iterator[DecodedFrame]:
        return self.iter_files(_as_index_array(indices) + self.start_index)


# --------------------------------------------------------------------------------------------------
# Pipeline ops
# --------------------------------------------------------------------------------------------------
def _frame_inds(results: dict) -> np.ndarray:
    if "frame_inds" not in results:
        raise KeyError("results has no 'frame_inds': put a frame sampler (e.g. SampleFrames) before decoding")
    inds = np.asarray(results["frame_inds"])
    if inds.ndim != 1:
        inds = np.squeeze(inds)
        inds = inds.reshape(-1)
    return inds.astype(np.int64)


def _scale_boxes(results: dict, h: int, w: int) -> None:
    """Normalised [0, 1] gt_bboxes / proposals -> float32 pixels (spec-detection 3.4)."""
    scale = np.array([w, h, w, h], dtype=np.float64)
    for key in ("gt_bboxes", "proposals"):
        boxes = results.get(key)
        if boxes is None:
            continue
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            results[key] = boxes.reshape(-1, 4).astype(np.float32)
            continue
        results[key] = (boxes * scale).astype(np.float32)


def record_decoded_shape(results: dict, h: int, w: int) -> None:
    """What a decode op records once it knows the frame size: the shapes, and normalised boxes in pixels."""
    results["original_shape"] = (h, w)
    results["img_shape"] = (h, w)
    _scale_boxes(results, h, w)


@PIPELINES.register()
class RawFrameDecode:
    """Read the frames ``results['frame_inds']`` of ``results['frame_dir']``.

    ``frame_dir`` is a folder of images named ``filename_tmpl.format(idx)`` (default ``img_{:05}.jpg``), or a
    video file (``.mp4/.avi/.mkv/.webm``...): then file number ``k`` (1-based) is video frame ``k - 1``, so
    AVA-style pipelines can read the same frames straight from videos.  ``decoding_backend`` picks the JPEG
    decoder (``cv2`` | ``turbojpeg`` (= cv2) | ``pillow``); ``video_backend`` the video reader.
    Sets ``imgs`` (uint8 [M, H, W, 3] RGB), ``original_shape`` and ``img_shape``; scales normalised
    ``gt_bboxes`` / ``proposals`` to float32 pixels.
    """

    def __init__(self, io_backend: str = "disk", decoding_backend: str = "cv2", video_backend: str = "pyav",
                 **kwargs: Any):
        if io_backend != "disk":
            raise ConfigError(f"io_backend '{io_backend}' is not supported (only 'disk')", "io_backend")
        if decoding_backend not in JPEG_BACKENDS:
            raise ConfigError(f"unknown decoding_backend '{decoding_backend}'; expected one of "
                              f"{JPEG_BACKENDS}", "decoding_backend")
        if video_backend not in VIDEO_BACKENDS:
            raise ConfigError(f"unknown video_backend '{video_backend}'; expected one of {VIDEO_BACKENDS}",
                              "video_backend")
        self.io_backend = io_backend
        self.decoding_backend = decoding_backend
        self.video_backend = video_backend
        self.kwargs = kwargs

    def _open(self, results: dict) -> tuple[Any, np.ndarray]:
        """The reader of ``frame_dir`` and the 0-based indices to read from it."""
        modality = results.get("modality", "RGB")
        if modality != "RGB":
            raise ConfigError(f"RawFrameDecode supports modality 'RGB' only, got '{modality}'", "modality")
        frame_dir = results["frame_dir"]
        inds = _frame_inds(results) + int(results.get("offset", 0))
        if is_video_file(frame_dir):
            if inds.size and inds.min() < 1:
                bad = int(inds.min())
                raise DecodeError(f"{frame_dir}: frame number {bad} does not exist (file numbers of a video "
                                  "read as frames start at 1)", frame_dir, bad)
            return open_video(frame_dir, self.video_backend), inds - 1
        reader = FrameFolderReader(frame_dir, results.get("filename_tmpl", "img_{:05}.jpg"), start_index=0,
                                   num_frames=results.get("total_frames"), decoding_backend=self.decoding_backend)
        return reader, inds

    def __call__(self, results: dict) -> dict:
        reader, inds = self._open(results)
        try:
            imgs = reader.get_frames(inds)
        finally:
            reader.close()
        results["imgs"] = imgs
        record_decoded_shape(results, *imgs.shape[1:3])
        return results

    def decode_stream(self, results: dict) -> Iterator[DecodedFrame]:
        """What ``__call__`` decodes, one frame at a time (see ``iter_frames``); sets no keys."""
        reader, inds = self._open(results)
        try:
            yield from reader.iter_frames(inds)
        finally:
            reader.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(io_backend='{self.io_backend}', "
                f"decoding_backend='{self.decoding_backend}', video_backend='{self.video_backend}')")


class _VideoInitBase:
    backend = "pyav"

    def __init__(self, io_backend: str = "disk", num_threads: int = 1, **kwargs: Any):
        if io_backend != "disk":
            raise ConfigError(f"io_backend '{io_backend}' is not supported (only 'disk')", "io_backend")
        self.io_backend = io_backend
        self.num_threads = num_threads
        self.kwargs = kwargs

    def __call__(self, results: dict) -> dict:
        if "filename" not in results:
            raise KeyError(f"{type(self).__name__}: results has no 'filename'")
        reader = open_video(results["filename"], self.backend, num_threads=self.num_threads)
        results["video_reader"] = reader
        results["total_frames"] = reader.num_frames
        results["avg_fps"] = reader.fps
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(io_backend='{self.io_backend}', num_threads={self.num_threads})"


class _VideoDecodeBase:
    def __init__(self, mode: str = "accurate", **kwargs: Any):
        if mode not in ("accurate", "efficient"):
            raise ConfigError(f"mode must be 'accurate' or 'efficient', got '{mode}'", "mode")
        self.mode = mode  # both are frame-accurate here
        self.kwargs = kwargs

    def _reader(self, results: dict):
        reader = results.get("video_reader")
        if reader is None:
            raise KeyError(f"{type(self).__name__}: results has no 'video_reader' (put the matching "
                           "*Init op before the sampler)")
        return reader

    @staticmethod
    def _release(results: dict, reader) -> None:
        reader.close()
        results["video_reader"] = None
        del results["video_reader"]

    def __call__(self, results: dict) -> dict:
        reader = self._reader(results)
        inds = _frame_inds(results)
        try:
            imgs = reader.get_frames(inds)
        finally:
            self._release(results, reader)
        results["imgs"] = imgs
        record_decoded_shape(results, *imgs.shape[1:3])
        return results

    def decode_stream(self, results: dict) -> Iterator[DecodedFrame]:
        """What ``__call__`` decodes, one frame at a time (see ``iter_frames``); closes the reader at the end."""
        reader = self._reader(results)
        try:
            yield from reader.iter_frames(_frame_inds(results))
        finally:
            self._release(results, reader)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode='{self.mode}')"


@PIPELINES.register()
class PyAVInit(_VideoInitBase):
    """Open ``results['filename']`` with the PyAV reader; sets ``video_reader``, ``total_frames``."""

    backend = "pyav"


@PIPELINES.register()
class DecordInit(_VideoInitBase):
    """MMAction2's ``DecordInit``, run on the frame-accurate PyAV reader (decord is not needed)."""

    backend = "pyav"


@PIPELINES.register()
class OpenCVInit(_VideoInitBase):
    """Open ``results['filename']`` with the sequential OpenCV reader."""

    backend = "opencv"


@PIPELINES.register()
class VideoInit(_VideoInitBase):
    """Open ``results['filename']`` with ``backend`` = ``'pyav'`` (default) or ``'opencv'``."""

    def __init__(self, backend: str = "pyav", io_backend: str = "disk", num_threads: int = 1, **kwargs: Any):
        if backend not in VIDEO_BACKENDS:
            raise ConfigError(f"unknown video backend '{backend}'; expected one of {VIDEO_BACKENDS}", "backend")
        super().__init__(io_backend=io_backend, num_threads=num_threads, **kwargs)
        self.backend = backend


@PIPELINES.register()
class PyAVDecode(_VideoDecodeBase):
    """Decode ``results['frame_inds']`` (0-based) from ``results['video_reader']``."""

    def __init__(self, multi_thread: bool = False, mode: str = "accurate", **kwargs: Any):
        super().__init__(mode=mode, **kwargs)
        self.multi_thread = multi_thread


@PIPELINES.register()
class DecordDecode(_VideoDecodeBase):
    """MMAction2's ``DecordDecode`` (frame-accurate in both modes)."""


@PIPELINES.register()
class OpenCVDecode(_VideoDecodeBase):
    """MMAction2's ``OpenCVDecode``."""


@PIPELINES.register()
class VideoDecode(_VideoDecodeBase):
    """Decode with whatever reader the preceding ``*Init`` op opened."""

