"""Video and frame-folder decoding behind one reader interface, and the decoding pipeline ops.

Readers (``open_video``, :class:`PyAVReader`, :class:`OpenCVReader`, :class:`FrameFolderReader`) expose
``num_frames``, ``fps`` and ``get_frames(indices) -> uint8 ndarray [M, H, W, 3]`` (RGB), where ``indices``
are 0-based frame numbers in display order; unsorted and duplicate indices are allowed and the output
follows the order of ``indices``.  ``iter_frames(indices)`` is the same decoding one frame at a time: each
distinct index once, in ascending order, as ``(positions, frame, is_bgr)`` (a :data:`DecodedFrame`), with the
frame in the decoder's own channel order (OpenCV's BGR is not converted), so that a consumer can transform a
frame while it is still in cache; ``get_frames`` is built on it.

:class:`PyAVReader` is frame-accurate: frame ``i`` is the ``i``-th frame of a sequential decode.  It builds
an index of the video packets (display order = sorted presentation timestamps, keyframe flags; or, for AVI
and MPEG-4 Part 2 streams, whose timestamps cannot be trusted, the decode order counted by one sequential
decode), checks it against the decoded frames (falling back to decode order, or to decoding from the
start, when they disagree), seeks only when the keyframe at or before the next wanted frame lies *ahead*
of the current decoding position (or when it has to go back), and otherwise decodes forward, so sorted
indices are read in one pass.

Pipeline ops (registered with MMAction2 names in ``PIPELINES``): ``RawFrameDecode``, ``DecordInit`` /
``DecordDecode``, ``PyAVInit`` / ``PyAVDecode``, ``OpenCVInit`` / ``OpenCVDecode``, ``VideoInit`` /
``VideoDecode``.  decord is not a dependency: the Decord ops run on the PyAV reader.

Why this module is long: the frame-accurate PyAV reader is one piece of state (packet index, decode-order
numbering for AVI / MPEG-4 Part 2, seeks verified against keyframe checksums, the index cache) whose guarantee -
the frames of a sequential decode - the other readers and the decode ops share (errors, frame-range checks,
``iter_frames``); split across files, that one invariant would have no single place.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
import zlib
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
    """Where each frame of a video stream is, and where decoding can start.

    Two numberings:

    - by timestamps (``decode_order=False``): frame ``i`` is the frame whose presentation timestamp is
      ``pts[i]`` (the sorted packet timestamps); ``seek_ts[j]`` is ``pts[keyframes[j]]``.
    - by decode order (``decode_order=True``, for containers that store no presentation timestamps, such as
      AVI, or whose timestamps disagree with the decoded frames): frame ``i`` is the ``i``-th frame the
      decoder outputs from the start of the stream, exactly as a sequential decode numbers them;
      ``num_frames`` was counted by one such decode.  ``keyframes[j]`` is the number of a keyframe,
      ``seek_ts[j]`` the timestamp its packet is found by, and ``signatures[j]`` a checksum of its luma
      plane that identifies it after a seek (a seek is only trusted once that keyframe has come out).
    """

    __slots__ = ("pts", "num_frames", "keyframes", "seek_ts", "signatures", "decode_order", "width", "height",
                 "fps")

    def __init__(self, num_frames: int, keyframes: list[int], seek_ts: list[int], width: int, height: int,
                 fps: float, pts: np.ndarray | None = None, signatures: list[int | None] | None = None):
        self.pts = pts  # int64, sorted (display order); compact so that long AVA videos cache cheaply
        self.num_frames = int(num_frames)
        self.keyframes = keyframes  # sorted frame numbers where decoding may start; always begins with 0
        self.seek_ts = seek_ts
        self.decode_order = pts is None
        self.signatures = signatures if signatures is not None else [None] * len(keyframes)
        self.width = width
        self.height = height
        self.fps = fps

    def __len__(self) -> int:
        return self.num_frames

    def index_of(self, pts: int | None) -> int | None:
        if pts is None or self.pts is None:
            return None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and self.pts[i] == pts else None

    def without_seeking(self) -> "_PacketIndex":
        """The same numbering, decoded from the start only."""
        return _PacketIndex(self.num_frames, [0], self.seek_ts[:1], self.width, self.height, self.fps,
                            self.pts, self.signatures[:1])


_INDEX_CACHE: "OrderedDict[tuple, _PacketIndex]" = OrderedDict()
_INDEX_CACHE_LOCK = threading.Lock()
_INDEX_CACHE_FILES = 512
_INDEX_CACHE_FRAMES = 8_000_000  # ~64 MB of timestamps per process at most

# Containers that store no presentation timestamps (the demuxer's parser guesses them, wrongly for packed
# B-frames and dropped-frame placeholders): their frames are numbered in decode order.
_DECODE_ORDER_FORMATS = frozenset({"avi"})
# Codecs whose packets may decode to no frame (MPEG-4 Part 2 N-VOPs: dropped-frame placeholders, the empty
# chunks of packed B-frames), in whatever container: numbered in decode order too.
_DECODE_ORDER_CODECS = frozenset({"mpeg4", "msmpeg4v1", "msmpeg4v2", "msmpeg4v3", "h263", "h263p", "h263i"})
# After a seek in decode order, the keyframe sought must come out within this many frames.
_SYNC_LIMIT = 64
# Frames decoded when a file is indexed by timestamps, to check that decoded frames carry them in order.
_CHECKED_FRAMES = 8


def clear_index_cache() -> None:
    with _INDEX_CACHE_LOCK:
        _INDEX_CACHE.clear()


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


def _luma_signature(frame) -> int:
    """CRC-32 of a decoded frame's 8-bit luma (identifies a keyframe after a seek)."""
    return zlib.crc32(np.ascontiguousarray(frame.to_ndarray(format="gray")).data)


class _StreamMismatch(Exception):
    """Internal: the decoded stream disagrees with the index (handled by ``PyAVReader._decode_one``)."""


class PyAVReader:
    """Frame-accurate random access to a video file with PyAV.

    Frame ``i`` is always the ``i``-th frame of a sequential decode of the whole stream.  Files with
    trustworthy timestamps (mp4, mkv, webm, ...) are indexed from their packet timestamps and read with
    keyframe seeks; AVI files (no stored presentation timestamps: packed B-frames and dropped-frame
    placeholders make the guessed ones wrong) are numbered in decode order, counted by one sequential
    decode when the file is first opened, and seek only to keyframes that are recognised by their
    pixels once decoded.  When the decoded frames ever disagree with a timestamp index, the file falls
    back to decode order (and a seek that cannot be verified, to decoding from the start).

    ``num_threads`` is the decoder thread count (1 suits DataLoader workers, like decord's default).
    The index of a file is cached per process (keyed by path, size and mtime) so that reading
    many clips of one long video (AVA) demuxes it once; decode-order indexes are also kept on disk
    (:mod:`.video_index_store`), so that other processes and later runs skip the counting decode.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        self.path = str(path)
        self._num_threads = int(num_threads or 1)
        if not os.path.isfile(self.path):
            raise DecodeError(f"{self.path}: video file not found", self.path)
        if os.path.getsize(self.path) == 0:
            raise DecodeError(f"{self.path}: empty file (0 bytes), not a video", self.path)
        self._iter = None  # live decode generator
        self._pos: int | None = None  # frame number of the next frame the generator yields
        self._last_out: int | None = None  # timestamp index of the last frame decoded since the seek
        self._peeked = None  # a frame decoded ahead (to verify the one before it), yielded next
        self._run = 0  # frames decoded since the last seek (timestamp numbering)
        self._sync: int | None = None  # signature of the keyframe a decode-order seek must find first
        self._container, self._stream = self._open_container(self.path, self._num_threads)
        try:
            self._index = self._load_index()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open_container(path: str, num_threads: int):
        import av

        try:
            container = av.open(path)
        except Exception as e:  # av.error.FFmpegError and friends
            raise DecodeError(f"{path}: cannot open video ({type(e).__name__}: {e})", path) from e
        try:
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream", path)
            stream = container.streams.video[0]
            cc = stream.codec_context
            if num_threads > 1:
                cc.thread_count = num_threads
                cc.thread_type = "AUTO"
            else:
                cc.thread_count = 1
        except BaseException:
            container.close()
            raise
        return container, stream

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
        idx = self._stored_index(key)
        if idx is None:
            idx = self._build_index()
            if idx.decode_order:
                self._store_index(key, idx)
        self._cache_index(key, idx)
        return idx

    def _stored_index(self, key: tuple) -> _PacketIndex | None:
        """A decode-order index kept on disk by an earlier process (:mod:`.video_index_store`)."""
        from .video_index_store import read_index

        fields = read_index(self.path, key[1], key[2])
        if fields is None:
            return None
        logger.debug("%s: decode-order index read from the store", self.path)
        return _PacketIndex(fields["num_frames"], fields["keyframes"], fields["seek_ts"], fields["width"],
                            fields["height"], fields["fps"], pts=None, signatures=fields["signatures"])

    @staticmethod
    def _store_index(key: tuple, idx: _PacketIndex) -> None:
        from .video_index_store import write_index

        write_index(key[0], key[1], key[2], num_frames=idx.num_frames, keyframes=idx.keyframes,
                    seek_ts=idx.seek_ts, signatures=idx.signatures, width=idx.width, height=idx.height,
                    fps=idx.fps)

    @staticmethod
    def _cache_index(key: tuple, idx: _PacketIndex) -> None:
        with _INDEX_CACHE_LOCK:
            _INDEX_CACHE[key] = idx
            _INDEX_CACHE.move_to_end(key)
            total = sum(len(v) for v in _INDEX_CACHE.values())
            while len(_INDEX_CACHE) > 1 and (len(_INDEX_CACHE) > _INDEX_CACHE_FILES
                                             or total > _INDEX_CACHE_FRAMES):
                total -= len(_INDEX_CACHE.popitem(last=False)[1])

    def _demux_packets(self) -> tuple[list[tuple[int | None, int | None, bool]], int]:
        """(pts, dts, is_keyframe) of every shown video packet in file order, and the number discarded."""
        import av

        packets: list[tuple[int | None, int | None, bool]] = []
        discarded = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    continue
                if packet.is_discard:
                    # before the start of an edit list (e.g. a clip cut with ``ffmpeg -ss .. -c copy``):
                    # decoded as a reference but never shown, so it is not a frame of the video
                    discarded += 1
                    continue
                packets.append((packet.pts, packet.dts, bool(packet.is_keyframe)))
        except av.error.FFmpegError as e:
            # A truncated file: keep the packets read so far; frames past them fail when requested.
            logger.debug("%s: demuxing stopped early: %s", self.path, e)
        return packets, discarded

    def _geometry(self) -> tuple[int, int, float]:
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return int(stream.codec_context.width), int(stream.codec_context.height), float(rate) if rate else 0.0

    def _build_index(self) -> _PacketIndex:
        packets, discarded = self._demux_packets()
        if not packets:
            raise DecodeError(f"{self.path}: the video has no decodable frames", self.path)
        fmt = set((self._container.format.name or "").split(","))
        codec = self._stream.codec_context.name
        if (fmt & _DECODE_ORDER_FORMATS or codec in _DECODE_ORDER_CODECS
                or any(pts is None for pts, _, _ in packets)):
            return self._build_decode_order_index(packets)
        declared = int(self._stream.frames or 0)
        if declared > len(packets) + discarded and fmt & {"mp4", "mov"}:
            raise DecodeError(f"{self.path}: truncated or corrupt video: the header lists {declared} frames "
                              f"but only {len(packets)} are present", self.path, len(packets))
        entries = sorted((int(pts), key) for pts, _, key in packets)
        pts = np.array([p for p, _ in entries], np.int64)
        if len(pts) > 1 and not np.all(np.diff(pts) > 0):
            # not frame-accurate by timestamps; the decoder's own order still is
            logger.debug("%s: duplicate frame timestamps; numbering frames in decode order", self.path)
            return self._build_decode_order_index(packets)
        keyframes = [i for i, (_, k) in enumerate(entries) if k]
        if not keyframes or keyframes[0] != 0:
            keyframes = [0] + keyframes  # decode from the start to reach frames before the first keyframe
        w, h, fps = self._geometry()
        idx = _PacketIndex(len(pts), keyframes, [int(pts[k]) for k in keyframes], w, h, fps, pts=pts)
        reason = self._check_first_frames(idx)
        if reason is not None:
            logger.warning("%s: frame timestamps disagree with the decoded stream (%s); numbering frames "
                           "in decode order", self.path, reason)
            self._drop_iter()
            return self._build_decode_order_index(packets)
        return idx

    def _check_first_frames(self, idx: _PacketIndex) -> str | None:
        """Decode the first frames: each must carry the next timestamp of the index (else the reason why not).

        The decoder is left where the check stopped, so that a first read near the start goes on from there.
        """
        import av

        self._index = idx
        self._seek_to_keyframe(0)
        try:
            for n in range(min(_CHECKED_FRAMES, idx.num_frames)):
                frame = next(self._iter, None)
                if frame is None or frame.pts != idx.pts[n]:
                    got = "the end of the stream" if frame is None else f"timestamp {frame.pts}"
                    return f"frame {n} should have timestamp {idx.pts[n]}, the decoder gave {got}"
                self._pos, self._last_out, self._run = n + 1, n, n + 1
        except av.error.FFmpegError as e:  # damaged data: left to the reads that reach it
            logger.debug("%s: decoding the first frames failed: %s", self.path, e)
            self._drop_iter()
        return None

    def _build_decode_order_index(self, packets: list[tuple[int | None, int | None, bool]]) -> _PacketIndex:
        """Count the frames of a sequential decode; pair keyframe packets with the keyframes decoded."""
        import av

        container, stream = self._open_container(self.path, self._num_threads)
        count = 0
        decoded_keys: list[tuple[int, int]] = []  # (frame number, luma signature)
        try:
            for frame in container.decode(stream):
                if frame.key_frame:
                    decoded_keys.append((count, _luma_signature(frame)))
                count += 1
        except av.error.FFmpegError as e:
            # a damaged tail: the frames decoded so far are the video (as in a sequential decode)
            logger.debug("%s: decoding stopped after %d frames: %s", self.path, count, e)
        finally:
            container.close()
        if count == 0:
            raise DecodeError(f"{self.path}: the video has no decodable frames", self.path)
        key_dts = [dts for _, dts, key in packets if key]
        keyframes, seek_ts, signatures = [0], [0], [None]
        counts = {}
        for _, sig in decoded_keys:
            counts[sig] = counts.get(sig, 0) + 1
        if len(key_dts) == len(decoded_keys):  # the n-th keyframe packet decodes to the n-th keyframe
            for dts, (number, sig) in zip(key_dts, decoded_keys):
                if number > 0 and dts is not None and counts[sig] == 1 and number > keyframes[-1]:
                    keyframes.append(number)
                    seek_ts.append(int(dts))
                    signatures.append(sig)
        self._rewind()
        w, h, fps = self._geometry()
        return _PacketIndex(count, keyframes, seek_ts, w, h, fps, pts=None, signatures=signatures)

    def _rewind(self) -> None:
        """Back to the start of the file (re-opened when the container cannot seek)."""
        import av

        try:
            self._container.seek(0, stream=self._stream)
        except av.error.FFmpegError:
            self._container.close()
            self._container, self._stream = self._open_container(self.path, self._num_threads)

    def _fall_back(self, reason: str) -> None:
        """Replace an index the decoded stream contradicted: timestamps -> decode order -> no seeking."""
        old = self._index
        if not old.decode_order:
            logger.warning("%s: frame timestamps disagree with the decoded stream (%s); numbering frames "
                           "in decode order", self.path, reason)
            self._drop_iter()
            self._rewind()
            packets, _ = self._demux_packets()
            new = self._build_decode_order_index(packets)
        else:
            logger.warning("%s: a seek could not be verified (%s); decoding from the start", self.path, reason)
            new = old.without_seeking()
        self._index = new
        try:
            key = _file_key(self.path)
        except OSError:
            return
        if new.decode_order and not old.decode_order:  # the next processes start from the decode-order numbering
            self._store_index(key, new)
        with _INDEX_CACHE_LOCK:
            if _INDEX_CACHE.get(key) is not old:
                return
        self._cache_index(key, new)

    # ---- public -----------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self._index.num_frames

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
        self._drop_iter()
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
    def _drop_iter(self) -> None:
        if self._iter is not None:
            self._iter.close()
        self._iter = None
        self._pos = None
        self._peeked = None

    def _seek_to_keyframe(self, k: int) -> None:
        """Start decoding at keyframe ``k`` (a frame number in ``self._index.keyframes``)."""
        import av

        idx = self._index
        j = bisect.bisect_left(idx.keyframes, k)
        self._drop_iter()
        if k == 0 and idx.decode_order:
            # the start exactly as the counting decode saw it (a seek may land on the first keyframe instead)
            self._container.close()
            self._container, self._stream = self._open_container(self.path, self._num_threads)
        else:
            try:
                self._container.seek(idx.seek_ts[j], stream=self._stream, backward=True, any_frame=False)
            except av.error.FFmpegError as e:
                if k > 0:
                    raise DecodeError(f"{self.path}: seek to frame {k} failed ({e})", self.path, k) from e
                self._rewind()
        self._iter = self._container.decode(self._stream)
        self._pos = k
        self._last_out = None
        self._run = 0
        self._sync = idx.signatures[j] if idx.decode_order and k > 0 else None

    def _restart(self) -> None:
        self._seek_to_keyframe(0)

    def _pull(self, target: int):
        """The decoder's next frame, or None at the end of the stream."""
        import av

        if self._peeked is not None:
            frame, self._peeked = self._peeked, None
            return frame
        try:
            return next(self._iter)
        except StopIteration:
            return None
        except av.error.FFmpegError as e:
            self._drop_iter()
            raise DecodeError(f"{self.path}: decoding failed before frame {target} ({e})",
                              self.path, target) from e

    def _next_frame(self, target: int):
        """Next decoded frame and its frame number, or (None, None) at the end of the stream.

        Raises :class:`_StreamMismatch` when the frame contradicts the index.
        """
        frame = self._pull(target)
        if frame is None:
            return None, None
        idx = self._index
        if idx.decode_order:
            if self._sync is not None:  # after a seek: frames before the keyframe sought are not counted
                for _ in range(_SYNC_LIMIT):
                    if frame.key_frame and _luma_signature(frame) == self._sync:
                        self._sync = None
                        return frame, self._pos
                    frame = self._pull(target)
                    if frame is None:
                        break
                raise _StreamMismatch(f"keyframe {self._pos} did not come out after seeking to it")
            return frame, self._pos
        i = idx.index_of(frame.pts)
        if i is None:
            raise _StreamMismatch(f"a decoded frame has timestamp {frame.pts}, which no packet has")
        if self._last_out is not None and i != self._last_out + 1:
            raise _StreamMismatch(f"decoded frames jump from timestamp {idx.pts[self._last_out]} to "
                                  f"{frame.pts} (frame {self._last_out} to {i})")
        self._last_out = i
        self._run += 1
        return frame, i

    def _check_successor(self, i: int, target: int) -> None:
        """The first frame after a seek is only trusted once the next decoded frame is frame ``i + 1``.

        A next frame that fails to decode (a damaged tail) leaves frame ``i`` as it is: that failure is
        reported to the read that asks for it.
        """
        try:
            nxt = self._pull(target)
        except DecodeError as e:
            logger.debug("%s: frame %d could not be checked against its successor: %s", self.path, i, e)
            return
        if nxt is None:
            if i != self.num_frames - 1:
                raise _StreamMismatch(f"the stream ended after frame {i}")
            return
        self._peeked = nxt
        j = self._index.index_of(nxt.pts)
        if j != i + 1:
            raise _StreamMismatch(f"frame {i} (timestamp {self._index.pts[i]}) is followed by "
                                  f"timestamp {nxt.pts}")

    def _decode_one(self, target: int) -> np.ndarray:
        try:
            return self._decode_indexed(target)
        except _StreamMismatch as e:
            reason = str(e)
        self._drop_iter()
        self._fall_back(reason)
        if target >= self.num_frames:
            raise DecodeError(f"{self.path}: frame {target} does not exist: a sequential decode gives "
                              f"{self.num_frames} frames ({reason})", self.path, target)
        try:
            return self._decode_indexed(target)
        except _StreamMismatch as e:
            self._drop_iter()
            if self._index.keyframes != [0]:
                self._fall_back(str(e))
                try:
                    return self._decode_indexed(target)
                except _StreamMismatch:
                    pass
            self._drop_iter()
            raise DecodeError(f"{self.path}: frame {target} cannot be located in the decoded stream ({e})",
                              self.path, target) from None

    def _decode_indexed(self, target: int) -> np.ndarray:
        kfs = self._index.keyframes
        k = kfs[bisect.bisect_right(kfs, target) - 1]
        if self._iter is None or self._pos is None or target < self._pos or k > self._pos:
            self._seek_to_keyframe(k)
        overshoot_retry = True
        while True:
            frame, i = self._next_frame(target)
            if frame is None:
                self._drop_iter()
                if self._index.decode_order and self._sync is None:
                    raise DecodeError(f"{self.path}: frame {target} could not be decoded (the stream ended "
                                      f"early; a sequential decode gave {self.num_frames} frames)",
                                      self.path, target)
                raise _StreamMismatch(f"the stream ended before frame {target}")
            if i > target:
                # The demuxer landed after the target (an unusual seek): decode from the start.
                if overshoot_retry:
                    overshoot_retry = False
                    self._restart()
                    continue
                raise _StreamMismatch(f"frame {target} is missing from the decoded stream")
            first_after_seek = not self._index.decode_order and self._run == 1
            self._pos = i + 1
            if i == target:
                if first_after_seek:
                    self._check_successor(i, target)
                return frame.to_ndarray(format="rgb24")


# --------------------------------------------------------------------------------------------------
# OpenCV reader (sequential; exact because it never seeks)
# --------------------------------------------------------------------------------------------------
class OpenCVReader:
    """Video reader on ``cv2.VideoCapture``: decodes forward with ``grab()`` and re-opens to go back.

    Frame-exact by construction (no seeking), fast for dense sampling of short clips; random access deep
    into long videos is slower than :class:`PyAVReader`.  ``num_frames`` is the container's frame count
    (``CAP_PROP_FRAME_COUNT``, as MMAction2's ``OpenCVInit``): where a header overstates it, reading past the
    real end is a :class:`DecodeError` naming the file.
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
                                      f"ended at frame {self._pos}, but the container header lists "
                                      f"{self._num_frames} frames)", self.path, target)
                self._pos += 1
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise DecodeError(f"{self.path}: frame {target} could not be decoded (the container header "
                                  f"lists {self._num_frames} frames)", self.path, target)
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
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


def imdecode_bgr(data: bytes, path: str | None = None) -> np.ndarray:
    """OpenCV's ``imdecode(IMREAD_COLOR)`` (BGR uint8 [H, W, 3]) that fails only with a :class:`DecodeError`.

    Empty data (OpenCV raises ``cv2.error``), data OpenCV cannot decode, and a JPEG without its end-of-image
    marker (a truncated file; some OpenCV builds fill the missing part with grey) are refused, naming ``path``.
    """
    import cv2

    name = path or "<bytes>"
    if not data:
        raise DecodeError(f"{name}: empty image file (0 bytes)", path)
    if data[:2] == _JPEG_SOI and _JPEG_EOI not in data[-4096:]:
        raise DecodeError(f"{name}: truncated JPEG (no end-of-image marker)", path)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise DecodeError(f"{name}: not a decodable image ({str(e).strip().splitlines()[-1]})", path) from e
    if bgr is None:
        raise DecodeError(f"{name}: not a decodable image", path)
    return bgr


def _pillow_rgb(im, path: str | None) -> np.ndarray:
    """A Pillow image as RGB uint8, with 16-bit samples reduced as OpenCV's ``IMREAD_COLOR`` does (``>> 8``).

    Pillow's own ``convert('RGB')`` saturates 16-bit grey (``I;16*``) at 255; 16-bit colour is already
    opened as its high bytes.  Mode ``I`` is taken as 16-bit when its values fit; other 32-bit integer and
    float images are refused.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(im)
        if mode == "I" and grey.size and (grey.min() < 0 or grey.max() > 0xFFFF):
            raise DecodeError(f"{path or '<bytes>'}: 32-bit integer images are not supported "
                              "(8- or 16-bit images only)", path)
        grey = (grey.astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F" or mode.startswith("F;"):
        raise DecodeError(f"{path or '<bytes>'}: floating-point images are not supported (8- or 16-bit "
                          "images only)", path)
    return np.asarray(im.convert("RGB"))


def decode_image(data: bytes, backend: str = "cv2", path: str | None = None) -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array [H, W, 3].

    ``'turbojpeg'`` decodes with OpenCV (its JPEG codec is libjpeg-turbo), so configs naming it work
    without PyTurboJPEG.  Any failure is a :class:`DecodeError` naming ``path``.
    """
    if backend in ("cv2", "turbojpeg"):
        import cv2

        return cv2.cvtColor(imdecode_bgr(data, path), cv2.COLOR_BGR2RGB)
    if backend == "pillow":
        import io

        from PIL import Image

        if not data:
            raise DecodeError(f"{path or '<bytes>'}: empty image file (0 bytes)", path)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return _pillow_rgb(im, path)
        except DecodeError:
            raise
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

    def _not_decodable(self, file_index: int, cause: DecodeError) -> DecodeError:
        """``cause`` (which names the file) as an error about frame ``file_index`` of this folder."""
        path = self.path_of(file_index)
        reason = str(cause).removeprefix(f"{path}: ")
        return DecodeError(f"{path}: frame {file_index}: {reason}", path, int(file_index))

    def read_file(self, file_index: int) -> np.ndarray:
        data = self._read_bytes(file_index)
        try:
            return decode_image(data, self.decoding_backend, self.path_of(file_index))
        except DecodeError as e:
            raise self._not_decodable(file_index, e) from e

    def _read_bgr(self, file_index: int) -> np.ndarray:
        data = self._read_bytes(file_index)
        try:
            return imdecode_bgr(data, self.path_of(file_index))
        except DecodeError as e:
            raise self._not_decodable(file_index, e) from e

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
    """Normalised [0, 1] gt_bboxes / proposals -> float32 pixels."""
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
        """Open ``results['filename']``: sets ``video_reader``, ``total_frames``, ``avg_fps``, and
        ``start_index`` 0 (video frames are 0-based) when the dataset did not set it, so that MMAction2's
        order (``*Init`` -> ``SampleFrames`` -> ``*Decode``) runs on a results dict holding only ``filename``."""
        if "filename" not in results:
            raise KeyError(f"{type(self).__name__}: results has no 'filename'")
        reader = open_video(results["filename"], self.backend, num_threads=self.num_threads)
        results["video_reader"] = reader
        results["total_frames"] = reader.num_frames
        results["avg_fps"] = reader.fps
        results.setdefault("start_index", 0)
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

