"""AVA annotation files: label maps (pbtxt / ``id: name``), ground-truth and detection csvs, exclusions.

One csv reader serves the evaluator (:func:`read_ava_csv`, :func:`read_exclusions`) and ``AVADataset``
(:func:`read_ava_annotations`, :func:`read_excluded_keyframes`). It parses with polars (a maintained,
multi-threaded csv parser) and falls back to a line-by-line Python reader for anything irregular, so that every
malformed row is reported as ``file:line`` exactly as Python's ``float()`` / ``int()`` would see it; of several
problems, the first line's is reported. Each kind of file keeps the wording of its messages (:class:`_Layout`).
Image keys follow the evaluation mode: ``'%s,%04d' % (video, int(ts))`` for MMAction2 0.x (and the dataset),
``'%s,%.6f' % (video, float(ts))`` for the official ActivityNet script.

Why this module is long: it is the one place where AVA's text files are read and written (label maps, the
annotation / ground-truth / detection csvs, exclusions, the results csv), and the csv reader has two paths, the
polars fast path and the line-by-line reference, that must agree row for row; splitting them would put the two
paths, or a file's reader and writer, in different modules.
"""
from __future__ import annotations

import decimal
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from actionkit.utils import atomic_write

__all__ = ["AVAAnnotations", "AVAFormatError", "AVARow", "AVARows", "MODES", "format_result_rows", "make_image_key",
           "read_ava_annotations", "read_ava_csv", "read_excluded_keyframes", "read_exclusions", "read_labelmap",
           "results2csv"]

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
_INT64 = (-(2**63), 2**63)


def make_image_key(vid: str, ts, mode: str) -> str:
    """The image key: ``'%s,%04d' % (vid, int(ts))`` (MMAction2 0.x) or ``'%s,%.6f' % (vid, ts)`` (official)."""
    if mode == "official":
        return "%s,%.6f" % (vid, decimal.Decimal(ts) if isinstance(ts, str) else ts)
    return "%s,%04d" % (vid, int(ts))


@dataclass(frozen=True)
class _Layout:
    """One kind of AVA csv: the column counts it admits, what its 8th column holds and how its errors are worded.

    The evaluator's files (ground truth, detections) and the dataset's annotation csv share one reader; their
    messages keep the wording each has always had (both name the file and the line).
    """

    widths: tuple[int, ...]          # admitted comma-separated column counts (2: a keyframe listed without boxes)
    eighth: str                      # the 8th column's name in messages
    eighth_integer: bool             # integers (person ids) rather than numbers (scores)
    eighth_default: float            # the value of rows without an 8th column
    strip: bool                      # white space around a line and around each field is ignored
    text_name: str | None            # the file's name in encoding / missing-file errors (None: the evaluator's)
    columns_error: str               # a wrong column count; format fields {n} (columns) and {line} (the text)
    box_error: str                   # a box coordinate that is not a number; format fields {name}, {text}
    box_label: str                   # prefix of a box coordinate's name in the other messages


_GT_LAYOUT = _Layout((2, 7, 8), "8th column (person id / score)", False, 1.0, False, None,
                     "ground-truth rows need 2 or 7 or 8 comma-separated columns, got {n}: {line!r}",
                     "{name} must be a number, got {text!r}", "")
_DET_LAYOUT = _Layout((2, 8), "score", False, 1.0, False, None,
                      "detection rows need 2 or 8 comma-separated columns, got {n}: {line!r}",
                      "{name} must be a number, got {text!r}", "")
_ANNOTATION_LAYOUT = _Layout((7, 8), "person id", True, -1, True, "AVA annotation csv",
                             "expected 7 or 8 comma-separated columns (video_id, timestamp, x1, y1, x2, y2, "
                             "action_id[, person_id]), got {n}",
                             "box coordinate {name} is not a number: {text!r}", "box coordinate ")


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


class AVARow(NamedTuple):
    """One row of an AVA annotation csv, as the dataset reads it."""

    video_id: str
    timestamp: int
    box: tuple[float, float, float, float]   # x1, y1, x2, y2 normalized
    action_id: int
    person_id: int                           # -1 when the 7-column form has no person id
    lineno: int


@dataclass
class AVAAnnotations:
    """The rows of an AVA annotation csv (``AVADataset``'s ``ann_file``), column arrays in file order."""

    path: str
    keys: list[str]                 # image keys ``'%s,%04d' % (video_id, timestamp)``, first-appearance order
    key: np.ndarray                 # [n] int64 index into ``keys``
    boxes: np.ndarray               # [n, 4] float64 x1, y1, x2, y2 in [0, 1], x1 <= x2, y1 <= y2
    labels: np.ndarray              # [n] int64 action ids
    person_ids: np.ndarray          # [n] int64 (-1 for 7-column rows)
    lineno: np.ndarray              # [n] int64 1-based line numbers

    def __len__(self) -> int:
        return len(self.key)

    def key_parts(self) -> tuple[list[str], np.ndarray]:
        """Per image key: the video id and the integer timestamp."""
        parts = [k.rsplit(",", 1) for k in self.keys]
        return [p[0] for p in parts], np.array([int(p[1]) for p in parts], np.int64).reshape(-1)

    @property
    def timestamps(self) -> np.ndarray:
        """[n] int64 timestamp of each row."""
        return self.key_parts()[1][self.key]

    def rows(self) -> list[AVARow]:
        """The rows as :class:`AVARow` tuples (file order)."""
        vids, ts = self.key_parts()
        return [AVARow(vids[k], int(ts[k]), tuple(b), a, p, ln) for k, b, a, p, ln in
                zip(self.key.tolist(), self.boxes.tolist(), self.labels.tolist(), self.person_ids.tolist(),
                    self.lineno.tolist())]


@dataclass
class _RawRows:
    """The parsed non-blank rows of a csv, either path: line numbers, column counts, action ids and image keys;
    the polars path keeps the numeric columns in ``frame`` and converts only the rows that survive the filters
    (:meth:`boxes_eighth`), the Python path holds numpy arrays."""

    lineno: np.ndarray              # [m] 1-based line numbers
    ncol: np.ndarray                # [m] 2, 7 or 8
    labels: np.ndarray              # [m] action ids (0 on 2-column rows)
    key: np.ndarray                 # [m] index into ``keys``
    keys: list[str]                 # image keys, first-appearance order
    frame: object = None            # polars DataFrame of the rows (fast path)
    boxes: np.ndarray | None = None   # [m, 4] (Python path; NaN on 2-column rows)
    eighth: np.ndarray | None = None  # [m] (Python path; the layout's default where there is no 8th column)

    def boxes_eighth(self, rows: np.ndarray | None, default: float) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``[k, 4]`` float64 and the 8th column ``[k]`` of ``rows`` (ascending indices; ``None``: all rows)."""
        if self.frame is None:
            return ((self.boxes, self.eighth) if rows is None else (self.boxes[rows], self.eighth[rows]))
        df = self.frame.select(*_BOX_NAMES, "score")  # the numeric columns only: gathering strings is slow
        if rows is not None:
            import polars as pl

            mask = np.zeros(len(self.lineno), bool)
            mask[rows] = True
            df = df.filter(pl.Series(mask))
        boxes = df.select(_BOX_NAMES).to_numpy().astype(np.float64, copy=False)
        eighth = df["score"].fill_null(default).to_numpy()
        return boxes, eighth


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise AVAFormatError(f"{path}: cannot read ({e.strerror or e})") from None


def _text_lines(path: str, data: bytes | None, text_name: str | None) -> list[str]:
    """The lines of a csv as an editor numbers them (``\\n``, ``\\r\\n`` or ``\\r`` end a line; a UTF-8 byte-order
    mark is dropped). Bytes that are not UTF-8 raise naming the file and line, in the wording of ``text_name``'s
    reader (:func:`actionkit.data.annotations.read_text_lines`) or, for ``None``, the evaluator's."""
    if text_name is not None and data is None:
        from .annotations import read_text_lines

        return read_text_lines(path, text_name, AVAFormatError)
    if data is None:
        data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = len(data[:e.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"))
        raise AVAFormatError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _parse_polars(source: str | bytes, layout: _Layout, mode: str = "mmaction") -> _RawRows | None:
    """The fast path (``source``: a file path or the bytes); ``None`` when the file is irregular in any way (the
    Python reader then finds the line). Timestamps are parsed as the mode's keys use them: integers for
    MMAction2's ``%04d``, floats for the official ``%.6f``."""
    import polars as pl

    ts_type = pl.Float64 if mode == "official" else pl.Int64
    try:
        df = pl.read_csv(
            io.BytesIO(source) if isinstance(source, bytes) else source, has_header=False,
            new_columns=list(_COLUMNS), quote_char=None, missing_columns="insert",
            schema_overrides={"video_id": pl.String, "timestamp": ts_type, "x1": pl.Float64,
                              "y1": pl.Float64, "x2": pl.Float64, "y2": pl.Float64, "action_id": pl.Int64,
                              "score": pl.Int64 if layout.eighth_integer else pl.Float64})
    except Exception:  # noqa: BLE001 - any parse problem: the Python reader names the line
        return None
    if df.width != len(_COLUMNS):
        return None
    n = len(df)
    null_counts = df.null_count().row(0)
    if not any(null_counts) or (not any(null_counts[:-1]) and null_counts[-1] == n):
        # the usual files: every row has 8 columns (detections) or every row 7 (ground truth)
        width = 8 if not any(null_counts) else 7
        if width not in layout.widths:
            return None
        ncol, lineno = np.full(n, width, np.int64), np.arange(1, n + 1, dtype=np.int64)
    else:
        ncol, blank = _column_counts(df)
        if ncol is None or not set(np.unique(ncol[~blank]).tolist()) <= set(layout.widths):
            return None
        keep = np.flatnonzero(~blank)
        df, ncol, lineno = df[keep], ncol[keep], keep.astype(np.int64) + 1
    floats = [*_BOX_NAMES] if layout.eighth_integer else [*_BOX_NAMES, "score"]
    # nulls (the missing columns of 2- and 7-column rows) are not counted by all()
    if not all(df.select([pl.col(c).is_finite().all() for c in floats]).row(0)):
        return None
    keyed = _frame_keys(df, layout, mode)
    if keyed is None:
        return None
    labels = df["action_id"].fill_null(0).to_numpy().astype(np.int64, copy=False)
    return _RawRows(lineno, ncol, labels, keyed[0], keyed[1], frame=df)


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


def _frame_keys(df, layout: _Layout, mode: str) -> tuple[np.ndarray, list[str]] | None:
    """Each row's index into the image keys (first-appearance order). Runs of rows of one keyframe (the usual
    layout) are found with vectorised comparisons; only the distinct ``(video, timestamp)`` pairs among the runs are
    formatted in Python. ``None`` for a video id that the Python reader reads otherwise (empty, surrounded by white
    space where the layout strips it, or holding a carriage return, which ends a line there)."""
    import polars as pl

    n = len(df)
    if n == 0:
        return np.zeros(0, np.int64), []
    vid_run = df["video_id"].rle_id().to_numpy()
    ts = df["timestamp"].to_numpy()
    head = np.empty(n, bool)
    head[0] = True
    np.not_equal(vid_run[1:], vid_run[:-1], out=head[1:])
    head[1:] |= ts[1:] != ts[:-1]
    head_rows = np.flatnonzero(head)            # first row of each run of one keyframe
    head_vids = df["video_id"].gather(head_rows)
    vid_code = head_vids.cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)  # equal ids, equal codes
    _, t_code = np.unique(ts[head_rows], return_inverse=True)
    pair = vid_code * (int(t_code.max()) + 1) + t_code.reshape(-1)
    _, first, pair_of_head = np.unique(pair, return_index=True, return_inverse=True)
    by_first = np.argsort(first)                # distinct pairs in first-appearance order
    rank = np.empty(len(first), np.int64)
    rank[by_first] = np.arange(len(first))
    firsts = first[by_first]
    vids = head_vids.gather(firsts).to_list()
    official = mode == "official"
    key_index: dict[str, int] = {}
    setdefault = key_index.setdefault
    key_of_pair = []
    for vid, t in zip(vids, ts[head_rows[firsts]].tolist()):  # the key formats of make_image_key, inlined
        if layout.strip:
            vid = vid.strip()
        if not vid or "\r" in vid:
            return None
        k = "%s,%.6f" % (vid, t) if official else "%s,%04d" % (vid, t)
        key_of_pair.append(setdefault(k, len(key_index)))
    key_of_head = np.asarray(key_of_pair, np.int64)[rank[pair_of_head.reshape(-1)]]
    return key_of_head[np.cumsum(head) - 1], list(key_index)


def _parse_python(data: bytes | None, path: str, layout: _Layout,
                  mode: str = "mmaction") -> tuple[_RawRows, tuple[int, str] | None]:
    """The reference path: one line at a time with Python's ``float`` / ``int``. Stops at the first bad line and
    returns the rows before it with that line's ``(lineno, message)``, so that the caller reports whichever bad
    line comes first (a malformed field here, or a value its own checks refuse in an earlier row)."""
    lines = _text_lines(path, data, layout.text_name)
    official = mode == "official"
    key_index: dict[str, int] = {}
    key_of_text: dict[tuple[str, str], int] = {}
    lineno, ncols, keys, boxes, labels, eighth = [], [], [], [], [], []
    pending = None
    for i, line in enumerate(lines, 1):
        if layout.strip:
            line = line.strip()
        if not line:
            continue
        cols = line.split(",")
        if layout.strip:
            cols = [c.strip() for c in cols]
        try:
            row = _parse_row(cols, line, layout, official)
        except _RowError as e:
            pending = (i, str(e))
            break
        k = key_of_text.get((cols[0], cols[1]))
        if k is None:
            k = key_of_text[cols[0], cols[1]] = key_index.setdefault(
                "%s,%.6f" % (cols[0], row[0]) if official else "%s,%04d" % (cols[0], row[0]), len(key_index))
        lineno.append(i)
        ncols.append(len(cols))
        keys.append(k)
        boxes.append(row[1])
        labels.append(row[2])
        eighth.append(row[3])
    raw = _RawRows(np.array(lineno, np.int64), np.array(ncols, np.int64), np.array(labels, np.int64),
                   np.array(keys, np.int64), list(key_index), None, np.array(boxes, np.float64).reshape(-1, 4),
                   np.array(eighth, np.int64 if layout.eighth_integer else np.float64))
    return raw, pending


class _RowError(Exception):
    """A malformed field (the message, without file and line)."""


def _parse_row(cols: list[str], line: str, layout: _Layout, official: bool) -> tuple:
    """``(timestamp, box, action id, 8th column)`` of one row's fields; raises :class:`_RowError`."""
    n = len(cols)
    if n not in layout.widths:
        raise _RowError(layout.columns_error.format(n=n, line=line[:200]))
    if not cols[0]:
        raise _RowError("empty video id")
    ts = _field(cols[1], "timestamp", integer=not official)
    box = [float("nan")] * 4
    label, eighth = 0, layout.eighth_default
    if n >= 7:
        box = [_field(cols[2 + j], _BOX_NAMES[j], False, layout) for j in range(4)]
        label = _field(cols[6], "action id", integer=True)
        if n == 8:
            eighth = _field(cols[7], layout.eighth, integer=layout.eighth_integer)
    return ts, box, label, eighth


def _field(text: str, name: str, integer: bool, box_layout: _Layout | None = None) -> float | int:
    """A number field as Python reads it (``int`` / ``float``); a box coordinate's messages follow its layout."""
    label = name if box_layout is None else box_layout.box_label + name
    if not text:
        raise _RowError(f"empty {label} field")
    try:
        v = int(text) if integer else float(text)
    except ValueError:
        if box_layout is not None:
            raise _RowError(box_layout.box_error.format(name=name, text=text)) from None
        raise _RowError(f"{name} must be {'an integer' if integer else 'a number'}, got {text!r}") from None
    if integer:
        if not _INT64[0] <= v < _INT64[1]:
            raise _RowError(f"{name} is out of the 64-bit integer range: {text!r}")
    elif name != "timestamp" and not np.isfinite(v):
        raise _RowError(f"{label} is not finite: {text!r}")
    return v


def _read_raw(path: str, data: bytes | None, layout: _Layout, mode: str) -> tuple[_RawRows, tuple[int, str] | None]:
    """The rows of a csv through the polars fast path, or the Python reader for anything irregular."""
    if data is None and not os.path.isfile(path):
        _text_lines(path, None, layout.text_name)  # the error names the file
    raw = _parse_polars(path if data is None else data, layout, mode)
    if raw is not None:
        return raw, None
    return _parse_python(data, path, layout, mode)


def _raise_first(path: str, candidates: Iterable[tuple[int, str] | None]) -> None:
    """Raise the problem of the earliest line (the first listed among those of one line), if any."""
    found = [c for c in candidates if c is not None]
    if found:
        lineno, message = min(found, key=lambda c: c[0])
        raise AVAFormatError(f"{path}:{lineno}: {message}")


def _first(mask: np.ndarray, lineno: np.ndarray, message) -> tuple[int, str] | None:
    """``(line, message(i))`` of the first row ``i`` where ``mask`` holds."""
    if not mask.any():
        return None
    i = int(np.argmax(mask))
    return int(lineno[i]), message(i)


def read_ava_csv(path: str | os.PathLike, kind: str = "gt", mode: str = "mmaction",
                 class_whitelist: Iterable[int] | None = None, unknown_class: str = "skip",
                 data: bytes | None = None) -> AVARows:
    """Read an AVA ground-truth (``kind='gt'``: 2, 7 or 8 columns) or detection csv (``kind='det'``: 8 columns).

    Rows are ``video_id, timestamp, x1, y1, x2, y2, action_id[, score|person_id]``; 2-column rows list a keyframe
    without boxes. Ground-truth boxes must satisfy ``0 <= x1 <= x2 <= 1`` and ``0 <= y1 <= y2 <= 1``. Detection rows
    that the official script evaluates are accepted and counted in the returned :class:`AVARows`: boxes with
    ``x2 < x1`` / ``y2 < y1`` (the evaluator drops them), coordinates or scores outside [0, 1], duplicated rows.
    Rows whose action id is not in ``class_whitelist`` are skipped and counted (``unknown_class='skip'``, the
    reference behaviour) or rejected (``'error'``). Every error names the file and the line (the first bad line).
    ``data`` reads these bytes instead of the file.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if kind not in ("gt", "det"):
        raise ValueError(f"kind must be 'gt' or 'det', got {kind!r}")
    if unknown_class not in ("skip", "error"):
        raise ValueError(f"unknown_class must be 'skip' or 'error', got {unknown_class!r}")
    path = str(path)
    raw, pending = _read_raw(path, data, _GT_LAYOUT if kind == "gt" else _DET_LAYOUT, mode)
    keep = raw.ncol >= 7
    num_empty = int(len(keep) - keep.sum())
    labels, lineno = raw.labels, raw.lineno
    problems = [pending, _first(keep & (labels < 1), lineno, lambda i: f"action id must be >= 1, got {labels[i]}")]
    skipped: dict[int, int] = {}
    if class_whitelist is not None and len(labels):
        wl = np.zeros(max(int(labels.max()), max(class_whitelist, default=0)) + 1, bool)
        wl[[int(c) for c in class_whitelist]] = True
        unlisted = keep & ~wl[np.maximum(labels, 0)]
        if unlisted.any():
            if unknown_class == "error":
                problems.append(_first(unlisted & (labels >= 1), lineno,
                                       lambda i: f"action id {labels[i]} is not in the label map"))
            else:
                cnt = np.bincount(labels[unlisted & (labels >= 1)])
                skipped = {int(i): int(cnt[i]) for i in np.flatnonzero(cnt)}
            keep &= ~unlisted
    rows = None if keep.all() else np.flatnonzero(keep)
    boxes, scores = raw.boxes_eighth(rows, 1.0)
    sel = slice(None) if rows is None else rows
    if kind == "gt":
        problems += _gt_box_problems(boxes, lineno[sel])
    _raise_first(path, problems)
    rows_out = AVARows(path, mode, raw.keys, raw.key[sel], boxes, labels[sel], scores.astype(np.float64, copy=False),
                       lineno[sel], skipped, num_empty)
    if kind == "det":
        _count_unusual_detections(rows_out)
    return rows_out


def _gt_box_problems(boxes: np.ndarray, lineno: np.ndarray) -> list[tuple[int, str] | None]:
    if len(boxes) == 0 or (boxes.min() >= 0 and boxes.max() <= 1
                           and not ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        return []
    return [_first(((boxes < 0) | (boxes > 1)).any(1), lineno,
                   lambda i: f"box coordinates must lie in [0, 1], got {boxes[i].tolist()}"),
            _first((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]), lineno,
                   lambda i: f"box has x2 < x1 or y2 < y1: {boxes[i].tolist()}")]


def _count_unusual_detections(rows: AVARows) -> None:
    b, s = rows.boxes, rows.scores
    if len(b) == 0:
        return
    rows.num_degenerate_boxes = int(np.count_nonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])))
    if b.min() < 0 or b.max() > 1:
        rows.num_outside_boxes = int(((b < 0) | (b > 1)).any(1).sum())
    if s.min() < 0 or s.max() > 1:
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
        for j in range(4):
            h = (h ^ np.ascontiguousarray(rows.boxes[:, j]).view(np.uint64)) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    if pl.Series(h).n_unique() == len(h):
        return 0
    df = pl.DataFrame({"k": rows.key, "a": rows.labels, "x1": rows.boxes[:, 0], "y1": rows.boxes[:, 1],
                       "x2": rows.boxes[:, 2], "y2": rows.boxes[:, 3]})
    return int(len(df) - df.n_unique())


def read_ava_annotations(path: str | os.PathLike, label_ids: Iterable[int] | None = None,
                         max_action_id: int | None = None) -> AVAAnnotations:
    """Read an AVA annotation csv as ``AVADataset`` uses it (the reader of :func:`read_ava_csv`, its own checks).

    Rows are ``video_id, timestamp, x1, y1, x2, y2, action_id[, person_id]`` (7 or 8 columns; white space around
    fields and blank lines are ignored); timestamps and person ids are integers, boxes lie in [0, 1] with
    ``x1 <= x2`` and ``y1 <= y2``, action ids are >= 1, at most ``max_action_id`` and, with ``label_ids``, one of
    them. Every error names the file and the (first bad) line; a file that is not UTF-8 names the line of the first
    bad byte.
    """
    path = str(path)
    raw, pending = _read_raw(path, None, _ANNOTATION_LAYOUT, "mmaction")
    boxes, person_ids = raw.boxes_eighth(None, -1)
    labels, lineno = raw.labels, raw.lineno
    problems = [pending]
    if len(boxes) and not (boxes.min() >= 0 and boxes.max() <= 1):
        out = (boxes < 0) | (boxes > 1)

        def outside(i: int) -> str:
            j = int(np.argmax(out[i]))
            return (f"box coordinate {_BOX_NAMES[j]}={boxes[i, j]} is outside [0, 1] (boxes must be normalized by "
                    "the frame size)")
        problems.append(_first(out.any(1), lineno, outside))
    problems.append(_first(boxes[:, 2] < boxes[:, 0], lineno,
                           lambda i: f"box has x2 < x1 ({boxes[i, 2]} < {boxes[i, 0]})"))
    problems.append(_first(boxes[:, 3] < boxes[:, 1], lineno,
                           lambda i: f"box has y2 < y1 ({boxes[i, 3]} < {boxes[i, 1]})"))
    problems.append(_first(labels < 1, lineno, lambda i: f"action id must be >= 1, got {labels[i]}"))
    if max_action_id is not None:
        problems.append(_first(labels > max_action_id, lineno, lambda i: f"action id {labels[i]} is larger than "
                                                                          f"{max_action_id} (num_classes - 1)"))
    if label_ids is not None:
        allowed = np.array(sorted({int(i) for i in label_ids}), np.int64)
        problems.append(_first(~np.isin(labels, allowed), lineno,
                               lambda i: f"action id {labels[i]} is not in the label map"))
    _raise_first(path, problems)  # of one line, the first check a row-by-row reader makes (the list's order)
    return AVAAnnotations(path, raw.keys, raw.key, boxes, labels, person_ids.astype(np.int64, copy=False), lineno)


def _exclusion_rows(path: str, text_name: str | None, columns_error: str,
                    strip: bool) -> Iterator[tuple[int, str, str]]:
    """``(line, video_id, timestamp text)`` of each non-blank row of an excluded-timestamps csv."""
    for lineno, line in enumerate(_text_lines(path, None, text_name), 1):
        line = line.strip()
        if not line:
            continue
        cols = line.split(",")
        if len(cols) != 2:
            raise AVAFormatError(f"{path}:{lineno}: " + columns_error.format(n=len(cols)))
        yield lineno, (cols[0].strip() if strip else cols[0]), cols[1]


def read_exclusions(path: str | os.PathLike | None, mode: str = "mmaction") -> set[str]:
    """Read ``video_id,timestamp`` rows into a set of image keys (empty set for ``None``)."""
    if path is None:
        return set()
    path = str(path)
    out: set[str] = set()
    for lineno, vid, ts in _exclusion_rows(path, None, "exclusion rows need 2 columns (video_id,timestamp), got {n}",
                                           strip=False):
        try:
            out.add(make_image_key(vid, ts, mode))
        except (ValueError, decimal.InvalidOperation):
            kind = "a number" if mode == "official" else "an integer"
            raise AVAFormatError(f"{path}:{lineno}: timestamp must be {kind}, got {ts!r}") from None
    return out


def read_excluded_keyframes(path: str | os.PathLike | None) -> set[tuple[str, int]]:
    """The excluded keyframes of an excluded-timestamps csv as ``AVADataset`` uses them: a set of
    ``(video_id, timestamp)`` (white space around fields ignored; ``None`` gives an empty set)."""
    if path is None:
        return set()
    path = str(path)
    out: set[tuple[str, int]] = set()
    for lineno, vid, ts in _exclusion_rows(path, "excluded-timestamps csv",
                                           "expected 2 columns (video_id, timestamp), got {n}", strip=True):
        try:
            out.add((vid, int(ts)))
        except ValueError:
            raise AVAFormatError(f"{path}:{lineno}: timestamp must be an integer, got {ts.strip()!r}") from None
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
