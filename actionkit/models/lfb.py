"""Long-Term Feature Banks (MMAction2 0.x ``LFB``, ``FBOHead``, ``LFBInferHead``).

The bank on disk is a directory (no pickle), memory-mapped on open so that every DDP rank and data-loader
worker shares one copy through the page cache::

    lfb_{mode}/
        meta.json           format/version, num_features N, channels C, dtype, num_videos V, num_seconds S
        features.npy        [N, C] float16 (or float32), opened with np.load(mmap_mode='r')
        video_ids.json      [V] video ids (sorted)
        video_offsets.npy   int64 [V+1]: video v owns seconds[video_offsets[v]:video_offsets[v+1]]
        seconds.npy         int64 [S]: the stored seconds, strictly increasing within a video
        second_offsets.npy  int64 [S+1]: second s owns features[second_offsets[s]:second_offsets[s+1]]

Within a second the rows keep the order of MMAction2's per-second feature list. A bank directory is
written under a temporary name and renamed into place when complete, and it is validated on open
(shapes, dtypes, channel count, index bounds); a bad bank raises :class:`FeatureBankError` naming the file.

Every feature is a vector: ``[C]`` (or ``[C, 1, 1, 1]``, as pooled by ``LFBInferHead``); a feature with two
or more non-singleton dimensions is refused, never flattened.  Features must be finite: the writers refuse
NaN / Inf (also a float32 value that overflows float16) naming the video and second, and record
``"all_finite": true`` in ``meta.json``; a bank without that flag (written by an older version) is scanned
once per open, in chunks, and refused at its first non-finite row.  Writing over an existing directory
(``overwrite=True``, ``convert-lfb --overwrite``) replaces only a directory holding nothing but a bank's
files (a bank, or a damaged one) or an empty directory; anything else is refused.

Sampling follows spec-detection §4.11: window [t - W//2, t - W//2 + W) seconds, at most K features per
second chosen at random without replacement, zero padding to W*K slots, float32.  The random choice is
made with a numpy ``Generator``: within a second the rows are ranked by one uniform draw per row (drawn
in row order over the window) and the first ``min(n, K)`` are taken, which is a uniform random ordered
subset without replacement (the distribution of ``np.random.choice(n, m, replace=False)``).  In the
deterministic mode the generator of a RoI is seeded from a stable hash of ``(video_id, timestamp,
roi_index)``, so test results are reproducible; random sampling is the default (and is what training uses).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..registry import MODELS, ConfigError
from ..utils import atomic_write
from .common import ConvModule, kaiming_init_

BANK_FORMAT = "actionkit-lfb"
BANK_VERSION = 1
_FILES = ("meta.json", "features.npy", "video_ids.json", "video_offsets.npy", "seconds.npy",
          "second_offsets.npy")
_DTYPES = {"float16": np.float16, "float32": np.float32}


class FeatureBankError(ValueError):
    """A missing, corrupt or mismatched feature bank; the message names the file."""


# ---------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_dir(final: Path, overwrite: bool = True):
    """Yield a temporary directory beside ``final``; on success rename it to ``final``.

    An interrupted write leaves only a hidden ``.<name>.tmp-*`` directory, never a bank under ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{final}: already exists (pass overwrite=True / --overwrite to replace it)")
        if not is_replaceable_bank_dir(final):
            raise FileExistsError(f"{final}: exists and is not a feature bank (it holds more than a bank's "
                                  f"files: {', '.join(_FILES)}); refusing to replace it. Remove it yourself "
                                  f"or write the bank elsewhere")
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_path(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_replaceable_bank_dir(path: str | os.PathLike) -> bool:
    """What a bank writer may replace: a directory holding nothing but a bank's files (a bank, a damaged
    one with e.g. an unreadable ``meta.json``, and their temporary files) or an empty directory; never a
    file, a link or a directory with anything else in it (a bank with a file of the user's beside it
    included)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    temp_prefixes = tuple(f".{f}.tmp-" for f in _FILES)   # actionkit.utils.atomic_write's temporary names
    return all(entry.name in _FILES or entry.name.startswith(temp_prefixes) for entry in path.iterdir())


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _save_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def _check_vector_shape(shape: tuple[int, ...], where: str) -> None:
    """A feature is a vector: ``[C]``, or ``[C]`` with singleton dimensions (``[C, 1, 1, 1]``)."""
    if len(shape) == 0 or sum(1 for d in shape if d != 1) > 1:
        raise FeatureBankError(f"{where}: feature of shape {list(shape)} is not a vector ([C], or [C, 1, 1, 1] "
                               f"as LFBInferHead pools it); refusing to flatten it into {int(np.prod(shape))} "
                               f"channels")


def _non_finite_rows(block: np.ndarray) -> np.ndarray:
    """Indices of the rows of a 2-D float16 / float32 block that hold a NaN or an Inf."""
    if block.dtype == np.float16:  # exponent bits all set: Inf or NaN (np.isfinite on float16 is slow)
        bad = (block.view(np.uint16) & np.uint16(0x7C00)) == np.uint16(0x7C00)
    else:
        bad = ~np.isfinite(block)
    return np.flatnonzero(bad.any(axis=1))


def _as_rows(value: Any, channels: int | None, where: str) -> list[np.ndarray]:
    """One second's features (list of [C] tensors/arrays, or an [n, C] array) -> list of [C] arrays.

    The arrays are views of the inputs where possible (no copy of a whole bank in memory)."""
    if isinstance(value, torch.Tensor):
        items: Sequence[Any] = [value] if value.dim() == 1 else list(value)
    elif isinstance(value, np.ndarray):
        items = [value] if value.ndim == 1 else list(value)
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise FeatureBankError(f"{where}: expected a list of feature tensors, got {type(value).__name__}")
    rows = []
    for j, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            _check_vector_shape(tuple(item.shape), f"{where}[{j}]")
            t = item.detach().cpu()
            if t.dtype not in (torch.float16, torch.float32):
                t = t.float()
            a = t.reshape(-1).numpy()
        elif isinstance(item, np.ndarray):
            _check_vector_shape(item.shape, f"{where}[{j}]")
            a = item.reshape(-1)
            if a.dtype not in (np.float16, np.float32):
                a = a.astype(np.float32)
        else:
            raise FeatureBankError(f"{where}[{j}]: expected a tensor, got {type(item).__name__}")
        if channels is not None and a.shape[0] != channels:
            raise FeatureBankError(f"{where}[{j}]: feature has {a.shape[0]} values, expected {channels} channels")
        if channels is None:
            channels = int(a.shape[0])
        rows.append(a)
    return rows


def write_feature_bank(out_dir: str | os.PathLike, bank: Mapping[str, Mapping[Any, Any]], *,
                       channels: int | None = None, dtype: str | None = None, overwrite: bool = True,
                       source: str = "<memory>") -> Path:
    """Write ``{video_id: {second: [feature (C,), ...]}}`` (MMAction2's bank dict) as a bank directory.

    Per-second values may also be ``[n, C]`` arrays / tensors.  ``dtype`` is 'float16' or 'float32'
    (default: the dtype of the first feature).  Seconds with no features are dropped.  Returns the path.
    """
    out_dir = Path(out_dir)
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    # pass 1: normalise keys, count rows, check channels
    videos: list[tuple[str, list[tuple[int, list[np.ndarray]]]]] = []
    n_total = 0
    if not isinstance(bank, Mapping):
        raise FeatureBankError(f"{source}: expected a dict {{video_id: {{second: [features]}}}}, "
                               f"got {type(bank).__name__}")
    for vid in sorted(bank, key=str):
        per_video = bank[vid]
        if not isinstance(vid, str):
            raise FeatureBankError(f"{source}: video id {vid!r} is not a string")
        if not isinstance(per_video, Mapping):
            raise FeatureBankError(f"{source}: video {vid!r}: expected a dict {{second: [features]}}, "
                                   f"got {type(per_video).__name__}")
        secs: dict[int, list[np.ndarray]] = {}
        for sec_key, value in per_video.items():
            try:
                sec = int(sec_key)
            except (TypeError, ValueError):
                raise FeatureBankError(f"{source}: video {vid!r}: second {sec_key!r} is not an integer") from None
            if isinstance(sec_key, float) and sec_key != sec:
                raise FeatureBankError(f"{source}: video {vid!r}: second {sec_key!r} is not an integer")
            if sec in secs:
                raise FeatureBankError(f"{source}: video {vid!r}: second {sec} appears twice")
            rows = _as_rows(value, channels, f"{source}: video {vid!r} second {sec}")
            if not rows:
                continue
            if channels is None:
                channels = int(rows[0].shape[0])
            if dtype is None:
                dtype = "float16" if rows[0].dtype == np.float16 else "float32"
            secs[sec] = rows
            n_total += len(rows)
        if secs:
            videos.append((vid, sorted(secs.items())))
    if channels is None:  # an empty bank has no channel count to record
        raise FeatureBankError(f"{source}: the bank holds no features")
    np_dtype = _DTYPES[dtype or "float16"]
    video_ids = [v for v, _ in videos]
    video_offsets = np.zeros(len(videos) + 1, np.int64)
    seconds: list[int] = []
    counts: list[int] = []
    for i, (_, secs_list) in enumerate(videos):
        video_offsets[i + 1] = video_offsets[i] + len(secs_list)
        for sec, rows in secs_list:
            seconds.append(sec)
            counts.append(len(rows))
    second_offsets = np.zeros(len(seconds) + 1, np.int64)
    np.cumsum(np.asarray(counts, np.int64), out=second_offsets[1:])
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        feats = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np_dtype,
                                          shape=(n_total, channels))
        r = 0
        for vid, secs_list in videos:
            for sec, rows in secs_list:
                block = feats[r:r + len(rows)]
                with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
                    block[...] = np.stack(rows)
                bad = _non_finite_rows(block)
                if bad.size:
                    j = int(bad[0])
                    why = ("NaN or Inf" if not np.all(np.isfinite(rows[j])) else
                           f"a value outside the {np.dtype(np_dtype).name} range (largest "
                           f"{float(np.abs(rows[j].astype(np.float64)).max()):g})")
                    raise FeatureBankError(f"{source}: video {vid!r} second {sec} feature [{j}]: {why}; "
                                           f"a feature bank must hold finite features")
                r += len(rows)
        feats.flush()
        del feats
        _fsync_path(tmp / "features.npy")
        _write_index(tmp, video_ids, video_offsets, np.asarray(seconds, np.int64), second_offsets,
                     n_total, channels, np_dtype)
    return out_dir


def write_feature_bank_arrays(out_dir: str | os.PathLike, features: np.ndarray | Iterable[np.ndarray],
                              video_ids: Sequence[str], video_offsets: np.ndarray, seconds: np.ndarray,
                              second_offsets: np.ndarray, *, channels: int | None = None,
                              dtype: str = "float16", overwrite: bool = True) -> Path:
    """Write a bank from its arrays (the on-disk layout) without building a dict in memory.

    ``features`` is an ``[N, C]`` array (e.g. another memory map) or an iterable of ``[n_i, C]`` chunks in
    row order; rows are copied chunk by chunk.  The index arrays are validated like on open.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    video_offsets = np.asarray(video_offsets, np.int64)
    seconds = np.asarray(seconds, np.int64)
    second_offsets = np.asarray(second_offsets, np.int64)
    n_total = int(second_offsets[-1])
    if isinstance(features, np.ndarray):
        channels = int(features.shape[1])
        if features.shape[0] != n_total:
            raise FeatureBankError(f"{out_dir}: {features.shape[0]} feature rows but the index needs {n_total}")
        chunks: Iterable[np.ndarray] = (features[i:i + 65536] for i in range(0, n_total, 65536))
    else:
        if channels is None:
            raise ValueError("channels is required when features is an iterable of chunks")
        chunks = features
    with _atomic_dir(Path(out_dir), overwrite=overwrite) as tmp:
        feats = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=_DTYPES[dtype],
                                          shape=(n_total, channels))
        r = 0
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.ndim != 2 or chunk.shape[1] != channels or r + chunk.shape[0] > n_total:
                raise FeatureBankError(f"{out_dir}: feature chunk of shape {chunk.shape} does not fit "
                                       f"[{n_total}, {channels}] at row {r}")
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
                feats[r:r + chunk.shape[0]] = chunk
            bad = _non_finite_rows(feats[r:r + chunk.shape[0]])
            if bad.size:
                vid, sec = _row_key(r + int(bad[0]), list(video_ids), video_offsets, seconds, second_offsets)
                raise FeatureBankError(f"{out_dir}: feature row {r + int(bad[0])} (video {vid!r} second {sec}) "
                                       f"is not finite (NaN / Inf, or outside the {dtype} range); a feature "
                                       f"bank must hold finite features")
            r += chunk.shape[0]
        if r != n_total:
            raise FeatureBankError(f"{out_dir}: got {r} feature rows, the index needs {n_total}")
        feats.flush()
        del feats
        _fsync_path(tmp / "features.npy")
        _write_index(tmp, list(video_ids), video_offsets, seconds, second_offsets, n_total, channels,
                     _DTYPES[dtype])
        _BankPart(tmp)  # validate the index before the bank becomes visible
    return Path(out_dir)


def _row_key(row: int, video_ids: Sequence[str], video_offsets: np.ndarray, seconds: np.ndarray,
             second_offsets: np.ndarray) -> tuple[str | None, int | None]:
    """``(video id, second)`` that owns feature ``row`` (``None`` where the index does not say)."""
    s = int(np.searchsorted(second_offsets, row, "right")) - 1
    if not 0 <= s < len(seconds):
        return None, None
    v = int(np.searchsorted(video_offsets, s, "right")) - 1
    return (video_ids[v] if 0 <= v < len(video_ids) else None), int(seconds[s])


def _write_index(tmp: Path, video_ids: list[str], video_offsets: np.ndarray, seconds: np.ndarray,
                 second_offsets: np.ndarray, n_total: int, channels: int, np_dtype: Any) -> None:
    _save_json(tmp / "video_ids.json", video_ids)
    _save_npy(tmp / "video_offsets.npy", video_offsets.astype(np.int64))
    _save_npy(tmp / "seconds.npy", seconds.astype(np.int64))
    _save_npy(tmp / "second_offsets.npy", second_offsets.astype(np.int64))
    _save_json(tmp / "meta.json", {  # written last: a directory without it is never a bank
        "format": BANK_FORMAT, "version": BANK_VERSION, "num_features": int(n_total),
        "channels": int(channels), "dtype": np.dtype(np_dtype).name, "num_videos": len(video_ids),
        "num_seconds": int(seconds.shape[0]),
        "all_finite": True,  # the writers refuse non-finite features; banks without it are scanned on open
    })


def load_mmaction_lfb_pkl(path: str | os.PathLike) -> dict:
    """Load an MMAction2 ``lfb_{mode}.pkl`` (torch.save'd dict) safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such MMAction2 LFB file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise FeatureBankError(f"{path}: cannot be read as a torch-saved LFB dict with weights_only=True "
                               f"({type(e).__name__}: {e})") from e
    if not isinstance(obj, Mapping):
        raise FeatureBankError(f"{path}: expected a dict {{video_id: {{second: [features]}}}}, "
                               f"got {type(obj).__name__}")
    return dict(obj)


def convert_lfb(in_pkl_paths: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                dtype: str | None = None, overwrite: bool = True) -> Path:
    """Convert MMAction2 ``lfb_*.pkl`` files into one bank directory ``out_dir``.

    Several inputs are merged per video in order, as MMAction2's ``LFB`` does (``dict.update``: a video
    in a later file replaces the same video of an earlier one).
    """
    if isinstance(in_pkl_paths, (str, os.PathLike)):
        in_pkl_paths = [in_pkl_paths]
    merged: dict = {}
    for p in in_pkl_paths:
        merged.update(load_mmaction_lfb_pkl(p))
    return write_feature_bank(out_dir, merged, dtype=dtype, overwrite=overwrite,
                              source=", ".join(str(p) for p in in_pkl_paths))


def convert_lfb_main(argv: Sequence[str] | None = None) -> int:
    """``actionkit convert-lfb IN.pkl [IN2.pkl ...] --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="actionkit convert-lfb",
        description="Convert MMAction2 long-term feature bank pickles (lfb_{train,val}.pkl, torch.save'd "
                    "{video_id: {second: [tensor]}}) into actionkit's memory-mapped bank directory. Several "
                    "inputs are merged into one bank (a later file's video replaces an earlier one's).")
    parser.add_argument("inputs", nargs="+", help="MMAction2 lfb_*.pkl file(s)")
    parser.add_argument("--out", help="output bank directory (default: the single input without '.pkl', "
                                      "e.g. data/ava/lfb_half/lfb_train)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                        help="feature dtype in the bank (default: keep the input's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        if len(args.inputs) != 1 or not args.inputs[0].endswith(".pkl"):
            parser.error("--out is required with several inputs or an input not ending in .pkl")
        out = args.inputs[0][:-len(".pkl")]
    try:
        path = convert_lfb(args.inputs, out, dtype=args.dtype, overwrite=args.overwrite)
    except (FeatureBankError, FileNotFoundError, FileExistsError) as e:
        parser.exit(2, f"actionkit convert-lfb: error: {e}\n")
    bank = FeatureBank.open(path)
    print(f"wrote {path}: {bank.num_features} features x {bank.channels} channels ({bank.dtype}), "
          f"{len(bank)} videos, {bank.num_seconds} seconds")
    return 0


# ---------------------------------------------------------------------------------------------------------
# reading + sampling
# ---------------------------------------------------------------------------------------------------------
class _BankPart:
    """One validated bank directory (memory-mapped features + index arrays)."""

    def __init__(self, path: Path, expected_channels: int | None = None, check_finite: bool = True):
        self.path = path
        if not path.is_dir():
            raise FeatureBankError(f"{path}: no such bank directory")
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise FeatureBankError(f"{meta_path}: missing; {path} is not a complete feature bank "
                                   f"(an interrupted write, or not a bank directory)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FeatureBankError(f"{meta_path}: unreadable ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != BANK_FORMAT:
            raise FeatureBankError(f"{meta_path}: not an {BANK_FORMAT} bank (format={meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("version") != BANK_VERSION:
            raise FeatureBankError(f"{meta_path}: unsupported bank version {meta.get('version')!r} "
                                   f"(expected {BANK_VERSION})")
        try:
            n, c, v, s = (int(meta[k]) for k in ("num_features", "channels", "num_videos", "num_seconds"))
            dtype = _DTYPES[meta["dtype"]]
        except (KeyError, TypeError, ValueError) as e:
            raise FeatureBankError(f"{meta_path}: bad or missing field ({e!r})") from e
        self.meta = meta
        if expected_channels is not None and c != int(expected_channels):
            raise FeatureBankError(f"{meta_path}: the bank has {c} channels but lfb_channels={expected_channels}")

        fpath = path / "features.npy"
        try:
            feats = np.load(fpath, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise FeatureBankError(f"{fpath}: missing") from None
        except (OSError, ValueError) as e:
            raise FeatureBankError(f"{fpath}: corrupt or truncated ({e})") from e
        if feats.ndim != 2 or feats.shape != (n, c):
            raise FeatureBankError(f"{fpath}: shape {feats.shape} does not match meta.json ({n}, {c})")
        if feats.dtype != dtype:
            raise FeatureBankError(f"{fpath}: dtype {feats.dtype} does not match meta.json {meta['dtype']}")
        if isinstance(feats, np.memmap) and feats.offset + feats.nbytes != os.path.getsize(fpath):
            raise FeatureBankError(f"{fpath}: file size {os.path.getsize(fpath)} does not match its header "
                                   f"({feats.offset} + {feats.nbytes} bytes)")
        self.features = feats

        vpath = path / "video_ids.json"
        try:
            video_ids = json.loads(vpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FeatureBankError(f"{vpath}: missing") from None
        except (OSError, ValueError) as e:
            raise FeatureBankError(f"{vpath}: unreadable ({e})") from e
        if (not isinstance(video_ids, list) or len(video_ids) != v
                or not all(isinstance(x, str) for x in video_ids)):
            raise FeatureBankError(f"{vpath}: expected a list of {v} strings")
        self.video_ids: list[str] = video_ids
        self.video_index = {vid: i for i, vid in enumerate(video_ids)}
        if len(self.video_index) != v:
            raise FeatureBankError(f"{vpath}: duplicate video ids")

        self.video_offsets = self._index(path / "video_offsets.npy", v + 1, s)
        self.seconds = self._load_int(path / "seconds.npy", s)
        self.second_offsets = self._index(path / "second_offsets.npy", s + 1, n)
        if s and np.any(np.diff(self.second_offsets) <= 0):
            raise FeatureBankError(f"{path / 'second_offsets.npy'}: offsets must be strictly increasing "
                                   f"(every stored second has at least one feature)")
        if s > 1:
            d = np.diff(self.seconds)
            inner = np.ones(s - 1, bool)
            starts = self.video_offsets[1:-1]
            starts = starts[(starts > 0) & (starts < s)]
            inner[starts - 1] = False
            if np.any(d[inner] <= 0):
                raise FeatureBankError(f"{path / 'seconds.npy'}: seconds must be strictly increasing "
                                       f"within each video")
        self.channels = c
        self.num_features = n
        self.num_seconds = s
        self.dtype = np.dtype(dtype)
        if check_finite and meta.get("all_finite") is not True:
            self._check_finite()

    def _check_finite(self, chunk_bytes: int = 1 << 26) -> None:
        """Scan the features (chunks of ``chunk_bytes``) of a bank written without the ``all_finite`` flag."""
        step = max(1, chunk_bytes // max(1, self.channels * self.dtype.itemsize))
        for r0 in range(0, self.num_features, step):
            bad = _non_finite_rows(np.asarray(self.features[r0:r0 + step]))
            if bad.size:
                row = r0 + int(bad[0])
                vid, sec = _row_key(row, self.video_ids, self.video_offsets, self.seconds, self.second_offsets)
                raise FeatureBankError(f"{self.path / 'features.npy'}: feature row {row} (video {vid!r} second "
                                       f"{sec}) holds NaN or Inf; a feature bank must hold finite features")

    def __getstate__(self) -> dict:
        # pickling (spawned workers, deepcopy) re-opens the memory map instead of copying the features
        return {"path": self.path, "channels": self.channels}

    def __setstate__(self, state: dict) -> None:
        # the features were checked when this part was first opened; the copy re-opens the same files
        self.__init__(state["path"], state["channels"], check_finite=False)

    @staticmethod
    def _load_int(p: Path, length: int) -> np.ndarray:
        try:
            a = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            raise FeatureBankError(f"{p}: missing") from None
        except (OSError, ValueError) as e:
            raise FeatureBankError(f"{p}: corrupt or truncated ({e})") from e
        if a.dtype != np.int64 or a.shape != (length,):
            raise FeatureBankError(f"{p}: expected int64 [{length}], got {a.dtype} {list(a.shape)}")
        return a

    def _index(self, p: Path, length: int, end: int) -> np.ndarray:
        a = self._load_int(p, length)
        if a[0] != 0 or a[-1] != end or np.any(np.diff(a) < 0):
            raise FeatureBankError(f"{p}: offsets out of bounds (must rise from 0 to {end})")
        return a


def stable_seed(video_id: str, timestamp: int, roi_index: int, seed: int = 0) -> int:
    """A platform-independent 64-bit seed from ``(video_id, timestamp, roi_index, seed)``."""
    key = f"{video_id},{int(timestamp)},{int(roi_index)},{int(seed)}".encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def parse_img_key(img_key: str) -> tuple[str, int]:
    """``'vid,0902'`` -> ``('vid', 902)``."""
    video_id, sep, ts = str(img_key).rpartition(",")
    if not sep:
        raise ValueError(f"img_key {img_key!r} is not of the form 'video_id,second'")
    return video_id, int(ts)


class FeatureBank:
    """A memory-mapped long-term feature bank (one or several bank directories) and its sampler.

    ``FeatureBank.open(path)`` opens one directory; ``FeatureBank.open(path1, path2, ...)`` merges several
    per video, later ones winning (MMAction2's ``dict.update`` over ``dataset_modes``).
    """

    def __init__(self, parts: Sequence[_BankPart], max_num_sampled_feat: int = 5, window_size: int = 60,
                 deterministic: bool = False, seed: int | None = None):
        if not parts:
            raise ValueError("FeatureBank needs at least one bank directory")
        chans = {p.channels for p in parts}
        if len(chans) != 1:
            raise FeatureBankError("banks have different channel counts: "
                                   + ", ".join(f"{p.path}: {p.channels}" for p in parts))
        if max_num_sampled_feat < 1 or window_size < 1:
            raise ValueError("max_num_sampled_feat and window_size must be >= 1")
        self.parts = list(parts)
        self.channels = parts[0].channels
        self.max_num_sampled_feat = int(max_num_sampled_feat)
        self.window_size = int(window_size)
        self.deterministic = bool(deterministic)
        self.seed = seed
        self._rng: np.random.Generator | None = None
        # video id -> (part index, video index in the part); later parts win
        self._videos: dict[str, tuple[int, int]] = {}
        for pi, part in enumerate(self.parts):
            for vi, vid in enumerate(part.video_ids):
                self._videos[vid] = (pi, vi)

    @classmethod
    def open(cls, *paths: str | os.PathLike, lfb_channels: int | None = None, max_num_sampled_feat: int = 5,
             window_size: int = 60, deterministic: bool = False, seed: int | None = None) -> FeatureBank:
        parts = [_BankPart(Path(p), lfb_channels) for p in paths]
        return cls(parts, max_num_sampled_feat, window_size, deterministic, seed)

    # -- info ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._videos)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._videos

    @property
    def video_ids(self) -> list[str]:
        return sorted(self._videos)

    @property
    def num_features(self) -> int:
        return sum(p.num_features for p in self.parts)

    @property
    def num_seconds(self) -> int:
        return sum(p.num_seconds for p in self.parts)

    @property
    def dtype(self) -> np.dtype:
        return self.parts[-1].dtype

    @property
    def num_slots(self) -> int:
        return self.window_size * self.max_num_sampled_feat

    def _locate(self, video_id: str) -> tuple[_BankPart, int, int]:
        try:
            pi, vi = self._videos[video_id]
        except KeyError:
            raise KeyError(f"video {video_id!r} is not in the feature bank "
                           f"({', '.join(str(p.path) for p in self.parts)})") from None
        part = self.parts[pi]
        return part, int(part.video_offsets[vi]), int(part.video_offsets[vi + 1])

    def seconds(self, video_id: str) -> np.ndarray:
        part, a, b = self._locate(video_id)
        return part.seconds[a:b].copy()

    def features_at(self, video_id: str, second: int) -> np.ndarray:
        """All stored features of one second, ``[n, C]`` in stored order (``n`` may be 0)."""
        part, a, b = self._locate(video_id)
        i = a + int(np.searchsorted(part.seconds[a:b], int(second)))
        if i < b and part.seconds[i] == int(second):
            return np.asarray(part.features[part.second_offsets[i]:part.second_offsets[i + 1]])
        return np.zeros((0, self.channels), part.dtype)

    def to_dict(self) -> dict[str, dict[int, list[torch.Tensor]]]:
        """The bank as MMAction2's dict ``{video_id: {second: [tensor(C)]}}`` (copies into memory)."""
        out: dict[str, dict[int, list[torch.Tensor]]] = {}
        for vid in self.video_ids:
            part, a, b = self._locate(vid)
            out[vid] = {int(part.seconds[i]): list(torch.from_numpy(np.array(
                part.features[part.second_offsets[i]:part.second_offsets[i + 1]])))
                for i in range(a, b)}
        return out

    # -- sampling --------------------------------------------------------------------------------------------
    def _default_rng(self) -> np.random.Generator:
        if self._rng is None:
            # seeded from numpy's global state unless a seed was given, so that a globally seeded run
            # (np.random.seed, as MMAction2's set_random_seed does) is reproducible
            seed = self.seed if self.seed is not None else int(np.random.randint(0, 2**63 - 1, dtype=np.int64))
            self._rng = np.random.default_rng(seed)
        return self._rng

    def sample_batch(self, keys: Sequence[tuple[str, int]], roi_indices: Sequence[int] | None = None, *,
                     rng: np.random.Generator | None = None, deterministic: bool | None = None,
                     max_num_sampled_feat: int | None = None, window_size: int | None = None) -> np.ndarray:
        """Long-term features for a batch of RoIs: ``[R, window_size * K, C]`` float32.

        ``keys[r] = (video_id, timestamp)``.  Random by default (``rng`` or the bank's own generator);
        with ``deterministic`` each RoI uses a generator seeded by ``stable_seed(video_id, timestamp,
        roi_indices[r])`` (``roi_indices`` defaults to ``range(R)``).
        """
        K = int(max_num_sampled_feat or self.max_num_sampled_feat)
        W = int(window_size or self.window_size)
        det = self.deterministic if deterministic is None else bool(deterministic)
        R = len(keys)
        out = np.zeros((R, W * K, self.channels), np.float32)
        if R == 0:
            return out
        if roi_indices is None:
            roi_indices = range(R)
        elif len(roi_indices) != R:
            raise ValueError(f"roi_indices has {len(roi_indices)} entries for {R} keys")
        # per RoI: the stored seconds inside the window (vectorised below over all RoIs)
        g_part, g_roi, g_slot, g_row0, g_cnt = [], [], [], [], []
        for r, (vid, ts) in enumerate(keys):
            part, a, b = self._locate(vid)
            start = int(ts) - W // 2
            secs = part.seconds[a:b]
            i0 = a + int(np.searchsorted(secs, start, "left"))
            i1 = a + int(np.searchsorted(secs, start + W, "left"))
            if i1 <= i0:
                continue
            pi = self._videos[vid][0]
            g_part.append(np.full(i1 - i0, pi, np.int64))
            g_roi.append(np.full(i1 - i0, r, np.int64))
            g_slot.append(part.seconds[i0:i1] - start)
            g_row0.append(part.second_offsets[i0:i1])
            g_cnt.append(part.second_offsets[i0 + 1:i1 + 1] - part.second_offsets[i0:i1])
        if not g_roi:
            return out
        gpart, groi, gslot, grow0, gcnt = (np.concatenate(x) for x in (g_part, g_roi, g_slot, g_row0, g_cnt))
        G = gcnt.shape[0]
        T = int(gcnt.sum())
        # expand the groups (RoI, second) to their rows, in row order per RoI
        gid = np.repeat(np.arange(G), gcnt)
        gstart = np.zeros(G, np.int64)
        np.cumsum(gcnt[:-1], out=gstart[1:])
        within = np.arange(T, dtype=np.int64) - gstart[gid]
        # one uniform key per row; rank rows inside their second by the key
        if det:
            rows_per_roi = np.bincount(groi[gid], minlength=R)
            u = np.empty(T, np.float64)
            pos = 0
            for r in range(R):
                n_r = int(rows_per_roi[r])
                if n_r:
                    vid, ts = keys[r]
                    g = np.random.default_rng(stable_seed(vid, int(ts), int(roi_indices[r]),
                                                          self.seed if self.seed is not None else 0))
                    u[pos:pos + n_r] = g.random(n_r)
                    pos += n_r
        else:
            u = (rng if rng is not None else self._default_rng()).random(T)
        order = np.lexsort((u, gid))          # by group, then by key (stable for ties)
        rank = np.empty(T, np.int64)
        rank[order] = np.arange(T, dtype=np.int64) - gstart[gid[order]]
        keep = rank < K
        sel_g = gid[keep]
        slot = gslot[sel_g] * K + rank[keep]
        roi = groi[sel_g]
        row = grow0[sel_g] + within[keep]
        part_of = gpart[sel_g]
        for pi in np.unique(part_of):
            m = part_of == pi
            rows_p = row[m]
            srt = np.argsort(rows_p, kind="stable")   # read the memory map in file order
            feats = self.parts[int(pi)].features[rows_p[srt]]
            out[roi[m][srt], slot[m][srt]] = feats
        return out

    def sample(self, video_id: str, second: int, roi_index: int = 0, *, rng: np.random.Generator | None = None,
               deterministic: bool | None = None, max_num_sampled_feat: int | None = None,
               window_size: int | None = None) -> np.ndarray:
        """Long-term features of one RoI: ``[window_size * K, C]`` float32 (see :meth:`sample_batch`)."""
        return self.sample_batch([(video_id, int(second))], [roi_index], rng=rng, deterministic=deterministic,
                                 max_num_sampled_feat=max_num_sampled_feat, window_size=window_size)[0]

    def sample_long_term_features(self, video_id: str, timestamp: int) -> torch.Tensor:
        """MMAction2's ``LFB.sample_long_term_features``: ``[window_size * K, C]`` float32 tensor."""
        return torch.from_numpy(self.sample(video_id, int(timestamp)))

    def __getitem__(self, img_key: str) -> torch.Tensor:
        video_id, ts = parse_img_key(img_key)
        return self.sample_long_term_features(video_id, ts)


def lfb_bank_dir(lfb_prefix_path: str | os.PathLike, mode: str) -> Path:
    return Path(lfb_prefix_path) / f"lfb_{mode}"


def open_lfb(lfb_prefix_path: str | os.PathLike, max_num_sampled_feat: int = 5, window_size: int = 60,
             lfb_channels: int = 2048, dataset_modes: str | Sequence[str] = ("train", "val"),
             device: str = "gpu", lmdb_map_size: float = 4e9, construct_lmdb: bool = True,
             deterministic_test: bool = False, seed: int | None = None) -> FeatureBank:
    """Open ``{lfb_prefix_path}/lfb_{mode}`` for every mode (MMAction2 ``LFB(**lfb_cfg)`` arguments).

    ``device`` ('gpu', 'cpu', 'lmdb') and the lmdb options are accepted for config compatibility: the
    bank is always memory-mapped on the CPU and the sampled features are moved to the model's device.
    """
    if device not in ("gpu", "cpu", "lmdb"):
        raise ConfigError(f"device must be 'gpu', 'cpu' or 'lmdb', got {device!r}", "lfb_cfg.device")
    modes = (dataset_modes,) if isinstance(dataset_modes, str) else tuple(dataset_modes)
    if not modes:
        raise ConfigError("dataset_modes is empty", "lfb_cfg.dataset_modes")
    paths = []
    for mode in modes:
        d = lfb_bank_dir(lfb_prefix_path, mode)
        pkl = Path(lfb_prefix_path) / f"lfb_{mode}.pkl"
        if not d.exists():
            if pkl.is_file():
                raise FeatureBankError(
                    f"{d}: missing; only the MMAction2 pickle {pkl} exists. Convert it once with "
                    f"`actionkit convert-lfb {pkl} --out {d}`")
            raise FeatureBankError(f"{d}: missing feature bank for dataset mode {mode!r} (build it with "
                                   f"an LFBInferHead test run, or convert an MMAction2 lfb_{mode}.pkl with "
                                   f"`actionkit convert-lfb`)")
        paths.append(d)
    return FeatureBank.open(*paths, lfb_channels=lfb_channels, max_num_sampled_feat=max_num_sampled_feat,
                            window_size=window_size, deterministic=deterministic_test, seed=seed)


# MMAction2's class name for the bank object
LFB = open_lfb


# ---------------------------------------------------------------------------------------------------------
# bank writer (LFBInferHead)
# ---------------------------------------------------------------------------------------------------------
def _dist_info() -> tuple[int, int, Callable[[], None]]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return (torch.distributed.get_rank(), torch.distributed.get_world_size(), torch.distributed.barrier)
    return 0, 1, lambda: None


class FeatureBankWriter:
    """Collects ``(img_key, feature)`` pairs and writes them as a bank ``{lfb_prefix_path}/lfb_{mode}``.

    Per rank the rows are grouped as MMAction2 does (``{video: {second: [features in arrival order]}}``);
    :meth:`write` makes every rank write its shard ``{prefix}/_lfb_{mode}_{rank}`` (a bank directory),
    waits at a barrier, and rank 0 merges the shards in rank order (per video and second; a later rank's
    second replaces an earlier one's, which drops the duplicates of DistributedSampler padding) into the
    final bank, atomically, then removes the shards.  A second barrier lets every rank return only once the
    bank exists.
    """

    def __init__(self, lfb_prefix_path: str | os.PathLike, dataset_mode: str = "train"):
        self.lfb_prefix_path = Path(lfb_prefix_path)
        self.dataset_mode = dataset_mode
        self._features: list[torch.Tensor] = []   # chunks [r, C]
        self._keys: list[str] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, img_keys: Sequence[str], features: torch.Tensor) -> None:
        """Append ``features[i]`` (any shape with ``C`` values) under ``img_keys[i]``."""
        feats = features.detach().cpu()
        feats = feats.reshape(feats.shape[0], int(np.prod(feats.shape[1:], dtype=np.int64)))
        if feats.shape[0] != len(img_keys):
            raise ValueError(f"{len(img_keys)} keys for {feats.shape[0]} features")
        if self._features and feats.shape[1] != self._features[0].shape[1]:
            raise ValueError(f"feature size {feats.shape[1]} differs from the earlier {self._features[0].shape[1]}")
        for k in img_keys:
            parse_img_key(k)
        self._features.append(feats)
        self._keys.extend(str(k) for k in img_keys)

    @property
    def metadata(self) -> list[str]:
        return list(self._keys)

    def features(self) -> torch.Tensor:
        """All collected features ``[N, C]`` in arrival order."""
        if not self._features:
            return torch.zeros(0, 0)
        return torch.cat(self._features)

    def reset(self) -> None:
        self._features.clear()
        self._keys.clear()

    def to_dict(self) -> dict[str, dict[int, list[torch.Tensor]]]:
        """This rank's bank as MMAction2's dict ``{video_id: {int second: [feature (C,)]}}``."""
        bank: dict[str, dict[int, list[torch.Tensor]]] = {}
        if not self._features:
            return bank
        feats = torch.cat(self._features)
        for feat, key in zip(feats, self._keys):
            vid, ts = parse_img_key(key)
            bank.setdefault(vid, {}).setdefault(ts, []).append(feat)
        return bank

    def shard_dir(self, rank: int) -> Path:
        return self.lfb_prefix_path / f"_lfb_{self.dataset_mode}_{rank}"

    @property
    def bank_dir(self) -> Path:
        return lfb_bank_dir(self.lfb_prefix_path, self.dataset_mode)

    def write(self, rank: int | None = None, world_size: int | None = None,
              barrier: Callable[[], None] | None = None) -> Path:
        """Write this rank's shard and (rank 0) merge all shards into the bank; returns the bank path.

        ``rank``/``world_size``/``barrier`` default to torch.distributed's when it is initialised, else a
        single process (0, 1, no barrier).
        """
        d_rank, d_world, d_barrier = _dist_info()
        rank = d_rank if rank is None else int(rank)
        world_size = d_world if world_size is None else int(world_size)
        barrier = d_barrier if barrier is None else barrier
        self.lfb_prefix_path.mkdir(parents=True, exist_ok=True)
        bank = self.to_dict()
        if world_size == 1:
            if not bank:
                raise FeatureBankError(f"{self.bank_dir}: no features were collected; nothing to write")
            write_feature_bank(self.bank_dir, bank, source=f"LFBInferHead({self.dataset_mode})")
            return self.bank_dir
        if bank:
            write_feature_bank(self.shard_dir(rank), bank, source=f"LFBInferHead rank {rank}")
        else:  # an empty shard: remove a stale one so the merge does not pick it up
            shutil.rmtree(self.shard_dir(rank), ignore_errors=True)
        barrier()
        if rank == 0:
            merge_feature_banks([self.shard_dir(r) for r in range(world_size)], self.bank_dir,
                                missing_ok=True)
            for r in range(world_size):
                shutil.rmtree(self.shard_dir(r), ignore_errors=True)
        barrier()
        return self.bank_dir


def merge_feature_banks(in_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                        missing_ok: bool = False) -> Path:
    """Merge bank directories per (video, second) in order (a later bank's second replaces an earlier one's)."""
    merged: dict[str, dict[int, np.ndarray]] = {}
    parts = []
    for d in in_dirs:
        d = Path(d)
        if missing_ok and not d.exists():
            continue
        part = _BankPart(d)
        parts.append(part)
        for vi, vid in enumerate(part.video_ids):
            per = merged.setdefault(vid, {})
            for i in range(int(part.video_offsets[vi]), int(part.video_offsets[vi + 1])):
                per[int(part.seconds[i])] = part.features[part.second_offsets[i]:part.second_offsets[i + 1]]
    if not parts:
        raise FeatureBankError(f"{out_dir}: no bank shards to merge ({', '.join(map(str, in_dirs))})")
    dtypes = {p.dtype for p in parts}
    dtype = "float16" if dtypes == {np.dtype(np.float16)} else "float32"
    return write_feature_bank(out_dir, merged, dtype=dtype, source=", ".join(str(p.path) for p in parts))


# ---------------------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------------------
def _temporal_pool(kind: str) -> nn.Module:
    if kind == "avg":
        return nn.AdaptiveAvgPool3d((1, None, None))
    if kind == "max":
        return nn.AdaptiveMaxPool3d((1, None, None))
    raise ConfigError(f"temporal_pool_type must be 'avg' or 'max', got {kind!r}", "temporal_pool_type")


def _spatial_pool(kind: str) -> nn.Module:
    if kind == "avg":
        return nn.AdaptiveAvgPool3d((None, 1, 1))
    if kind == "max":
        return nn.AdaptiveMaxPool3d((None, 1, 1))
    raise ConfigError(f"spatial_pool_type must be 'avg' or 'max', got {kind!r}", "spatial_pool_type")


class NonLocalLayer(nn.Module):
    """Attention of the short-term RoI feature over its long-term features (MMAction2 ``NonLocalLayer``)."""

    def __init__(self, st_feat_channels: int, lt_feat_channels: int, latent_channels: int, num_st_feat: int,
                 num_lt_feat: int, use_scale: bool = True, pre_activate: bool = True,
                 pre_activate_with_ln: bool = True, conv_cfg: Mapping[str, Any] | None = None,
                 norm_cfg: Mapping[str, Any] | None = None, dropout_ratio: float = 0.2,
                 zero_init_out_conv: bool = False):
        super().__init__()
        if conv_cfg is None:
            conv_cfg = {"type": "Conv3d"}
        self.st_feat_channels = st_feat_channels
        self.lt_feat_channels = lt_feat_channels
        self.latent_channels = latent_channels
        self.num_st_feat = num_st_feat
        self.num_lt_feat = num_lt_feat
        self.use_scale = use_scale
        self.pre_activate = pre_activate
        self.pre_activate_with_ln = pre_activate_with_ln
        self.dropout_ratio = dropout_ratio
        self.zero_init_out_conv = zero_init_out_conv
        kw = dict(kernel_size=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)
        self.st_feat_conv = ConvModule(st_feat_channels, latent_channels, **kw)
        self.lt_feat_conv = ConvModule(lt_feat_channels, latent_channels, **kw)
        self.global_conv = ConvModule(lt_feat_channels, latent_channels, **kw)
        if pre_activate:
            self.ln = nn.LayerNorm([latent_channels, num_st_feat, 1, 1])
        else:
            self.ln = nn.LayerNorm([st_feat_channels, num_st_feat, 1, 1])
        self.relu = nn.ReLU()
        self.out_conv = ConvModule(latent_channels, st_feat_channels, **kw)
        if dropout_ratio > 0:
            self.dropout = nn.Dropout(dropout_ratio)

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                kaiming_init_(m)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_out_conv:
            nn.init.zeros_(self.out_conv.conv.weight)
            if self.out_conv.conv.bias is not None:
                nn.init.zeros_(self.out_conv.conv.bias)

    def forward(self, st_feat: torch.Tensor, lt_feat: torch.Tensor) -> torch.Tensor:
        n, c = st_feat.size(0), self.latent_channels
        theta = self.st_feat_conv(st_feat).view(n, c, self.num_st_feat)
        phi = self.lt_feat_conv(lt_feat).view(n, c, self.num_lt_feat)
        g = self.global_conv(lt_feat).view(n, c, self.num_lt_feat)
        theta_phi = torch.matmul(theta.permute(0, 2, 1), phi)      # [n, num_st, num_lt]
        if self.use_scale:
            theta_phi = theta_phi / c ** 0.5
        p = theta_phi.softmax(dim=-1)
        out = torch.matmul(g, p.permute(0, 2, 1)).view(n, c, self.num_st_feat, 1, 1)
        if self.pre_activate:
            if self.pre_activate_with_ln:
                out = self.ln(out)
            out = self.relu(out)
        out = self.out_conv(out)
        if not self.pre_activate:
            out = self.ln(out)
        if self.dropout_ratio > 0:
            out = self.dropout(out)
        return out


@MODELS.register()
class FBONonLocal(nn.Module):
    """Non-local feature-bank operator: st/lt 1x1x1 convs, then stacked residual :class:`NonLocalLayer`."""

    def __init__(self, st_feat_channels: int, lt_feat_channels: int, latent_channels: int, num_st_feat: int,
                 num_lt_feat: int, num_non_local_layers: int = 2, st_feat_dropout_ratio: float = 0.2,
                 lt_feat_dropout_ratio: float = 0.2, pre_activate: bool = True, zero_init_out_conv: bool = False):
        super().__init__()
        if num_non_local_layers < 1:
            raise ConfigError("num_non_local_layers must be >= 1", "fbo_cfg.num_non_local_layers")
        self.st_feat_conv = nn.Conv3d(st_feat_channels, latent_channels, kernel_size=1)
        self.lt_feat_conv = nn.Conv3d(lt_feat_channels, latent_channels, kernel_size=1)
        self.num_non_local_layers = num_non_local_layers
        self.st_feat_dropout_ratio = st_feat_dropout_ratio
        self.lt_feat_dropout_ratio = lt_feat_dropout_ratio
        self.pre_activate = pre_activate
        self.zero_init_out_conv = zero_init_out_conv
        if st_feat_dropout_ratio > 0:
            self.st_feat_dropout = nn.Dropout(st_feat_dropout_ratio)
        if lt_feat_dropout_ratio > 0:
            self.lt_feat_dropout = nn.Dropout(lt_feat_dropout_ratio)
        if not pre_activate:
            self.relu = nn.ReLU()
        self.non_local_layers: list[str] = []
        for idx in range(num_non_local_layers):
            name = f"non_local_layer_{idx + 1}"
            self.add_module(name, NonLocalLayer(latent_channels, latent_channels, latent_channels, num_st_feat,
                                                num_lt_feat, pre_activate=pre_activate,
                                                zero_init_out_conv=zero_init_out_conv))
            self.non_local_layers.append(name)
        self.init_weights()

    def init_weights(self, pretrained: str | None = None) -> None:
        """Kaiming init, or (``pretrained`` a path) load FBO weights from a checkpoint (strict=False)."""
        if isinstance(pretrained, (str, os.PathLike)):
            from ..engine.checkpoint import load_checkpoint
            load_checkpoint(self, pretrained, strict=False)
            return
        if pretrained is not None:
            raise TypeError(f"pretrained must be a path or None, got {type(pretrained).__name__}")
        kaiming_init_(self.st_feat_conv)
        kaiming_init_(self.lt_feat_conv)
        for name in self.non_local_layers:
            getattr(self, name).init_weights()

    def forward(self, st_feat: torch.Tensor, lt_feat: torch.Tensor) -> torch.Tensor:
        st_feat = self.st_feat_conv(st_feat)
        if self.st_feat_dropout_ratio > 0:
            st_feat = self.st_feat_dropout(st_feat)
        lt_feat = self.lt_feat_conv(lt_feat)
        if self.lt_feat_dropout_ratio > 0:
            lt_feat = self.lt_feat_dropout(lt_feat)
        for name in self.non_local_layers:
            out = st_feat + getattr(self, name)(st_feat, lt_feat)
            if not self.pre_activate:
                out = self.relu(out)
            st_feat = out
        return st_feat


@MODELS.register()
class FBOAvg(nn.Module):
    """Average of the long-term features over the bank slots (zero slots included)."""

    def __init__(self) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d((1, None, None))

    def init_weights(self, pretrained: str | None = None) -> None:
        pass  # no parameters

    def forward(self, st_feat: torch.Tensor, lt_feat: torch.Tensor) -> torch.Tensor:
        return self.avg_pool(lt_feat)


@MODELS.register()
class FBOMax(nn.Module):
    """Maximum of the long-term features over the bank slots (zero slots included)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_pool = nn.AdaptiveMaxPool3d((1, None, None))

    def init_weights(self, pretrained: str | None = None) -> None:
        pass  # no parameters

    def forward(self, st_feat: torch.Tensor, lt_feat: torch.Tensor) -> torch.Tensor:
        return self.max_pool(lt_feat)


_FBO_TYPES = {"non_local": FBONonLocal, "avg": FBOAvg, "max": FBOMax}


def _roi_keys(rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[int]]:
    """Per RoI: ``img_metas[batch_idx]['img_key']`` and the RoI's index within its own sample."""
    batch_idx = rois[:, 0].detach().to("cpu", torch.int64).tolist()
    keys, per_sample, seen = [], [], {}
    for b in batch_idx:
        if not 0 <= b < len(img_metas):
            raise IndexError(f"RoI batch index {b} out of range for {len(img_metas)} img_metas")
        keys.append(img_metas[b]["img_key"])
        per_sample.append(seen.get(b, 0))
        seen[b] = seen.get(b, 0) + 1
    return keys, per_sample


@MODELS.register()
class FBOHead(nn.Module):
    """Shared head: ``cat([st, fbo(st, lt)], 1)`` with ``st = spatial_max(temporal_avg(x))`` and ``lt``
    sampled from the long-term feature bank per RoI (``[R, C, window*K, 1, 1]``)."""

    def __init__(self, lfb_cfg: Mapping[str, Any], fbo_cfg: Mapping[str, Any], temporal_pool_type: str = "avg",
                 spatial_pool_type: str = "max", pretrained: str | None = None):
        super().__init__()
        fbo_cfg = dict(fbo_cfg)
        fbo_type = fbo_cfg.pop("type", "non_local")
        if fbo_type not in _FBO_TYPES:
            raise ConfigError(f"fbo type must be one of {sorted(_FBO_TYPES)}, got {fbo_type!r}", "fbo_cfg.type")
        lfb_cfg = dict(lfb_cfg)
        if "lfb_prefix_path" not in lfb_cfg:
            raise ConfigError("missing 'lfb_prefix_path'", "lfb_cfg.lfb_prefix_path")
        allowed = {"lfb_prefix_path", "max_num_sampled_feat", "window_size", "lfb_channels", "dataset_modes",
                   "device", "lmdb_map_size", "construct_lmdb", "deterministic_test", "seed"}
        unknown = sorted(set(lfb_cfg) - allowed)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown}; accepted: {sorted(allowed)}", "lfb_cfg")
        self.lfb_cfg = lfb_cfg
        self.fbo_cfg = fbo_cfg
        self.pretrained = pretrained
        self.lfb = open_lfb(**lfb_cfg)
        self.deterministic_test = bool(lfb_cfg.get("deterministic_test", False))
        self.fbo = _FBO_TYPES[fbo_type](**fbo_cfg)
        self.temporal_pool = _temporal_pool(temporal_pool_type)
        self.spatial_pool = _spatial_pool(spatial_pool_type)

    def init_weights(self, pretrained: str | None = None) -> None:
        """Initialise the FBO (FBONonLocal loads ``pretrained`` / the constructor's ``pretrained`` if given)."""
        pretrained = pretrained if pretrained is not None else self.pretrained
        if isinstance(self.fbo, FBONonLocal):
            self.fbo.init_weights(pretrained)

    def sample_lfb(self, rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """``[R, C, window_size * K, 1, 1]`` float32 long-term features (on the CPU)."""
        keys, per_sample = _roi_keys(rois, img_metas)
        parsed = [parse_img_key(k) for k in keys]
        det = self.deterministic_test and not self.training
        lt = self.lfb.sample_batch(parsed, per_sample, deterministic=det)
        return torch.from_numpy(lt).permute(0, 2, 1).contiguous()[..., None, None]

    def forward(self, x: torch.Tensor, rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]],
                **kwargs: Any) -> torch.Tensor:
        st_feat = self.spatial_pool(self.temporal_pool(x))
        lt_feat = self.sample_lfb(rois, img_metas).to(device=st_feat.device, dtype=st_feat.dtype)
        fbo_feat = self.fbo(st_feat, lt_feat)
        return torch.cat([st_feat, fbo_feat], dim=1)


@MODELS.register()
class LFBInferHead(nn.Module):
    """Collects ``spatial_max(temporal_avg(x))`` per RoI with its ``img_key`` and returns ``x`` unchanged.

    Call :meth:`write_bank` after the test loop (every rank): it writes ``{lfb_prefix_path}/lfb_{mode}``.
    """

    def __init__(self, lfb_prefix_path: str, dataset_mode: str = "train", use_half_precision: bool = True,
                 temporal_pool_type: str = "avg", spatial_pool_type: str = "max", pretrained: str | None = None):
        super().__init__()
        self.lfb_prefix_path = lfb_prefix_path
        self.dataset_mode = dataset_mode
        self.use_half_precision = use_half_precision
        self.pretrained = pretrained
        self.temporal_pool = _temporal_pool(temporal_pool_type)
        self.spatial_pool = _spatial_pool(spatial_pool_type)
        self.writer = FeatureBankWriter(lfb_prefix_path, dataset_mode)
        rank, _, _ = _dist_info()
        if rank == 0:
            with contextlib.suppress(OSError):
                Path(lfb_prefix_path).mkdir(parents=True, exist_ok=True)

    def init_weights(self, pretrained: str | None = None) -> None:
        pass

    def forward(self, x: torch.Tensor, rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]],
                **kwargs: Any) -> torch.Tensor:
        features = self.spatial_pool(self.temporal_pool(x))
        if self.use_half_precision:
            features = features.half()
        keys, _ = _roi_keys(rois, img_metas)
        self.writer.add(keys, features)
        return x

    @property
    def all_metadata(self) -> list[str]:
        return self.writer.metadata

    def collected_features(self) -> torch.Tensor:
        """The stored features ``[N, C, 1, 1, 1]`` in arrival order."""
        f = self.writer.features()
        return f.reshape(f.shape[0], -1, 1, 1, 1)

    def write_bank(self, rank: int | None = None, world_size: int | None = None,
                   barrier: Callable[[], None] | None = None) -> Path:
        """Write the collected features as ``{lfb_prefix_path}/lfb_{dataset_mode}`` (see FeatureBankWriter)."""
        return self.writer.write(rank, world_size, barrier)


def write_lfb_banks(model: nn.Module) -> list[Path]:
    """Call :meth:`LFBInferHead.write_bank` on every LFBInferHead inside ``model`` (for the test tool)."""
    return [m.write_bank() for m in model.modules() if isinstance(m, LFBInferHead)]


__all__ = [
    "FeatureBank", "FeatureBankError", "FeatureBankWriter", "FBOHead", "FBOAvg", "FBOMax", "FBONonLocal",
    "LFB", "LFBInferHead", "NonLocalLayer", "convert_lfb", "convert_lfb_main", "load_mmaction_lfb_pkl",
    "is_replaceable_bank_dir", "merge_feature_banks", "open_lfb", "parse_img_key", "stable_seed",
    "write_feature_bank", "write_feature_bank_arrays", "write_lfb_banks",
]
