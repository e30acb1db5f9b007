"""Recognition metrics of MMAction2: top-k accuracy, mean class accuracy."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["top_k_accuracy", "mean_class_accuracy", "confusion_matrix"]


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores) if not isinstance(scores, (list, tuple)) else np.stack([np.asarray(x) for x in scores])
    if s.ndim != 2:
        raise ValueError(f"scores must be [N, K] (or a list of N [K] vectors), got shape {s.shape}")
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != len(s):
        raise ValueError(f"labels must be [N] with N = {len(s)}, got shape {lab.shape}")
    if len(s) == 0:
        raise ValueError("no samples")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.mod(lab, 1) == 0):
            raise ValueError("labels must be integers")
        lab = lab.astype(np.int64)
    if lab.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(lab.min())}")
    return s, lab.astype(np.int64)


def top_k_accuracy(scores, labels, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Fraction of samples whose label is among the ``k`` highest scores, for each ``k`` in ``topk``.

    The top-k indices are ``np.argsort(scores, axis=1)[:, -k:][:, ::-1]`` (ascending quicksort, as MMAction2, which
    decides ties); a sample is a hit when its label is one of them; the score is ``hits.sum() / N``.
    """
    if isinstance(topk, int):
        topk = (topk,)
    s, lab = _scores_labels(scores, labels)
    order = np.argsort(s, axis=1)
    out = []
    for k in topk:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        top = order[:, -int(k):][:, ::-1]
        hits = np.logical_or.reduce(top == lab[:, None], axis=1)
        out.append(float(hits.sum() / hits.shape[0]))
    return out


def confusion_matrix(y_pred, y_real) -> np.ndarray:
    """Confusion matrix over the label set ``unique(concat(y_pred, y_real))``; rows are true labels."""
    y_pred = np.asarray(y_pred, np.int64).reshape(-1)
    y_real = np.asarray(y_real, np.int64).reshape(-1)
    if len(y_pred) != len(y_real):
        raise ValueError(f"{len(y_pred)} predictions for {len(y_real)} labels")
    label_set = np.unique(np.concatenate([y_pred, y_real]))
    m = len(label_set)
    pred_i = np.searchsorted(label_set, y_pred)
    real_i = np.searchsorted(label_set, y_real)
    return np.bincount(m * real_i + pred_i, minlength=m * m).reshape(m, m)


def mean_class_accuracy(scores, labels) -> float:
    """Mean over the label set (true and predicted classes) of per-class recall ``hit / count``.

    ``pred = argmax(scores, 1)``; a class that is only predicted (never a true label) has count 0, contributes 0,
    and still counts in the mean.
    """
    s, lab = _scores_labels(scores, labels)
    pred = np.argmax(s, axis=1)
    cf = confusion_matrix(pred, lab).astype(float)
    cnt = cf.sum(axis=1)
    hit = np.diag(cf)
    per_class = np.where(cnt > 0, hit / np.maximum(cnt, 1), 0.0)
    return float(np.mean(per_class))
