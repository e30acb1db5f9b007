"""Helpers shared by the annotation readers and datasets (Kinetics lists, AVA csv / exclusions / label maps).

* :func:`read_text_lines`: the lines of a UTF-8 text file; a UTF-8 byte-order mark is accepted and dropped,
  other encodings are refused with ``<file>:<line>`` (no ``UnicodeDecodeError`` without a file name).
* :func:`resolve_under_prefix`: a path from an annotation file joined to ``data_prefix``; absolute paths and
  paths that climb out of the prefix (``../../x``) are refused with ``<file>:<line>``.
* :class:`UnreadableSkips`: the counted skip policy of training datasets for samples whose files cannot be
  decoded (:class:`~actionkit.data.decode.DecodeError`).
"""
from __future__ import annotations

import codecs
import logging
import os
import random
from typing import Callable, TypeVar

from .decode import DecodeError

_LOG = logging.getLogger("actionkit")

__all__ = ["read_text_lines", "resolve_under_prefix", "UnreadableSkips"]

T = TypeVar("T")


def _split_lines(text: str) -> list[str]:
    """Lines as an editor numbers them: ``\\n``, ``\\r\\n`` or ``\\r`` end a line (no other separators)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_text_lines(path: str | os.PathLike, what: str = "annotation file",
                    error_type: type[Exception] = ValueError) -> list[str]:
    """The lines of the UTF-8 text file ``path`` (line ``i`` of the file is element ``i - 1``, no line ends).

    A leading UTF-8 byte-order mark (written by some editors and spreadsheet exports) is dropped. Bytes that are
    not UTF-8 raise ``error_type("<path>:<line>: ...")``; a missing file raises ``FileNotFoundError`` naming
    ``path`` and ``what``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} not found")
    with open(path, "rb") as f:
        data = f.read()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[bom:bom + e.start].decode("utf-8")  # valid up to the bad byte by definition
        lineno = len(_split_lines(before + "x"))
        column = len(before) - max(before.rfind("\n"), before.rfind("\r"))
        bad = data[bom + e.start:bom + e.end]
        raise error_type(f"{path}:{lineno}: {what} is not UTF-8 text (byte 0x{bad[:1].hex()} at column "
                         f"{column}: {e.reason}); save it as UTF-8") from None
    return _split_lines(text)


def resolve_under_prefix(prefix: str | os.PathLike | None, rel: str, ann_file: str, lineno: int) -> str:
    """``rel`` (a path read from line ``lineno`` of ``ann_file``) joined to ``prefix`` and normalised.

    With no prefix ``rel`` is returned unchanged. Absolute paths and paths that leave ``prefix`` raise
    ``ValueError("<ann_file>:<lineno>: ...")``.
    """
    if prefix is None:
        return rel
    prefix = os.fspath(prefix)
    if os.path.isabs(rel):
        raise ValueError(f"{ann_file}:{lineno}: absolute path '{rel}' with data_prefix set; paths must be "
                         "relative to data_prefix")
    full = os.path.normpath(os.path.join(prefix, rel))
    root = os.path.abspath(prefix)
    if os.path.commonpath([os.path.abspath(full), root]) != root:
        raise ValueError(f"{ann_file}:{lineno}: path '{rel}' escapes data_prefix {prefix}")
    return full


class UnreadableSkips:
    """Counted skip policy for training samples whose files cannot be decoded.

    :meth:`prepare` runs ``prepare(idx)``; on a :class:`DecodeError` the sample is recorded in :attr:`errors`
    (index -> message), a warning with the running count is logged and another random index not known to be
    unreadable is tried instead. A known-bad index is replaced at once, without retrying or recounting it.
    More than ``max_skips`` distinct bad samples, or all samples bad, raise a :class:`DecodeError` naming
    ``source`` and the last failure. Counts are per process (each DataLoader worker keeps its own).
    """

    def __init__(self, source: str, max_skips: int):
        self.source = source
        self.max_skips = int(max_skips)
        self.errors: dict[int, str] = {}

    def prepare(self, idx: int, num_samples: int, prepare: Callable[[int], T]) -> T:
        """``prepare(idx)``, or ``prepare`` of a substitute index when sample ``idx`` is unreadable."""
        while True:
            if idx in self.errors:
                idx = self._another_index(num_samples)
            try:
                return prepare(idx)
            except DecodeError as e:
                self.errors[idx] = str(e)
                n = len(self.errors)
                if n > self.max_skips:
                    raise DecodeError(f"{self.source}: {n} unreadable samples, more than max_skips="
                                      f"{self.max_skips}; last: {e}", e.path, e.frame) from e
                _LOG.warning("skipping unreadable sample %d (%d skipped so far, max_skips=%d): %s",
                             idx, n, self.max_skips, e)

    def _another_index(self, num_samples: int) -> int:
        """A random index not known to be unreadable (Python's ``random``, seeded per sample by the engine)."""
        if len(self.errors) >= num_samples:
            last = next(reversed(self.errors.values()))
            raise DecodeError(f"{self.source}: all {num_samples} samples are unreadable; last: {last}")
        if len(self.errors) < num_samples // 2:
            while True:
                idx = random.randrange(num_samples)
                if idx not in self.errors:
                    return idx
        return random.choice([i for i in range(num_samples) if i not in self.errors])
