"""Annotated output video of ``actionkit detect``: person boxes and their top action labels, H.264 mp4 via PyAV.

Drawing follows MMAction2's demo: a box per person, and under its top-left corner one line per label
(abbreviated name and score, best first, at most 5), each on a filled background. Unlike the demo, a person
without a label above the threshold still gets its box (so that every detection is visible).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..visualize import Mp4Writer

__all__ = ["BOX_COLOR", "LABEL_COLORS", "draw_detections", "draw_note", "Mp4Writer"]

BOX_COLOR = (0, 119, 182)                      # RGB
LABEL_COLORS = [(2, 62, 138), (0, 119, 182), (0, 150, 199), (0, 180, 216), (72, 202, 228)]
TEXT_COLOR = (255, 255, 255)
FONT_SCALE = 0.5
LINE_HEIGHT = 18
BOX_THICKNESS = 2


def draw_detections(frame: np.ndarray, persons: np.ndarray,
                    labels: Sequence[Sequence[tuple[str, float]]]) -> np.ndarray:
    """A copy of ``frame`` (RGB uint8 ``[H, W, 3]``) with each person's box (normalised ``[N, >=4]``) and its
    labels (``(name, score)``, drawn in the given order) on it."""
    import cv2

    out = np.ascontiguousarray(frame).copy()
    h, w = out.shape[:2]
    scale = np.array([w, h, w, h], dtype=np.float64)
    boxes = np.asarray(persons, dtype=np.float64)
    for box, box_labels in zip(boxes.reshape(len(boxes), -1), labels):
        x1, y1, x2, y2 = (box[:4] * scale).astype(np.int64).tolist()
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, BOX_THICKNESS)
        for k, (name, score) in enumerate(box_labels):
            text = f"{name}: {score:.2f}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, FONT_SCALE, 1)
            base = (x1, y1 + LINE_HEIGHT * (k + 1))
            cv2.rectangle(out, (base[0], base[1] - th - 4), (base[0] + tw, base[1] + 3),
                          LABEL_COLORS[k % len(LABEL_COLORS)], -1)
            cv2.putText(out, text, base, cv2.FONT_HERSHEY_DUPLEX, FONT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
    return out


def draw_note(frame: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``frame`` with ``text`` in its top-left corner (e.g. a keyframe where no person was found)."""
    import cv2

    out = np.ascontiguousarray(frame).copy()
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, FONT_SCALE, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + 10), LABEL_COLORS[0], -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_DUPLEX, FONT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
    return out
