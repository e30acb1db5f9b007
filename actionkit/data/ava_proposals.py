"""AVA person proposals: the published FAIR files are Python pickles ``{'video,0902': float64 ndarray [N, 5]}``
(``x1, y1, x2, y2, score``, normalized). They are read **only** through :class:`RestrictedUnpickler`, which admits
the few globals that numpy array reconstruction needs and refuses everything else. :func:`convert_proposals` turns
them into a pickle-free ``.npz`` (``keys``, ``boxes``, ``offsets``). Proposal boxes are checked on load:
coordinates at most :data:`PROPOSAL_CLIP_TOLERANCE` outside ``[0, 1]`` are clipped (one warning per file with the
counts), farther ones (pixel boxes?), ``x2 < x1`` / ``y2 < y1`` and non-finite values are errors naming the file and
the key.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_write
from .ava_csv import AVAFormatError

_LOG = logging.getLogger("actionkit")

__all__ = ["PROPOSAL_CLIP_TOLERANCE", "RestrictedUnpickler", "UnsafePickleError", "convert_proposals",
           "load_proposals", "load_proposals_npz", "load_proposals_pkl", "save_proposals_npz"]

#: Proposal coordinates up to this far outside ``[0, 1]`` (normalised units) are clipped with a counted warning;
#: farther ones are refused (they are not normalised boxes, or not boxes of this frame).
PROPOSAL_CLIP_TOLERANCE = 0.01


class UnsafePickleError(pickle.UnpicklingError):
    """A proposal pickle asked for a global that the restricted loader does not admit."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]   # numpy's multiarray._reconstruct, whatever its module
    import _codecs

    allowed: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, 'latin1')
        ("_codecs", "encode"): _codecs.encode,
    }
    for mod in ("builtins", "__builtin__"):
        for name, obj in (("dict", dict), ("list", list), ("tuple", tuple), ("str", str), ("unicode", str),
                          ("bytes", bytes), ("bytearray", bytearray), ("int", int), ("long", int),
                          ("float", float), ("bool", bool), ("set", set), ("frozenset", frozenset)):
            allowed[(mod, name)] = obj
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only numpy-array reconstruction and plain containers.

    Any other global (``os.system``, ``subprocess.*``, ``builtins.eval``, custom classes, ...) raises
    :class:`UnsafePickleError` *before* it could be called. Python-2 pickles (the published FAIR files) are
    read with ``encoding='latin1'`` so their array buffers come back byte-exact.
    """

    def __init__(self, file, source: str = "<pickle>"):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load '{module}.{name}' from a pickle: only numpy arrays in "
                "dicts/lists are allowed in proposal files (convert trusted files with "
                "'actionkit convert-proposals IN.pkl OUT.npz')") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in proposal pickles")


_BOX_NAMES = ("x1", "y1", "x2", "y2")


def _check_proposal_values(props: dict[str, np.ndarray], source: str) -> None:
    """Check the values of all proposal arrays at once (vectorised: the published files hold ~200k keys).

    Non-finite values, coordinates more than :data:`PROPOSAL_CLIP_TOLERANCE` outside ``[0, 1]`` and boxes with
    ``x2 < x1`` or ``y2 < y1`` raise :class:`AVAFormatError` naming ``source``, the key and the (0-based) row.
    Coordinates slightly outside ``[0, 1]`` are clipped (the arrays of those keys are replaced by clipped
    copies) and reported in one warning with the counts.
    """
    clipped_keys: list[str] = []
    clipped_coords = 0
    for width in (4, 5):
        keys = [k for k, v in props.items() if v.shape[1] == width and len(v)]
        if not keys:
            continue
        arrays = [props[k] for k in keys]
        values = np.concatenate(arrays).astype(np.float64, copy=False)
        ends = np.cumsum([len(a) for a in arrays])

        def locate(flat_rows: np.ndarray) -> tuple[str, int]:
            first = int(np.argmax(flat_rows))
            i = int(np.searchsorted(ends, first, side="right"))
            return keys[i], first - (int(ends[i - 1]) if i else 0)

        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            key, row = locate(bad)
            raise AVAFormatError(f"{source}: proposals of {key!r} contain non-finite values (row {row})")
        boxes = values[:, :4]
        far = (boxes < -PROPOSAL_CLIP_TOLERANCE) | (boxes > 1.0 + PROPOSAL_CLIP_TOLERANCE)
        if far.any():
            key, row = locate(far.any(axis=1))
            col = int(np.argmax(far[int(np.argmax(far.any(axis=1)))]))
            raise AVAFormatError(
                f"{source}: proposals of {key!r}: row {row} has {_BOX_NAMES[col]}={props[key][row, col]} outside "
                f"[0, 1] (by more than {PROPOSAL_CLIP_TOLERANCE}); proposal boxes must be normalized by the frame "
                "size")
        for lo, hi in ((0, 2), (1, 3)):
            inverted = boxes[:, hi] < boxes[:, lo]
            if inverted.any():
                key, row = locate(inverted)
                raise AVAFormatError(
                    f"{source}: proposals of {key!r}: row {row} has {_BOX_NAMES[hi]} < {_BOX_NAMES[lo]} "
                    f"({props[key][row, hi]} < {props[key][row, lo]})")
        outside = (boxes < 0) | (boxes > 1)
        if outside.any():
            clipped_coords += int(np.count_nonzero(outside))
            rows = np.flatnonzero(outside.any(axis=1))
            for i in np.unique(np.searchsorted(ends, rows, side="right")).tolist():
                key = keys[i]
                fixed = props[key].copy()
                fixed[:, :4] = np.clip(fixed[:, :4], 0, 1)
                props[key] = fixed
                clipped_keys.append(key)
    if clipped_keys:
        _LOG.warning("%s: clipped %d proposal box coordinate(s) that lay at most %s outside [0, 1] to the frame, "
                     "in %d keyframe(s) (first: %r)", source, clipped_coords, PROPOSAL_CLIP_TOLERANCE,
                     len(clipped_keys), clipped_keys[0])


def _validate_proposals(obj: Any, source: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise AVAFormatError(f"{source}: expected a dict {{'video_id,timestamp': array [N, 5]}}, "
                             f"got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, val in obj.items():
        if not isinstance(key, str):
            raise AVAFormatError(f"{source}: proposal key {key!r} is not a string")
        parts = key.split(",")
        if len(parts) != 2 or not parts[0]:
            raise AVAFormatError(f"{source}: proposal key {key!r} is not 'video_id,timestamp'")
        try:
            int(parts[1])
        except ValueError:
            raise AVAFormatError(f"{source}: proposal key {key!r}: timestamp is not an integer") from None
        if not isinstance(val, np.ndarray):
            raise AVAFormatError(f"{source}: proposals of {key!r} are a {type(val).__name__}, expected an ndarray")
        if val.dtype.kind not in "fiu":
            raise AVAFormatError(f"{source}: proposals of {key!r} have non-numeric dtype {val.dtype}")
        if val.ndim != 2 or val.shape[1] not in (4, 5):
            raise AVAFormatError(f"{source}: proposals of {key!r} have shape {val.shape}, expected [N, 5] or [N, 4]")
        out[key] = val
    _check_proposal_values(out, source)
    return out


def load_proposals_pkl(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a published proposal pickle through :class:`RestrictedUnpickler` and validate it."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source=str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated / corrupt stream
        raise AVAFormatError(f"{path}: not a readable proposal pickle ({type(e).__name__}: {e})") from None
    return _validate_proposals(obj, str(path))


def save_proposals_npz(proposals: dict[str, np.ndarray], out_path: str | os.PathLike) -> None:
    """Write ``{key: [N, 5]}`` as a pickle-free ``.npz``: ``keys`` (unicode [K]), ``boxes`` (float64 [sum N, C]),
    ``offsets`` (int64 [K+1]; the rows of key i are ``boxes[offsets[i]:offsets[i+1]]``)."""
    proposals = _validate_proposals(proposals, "<proposals>")
    keys = list(proposals)
    widths = {proposals[k].shape[1] for k in keys}
    if len(widths) > 1:
        raise ValueError(f"proposal arrays mix widths {sorted(widths)}; expected all [N, 5] or all [N, 4]")
    width = widths.pop() if widths else 5
    arrays = [np.asarray(proposals[k], dtype=np.float64).reshape(-1, width) for k in keys]
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    boxes = np.concatenate(arrays, 0) if arrays else np.zeros((0, width), np.float64)
    buf = io.BytesIO()
    np.savez(buf, keys=np.array(keys, dtype=np.str_), boxes=boxes, offsets=offsets)
    with atomic_write(out_path, "wb") as f:
        f.write(buf.getvalue())


def load_proposals_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the ``.npz`` written by :func:`save_proposals_npz` (``allow_pickle=False``) and validate it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"keys", "boxes", "offsets"} - set(z.files)
            if missing:
                raise AVAFormatError(f"{path}: missing arrays {sorted(missing)} (expected keys, boxes, offsets)")
            keys, boxes, offsets = z["keys"], z["boxes"], z["offsets"]
    except AVAFormatError:
        raise
    except ValueError as e:
        raise AVAFormatError(f"{path}: not a pickle-free proposal .npz ({e})") from None
    if keys.ndim != 1 or keys.dtype.kind != "U":
        raise AVAFormatError(f"{path}: 'keys' must be a 1-D unicode array, got {keys.dtype} {keys.shape}")
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
        raise AVAFormatError(f"{path}: 'boxes' must have shape [M, 5] (or [M, 4]), got {boxes.shape}")
    if (offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) != len(keys) + 1
            or (len(offsets) and (offsets[0] != 0 or offsets[-1] != len(boxes)))
            or np.any(np.diff(offsets) < 0)):
        raise AVAFormatError(f"{path}: 'offsets' must be non-decreasing int [K+1] from 0 to {len(boxes)}")
    out = {str(k): boxes[offsets[i]:offsets[i + 1]] for i, k in enumerate(keys.tolist())}
    if len(out) != len(keys):
        raise AVAFormatError(f"{path}: duplicate keys")
    return _validate_proposals(out, str(path))


def load_proposals(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load proposals from a published ``.pkl`` (restricted unpickler) or a pickle-free ``.npz``."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if path.suffix.lower() == ".npz" or magic.startswith(b"PK"):
        return load_proposals_npz(path)
    return load_proposals_pkl(path)


def convert_proposals(in_pkl: str | os.PathLike, out_path: str | os.PathLike) -> int:
    """Convert a published proposal pickle to the safe ``.npz``; returns the number of keys."""
    props = load_proposals(in_pkl)
    save_proposals_npz(props, out_path)
    return len(props)
