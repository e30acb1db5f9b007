"""Decode-order video indexes kept on disk, so that a file is counted by a sequential decode once, not once per process.

AVI and MPEG-4 Part 2 files carry no trustworthy timestamps, so :class:`~actionkit.data.decode.PyAVReader` numbers
their frames by decoding the whole stream once (see its docstring). That costs about as much as reading the video,
and it used to be paid by every process that opened the file: each DataLoader worker, each epoch's new workers, each
run. The index is small (the frame count and, per keyframe, its number, seek timestamp and a luma checksum), so it
is kept here: one ``.npz`` per video under ``$ACTIONKIT_HOME/video_index`` (``ACTIONKIT_VIDEO_INDEX_DIR`` overrides
the folder; ``off`` turns the store off).

Safety: files are read with ``allow_pickle=False`` and checked field by field; one written for another file, another
version of the video (size, mtime), another FFmpeg build or another format version, or that cannot be read, is
ignored (the video is indexed again and the entry rewritten). Writes are atomic, so concurrent workers indexing the
same file each leave a whole entry. A video rewritten in place with the same size and mtime (to the nanosecond) is
not told apart, as for the per-process cache; ``off`` or deleting the folder clears it.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from ..utils import actionkit_home, atomic_write, ensure_directory

logger = logging.getLogger("actionkit")

DIR_ENV = "ACTIONKIT_VIDEO_INDEX_DIR"
FORMAT_VERSION = 1
_OFF = frozenset({"", "0", "off", "none", "false", "no"})
_warned_dirs: set[str] = set()

__all__ = ["DIR_ENV", "index_store_dir", "read_index", "write_index"]


def index_store_dir() -> Path | None:
    """The folder of the stored indexes, or None when the store is off."""
    env = os.environ.get(DIR_ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return actionkit_home() / "video_index"


def _decoder_build() -> str:
    """PyAV and FFmpeg versions: another build may decode to other pixels (checksums) or frame counts."""
    import av

    ffmpeg = getattr(av, "ffmpeg_version_info", "")
    return f"pyav {av.__version__}; ffmpeg {ffmpeg}"


def _entry_path(folder: Path, video: str) -> Path:
    return folder / (hashlib.sha256(os.path.abspath(video).encode("utf-8", "surrogatepass")).hexdigest()[:32]
                     + ".npz")


def read_index(video: str, size: int, mtime_ns: int) -> dict | None:
    """The stored decode-order index of ``video`` at this size and mtime (a dict of the fields given to
    :func:`write_index`), or None."""
    folder = index_store_dir()
    if folder is None:
        return None
    entry = _entry_path(folder, video)
    try:
        with np.load(entry, allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files}
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged or foreign file: indexed again and rewritten
        logger.debug("%s: stored video index %s unreadable (%s: %s); indexing again", video, entry,
                     type(exc).__name__, exc)
        return None
    try:
        ok = (int(fields["format"]) == FORMAT_VERSION and str(fields["video"]) == os.path.abspath(video)
              and int(fields["size"]) == size and int(fields["mtime_ns"]) == mtime_ns
              and str(fields["decoder"]) == _decoder_build())
        if not ok:
            return None
        keyframes = [int(v) for v in fields["keyframes"]]
        seek_ts = [int(v) for v in fields["seek_ts"]]
        signatures = [None if v < 0 else int(v) for v in fields["signatures"]]
        num_frames = int(fields["num_frames"])
        valid = (num_frames > 0 and keyframes and keyframes[0] == 0 and len(seek_ts) == len(keyframes)
                 == len(signatures) and all(a < b for a, b in zip(keyframes, keyframes[1:]))
                 and keyframes[-1] < num_frames)
    except (KeyError, TypeError, ValueError) as exc:
        logger.debug("%s: stored video index %s malformed (%s); indexing again", video, entry, exc)
        return None
    if not valid:
        logger.debug("%s: stored video index %s inconsistent; indexing again", video, entry)
        return None
    return {"num_frames": num_frames, "keyframes": keyframes, "seek_ts": seek_ts, "signatures": signatures,
            "width": int(fields["width"]), "height": int(fields["height"]), "fps": float(fields["fps"])}


def write_index(video: str, size: int, mtime_ns: int, *, num_frames: int, keyframes: list[int],
                seek_ts: list[int], signatures: list[int | None], width: int, height: int, fps: float) -> None:
    """Store a decode-order index (atomically). A folder that cannot be written is warned about once per process
    and reading goes on without the store."""
    folder = index_store_dir()
    if folder is None:
        return
    buf = io.BytesIO()
    np.savez(buf, format=np.int64(FORMAT_VERSION), video=np.str_(os.path.abspath(video)), size=np.int64(size),
             mtime_ns=np.int64(mtime_ns), decoder=np.str_(_decoder_build()), num_frames=np.int64(num_frames),
             keyframes=np.asarray(keyframes, np.int64), seek_ts=np.asarray(seek_ts, np.int64),
             signatures=np.asarray([-1 if s is None else s for s in signatures], np.int64),
             width=np.int64(width), height=np.int64(height), fps=np.float64(fps))
    try:
        ensure_directory(folder, "video index folder")
        with atomic_write(_entry_path(folder, video)) as f:
            f.write(buf.getvalue())
    except OSError as exc:
        if str(folder) not in _warned_dirs:
            _warned_dirs.add(str(folder))
            logger.warning("cannot store video indexes in %s (%s); AVI files are indexed again in each process "
                           "(set %s to a writable folder, or to 'off')", folder, exc, DIR_ENV)
