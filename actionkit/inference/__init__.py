"""Inference on users' inputs with MMAction2's API names (``init_recognizer``, ``inference_recognizer``)."""
from __future__ import annotations

from .recognition import inference_recognizer, init_recognizer, recognition_scores
from .detection import ActionDetector, KeyframeClipPipeline, detect_video

__all__ = ["init_recognizer", "inference_recognizer", "recognition_scores", "ActionDetector", "KeyframeClipPipeline",
           "detect_video"]
