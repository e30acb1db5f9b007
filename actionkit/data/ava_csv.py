"""AVA annotation files: label maps (pbtxt / ``id: name``), ground-truth and detection csvs, exclusions.

The csv reader parses with polars (a maintained, multi-threaded csv parser) and falls back to a line-by-line Python
reader for anything irregular, so that every malformed row is reported as ``file:line`` exactly as Python's
``float()`` / ``int()`` would see it. Image keys follow the evaluation mode: ``'%s,%04d' % (video, int(ts))`` for
MMAction2 0.x, ``'%s,%.6f' % (video, float(ts))`` for the official ActivityNet script.
"""
from __future__ import annotations

import decimal
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from actionkit.utils import atomic_write

__all__ = ["AVAFormatError", "AVARows", "MODES", "format_result_rows", "make_image_key", "read_ava_csv",
           "read_exclusions", "read_labelmap", "results2csv"]

MODES = ("mmaction", "official")


class AVAFormatError(ValueError):
    """A malformed AVA annotation / label-map / detection file; the message names the file and line."""


_PBTXT_FIELD = re.compile(r"^\s*(name|id|label_id|display_name|label_type)\s*:\s*(.*?)\s*$")
_TXT_ENTRY = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")


def read_labelmap(path: str | os.PathLike) -> tuple[list[dict], list[int]]:
    """Read an AVA label map.

    Accepts the pbtxt forms ``item { name: "..." id: N }`` and ``label { name: "..." label_id: N ... }``
    (one field per line, as in the published files) and the plain ``N: name`` text form
    (``tools/data/ava/label_map.txt``). Returns ``(categories, class_ids)``: ``categories`` is a list of
    ``{'id': int, 'name': str}`` in file order and ``class_ids`` the ids in the same order.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AVAFormatError(f"{path}: label map is not UTF-8 text ({e})") from None
    lines = text.splitlines()
    if not any(_PBTXT_FIELD.match(ln) or "{" in ln for ln in lines):
        return _read_text_labelmap(path, lines)
    categories: list[dict] = []
    seen: dict[int, int] = {}
    name: str | None = None
    name_line = 0
    for lineno, line in enumerate(lines, 1):
        m = _PBTXT_FIELD.match(line)
        if not m:
            stripped = line.strip()
            if stripped.startswith("}"):
                if name is not None:
                    raise AVAFormatError(f"{path}:{name_line}: name {name!r} has no id / label_id in its block")
            continue
        key, value = m.group(1), m.group(2)
        if key == "name":
            if name is not None:
                raise AVAFormatError(f"{path}:{lineno}: a second name before an id (previous name on line {name_line})")
            if len(value) < 2 or value[0] != '"' or value[-1] != '"':
                raise AVAFormatError(f'{path}:{lineno}: expected name: "..." (a double-quoted string), got {value!r}')
            name, name_line = value[1:-1], lineno
        elif key in ("id", "label_id"):
            if name is None:
                raise AVAFormatError(f"{path}:{lineno}: {key} without a preceding name")
            try:
                class_id = int(value)
            except ValueError:
                raise AVAFormatError(f"{path}:{lineno}: {key} must be an integer, got {value!r}") from None
            if class_id < 1:
                raise AVAFormatError(f"{path}:{lineno}: class id must be >= 1, got {class_id}")
            if class_id in seen:
                raise AVAFormatError(f"{path}:{lineno}: duplicate class id {class_id} (first on line {seen[class_id]})")
            seen[class_id] = lineno
            categories.append({"id": class_id, "name": name})
            name = None
    if name is not None:
        raise AVAFormatError(f"{path}:{name_line}: name {name!r} has no id / label_id")
    if not categories:
        raise AVAFormatError(f"{path}: no classes found (expected item {{ name: ... id: ... }} blocks)")
    return categories, [c["id"] for c in categories]


def _read_text_labelmap(path: Path, lines: list[str]) -> tuple[list[dict], list[int]]:
    categories: list[dict] = []
    seen: dict[int, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _TXT_ENTRY.match(line)
        if not m:
            raise AVAFormatError(f"{path}:{lineno}: expected 'ID: name' or pbtxt item blocks, got {line.strip()!r}")
        class_id = int(m.group(1))
        if class_id < 1:
            raise AVAFormatError(f"{path}:{lineno}: class id must be >= 1, got {class_id}")
        if class_id in seen:
            raise AVAFormatError(f"{path}:{lineno}: duplicate class id {class_id} (first on line {seen[class_id]})")
        seen[class_id] = lineno
        categories.append({"id": class_id, "name": m.group(2)})
    if not categories:
        raise AVAFormatError(f"{path}: empty label map (no classes found)")
    return categories, [c["id"] for c in categories]


# ---------------------------------------------------------------------------------------------------------------------
# csv rows
# ---------------------------------------------------------------------------------------------------------------------
_COLUMNS = ("video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score")
_BOX_NAMES = ("x1", "y1", "x2", "y2")


def make_image_key(vid: str, ts, mode: str) -> str:
    """The image key: ``'%s,%04d' % (vid, int(ts))`` (MMAction2 0.x) or ``'%s,%.6f' % (vid, ts)`` (official)."""
    if mode == "official":
        return "%s,%.6f" % (vid, decimal.Decimal(ts) if isinstance(ts, str) else ts)
    return "%s,%04d" % (vid, int(ts))


@dataclass
class AVARows:
    """One AVA csv (ground truth or detections), column arrays of its box rows."""

    path: str
    mode: str
    keys: list[str]                 # image keys of every row (box rows and 2-column rows), first-appearance order
    key: np.ndarray                 # [n] int64 index into ``keys`` of each box row
    boxes: np.ndarray               # [n, 4] float64 x1, y1, x2, y2 (normalized)
    labels: np.ndarray              # [n] int64 action ids
    scores: np.ndarray              # [n] float64 (1.0 for 7-column rows; for GT the 8th column, as the reference)
    lineno: np.ndarray              # [n] int64 1-based line numbers
    skipped_classes: dict = field(default_factory=dict)  # action id -> rows skipped (not in the label map)
    num_empty_rows: int = 0         # 2-column rows (keyframes listed without boxes)
    # Detection files only (counted, warned about by frame_map, scored as the official script scores them):
    num_degenerate_boxes: int = 0   # x2 < x1 or y2 < y1: dropped by the evaluator, they can never match
    num_outside_boxes: int = 0      # a coordinate outside [0, 1]: evaluated as given
    num_scores_outside: int = 0     # a score outside [0, 1]: ranked as given
    num_duplicate_rows: int = 0     # rows repeating an earlier row's keyframe, box and action

    @property
    def num_rows(self) -> int:
        return len(self.key)


@dataclass
class _RawRows:
    """Parsed rows of every non-blank line. The polars path keeps the numeric columns in ``frame`` and converts only
    the rows that survive the filters (:meth:`boxes_scores`); the Python path holds numpy arrays."""

    vids: list[str] | None          # per row (Python path) or None (polars path: ``frame`` holds them)
    ts: list[str] | None
    frame: object                   # polars DataFrame of the rows (all columns), or None
    lineno: np.ndarray              # [m] 1-based line numbers
    ncol: np.ndarray                # [m] 2, 7 or 8
    labels: np.ndarray              # [m] action ids (0 on 2-column rows)
    boxes: np.ndarray | None = None   # [m, 4] (Python path; NaN on 2-column rows)
    scores: np.ndarray | None = None  # [m] (Python path; 1.0 where there is no 8th column)

    def boxes_scores(self, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``[k, 4]`` and scores ``[k]`` of ``rows`` (indices; ``None`` for all rows)."""
        if self.frame is None:
            return ((self.boxes, self.scores) if rows is None else (self.boxes[rows], self.scores[rows]))
        df = self.frame.select(*_BOX_NAMES, "score")  # the numeric columns only: gathering strings is slow
        if rows is not None:
            df = df[rows]
        boxes = df.select(_BOX_NAMES).to_numpy().astype(np.float64, copy=False)
        scores = df["score"].fill_null(1.0).to_numpy().astype(np.float64, copy=False)
        return boxes, scores

    def all_finite(self) -> bool:
        if self.frame is None:
            box_rows = self.ncol >= 7
            return bool(np.isfinite(self.boxes[box_rows]).all() and np.isfinite(self.scores).all())
        import polars as pl

        # nulls (the missing columns of 2- and 7-column rows) are not counted by all()
        return all(self.frame.select([pl.col(c).is_finite().all() for c in (*_BOX_NAMES, "score")]).row(0))


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise AVAFormatError(f"{path}: cannot read ({e.strerror or e})") from None


def _parse_polars(source: str | bytes, allowed: tuple[int, ...], mode: str = "mmaction") -> _RawRows | None:
    """The fast path (``source``: a file path or the bytes); ``None`` when the file is irregular in any way (the
    Python reader then finds the line). Timestamps are parsed as the mode's keys use them: integers for
    MMAction2's ``%04d``, floats for the official ``%.6f``."""
    import polars as pl

    ts_type = pl.Float64 if mode == "official" else pl.Int64
    try:
        df = pl.read_csv(
            io.BytesIO(source) if isinstance(source, bytes) else source, has_header=False,
            new_columns=list(_COLUMNS), quote_char=None, missing_columns="insert",
            schema_overrides={"video_id": pl.String, "timestamp": ts_type, "x1": pl.Float64, "y1": pl.Float64,
                              "x2": pl.Float64, "y2": pl.Float64, "action_id": pl.Int64, "score": pl.Float64})
    except Exception:  # noqa: BLE001 - any parse problem: the Python reader names the line
        return None
    if df.width != len(_COLUMNS):
        return None
    n = len(df)
    null_counts = df.null_count().row(0)
    if not any(null_counts) or (not any(null_counts[:-1]) and null_counts[-1] == n):
        # the usual files: every row has 8 columns (detections) or every row 7 (ground truth)
        width = 8 if not any(null_counts) else 7
        if width not in allowed:
            return None
        return _raw_from_frame(df, np.full(n, width, np.int64), np.arange(1, n + 1, dtype=np.int64))
    ncol, blank = _column_counts(df)
    if ncol is None or not set(np.unique(ncol[~blank]).tolist()) <= set(allowed):
        return None
    keep = np.flatnonzero(~blank)
    return _raw_from_frame(df[keep], ncol[keep], keep.astype(np.int64) + 1)


def _column_counts(df) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per row: 8, 7 or 2 columns, or -1 for a blank line (polars gives an all-null row); ``None`` if a row has a
    missing field in the middle (the Python reader then reports it)."""
    import polars as pl

    nulls = df.select([pl.col(c).is_null() for c in _COLUMNS])
    null_count = nulls.sum_horizontal().to_numpy()
    blank = null_count == len(_COLUMNS)
    ncol = np.where(null_count == 0, 8, np.where(null_count == 1, 7, np.where(null_count == 6, 2, 0)))
    ncol[blank] = -1
    if (ncol == 0).any():
        return None, None
    n7 = ncol == 7
    if n7.any() and not nulls["score"].to_numpy()[n7].all():
        return None, None           # a missing middle field, not a missing 8th column
    n2 = ncol == 2
    if n2.any() and (nulls["video_id"].to_numpy() | nulls["timestamp"].to_numpy())[n2].any():
        return None, None
    return ncol.astype(np.int64), blank


def _raw_from_frame(df, ncol: np.ndarray, lineno: np.ndarray) -> _RawRows | None:
    import polars as pl

    if df.select((pl.col("video_id").str.len_bytes() == 0).any()).item():
        return None
    labels = df["action_id"].fill_null(0).to_numpy().astype(np.int64, copy=False)
    return _RawRows(None, None, df, lineno, ncol, labels)


def _parse_python(data: bytes, path: str, allowed: tuple[int, ...], what: str) -> _RawRows:
    """The reference path: one line at a time with Python's ``float`` / ``int``; raises at the first bad line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise AVAFormatError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    vids, ts, lineno, ncols, boxes, labels, scores = [], [], [], [], [], [], []
    for i, line in enumerate(text.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
        if not line:
            continue
        cols = line.split(",")
        n = len(cols)
        if n not in allowed:
            raise AVAFormatError(f"{path}:{i}: {what} rows need {' or '.join(map(str, allowed))} comma-separated "
                                 f"columns, got {n}: {line[:200]!r}")
        if not cols[0]:
            raise AVAFormatError(f"{path}:{i}: empty video id")
        vals = [float("nan")] * 4
        label, score = 0, 1.0
        if n >= 7:
            vals = [_number(path, i, cols[2 + j], _BOX_NAMES[j], integer=False) for j in range(4)]
            label = int(_number(path, i, cols[6], "action id", integer=True))
            if n == 8:
                score = _number(path, i, cols[7], "score" if what == "detection" else "8th column (person id / score)",
                                integer=False)
        vids.append(cols[0])
        ts.append(cols[1])
        lineno.append(i)
        ncols.append(n)
        boxes.append(vals)
        labels.append(label)
        scores.append(score)
    return _RawRows(vids, ts, None, np.array(lineno, np.int64), np.array(ncols, np.int64),
                    np.array(labels, np.int64), np.array(boxes, np.float64).reshape(-1, 4),
                    np.array(scores, np.float64))


def _number(path: str, lineno: int, text: str, name: str, integer: bool) -> float:
    if not text:
        raise AVAFormatError(f"{path}:{lineno}: empty {name} field")
    try:
        v = float(int(text)) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise AVAFormatError(f"{path}:{lineno}: {name} must be {kind}, got {text!r}") from None
    if not np.isfinite(v):
        raise AVAFormatError(f"{path}:{lineno}: {name} is not finite: {text!r}")
    return v


def _factorize_keys(raw: _RawRows, path: str, mode: str) -> tuple[np.ndarray, list[str]]:
    """Each row's index into the image keys (first-appearance order). Consecutive rows of one keyframe (the usual
    layout) collapse to one run first, so only the distinct ``video_id,timestamp`` texts are formatted in Python."""
    m = len(raw.lineno)
    if m == 0:
        return np.zeros(0, np.int64), []
    if raw.frame is not None:
        import polars as pl

        df = raw.frame
        changed = ((pl.col("video_id") != pl.col("video_id").shift(1))
                   | (pl.col("timestamp") != pl.col("timestamp").shift(1)))
        head = df.select(changed.fill_null(True)).to_series().to_numpy()
        head_rows = np.flatnonzero(head)
        heads = df[head_rows].with_columns(pl.Series("row", head_rows))
        distinct = heads.unique(subset=["video_id", "timestamp"], keep="first", maintain_order=True)
        numbered = distinct.with_row_index("distinct").select("video_id", "timestamp", "distinct")
        text_of_head = heads.join(numbered, on=["video_id", "timestamp"], how="left",
                                  maintain_order="left")["distinct"].to_numpy()
        pairs = zip(distinct["video_id"].to_list(), distinct["timestamp"].to_list(), distinct["row"].to_list())
    else:
        vids, ts = raw.vids, raw.ts
        head = np.ones(m, bool)
        head[1:] = [(vids[i] != vids[i - 1]) or (ts[i] != ts[i - 1]) for i in range(1, m)]
        head_rows = np.flatnonzero(head)
        index: dict[tuple[str, str], int] = {}
        text_of_head = np.array([index.setdefault((vids[r], ts[r]), len(index)) for r in head_rows.tolist()], np.int64)
        first_row: dict[int, int] = {}
        for r, d in zip(head_rows.tolist(), text_of_head.tolist()):
            first_row.setdefault(d, r)
        pairs = ((v, t, first_row[d]) for (v, t), d in index.items())
    key_index: dict[str, int] = {}
    key_of_text = []
    official = mode == "official"
    setdefault = key_index.setdefault
    for vid, t, row in pairs:  # the key formats of make_image_key, inlined (one call per distinct keyframe)
        try:
            k = "%s,%.6f" % (vid, float(t)) if official else "%s,%04d" % (vid, int(t))
        except ValueError:
            kind = "a number" if official else "an integer"
            raise AVAFormatError(f"{path}:{raw.lineno[row]}: timestamp must be {kind}, got {t!r}") from None
        key_of_text.append(setdefault(k, len(key_index)))
    run = np.cumsum(head) - 1
    return np.asarray(key_of_text, np.int64)[np.asarray(text_of_head, np.int64)][run], list(key_index)


def read_ava_csv(path: str | os.PathLike, kind: str = "gt", mode: str = "mmaction",
                 class_whitelist: Iterable[int] | None = None, unknown_class: str = "skip",
                 data: bytes | None = None) -> AVARows:
    """Read an AVA ground-truth (``kind='gt'``: 2, 7 or 8 columns) or detection csv (``kind='det'``: 8 columns).

    Rows are ``video_id, timestamp, x1, y1, x2, y2, action_id[, score|person_id]``; 2-column rows list a keyframe
    without boxes. Ground-truth boxes must satisfy ``0 <= x1 <= x2 <= 1`` and ``0 <= y1 <= y2 <= 1``. Detection rows
    that the official script evaluates are accepted and counted in the returned :class:`AVARows`: boxes with
    ``x2 < x1`` / ``y2 < y1`` (the evaluator drops them), coordinates or scores outside [0, 1], duplicated rows.
    Rows whose action id is not in ``class_whitelist`` are skipped and counted (``unknown_class='skip'``, the
    reference behaviour) or rejected (``'error'``). Every error names the file and the line. ``data`` reads these
    bytes instead of the file.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if kind not in ("gt", "det"):
        raise ValueError(f"kind must be 'gt' or 'det', got {kind!r}")
    if unknown_class not in ("skip", "error"):
        raise ValueError(f"unknown_class must be 'skip' or 'error', got {unknown_class!r}")
    path = str(path)
    allowed = (2, 7, 8) if kind == "gt" else (2, 8)
    what = "ground-truth" if kind == "gt" else "detection"
    if data is None and not os.path.isfile(path):
        _read_bytes(path)  # the error names the file
    raw = _parse_polars(path if data is None else data, allowed, mode)
    if raw is None or not raw.all_finite():
        raw = _parse_python(_read_bytes(path) if data is None else data, path, allowed, what)
    key_idx, keys = _factorize_keys(raw, path, mode)
    keep = raw.ncol >= 7
    num_empty = int(len(keep) - keep.sum())
    labels = raw.labels
    box_labels = labels[keep] if num_empty else labels
    if len(box_labels) and box_labels.min() < 1:
        i = int(np.flatnonzero(keep & (labels < 1))[0])
        raise AVAFormatError(f"{path}:{raw.lineno[i]}: action id must be >= 1, got {labels[i]}")
    skipped: dict[int, int] = {}
    if class_whitelist is not None and len(box_labels):
        wl = np.zeros(max(int(box_labels.max()), max(class_whitelist, default=0)) + 1, bool)
        wl[[int(c) for c in class_whitelist]] = True
        listed = wl[labels]
        if not listed[keep].all():
            unlisted = keep & ~listed
            if unknown_class == "error":
                i = int(np.flatnonzero(unlisted)[0])
                raise AVAFormatError(f"{path}:{raw.lineno[i]}: action id {labels[i]} is not in the label map")
            cnt = np.bincount(labels[unlisted])
            skipped = {int(i): int(cnt[i]) for i in np.flatnonzero(cnt)}
            keep &= listed
    rows = None if keep.all() else np.flatnonzero(keep)
    boxes, scores = raw.boxes_scores(rows)
    sel = slice(None) if rows is None else rows
    rows_out = AVARows(path, mode, keys, key_idx[sel], boxes, labels[sel], scores, raw.lineno[sel], skipped,
                       num_empty)
    if kind == "gt":
        _check_gt_boxes(path, boxes, rows_out.lineno)
    else:
        _count_unusual_detections(rows_out)
    return rows_out


def _check_gt_boxes(path: str, boxes: np.ndarray, lineno: np.ndarray) -> None:
    if len(boxes) == 0:
        return
    if boxes.min() < 0 or boxes.max() > 1:
        out = ((boxes < 0) | (boxes > 1)).any(1)
        i = int(np.argmax(out))
        raise AVAFormatError(f"{path}:{lineno[i]}: box coordinates must lie in [0, 1], got {boxes[i].tolist()}")
    inv = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inv.any():
        i = int(np.argmax(inv))
        raise AVAFormatError(f"{path}:{lineno[i]}: box has x2 < x1 or y2 < y1: {boxes[i].tolist()}")


def _count_unusual_detections(rows: AVARows) -> None:
    b, s = rows.boxes, rows.scores
    if len(b) == 0:
        return
    rows.num_degenerate_boxes = int(((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).sum())
    rows.num_outside_boxes = int(((b < 0) | (b > 1)).any(1).sum())
    rows.num_scores_outside = int(((s < 0) | (s > 1)).sum())
    rows.num_duplicate_rows = _count_duplicates(rows)


def _count_duplicates(rows: AVARows) -> int:
    """Rows whose keyframe, box and action repeat an earlier row (whatever their score).

    A 64-bit hash of each row answers "no duplicates" cheaply for the usual file; only when the hashes collide or
    repeat are the rows compared exactly."""
    import polars as pl

    with np.errstate(over="ignore"):
        h = rows.key.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= rows.labels.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        bits = np.ascontiguousarray(rows.boxes).view(np.uint64)
        for j in range(4):
            h = (h ^ bits[:, j]) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    if pl.Series(h).n_unique() == len(h):
        return 0
    df = pl.DataFrame({"k": rows.key, "a": rows.labels, "x1": rows.boxes[:, 0], "y1": rows.boxes[:, 1],
                       "x2": rows.boxes[:, 2], "y2": rows.boxes[:, 3]})
    return int(len(df) - df.n_unique())


def read_exclusions(path: str | os.PathLike | None, mode: str = "mmaction") -> set[str]:
    """Read ``video_id,timestamp`` rows into a set of image keys (empty set for ``None``)."""
    if path is None:
        return set()
    path = str(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise AVAFormatError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    out: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        cols = line.split(",")
        if len(cols) != 2:
            raise AVAFormatError(
                f"{path}:{lineno}: exclusion rows need 2 columns (video_id,timestamp), got {len(cols)}")
        try:
            out.add(make_image_key(cols[0], cols[1], mode))
        except (ValueError, decimal.InvalidOperation):
            raise AVAFormatError(f"{path}:{lineno}: bad timestamp {cols[1]!r}") from None
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Results csv
# ---------------------------------------------------------------------------------------------------------------------
def _split_key(item) -> tuple[str, int | str]:
    if isinstance(item, Mapping):
        return str(item["video_id"]), item["timestamp"]
    if isinstance(item, str):
        vid, sep, ts = item.rpartition(",")
        if not sep:
            raise ValueError(f"image key {item!r} is not 'video_id,timestamp'")
        return vid, ts
    vid, ts = item
    return str(vid), ts


def format_result_rows(results: Sequence, img_keys: Sequence, custom_classes=None,
                       decimals: int | None = 3) -> list[str]:
    fmt = (lambda x: f"{x:.{decimals}f}") if decimals is not None else repr
    lines: list[str] = []
    for sample, item in zip(results, img_keys):
        vid, ts = _split_key(item)
        ts_s = str(int(ts)) if isinstance(ts, (int, np.integer)) or str(ts).strip().isdigit() else str(ts)
        for label, arr in enumerate(sample):
            arr = np.asarray(arr)
            if arr.size == 0:
                continue
            if arr.ndim != 2 or arr.shape[1] < 5:
                raise ValueError(f"class {label} of {vid},{ts}: expected a [k, 5] array, got shape {arr.shape}")
            if custom_classes is not None:
                if label >= len(custom_classes):
                    raise ValueError(f"class index {label} has no entry in custom_classes ({len(custom_classes)})")
                action = int(custom_classes[label])
            else:
                action = label + 1
            for x1, y1, x2, y2, s in arr[:, :5].tolist():
                lines.append(f"{vid},{ts_s},{fmt(x1)},{fmt(y1)},{fmt(x2)},{fmt(y2)},{action},{fmt(s)}\n")
    return lines


def results2csv(results: Sequence, img_keys, out_path: str | os.PathLike, custom_classes: Sequence[int] | None = None,
                decimals: int | None = 3) -> int:
    """Write detector results as MMAction2's ``results2csv`` does (atomically); returns the number of rows.

    ``results[i]`` is a list over classes (index ``l`` -> action ``l+1``, or ``custom_classes[l]``) of ``[k, 5]``
    arrays ``x1, y1, x2, y2, score``; ``img_keys`` is the matching sequence of ``'video,ts'`` keys, ``(video, ts)``
    pairs or dataset ``video_infos`` dicts (or a dataset with ``video_infos``). Rows:
    ``video_id,timestamp,x1,y1,x2,y2,action_id,score`` with floats as ``f'{x:.3f}'``.
    """
    if hasattr(img_keys, "video_infos"):
        img_keys = img_keys.video_infos
    if len(img_keys) != len(results):
        raise ValueError(f"{len(results)} results for {len(img_keys)} samples")
    lines = format_result_rows(results, img_keys, custom_classes, decimals)
    with atomic_write(out_path, "w", encoding="utf-8") as f:
        f.write("".join(lines))
    return len(lines)
