"""Resolve MMAction2's ``torchvision://<arch>`` pretrained names to a local file.

Nothing is downloaded: the ImageNet ResNet file must already be on disk, either where
``torch.hub`` caches it (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``), in
``$ACTIONKIT_PRETRAINED_DIR``, or given directly as a path in the config.
"""
from __future__ import annotations

import os
from pathlib import Path

# the file names torchvision has used for its IMAGENET1K_V1 weights (both are accepted)
TORCHVISION_FILES = {
    "resnet18": ["resnet18-f37072fd.pth", "resnet18-5c106cde.pth"],
    "resnet34": ["resnet34-b627a593.pth", "resnet34-333f7ec4.pth"],
    "resnet50": ["resnet50-0676ba61.pth", "resnet50-19c8e357.pth"],
    "resnet101": ["resnet101-63fe2227.pth", "resnet101-5d3b4d8f.pth"],
    "resnet152": ["resnet152-394f9c45.pth", "resnet152-b121ed2d.pth"],
}


def _search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("ACTIONKIT_PRETRAINED_DIR"):
        dirs.append(Path(os.environ["ACTIONKIT_PRETRAINED_DIR"]))
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"))
    dirs.append(torch_home / "hub" / "checkpoints")
    return dirs


def resolve_pretrained(name: str) -> str:
    """A local path for ``name`` (a path, or ``torchvision://resnet50``); a clear error if there is none."""
    if not name.startswith("torchvision://"):
        if name.startswith(("http://", "https://")):
            raise FileNotFoundError(
                f"pretrained='{name}': actionkit does not download weights; download the file yourself and "
                "put its local path in the config (e.g. --cfg-options model.backbone.pretrained=/path/file.pth)")
        if not Path(name).is_file():
            raise FileNotFoundError(f"pretrained weights file '{name}' not found")
        return name
    arch = name[len("torchvision://"):]
    candidates = TORCHVISION_FILES.get(arch, [])
    for d in _search_dirs():
        for fname in candidates:
            if (d / fname).is_file():
                return str(d / fname)
    looked = ", ".join(str(d) for d in _search_dirs())
    raise FileNotFoundError(
        f"pretrained='{name}': no local copy of torchvision's ImageNet {arch} weights "
        f"({' or '.join(candidates) or 'unknown architecture'}) in {looked}. actionkit downloads nothing: place the "
        "file there, set ACTIONKIT_PRETRAINED_DIR, or set model.backbone.pretrained to its path "
        "(or to None to train from scratch).")
