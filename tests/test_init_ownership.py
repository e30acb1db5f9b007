"""Initialisation has one owner: the model builder.

Constructors build modules (layers keep their default values) and never read a file; ``init_weights()`` is
the one initialisation pass (MMAction2's init, which reads a backbone's ``pretrained`` file) and
``actionkit.models.builder.build_model(cfg, init_weights=True)`` runs it exactly once.  A model built to
receive a checkpoint (``init_weights=False``, ``checkpoint=...``) never looks at its ``pretrained`` path.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import actionkit
from actionkit.checkpoint import load_checkpoint, save_checkpoint
from actionkit.config import Config, load_config
from actionkit.models import resnet3d
from actionkit.models.builder import build_model
from actionkit.models.detector import FastRCNN
from actionkit.models.heads import BaseHead
from actionkit.models.recognizer import Recognizer3D
from actionkit.models.resnet3d import ResNet3d
from actionkit.models.slowfast import ResNet3dSlowFast
from actionkit.registry import MODELS

REPO = Path(__file__).resolve().parents[1]
I3D_CONFIG = REPO / "configs" / "recognition" / "synthetic" / "i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb.py"
AVA_CONFIG = REPO / "configs" / "detection" / "synthetic" / "slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py"


def _i3d_config(pretrained: str | None, pretrained2d: bool = True) -> Config:
    return load_config(I3D_CONFIG, [f"model.backbone.pretrained={pretrained!r}",
                                    f"model.backbone.pretrained2d={pretrained2d}"])


def _slowfast_model(pretrained: str | None = None, pathway_pretrained: str | None = None) -> dict:
    slow = dict(type="resnet3d", depth=18, lateral=True, base_channels=4, conv1_kernel=(1, 7, 7),
                inflate=(0, 0, 1, 1), pretrained=pathway_pretrained)
    fast = dict(type="resnet3d", depth=18, lateral=False, base_channels=2, conv1_kernel=(5, 7, 7),
                pretrained=pathway_pretrained)
    return dict(type="Recognizer3D",
                backbone=dict(type="ResNet3dSlowFast", pretrained=pretrained, resample_rate=4, speed_ratio=4,
                              channel_ratio=2, slow_pathway=slow, fast_pathway=fast),
                cls_head=dict(type="SlowFastHead", in_channels=32 + 16, num_classes=3))


@pytest.fixture
def file_reads(monkeypatch) -> list[str]:
    """Every path the backbones resolve to read weights (2D inflation, 3D checkpoints)."""
    seen: list[str] = []
    original = resnet3d._check_local_file

    def recording(name: str, what: str) -> str:
        seen.append(name)
        return original(name, what)

    monkeypatch.setattr(resnet3d, "_check_local_file", recording)
    return seen


@pytest.fixture
def init_calls(monkeypatch) -> dict[str, int]:
    """How often each class's ``init_weights`` runs."""
    calls: dict[str, int] = {}
    for cls in (Recognizer3D, FastRCNN, ResNet3d, ResNet3dSlowFast, BaseHead):
        original = cls.init_weights

        def counting(self, *args, _cls=cls, _original=original, **kwargs):
            calls[_cls.__name__] = calls.get(_cls.__name__, 0) + 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "init_weights", counting)
    return calls


def test_constructors_read_no_file(tmp_path, file_reads) -> None:
    missing = str(tmp_path / "absent" / "weights.pth")
    MODELS.build(dict(_i3d_config(missing).model), key="model")
    MODELS.build(dict(_i3d_config(missing, pretrained2d=False).model), key="model")
    MODELS.build(_slowfast_model(pretrained=missing), key="model")
    MODELS.build(_slowfast_model(pathway_pretrained=missing), key="model")
    detector = load_config(AVA_CONFIG, [f"model.backbone.pretrained={missing!r}"]).model
    MODELS.build(dict(detector), key="model")
    MODELS.build(dict(detector, pretrained=missing), key="model")  # FastRCNN's own pretrained argument
    assert file_reads == []


@pytest.mark.parametrize("which", ["i3d", "slowfast", "detector"])
def test_build_model_runs_init_weights_exactly_once(which, init_calls) -> None:
    if which == "i3d":
        cfg, expected = _i3d_config(None), {"Recognizer3D": 1, "ResNet3d": 1, "BaseHead": 1}
    elif which == "slowfast":
        # ResNet3dSlowFast.init_weights initialises each pathway (ResNet3d subclasses) once
        cfg = Config({"model": _slowfast_model()})
        expected = {"Recognizer3D": 1, "ResNet3dSlowFast": 1, "ResNet3d": 2, "BaseHead": 1}
    else:
        cfg, expected = load_config(AVA_CONFIG), {"FastRCNN": 1, "ResNet3d": 1}
    build_model(cfg, init_weights=True)
    assert init_calls == expected
    init_calls.clear()
    build_model(cfg, init_weights=False)
    assert init_calls == {}


def test_pretrained_file_is_read_once(tmp_path, file_reads) -> None:
    f = tmp_path / "r2d.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, f)  # a 2D file (nothing in it fits: the inflation only warns)
    build_model(_i3d_config(str(f)), init_weights=True)
    assert file_reads == [str(f)]


def test_missing_pretrained_file_is_named_once(tmp_path, file_reads) -> None:
    missing = str(tmp_path / "absent" / "resnet18.pth")
    with pytest.raises(FileNotFoundError) as info:
        build_model(_i3d_config(missing), init_weights=True)
    assert str(info.value).count(missing) == 1
    assert file_reads == [missing]


def test_model_for_a_checkpoint_never_touches_its_pretrained_path(tmp_path, file_reads) -> None:
    torch.manual_seed(0)
    trained = build_model(_i3d_config(None), init_weights=True).eval()
    ckpt = tmp_path / "trained.pth"
    save_checkpoint(ckpt, trained)
    missing = str(tmp_path / "absent" / "resnet18.pth")
    clip = torch.randn(1, 1, 3, 8, 32, 32)
    with torch.no_grad():
        expected = trained(clip, return_loss=False)

    # the engine's test path without clearing pretrained: built uninitialised, then loaded
    model = build_model(_i3d_config(missing), init_weights=False)
    load_checkpoint(model, ckpt, strict=True)
    # the Python API (a config dict and a checkpoint, as for a zoo name)
    api_model = actionkit.build_model(dict(_i3d_config(missing)), checkpoint=ckpt)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(clip, return_loss=False), expected, rtol=0, atol=0)
        torch.testing.assert_close(api_model(clip, return_loss=False), expected, rtol=0, atol=0)
    assert file_reads == []


def test_nonlocal_blocks_get_their_own_init_under_a_pretrained_file(tmp_path) -> None:
    """A 2D file has no non-local blocks: ``ResNet3d.init_weights`` gives them mmcv's init (zero ``conv_out``
    norm), which the constructor no longer does."""
    f = tmp_path / "r2d.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, f)
    bb = ResNet3d(depth=50, base_channels=2, pretrained=str(f), non_local=(0, (0, 1, 0, 0), 0, 0),
                  non_local_cfg=dict(sub_sample=True, norm_cfg=dict(type="BN3d")))
    nl = bb.layer2[1].non_local_block
    assert torch.all(nl.conv_out.bn.weight == 1)  # the layer's default value after construction
    bb.init_weights()
    assert torch.all(nl.conv_out.bn.weight == 0) and torch.all(nl.conv_out.bn.bias == 0)


def test_lfb_infer_head_constructor_creates_no_directory(tmp_path) -> None:
    """The bank directory appears when the bank is written, not when the model is built."""
    prefix = tmp_path / "lfb"
    MODELS.build(dict(type="LFBInferHead", lfb_prefix_path=str(prefix)), key="model.roi_head.shared_head")
    assert not prefix.exists()
