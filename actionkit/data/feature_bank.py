"""Long-Term Feature Banks on disk (MMAction2 0.x ``LFB``): the bank format, opening and validating it, sampling.

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

Writing banks (converter, ``LFBInferHead``'s writer, shard merging) lives in :mod:`.feature_bank_writer`.

Every feature is a vector: ``[C]`` (or ``[C, 1, 1, 1]``, as pooled by ``LFBInferHead``); a feature with two
or more non-singleton dimensions is refused, never flattened.  Features must be finite: the writers refuse
NaN / Inf (also a float32 value that overflows float16) naming the video and second, and record
``"all_finite": true`` in ``meta.json``; a bank without that flag (written by an older version) is scanned
once per open, in chunks, and refused at its first non-finite row.  Writing over an existing directory
(``overwrite=True``, ``convert-lfb --overwrite``) replaces only a directory holding nothing but a bank's
files (a bank, or a damaged one) or an empty directory; anything else is refused.

Sampling follows MMAction2 0.x's ``LFB``: window [t - W//2, t - W//2 + W) seconds, at most K features per
second chosen at random without replacement, zero padding to W*K slots, float32.  The random choice is
made with a numpy ``Generator``: within a second the rows are ranked by one uniform draw per row (drawn
in row order over the window) and the first ``min(n, K)`` are taken, which is a uniform random ordered
subset without replacement (the distribution of ``np.random.choice(n, m, replace=False)``).  In the
deterministic mode the generator of a RoI is seeded from a stable hash of ``(video_id, timestamp,
roi_index)``, so test results are reproducible; random sampling is the default (and is what training uses).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..registry import ConfigError

__all__ = ["BANK_FORMAT", "BANK_VERSION", "FeatureBank", "FeatureBankError", "LFB", "lfb_bank_dir", "open_lfb",
           "parse_img_key", "stable_seed"]

BANK_FORMAT = "actionkit-lfb"
BANK_VERSION = 1
_FILES = ("meta.json", "features.npy", "video_ids.json", "video_offsets.npy", "seconds.npy",
          "second_offsets.npy")
_DTYPES = {"float16": np.float16, "float32": np.float32}


class FeatureBankError(ValueError):
    """A missing, corrupt or mismatched feature bank; the message names the file."""


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


def _row_key(row: int, video_ids: Sequence[str], video_offsets: np.ndarray, seconds: np.ndarray,
             second_offsets: np.ndarray) -> tuple[str | None, int | None]:
    """``(video id, second)`` that owns feature ``row`` (``None`` where the index does not say)."""
    s = int(np.searchsorted(second_offsets, row, "right")) - 1
    if not 0 <= s < len(seconds):
        return None, None
    v = int(np.searchsorted(video_offsets, s, "right")) - 1
    return (video_ids[v] if 0 <= v < len(video_ids) else None), int(seconds[s])


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
