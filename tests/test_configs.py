"""Every shipped config builds; keys, shapes and parameter counts equal MMAction2's; forward/backward works."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from actionkit import load_config
from actionkit.models.builder import build_model_from_config

from conftest import GOLDEN_KEYS, REPO

CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.py") if "_base_" not in p.parts)
RECOGNITION = [p for p in CONFIGS if "recognition" in p.parts and "synthetic" not in p.parts]
DETECTION = [p for p in CONFIGS if "detection" in p.parts and "synthetic" not in p.parts]

# config stem -> (golden key file stem, summary.json entry)
RECOGNITION_KEYS = {
    "i3d_r50_32x2x1_100e_kinetics400_rgb": "i3d_r50_32x2x1",
    "i3d_r50_video_32x2x1_100e_kinetics400_rgb": "i3d_r50_32x2x1",
    "i3d_r50_dense_32x2x1_100e_kinetics400_rgb": "i3d_r50_32x2x1",
    "i3d_r50_lazy_32x2x1_100e_kinetics400_rgb": "i3d_r50_32x2x1",
    "i3d_nl_embedded_gaussian_r50_32x2x1_100e_kinetics400_rgb": "i3d_nl_embedded_gaussian_r50_32x2x1",
    "i3d_nl_gaussian_r50_32x2x1_100e_kinetics400_rgb": "i3d_nl_gaussian_r50_32x2x1",
    "i3d_nl_dot_product_r50_32x2x1_100e_kinetics400_rgb": "i3d_nl_dot_product_r50_32x2x1",
    "slowfast_r50_4x16x1_256e_kinetics400_rgb": "slowfast_r50_4x16x1",
    "slowfast_r50_video_4x16x1_256e_kinetics400_rgb": "slowfast_r50_4x16x1",
    "slowfast_prebn_r50_4x16x1_256e_kinetics400_rgb": "slowfast_r50_4x16x1",
    "slowfast_r50_8x8x1_256e_kinetics400_rgb": "slowfast_r50_8x8x1",
    "slowfast_r50_8x8x1_256e_kinetics400_rgb_steplr": "slowfast_r50_8x8x1_steplr_or_prebn_steplr(lateral_norm)",
    "slowfast_prebn_r50_8x8x1_256e_kinetics400_rgb_steplr": "slowfast_r50_8x8x1_steplr_or_prebn_steplr(lateral_norm)",
    "slowfast_multigrid_r50_8x8x1_358e_kinetics400_rgb": "slowfast_r50_8x8x1_steplr_or_prebn_steplr(lateral_norm)",
    "slowfast_r101_r50_4x16x1_256e_kinetics400_rgb": "slowfast_r101_r50_4x16x1",
    "slowfast_r101_8x8x1_256e_kinetics400_rgb": "slowfast_r101_8x8x1",
    "slowfast_r152_r50_4x16x1_256e_kinetics400_rgb": "slowfast_r152_r50_4x16x1",
    "slowfast_r50_16x8x1_22e_sthv1_rgb": "slowfast_r50_16x8x1_sthv1",
}

# spec-detection.md §7: (#keys, #params); golden key files where published
DETECTION_COUNTS = {
    "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb": (320, 31_800_465),
    "slowonly_omnisource_pretrained_r50_4x16x1_20e_ava_rgb": (320, 31_800_465),
    "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes": (320, 31_669_329),
    "slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb": (380, 39_154_833),
    "slowonly_nl_kinetics_pretrained_r50_8x8x1_10e_ava_rgb": (380, 39_154_833),
    "slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb": (626, 59_705_489),
    "slowonly_omnisource_pretrained_r101_8x8x1_20e_ava_rgb": (626, 59_705_489),
    "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb": (642, 33_743_993),
    "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes": (642, 33_596_473),
    "slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb": (642, 33_930_617),
    "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb": (642, 33_830_265),
    "slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb": (642, 33_830_265),
    "slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb": (642, 33_830_265),
    "slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb": (642, 33_830_265),
    "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava_rgb": (654, 92_232_057),
    "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb": (654, 92_232_057),
    "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb": (344, 36_043_409),
    "lfb_avg_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb": (320, 31_966_353),
    "lfb_max_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb": (320, 31_966_353),
    "lfb_slowonly_r50_ava_infer": (320, 31_800_465),
}
DETECTION_KEY_FILES = {p.stem.removesuffix(".keys") for p in (GOLDEN_KEYS / "detection").glob("*.keys")} \
    if (GOLDEN_KEYS / "detection").is_dir() else set()


def _read_keys(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, shape = line.split("\t") if "\t" in line else line.split(None, 1)
        out.append((name, tuple(int(x) for x in shape.strip("()").replace(" ", "").split(",") if x)))
    return out


def _state_shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(path: Path, tmp_path: Path | None = None):
    opts = {}
    cfg = load_config(path)
    shared = cfg.model.get("roi_head", {}).get("shared_head") or {}
    if shared.get("type") in ("FBOHead", "LFBInferHead") and tmp_path is not None:
        opts = _lfb_options(cfg, tmp_path)
    return build_model_from_config(path, cfg_options=_no_pretrained(cfg) | opts)


def _no_pretrained(cfg) -> dict:
    opts = {}
    if "pretrained" in cfg.model.backbone:
        opts["model.backbone.pretrained"] = None
    return opts


def _lfb_options(cfg, tmp_path: Path) -> dict:
    """Point FBO / infer heads at a tiny bank in tmp_path (full channel count)."""
    from actionkit.data.feature_bank import lfb_bank_dir
    from actionkit.data.feature_bank_writer import write_feature_bank

    shared = cfg.model.roi_head.shared_head
    if shared["type"] == "LFBInferHead":
        return {"model.roi_head.shared_head.lfb_prefix_path": str(tmp_path)}
    channels = shared["lfb_cfg"]["lfb_channels"]
    bank = {"vid": {902: [torch.randn(channels).half() for _ in range(2)], 903: [torch.randn(channels).half()]}}
    for mode in shared["lfb_cfg"]["dataset_modes"]:
        write_feature_bank(lfb_bank_dir(tmp_path, mode), bank)
    return {"model.roi_head.shared_head.lfb_cfg.lfb_prefix_path": str(tmp_path),
            "model.roi_head.shared_head.lfb_cfg.device": "cpu"}


def test_every_seed_config_is_present():
    names = {p.stem for p in CONFIGS}
    assert set(RECOGNITION_KEYS) <= names
    assert set(DETECTION_COUNTS) <= names


@pytest.mark.parametrize("path", RECOGNITION, ids=lambda p: p.stem)
def test_recognition_config_matches_mmaction2(path):
    golden = RECOGNITION_KEYS[path.stem]
    summary_path = GOLDEN_KEYS / "summary.json"
    if not summary_path.is_file():
        pytest.skip(f"{summary_path} not available (shared data is not beside this checkout)")
    model = _build(path)
    expected = _read_keys(GOLDEN_KEYS / f"{golden}.keys.txt")
    assert _state_shapes(model) == expected
    summary = json.loads(summary_path.read_text())[golden]
    assert len(model.state_dict()) == summary["num_keys"]
    assert _num_params(model) == summary["num_params"]


@pytest.mark.parametrize("path", DETECTION, ids=lambda p: p.stem)
def test_detection_config_matches_mmaction2(path, tmp_path):
    n_keys, n_params = DETECTION_COUNTS[path.stem]
    model = _build(path, tmp_path)
    assert len(model.state_dict()) == n_keys
    assert _num_params(model) == n_params
    if path.stem in DETECTION_KEY_FILES:
        expected = _read_keys(GOLDEN_KEYS / "detection" / f"{path.stem}.keys")
        assert sorted(_state_shapes(model)) == sorted(expected)


def _tiny_recognition_input(cfg) -> torch.Tensor:
    # 8 frames: slow path sees T/tau >= 1 for tau in {4, 8}; 32x32 pixels keep full-width models cheap
    return torch.randn(2, 1, 3, 8, 32, 32)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_forward_backward(path, tmp_path):
    cfg = load_config(path)
    model = _build(path, tmp_path)
    model.train()
    torch.manual_seed(0)
    if cfg.model.type == "Recognizer3D":
        imgs = _tiny_recognition_input(cfg)
        labels = torch.tensor([0, 1])
        losses = model(imgs, labels, return_loss=True)
        model.eval()
        with torch.no_grad():
            scores = model(imgs, return_loss=False)
        assert scores.shape == (2, cfg.model.cls_head.num_classes)
    else:
        num_classes = cfg.model.roi_head.bbox_head.num_classes
        img = torch.randn(2, 3, 8, 32, 48)
        gt = [torch.tensor([[4.0, 4.0, 30.0, 28.0]]), torch.tensor([[10.0, 2.0, 40.0, 30.0], [0.0, 0.0, 20.0, 20.0]])]
        labels = []
        for g in gt:
            lab = torch.zeros(len(g), num_classes)
            lab[:, 1] = 1
            labels.append(lab)
        proposals = [g + 1.0 for g in gt]
        metas = [dict(img_shape=(32, 48), img_key="vid,0902", scores=torch.ones(len(g))) for g in gt]
        losses = model(img=img, proposals=proposals, img_metas=metas, gt_bboxes=gt, gt_labels=labels,
                       return_loss=True)
        model.eval()
        with torch.no_grad():
            results = model(img=img, proposals=proposals, img_metas=metas, return_loss=False)
        assert len(results) == 2 and len(results[0]) == num_classes - 1
    loss = sum(v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------------------
# the registries' plugin modules
# ------------------------------------------------------------------------------------------------

def _modules_registering_into(registry_name: str) -> set[str]:
    """The ``actionkit`` modules whose source registers a class into ``MODELS`` / ``DATASETS`` / ``PIPELINES``."""
    marker = f"@{registry_name.upper()}.register("
    package = REPO / "actionkit"
    return {".".join(p.relative_to(REPO).with_suffix("").parts) for p in package.rglob("*.py")
            if marker in p.read_text(encoding="utf-8")}


@pytest.mark.parametrize("registry_name", ["models", "datasets", "pipelines"])
def test_plugin_modules_are_exactly_the_registering_modules(registry_name):
    from actionkit.registry import _PLUGIN_MODULES

    listed = _PLUGIN_MODULES[registry_name]
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == _modules_registering_into(registry_name)


@pytest.mark.parametrize("typo", ["actionkit.models.resnet3dd", "actionkit.modles.resnet3d"])
def test_a_plugin_module_that_does_not_exist_is_an_error(typo, monkeypatch):
    from actionkit import registry

    monkeypatch.setitem(registry._PLUGIN_MODULES, "things", ["actionkit.models.heads", typo])
    things = registry.Registry("things")
    with pytest.raises(ImportError, match=rf"things registry: plugin module '{typo}' does not exist"):
        things.get("I3DHead")
    with pytest.raises(ImportError, match=typo):  # every query, not only the first one
        things.names()


def test_a_failing_dependency_of_a_plugin_module_keeps_its_own_error(tmp_path, monkeypatch):
    (tmp_path / "ak_plugin_needing_a_missing_package.py").write_text("import ak_no_such_package_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from actionkit import registry

    monkeypatch.setitem(registry._PLUGIN_MODULES, "things", ["ak_plugin_needing_a_missing_package"])
    with pytest.raises(ModuleNotFoundError, match="ak_no_such_package_anywhere"):
        registry.Registry("things").names()
