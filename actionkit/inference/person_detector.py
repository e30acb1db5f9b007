"""The default person detector of ``actionkit detect`` / ``actionkit proposals``: torchvision's Faster R-CNN
R50-FPN v2 trained on COCO (box AP 46.7), keeping class 1 ('person') at ``score >= det_score_thr``.

torchvision is an optional extra (``pip install "actionkit[detect]"``) imported only when a detector is
built; the COCO weights are fetched by torchvision on first use (into ``$TORCH_HOME/hub/checkpoints/``).
``weights`` may instead be a state-dict file (``torch.load(..., weights_only=True)``) or ``None`` (random
weights: tests). Without torchvision, pass person boxes with ``--person-boxes``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["PersonDetectorUnavailable", "import_torchvision_detection", "TorchvisionPersonDetector",
           "COCO_PERSON", "coco_weights_path"]

COCO_PERSON = 1  # torchvision's COCO category id of 'person'


class PersonDetectorUnavailable(RuntimeError):
    """torchvision (the person detector) cannot be imported here."""


def import_torchvision_detection() -> Any:
    """``torchvision.models.detection``, or :class:`PersonDetectorUnavailable` saying why and what to do."""
    try:
        import torchvision  # noqa: F401
        from torchvision.models import detection
    except Exception as e:  # ImportError, or RuntimeError 'operator torchvision::nms does not exist'
        hint = ("install it with 'pip install \"actionkit[detect]\"' (a torchvision build that matches your torch "
                f"{torch.__version__})")
        if not isinstance(e, ModuleNotFoundError):
            hint = ("your torch and torchvision builds do not match (e.g. a CUDA torchvision beside a CPU torch); "
                    f"install the torchvision release built for torch {torch.__version__}")
        raise PersonDetectorUnavailable(
            f"the person detector needs torchvision, which cannot be imported ({type(e).__name__}: {e}); {hint}, "
            "or skip the detector by giving person boxes with --person-boxes FILE (an AVA proposals .pkl/.npz, "
            "e.g. from 'actionkit proposals', or a csv of frame,x1,y1,x2,y2,score)") from e
    return detection


def coco_weights_path(url: str) -> Path:
    """Where torchvision looks for a downloaded weights file: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


class TorchvisionPersonDetector:
    """``detector(frame)`` -> float32 ``[N, 5]``: normalised ``x1, y1, x2, y2`` and the person score of the
    people found in an RGB uint8 ``[H, W, 3]`` frame with ``score >= score_thr``, best first.

    ``weights``: ``'COCO_V1'`` (torchvision's published weights, downloaded on first use), a path to a
    state dict of ``fasterrcnn_resnet50_fpn_v2`` (91 COCO classes), or ``None`` for random weights.
    """

    def __init__(self, score_thr: float = 0.9, device: str | torch.device = "cpu",
                 weights: str | os.PathLike | None = "COCO_V1", box_score_thresh: float = 0.05,
                 detections_per_img: int = 100):
        if not 0.0 <= float(score_thr) <= 1.0:
            raise ValueError(f"the person score threshold must be in [0, 1], got {score_thr}")
        detection = import_torchvision_detection()
        self.score_thr = float(score_thr)
        self.device = torch.device(device)
        kwargs = dict(box_score_thresh=min(box_score_thresh, self.score_thr),
                      box_detections_per_img=detections_per_img)
        if weights == "COCO_V1":
            coco = detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1
            try:
                model = detection.fasterrcnn_resnet50_fpn_v2(weights=coco, **kwargs)
            except (OSError, RuntimeError) as e:   # URLError is an OSError; a cut download a RuntimeError
                raise PersonDetectorUnavailable(
                    f"the person detector's COCO weights could not be downloaded from {coco.url} "
                    f"({type(e).__name__}: {e}); download the file by hand to {coco_weights_path(coco.url)} "
                    "(picked up from there), or pass a state dict with --det-checkpoint, or person boxes with "
                    "--person-boxes") from e
        else:
            model = detection.fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91,
                                                         **kwargs)
            if weights is not None:
                path = Path(weights)
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                except FileNotFoundError:
                    raise FileNotFoundError(f"{path}: person detector weights not found") from None
                except Exception as e:
                    raise ValueError(f"{path}: not a loadable state dict ({type(e).__name__}: {e})") from None
                if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                    state = state["state_dict"]
                try:
                    model.load_state_dict(state)
                except Exception as e:
                    raise ValueError(f"{path}: not a fasterrcnn_resnet50_fpn_v2 state dict ({e})") from None
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        img = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1).float().div_(255.0)
        out = self.model([img])[0]
        keep = (out["labels"] == COCO_PERSON) & (out["scores"] >= self.score_thr)
        boxes = out["boxes"][keep].float().cpu().numpy()
        scores = out["scores"][keep].float().cpu().numpy()
        order = np.argsort(-scores, kind="stable")
        norm = boxes[order] / np.array([w, h, w, h], dtype=np.float32)
        return np.concatenate([np.clip(norm, 0.0, 1.0), scores[order, None]], 1).astype(np.float32)
