"""Test-only shim that makes a mismatched torchvision importable on the CPU-only torch (spec-inference §6).

On these machines PyPI's torchvision is a CUDA build whose compiled ops do not load beside the CPU torch, so
``import torchvision`` fails with ``operator torchvision::nms does not exist``. ``install()`` (1) defines the
``torchvision::nms`` / ``torchvision::qnms`` schemas with a ``torch.library`` FRAGMENT, (2) registers a plain
PyTorch NMS as the CPU kernel of ``torchvision::nms``, (3) imports torchvision and replaces
``torchvision.ops.boxes._assert_has_ops`` by a no-op (``roi_align`` falls back to torchvision's own
pure-PyTorch version). Where torchvision imports as is (matching builds), nothing is changed. Users never need
this: it only lets CI run the real torchvision detector code path with random weights.
"""
from __future__ import annotations

import importlib.util
import sys

import torch

_LIB: torch.library.Library | None = None
_STATE: dict[str, object] = {}


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS (torchvision's contract): indices of the kept boxes, by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    order = torch.argsort(scores, descending=True, stable=True)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    order_list = order.tolist()
    for pos, i in enumerate(order_list):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        if rest.numel() == 0:
            break
        xx1 = torch.maximum(x1[i], x1[rest])
        yy1 = torch.maximum(y1[i], y1[rest])
        xx2 = torch.minimum(x2[i], x2[rest])
        yy2 = torch.minimum(y2[i], y2[rest])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def _imports_cleanly() -> bool:
    """Whether torchvision imports without help (checked in a child interpreter: a failed import here would
    leave half-initialised torchvision modules behind)."""
    import subprocess

    code = "import torchvision.ops; torchvision.ops.nms"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return res.returncode == 0


def install() -> bool:
    """Make ``import torchvision`` work here; returns False when torchvision is not installed at all."""
    global _LIB
    if "installed" in _STATE:
        return bool(_STATE["installed"])
    if importlib.util.find_spec("torchvision") is None:
        _STATE["installed"] = False
        return False
    if "torchvision" not in sys.modules and not _imports_cleanly():
        _LIB = torch.library.Library("torchvision", "FRAGMENT")
        _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIB.impl("nms", nms_reference, "CPU")
        import torchvision.ops.boxes as tv_boxes

        tv_boxes._assert_has_ops = lambda: None
        _STATE["shimmed"] = True
    import torchvision  # noqa: F401

    _STATE["installed"] = True
    return True
