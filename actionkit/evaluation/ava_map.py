"""AVA frame mAP (MMAction2 0.x ``ava_eval`` and the ActivityNet ``--official`` variant) and its evaluator.

Two modes, both reproducing their reference's numbers (including the order in which tied scores are processed):

* ``mmaction`` (default): MMAction2 0.x ``ava_eval`` (``mmaction/core/evaluation/ava_utils.py``). Image keys
  ``'%s,%04d' % (video, int(ts))``; excluded keyframes dropped from GT and detections; no per-keyframe cap;
  detections on keyframes absent from the GT are false positives.
* ``official``: ActivityNet ``get_ava_performance.py``. Keys ``'%s,%.6f'``; each keyframe keeps its top 50
  detections through the script's ``heapq`` (simulated exactly, vectorised across keyframes, since the heap layout
  fixes the order of tied scores); detections on keyframes absent from the GT csv are ignored, while 2-column GT rows
  list keyframes without boxes whose detections are false positives.

Both: Pascal VOC all-points AP per class at IoU >= 0.5 with greedy matching in score order (each detection takes
its first argmax-IoU GT box of the class, no fallback), ``np.argsort(scores)[::-1]`` ranking, mean over the
label-map classes that have GT. The files are read by :mod:`actionkit.data.ava_csv` (errors name file:line).
"""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..data.ava_csv import (  # noqa: F401 - re-exported: reading and writing the files lives in ava_csv
    MODES, AVAFormatError, AVARows, format_result_rows, read_ava_csv, read_exclusions, read_labelmap,
    results2csv,
)
from .ava_order import reference_order

__all__ = [
    "AVAFormatError", "AVAFrameEvaluator", "AVARows", "CATEGORY_GROUPS", "FrameMAPResult", "evaluate_rows", "frame_map",
    "read_ava_csv", "read_inputs", "read_exclusions", "read_labelmap", "results2csv", "voc_average_precision",
]


OFFICIAL_CAPACITY = 50
# Standard AVA action-type groups (ids of ava_action_list_v2.x.pbtxt label_type).
CATEGORY_GROUPS = {
    "PersonMovement": (1, 14),
    "PersonObject": (15, 63),
    "PersonPerson": (64, 80),
}

# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class FrameMAPResult:
    """Frame-level AVA results. ``per_class`` maps every label-map id to its AP (NaN for classes without GT)."""

    mAP: float
    per_class: dict                 # id -> AP
    names: dict                     # id -> name
    num_gt: dict                    # id -> number of GT instances
    groups: dict                    # group name -> mean AP over its classes with GT (NaN when none)
    mode: str
    iou: float
    stats: dict                     # counts of skipped / ignored rows and keys

    def to_dict(self, by_category: bool = True) -> dict:
        """MMAction2 0.x metric names: ``mAP@0.5IOU`` (+ ``PerformanceByCategory/AP@0.5IOU/<name>``)."""
        thr = f"{self.iou:g}"
        out = {f"mAP@{thr}IOU": self.mAP}
        if by_category:  # every label-map class, NaN where it has no GT (as the reference prints them)
            for cid, ap in self.per_class.items():
                out[f"PerformanceByCategory/AP@{thr}IOU/{self.names[cid]}"] = ap
        return out

    def to_json(self) -> dict:
        def f(x):
            return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)
        return {
            "mode": self.mode, "iou": self.iou, "mAP": f(self.mAP),
            "per_class": [{"id": c, "name": self.names[c], "ap": f(ap), "num_gt": int(self.num_gt.get(c, 0))}
                          for c, ap in self.per_class.items()],
            "groups": {k: f(v) for k, v in self.groups.items()},
            "stats": self.stats,
        }


def _key_mask(keys: Sequence[str], members) -> np.ndarray:
    return np.array([k in members for k in keys], bool).reshape(-1)


def _runs_of(sorted_codes: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``codes``: the start of its run of equal values in ``sorted_codes`` and the run's length (0 when
    absent, as for the code -1)."""
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    values = sorted_codes[starts]
    lengths = np.diff(np.r_[starts, len(sorted_codes)])
    pos = np.minimum(np.searchsorted(values, codes), len(values) - 1)
    found = values[pos] == codes
    return starts[pos], np.where(found, lengths[pos], 0)


def _iou_pairs(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU of paired boxes ``d[i]``, ``g[i]`` (x1, y1, x2, y2), with the reference's operation order."""
    return _iou_candidates(d, np.ones(len(d), np.int64), g, np.arange(len(g)))


def _iou_candidates(d: np.ndarray, counts: np.ndarray, g: np.ndarray, pg: np.ndarray) -> np.ndarray:
    """IoU of each detection box ``d[i]`` (x1, y1, x2, y2) with its ``counts[i]`` candidate GT boxes ``g[pg]``
    (consecutive in ``pg``), with the reference's operation order (np_box_list_ops.iou)."""
    def rep(v: np.ndarray) -> np.ndarray:
        return np.repeat(v, counts)

    gc = [np.ascontiguousarray(g[:, j])[pg] for j in range(4)]
    ih = np.maximum(0.0, np.minimum(rep(d[:, 3]), gc[3]) - np.maximum(rep(d[:, 1]), gc[1]))
    iw = np.maximum(0.0, np.minimum(rep(d[:, 2]), gc[2]) - np.maximum(rep(d[:, 0]), gc[0]))
    inter = ih * iw
    a1 = rep((d[:, 3] - d[:, 1]) * (d[:, 2] - d[:, 0]))
    a2 = ((g[:, 3] - g[:, 1]) * (g[:, 2] - g[:, 0]))[pg]
    return inter / (a1 + a2 - inter)


def voc_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC all-points AP of one class, as ``metrics.compute_precision_recall`` + ``compute_average_precision``:
    order by ``np.argsort(scores)[::-1]`` (default quicksort, which fixes the order of tied scores).

    Computed at the true positives only, where recall changes: there the precision ``k / (i + 1)`` (k-th TP at rank
    i) and recall ``k / num_gt`` are the reference's floats, the interpolated precision is the running maximum from
    the right over them (false positives never raise it), and the terms are summed as the reference sums them (with
    its last term ``(1 - recall) * 0`` when recall stays below 1), so the result is the reference's to the bit.
    """
    if num_gt <= 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    rank = np.flatnonzero(tp[np.argsort(scores)[::-1]] > 0)  # ranks of the true positives
    k = np.arange(1, len(rank) + 1, dtype=float)
    precision = np.maximum.accumulate((k / (rank + 1.0))[::-1])[::-1]
    recall = k / num_gt
    gain = np.diff(recall, prepend=0.0)
    last = recall[-1] if len(recall) else 0.0
    terms = gain * precision
    if last != 1.0:
        terms = np.append(terms, (1.0 - last) * 0.0)
    return float(np.sum(terms))


def evaluate_rows(gt: AVARows, det: AVARows, categories: Sequence[Mapping], excluded: Iterable[str] = (),
                  mode: str = "mmaction", iou: float = 0.5) -> FrameMAPResult:
    """Frame mAP of ``det`` against ``gt`` (both read with the label map as whitelist). See :func:`frame_map`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_iou(iou)
    if gt.mode != mode or det.mode != mode:
        raise ValueError(f"csvs were read for mode {gt.mode!r}/{det.mode!r}, evaluating in {mode!r}")
    excluded = set(excluded)
    ids = [int(c["id"]) for c in categories]
    names = {int(c["id"]): str(c["name"]) for c in categories}
    num_class = max(ids)
    wl = np.zeros(num_class + 1, bool)
    wl[ids] = True
    stats: dict = {"gt_rows_skipped_class": int(sum(gt.skipped_classes.values())),
                   "det_rows_skipped_class": int(sum(det.skipped_classes.values())),
                   "det_rows_degenerate_box": det.num_degenerate_boxes,
                   "det_rows_box_outside_image": det.num_outside_boxes,
                   "det_rows_score_outside_0_1": det.num_scores_outside,
                   "det_rows_duplicated": det.num_duplicate_rows}
    capacity = OFFICIAL_CAPACITY if mode == "official" else 0

    # ---- ground truth: per key (not excluded), the reference's within-key order, then split by class
    gt_excl = _key_mask(gt.keys, excluded) if excluded else np.zeros(len(gt.keys), bool)
    gsel = ~gt_excl[gt.key] & wl[np.minimum(gt.labels, num_class)] & (gt.labels <= num_class)
    stats["gt_keys_excluded"] = int(gt_excl.sum())
    nk = max(len(gt.keys), 1)
    gorder = reference_order(gt, gsel, np.arange(nk), mode, 0)
    lab_t = np.int16 if num_class < 2**15 else np.int64  # small ints: numpy's stable sort is a radix sort
    gorder = gorder[np.argsort(gt.labels[gorder].astype(lab_t), kind="stable")]  # (class, key, within)
    g_boxes = gt.boxes[gorder]
    g_code = gt.labels[gorder] * nk + gt.key[gorder]
    num_gt = np.bincount(gt.labels[gorder], minlength=num_class + 1)

    # ---- detections
    gt_index = {k: i for i, k in enumerate(gt.keys)}
    get = gt_index.get
    d2g = np.array([get(k, -1) for k in det.keys], np.int64).reshape(-1)
    det_excl = _key_mask(det.keys, excluded) if excluded else np.zeros(len(det.keys), bool)
    dsel = wl[np.minimum(det.labels, num_class)] & (det.labels <= num_class)
    n_excl_rows = int((det_excl[det.key] & dsel).sum())
    dsel &= ~det_excl[det.key]
    unknown = d2g < 0
    stats["det_keys_excluded"] = int(det_excl.sum())
    stats["det_keys_not_in_gt"] = int((unknown & ~det_excl).sum())
    stats["det_rows_excluded"] = n_excl_rows
    stats["det_rows_not_in_gt"] = int((dsel & unknown[det.key]).sum())
    if mode == "official":
        dsel &= ~unknown[det.key]  # keyframes absent from the GT csv are ignored
    # dict insertion order of the reference: first appearance of a (whitelisted) row of the key
    nkd = max(len(det.keys), 1)
    first = np.full(nkd, np.iinfo(np.int64).max)
    np.minimum.at(first, det.key[dsel], np.flatnonzero(dsel)) if dsel.any() else None
    key_rank = np.empty(nkd, np.int64)
    key_rank[np.argsort(first, kind="stable")] = np.arange(nkd)
    dorder = reference_order(det, dsel, key_rank, mode, capacity, stats)
    b = det.boxes
    valid = ((b[:, 1] < b[:, 3]) & (b[:, 0] < b[:, 2]))[dorder]
    stats["det_rows_invalid_box"] = int((~valid).sum())
    dorder = dorder[valid]
    dorder = dorder[np.argsort(det.labels[dorder].astype(lab_t), kind="stable")]  # (class, key rank, within)
    d_lab = det.labels[dorder]
    d_scores = det.scores[dorder]
    d_gkey = d2g[det.key[dorder]]
    stats["det_rows_evaluated"] = int(len(dorder))

    # ---- greedy matching, vectorised: a detection takes its first argmax-IoU GT of the same (key, class);
    # it is a TP iff that IoU >= thr and no earlier such detection of the group took the same GT.
    nd = len(dorder)
    tp = np.zeros(nd, bool)
    has = d_gkey >= 0
    if nd and len(g_code):
        code = np.where(has, d_lab * nk + d_gkey, -1)
        lo, ng = _runs_of(g_code, code)
        di = np.flatnonzero(ng > 0)
        if len(di):
            cnt = ng[di]
            seg = np.zeros(len(di), np.int64)
            np.cumsum(cnt[:-1], out=seg[1:])
            tot = int(cnt.sum())
            lo_d = lo[di]
            local = np.arange(tot) - np.repeat(seg, cnt)
            pg = np.repeat(lo_d, cnt) + local
            # boxes only of the detections that have candidate GT boxes, each repeated over its candidates
            ious = _iou_candidates(det.boxes[dorder[di]], cnt, g_boxes, pg)
            mx = np.maximum.reduceat(ious, seg)
            first_max = np.minimum.reduceat(np.where(ious == np.repeat(mx, cnt), local, tot), seg)
            best = lo_d + first_max
            cand = mx >= iou
            ci = np.flatnonzero(cand)
            _, fi = np.unique(best[ci], return_index=True)
            tp[di[ci[fi]]] = True

    # ---- per-class AP
    ap = np.full(num_class, np.nan)
    cls_bounds = np.searchsorted(d_lab, np.arange(num_class + 2))
    classes = [c for c in range(1, num_class + 1) if num_gt[c] > 0]

    def class_ap(c: int) -> float:
        a, z = cls_bounds[c], cls_bounds[c + 1]
        return voc_average_precision(d_scores[a:z], tp[a:z], int(num_gt[c]))

    for c, value in zip(classes, _map_threads(class_ap, classes, nd)):
        ap[c - 1] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_ap = float(np.nanmean(ap)) if (~np.isnan(ap)).any() else float("nan")
    per_class = {c: float(ap[c - 1]) for c in ids}
    groups = {}
    for gname, (lo_id, hi_id) in CATEGORY_GROUPS.items():
        vals = [per_class[c] for c in ids if lo_id <= c <= hi_id and not np.isnan(per_class[c])]
        groups[gname] = float(np.mean(vals)) if vals else float("nan")
    return FrameMAPResult(mean_ap, per_class, names, {c: int(num_gt[c]) for c in ids}, groups, mode, iou, stats)


def _map_threads(fn, items: Sequence, rows: int) -> list:
    """``[fn(x) for x in items]``, on two threads when there are at least two CPUs and ``rows`` (the work) is
    large: the per-class sorts release the GIL. Each result is computed as on one thread."""
    if (os.cpu_count() or 1) < 2 or len(items) < 2 or rows < 200_000:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(fn, items))


def _check_iou(iou: float) -> None:
    if not (0.0 < float(iou) <= 1.0):
        raise ValueError(f"the IoU threshold must lie in (0, 1], got {iou}")


def _load_labelmap(label_map) -> tuple[list[dict], list[int]]:
    if isinstance(label_map, (str, os.PathLike)):
        return read_labelmap(label_map)
    if isinstance(label_map, tuple) and len(label_map) == 2 and not isinstance(label_map[0], Mapping):
        cats = list(label_map[0])
    else:
        cats = list(label_map)
    cats = [{"id": int(c["id"]), "name": str(c["name"])} for c in cats]
    if not cats:
        raise ValueError("empty label map")
    return cats, [c["id"] for c in cats]


def read_inputs(gt, detections, class_ids: Sequence[int], exclusions=None,
                mode: str = "mmaction") -> tuple[AVARows, AVARows, set[str]]:
    """The ground truth, detections and excluded image keys of :func:`frame_map` (paths are read, values passed
    through). The two csvs are read concurrently (polars parses without holding the GIL); when both are bad, the
    ground truth's error is raised."""
    def read(source, kind: str) -> AVARows:
        return source if isinstance(source, AVARows) else read_ava_csv(source, kind, mode, class_ids)

    with ThreadPoolExecutor(1) as pool:
        det_future = pool.submit(read, detections, "det")
        gt = read(gt, "gt")
        detections = det_future.result()
    if exclusions is None:
        excluded: set[str] = set()
    elif isinstance(exclusions, (str, os.PathLike)):
        excluded = read_exclusions(exclusions, mode)
    else:
        excluded = set(exclusions)
    return gt, detections, excluded


def frame_map(gt, detections, label_map, exclusions=None, mode: str = "mmaction", iou: float = 0.5,
              custom_classes: Sequence[int] | None = None, logger: logging.Logger | None = None) -> FrameMAPResult:
    """AVA frame mAP@``iou``.

    ``gt`` / ``detections``: csv paths or :class:`AVARows` read for the same ``mode``. ``label_map``: a pbtxt path,
    ``(categories, ids)`` or a list of ``{'id', 'name'}``. ``exclusions``: a csv path, a set of image keys or None.

    ``mode='mmaction'`` is MMAction2 0.x ``ava_eval``: exclusions drop GT and detection keyframes, no per-keyframe
    cap, detections on keyframes absent from the GT are false positives. ``mode='official'`` is ActivityNet's
    ``get_ava_performance.py``: top-50 detections per keyframe, keys ``video,%.6f``, detections on keyframes absent
    from the GT csv ignored (2-column GT rows list keyframes without boxes: their detections are false positives).
    Both: Pascal VOC all-points AP per class at IoU >= ``iou`` with greedy matching by score, mean over the
    label-map classes that have GT.
    """
    log = logger or logging.getLogger(__name__)
    _check_iou(iou)
    categories, ids = _load_labelmap(label_map)
    if custom_classes is not None:
        custom = [int(c) for c in custom_classes]
        missing = sorted(set(custom) - set(ids))
        if missing:
            raise ValueError(f"custom_classes {missing} are not in the label map")
        categories = [c for c in categories if c["id"] in custom]
        ids = [c["id"] for c in categories]
    gt, detections, excluded = read_inputs(gt, detections, ids, exclusions, mode)
    if detections.num_rows == 0:
        log.warning("%s: no detections; every class with ground truth gets AP 0", detections.path)
    res = evaluate_rows(gt, detections, categories, excluded, mode, iou)
    if not any(res.num_gt.values()):
        log.warning("%s: no ground truth for the label-map classes; mAP is NaN", gt.path)
    st = res.stats
    if st["gt_rows_skipped_class"] or st["det_rows_skipped_class"]:
        log.info("skipped rows with classes outside the label map: %d GT, %d detections",
                 st["gt_rows_skipped_class"], st["det_rows_skipped_class"])
    if st["det_keys_not_in_gt"]:
        what = "ignored" if mode == "official" else "counted as false positives"
        log.warning("%s: %d keyframes (%d rows) are not in the ground truth: %s", detections.path,
                    st["det_keys_not_in_gt"], st["det_rows_not_in_gt"], what)
    if st["det_rows_invalid_box"]:
        log.warning("%s: %d detections with zero-area or degenerate boxes dropped (%d with x2 < x1 or y2 < y1); "
                    "the official script drops them too, so they can never match", detections.path,
                    st["det_rows_invalid_box"], st["det_rows_degenerate_box"])
    if st["det_rows_box_outside_image"]:
        log.warning("%s: %d detections have box coordinates outside [0, 1]; evaluated as given, as the official "
                    "script does", detections.path, st["det_rows_box_outside_image"])
    if st["det_rows_score_outside_0_1"]:
        log.warning("%s: %d detections have scores outside [0, 1]; ranked as given", detections.path,
                    st["det_rows_score_outside_0_1"])
    if st["det_rows_duplicated"]:
        log.warning("%s: %d detection rows repeat an earlier row's keyframe, box and action; each copy is scored "
                    "(a duplicate is a false positive once the person is matched), which lowers the mAP",
                    detections.path, st["det_rows_duplicated"])
    return res


class AVAFrameEvaluator:
    """Accumulate detector outputs and compute the frame mAP (``reset`` / ``process`` / ``evaluate``).

    ``process(img_keys, results)`` takes per-sample image keys (``'video,ts'`` strings, ``(video, ts)`` pairs or
    dicts with ``video_id`` / ``timestamp``) and per-sample detector outputs (a list over the classes of ``[k, 5]``
    arrays ``x1, y1, x2, y2, score``). ``evaluate()`` formats them exactly like :func:`results2csv` (values rounded
    to ``decimals`` as the csv round trip of MMAction2 does; ``decimals=None`` keeps full precision) and evaluates.
    """

    def __init__(self, gt, label_map, exclusions=None, mode: str = "mmaction", iou: float = 0.5,
                 custom_classes: Sequence[int] | None = None, decimals: int | None = 3):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.categories, self.ids = _load_labelmap(label_map)
        self.gt, self.exclusions, self.mode, self.iou = gt, exclusions, mode, iou
        self.custom_classes = custom_classes
        self.decimals = decimals
        self._gt_rows: AVARows | None = None
        self.reset()

    def reset(self) -> None:
        self._chunks: list[str] = []

    def process(self, img_keys: Sequence, results: Sequence) -> None:
        if len(img_keys) != len(results):
            raise ValueError(f"{len(img_keys)} image keys for {len(results)} results")
        self._chunks.append("".join(format_result_rows(results, img_keys, self.custom_classes, self.decimals)))

    def evaluate(self, logger: logging.Logger | None = None) -> FrameMAPResult:
        ids = self.ids if self.custom_classes is None else [int(c) for c in self.custom_classes]
        if self._gt_rows is None:
            self._gt_rows = self.gt if isinstance(self.gt, AVARows) else read_ava_csv(self.gt, "gt", self.mode, ids)
        det = read_ava_csv("<AVAFrameEvaluator results>", "det", self.mode, ids,
                           data="".join(self._chunks).encode("utf-8"))
        return frame_map(self._gt_rows, det, self.categories, self.exclusions, self.mode, self.iou,
                         self.custom_classes, logger=logger)
