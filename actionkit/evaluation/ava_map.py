"""AVA frame mAP (MMAction2 0.x ``ava_eval`` and the ActivityNet ``--official`` variant), results csv."""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["AVAFormatError", "read_labelmap"]


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
        text = path.read_text(encoding="utf-8")
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
        raise AVAFormatError(f"{path}: empty label map")
    return categories, [c["id"] for c in categories]
