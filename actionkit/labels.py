"""Class names: the label maps that ship with the package and the names of a config's output columns.

Shipped maps (``actionkit/label_maps/``, Apache-2.0):

- ``kinetics400``: 400 names, line i (0-based) = class i of every Kinetics-400 checkpoint (MMAction2 0.x
  ``tools/data/kinetics/label_map_k400.txt``);
- ``ava_v2_80``: the 80 AVA actions, line i (1-based) = AVA action id i (PySlowFast ``demo/AVA/ava.names``;
  the ids agree with MMAction2's 60-class ``tools/data/ava/label_map.txt``);
- ``sthv1``: 174 Something-Something V1 names, line i (0-based) = class i (MMAction2 0.x
  ``tools/data/sthv1/label_map.txt``).

Output columns (:func:`class_names_for_config`): a recognizer's column i is class i.  An AVA detector's
column 0 is the background column of its sigmoid head (never reported; the detector's per-class results
start at column 1) and is named ``'background'``; column k >= 1 is AVA action id k, or, for a config with
``custom_classes``, action id ``custom_classes[k - 1]``.
"""
from __future__ import annotations

import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

_LOG = logging.getLogger("actionkit")

BUILTIN_MAPS = {"kinetics400": "kinetics400.txt", "ava_v2_80": "ava_v2_80.txt", "sthv1": "sthv1.txt"}
_ALIASES = {"k400": "kinetics400", "kinetics-400": "kinetics400", "kinetics_400": "kinetics400",
            "ava": "ava_v2_80", "ava80": "ava_v2_80", "sthv1": "sthv1", "something-something-v1": "sthv1"}
BACKGROUND = "background"
_ID_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.*\S)\s*$")
_PARENS = re.compile(r"\([^()]*\)")


def builtin_map_name(name: str) -> str | None:
    """The shipped map called ``name`` (or one of its aliases: ``k400``, ``ava``, ...), else ``None``."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in BUILTIN_MAPS else None


def _read_text(name_or_path: str | os.PathLike) -> tuple[str, str]:
    builtin = builtin_map_name(str(name_or_path)) if not isinstance(name_or_path, os.PathLike) else None
    if builtin is not None and not os.path.exists(name_or_path):
        ref = resources.files("actionkit").joinpath("label_maps", BUILTIN_MAPS[builtin])
        return ref.read_text(encoding="utf-8"), f"actionkit/label_maps/{BUILTIN_MAPS[builtin]}"
    path = Path(name_or_path)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: label map not found (or give one of the shipped maps: "
                                f"{', '.join(BUILTIN_MAPS)})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: label map is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_label_ids(name_or_path: str | os.PathLike) -> dict[int, str]:
    """``{id: name}`` of a label map: ``id: name`` lines as written; plain lines numbered from 0 (the shipped
    ``ava_v2_80`` map from 1: its line i is AVA action id i).  Errors name the file and line."""
    text, where = _read_text(name_or_path)
    lines = [(no, ln.strip()) for no, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise ValueError(f"{where}: label map is empty")
    with_ids = [(no, _ID_LINE.match(ln)) for no, ln in lines]
    if any(m for _, m in with_ids):
        out: dict[int, str] = {}
        for no, m in with_ids:
            if m is None:
                raise ValueError(f"{where}:{no}: expected 'id: name' like the other lines")
            idx = int(m.group(1))
            if idx in out:
                raise ValueError(f"{where}:{no}: id {idx} is listed twice")
            out[idx] = m.group(2)
        return out
    first = 1 if builtin_map_name(str(name_or_path)) == "ava_v2_80" and not os.path.exists(name_or_path) else 0
    return {first + i: ln for i, (_, ln) in enumerate(lines)}


def load_label_map(name_or_path: str | os.PathLike) -> list[str]:
    """The names of a label map as a list, one per line (line i = class i).

    ``name_or_path`` is a shipped map's name (``kinetics400``, ``ava_v2_80``, ``sthv1``; aliases ``k400``,
    ``ava``) or a file.  A file of ``id: name`` lines (MMAction2's ``tools/data/ava/label_map.txt``) gives a
    list indexed by id: ``names[id]``, with ``class_<i>`` for the ids it does not list (0 included).
    """
    ids = load_label_ids(name_or_path)
    text, _ = _read_text(name_or_path)
    if any(_ID_LINE.match(ln) for ln in text.splitlines() if ln.strip()):
        return [ids.get(i, f"class_{i}") for i in range(max(ids) + 1)]
    return [ids[k] for k in sorted(ids)]


def abbreviate(name: str) -> str:
    """Short form for drawing (MMAction2's demo): every ``(...)`` becomes ``...``
    ('take (an object) from (a person)' -> 'take ... from ...')."""
    return _PARENS.sub("...", name)


def generic_names(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


# ------------------------------------------------------------------------------------------------ configs
def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _model_columns(cfg: Mapping) -> tuple[str, int]:
    """``('detection' | 'recognition', number of output columns)`` of a config's model."""
    model = cfg.get("model") or {}
    det = _get(model, "roi_head", "bbox_head", "num_classes")
    if det is not None:
        return "detection", int(det)
    rec = _get(model, "cls_head", "num_classes")
    if rec is not None:
        return "recognition", int(rec)
    filename = getattr(cfg, "filename", None) or "<config>"
    raise ValueError(f"{filename}: model.cls_head.num_classes or model.roi_head.bbox_head.num_classes is required "
                     "to name the output columns")


def _custom_classes(cfg: Mapping) -> list[int] | None:
    for which in ("test", "val", "train"):
        value = _get(cfg, "data", which, "custom_classes")
        if value is not None:
            return [int(v) for v in value]
    value = cfg.get("custom_classes")
    return [int(v) for v in value] if value is not None else None


def config_dataset(cfg: Mapping) -> str | None:
    """The shipped label map that a config's data is set up for (from its dataset paths, then its file name):
    ``'kinetics400'``, ``'sthv1'``, ``'ava_v2_80'`` or ``None``."""
    texts = []
    for which in ("test", "val", "train"):
        for key in ("ann_file", "data_prefix", "type"):
            value = _get(cfg, "data", which, key)
            if isinstance(value, str):
                texts.append(value.lower())
    filename = getattr(cfg, "filename", None)
    if filename:
        texts.append(Path(str(filename)).name.lower())
    for text in texts:
        if "synthetic" in text:
            return None
        if "kinetics400" in text or "kinetics_400" in text:
            return "kinetics400"
        if "sthv1" in text:
            return "sthv1"
        if "ava" in text:
            return "ava_v2_80"
    return None


def class_names_for_config(cfg: Mapping, label_map: str | os.PathLike | Sequence[str] | None = None) -> list[str]:
    """One name per output column of the config's model.

    ``label_map`` (a shipped map's name, a file or a list of names) overrides the default; for a detector its
    names are AVA action ids from 1 (``ava_v2_80`` layout) or an ``id: name`` file.  Defaults: Kinetics-400 /
    Something-Something V1 names for 400- / 174-class configs of those datasets, AVA action names for AVA
    detectors (column 0 ``'background'``; ``custom_classes`` map column k >= 1 to action id
    ``custom_classes[k - 1]``).  A dataset without shipped names, or a map whose size does not fit, gives
    ``class_<i>`` names (with a warning that says why).
    """
    task, columns = _model_columns(cfg)
    filename = getattr(cfg, "filename", None) or "<config>"
    dataset = config_dataset(cfg)
    if task == "detection":
        return _detection_names(cfg, columns, dataset, label_map, filename)
    if label_map is not None:
        names = list(label_map) if _is_name_list(label_map) else load_label_map(label_map)
        if len(names) != columns:
            raise ValueError(f"label map {_describe(label_map)} has {len(names)} names but the model of {filename} "
                             f"has {columns} output columns")
        return names
    if dataset in ("kinetics400", "sthv1"):
        names = load_label_map(dataset)
        if len(names) == columns:
            return names
        _LOG.warning("%s: %d output columns, but the %s label map has %d names; using class_<i> names",
                     filename, columns, dataset, len(names))
    else:
        _LOG.warning("%s: no shipped class names for this dataset; using class_<i> names (pass a label map)",
                     filename)
    return generic_names(columns)


def _is_name_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _describe(label_map: Any) -> str:
    return "(list)" if _is_name_list(label_map) else str(label_map)


def _detection_names(cfg: Mapping, columns: int, dataset: str | None,
                     label_map: str | os.PathLike | Sequence[str] | None, filename: str) -> list[str]:
    if label_map is None and dataset != "ava_v2_80":
        _LOG.warning("%s: no shipped class names for this dataset; using class_<i> names (pass a label map)",
                     filename)
        return [BACKGROUND] + [f"class_{i}" for i in range(1, columns)]
    if label_map is None:
        ids = load_label_ids("ava_v2_80")
    elif _is_name_list(label_map):
        ids = {i + 1: str(n) for i, n in enumerate(label_map)}
    else:
        ids = load_label_ids(label_map)
        if builtin_map_name(str(label_map)) is None and min(ids) == 0 and not any(
                _ID_LINE.match(ln) for ln in Path(label_map).read_text(encoding="utf-8").splitlines() if ln.strip()):
            ids = {i + 1: n for i, n in ids.items()}  # a plain file for a detector: line i (1-based) = action id i
    custom = _custom_classes(cfg)
    action_ids = custom if custom is not None else list(range(1, columns))
    if len(action_ids) != columns - 1:
        raise ValueError(f"{filename}: custom_classes lists {len(action_ids)} actions but the model has "
                         f"{columns} output columns (expected {columns - 1} actions + background)")
    missing = [a for a in action_ids if a not in ids]
    if missing:
        _LOG.warning("%s: the label map %s has no name for action id(s) %s; using class_<id>", filename,
                     _describe(label_map) if label_map is not None else "ava_v2_80", missing[:10])
    return [BACKGROUND] + [ids.get(a, f"class_{a}") for a in action_ids]
