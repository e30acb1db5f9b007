"""Writing Long-Term Feature Banks: from MMAction2 ``lfb_*.pkl`` files, from ``LFBInferHead`` test runs (one
shard per DDP rank, merged by rank 0), or from arrays. The format is described in :mod:`.feature_bank`.

A bank directory is written under a temporary name and renamed into place when complete. The writers refuse
non-finite features and multi-dimensional ones, naming the video and second, and record ``"all_finite": true``.
Writing over an existing directory replaces only a bank (or a damaged one) or an empty directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..utils import atomic_write, fsync_path, get_dist_info, barrier as dist_barrier
from .feature_bank import (BANK_FORMAT, BANK_VERSION, _BankPart, _DTYPES, _FILES, FeatureBankError,
                           _check_vector_shape, _non_finite_rows, _row_key, lfb_bank_dir, parse_img_key)

__all__ = ["FeatureBankWriter", "convert_lfb", "is_replaceable_bank_dir", "load_mmaction_lfb_pkl",
           "merge_feature_banks", "write_feature_bank", "write_feature_bank_arrays"]


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
        fsync_path(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(final.parent)
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
        fsync_path(tmp / "features.npy")
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
        fsync_path(tmp / "features.npy")
        _write_index(tmp, list(video_ids), video_offsets, seconds, second_offsets, n_total, channels,
                     _DTYPES[dtype])
        _BankPart(tmp)  # validate the index before the bank becomes visible
    return Path(out_dir)


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
        d_rank, d_world = get_dist_info()
        rank = d_rank if rank is None else int(rank)
        world_size = d_world if world_size is None else int(world_size)
        barrier = dist_barrier if barrier is None else barrier
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
