"""Recognition model zoo: ResNet3d / NonLocal3d / SlowFast / SlowOnly / heads / Recognizer3D.

Golden fixtures (MMAction2's own outputs) are compared in float32 (atol 1e-3, rtol 1e-4) and float64
(atol 1e-8); full-size models are checked against the published key lists and parameter counts.
"""
from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actionkit.models.common import ConvModule
from actionkit.models.heads import I3DHead, SlowFastHead, top_k_accuracy
from actionkit.models.nonlocal3d import NonLocal3d
from actionkit.models.recognizer import Recognizer3D
from actionkit.models.resnet3d import BasicBlock3d, Bottleneck3d, ResNet3d
from actionkit.models.slowfast import ResNet3dPathway, ResNet3dSlowFast, ResNet3dSlowOnly
from actionkit.registry import ConfigError, MODELS

from conftest import GOLDEN_KEYS, load_golden, require_shared

RECOGNIZER_FIXTURES = [
    "i3d_r50_32x2x1_100e_kinetics400_rgb",
    "i3d_nl_dot_product_r50_32x2x1_100e_kinetics400_rgb",
    "i3d_nl_embedded_gaussian_r50_32x2x1_100e_kinetics400_rgb",
    "i3d_nl_gaussian_r50_32x2x1_100e_kinetics400_rgb",
    "slowfast_prebn_r50_4x16x1_256e_kinetics400_rgb",
    "slowfast_prebn_r50_8x8x1_256e_kinetics400_rgb_steplr",
    "slowfast_r101_8x8x1_256e_kinetics400_rgb",
    "slowfast_r101_r50_4x16x1_256e_kinetics400_rgb",
    "slowfast_r152_r50_4x16x1_256e_kinetics400_rgb",
    "slowfast_r50_16x8x1_22e_sthv1_rgb",
    "slowfast_r50_4x16x1_256e_kinetics400_rgb",
    "slowfast_r50_8x8x1_256e_kinetics400_rgb",
]
AVA_BACKBONE_FIXTURES = [
    "ava_slowfast_r50_4x16x1_tau8_alpha8",
    "ava_slowfast_r50_8x8x1_tau4_alpha4",
    "ava_slowonly_nl_r50_4x16x1",
    "ava_slowonly_r101_8x8x1",
    "ava_slowonly_r50_4x16x1",
]
NONLOCAL_FIXTURES = [
    "nonlocal3d_dot_product",
    "nonlocal3d_embedded_gaussian",
    "nonlocal3d_embedded_gaussian_use_scale",
    "nonlocal3d_gaussian",
]
F32 = dict(atol=1e-3, rtol=1e-4)
F64 = dict(atol=1e-8, rtol=0.0)


def build_from_fixture(config: dict, **overrides) -> nn.Module:
    """Map a fixture ``config`` dict (MMAction2 registry style, lists for tuples) to our classes."""
    cfg = copy.deepcopy(config)
    cfg.update(overrides)
    return MODELS.build(cfg, key="fixture")


def _loaded(fx: dict, dtype: torch.dtype) -> nn.Module:
    model = build_from_fixture(fx["config"])
    model.load_state_dict(fx["state_dict"], strict=True)
    return model.to(dtype).eval()


def _close(actual, expected, **tol) -> None:
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _close(a, e, **tol)
        return
    assert isinstance(actual, torch.Tensor), type(actual)
    torch.testing.assert_close(actual, expected.to(actual.dtype), **tol)


# ------------------------------------------------------------------------------------------------
# golden fixtures
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RECOGNIZER_FIXTURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_recognizer_golden(name: str, dtype: torch.dtype) -> None:
    fx = load_golden(name)
    assert fx["kind"] == "recognizer3d"
    expected = fx["outputs"] if dtype == torch.float32 else fx["outputs_f64"]
    tol = F32 if dtype == torch.float32 else F64
    model = _loaded(fx, dtype)
    assert isinstance(model, Recognizer3D)
    imgs = fx["inputs"]["imgs"].to(dtype)
    assert model.average_clips == fx["config"]["test_cfg"]["average_clips"]
    feats = []
    # the backbone output of the forward pass is extract_feat(imgs.reshape(-1, C, T, H, W))
    handle = model.backbone.register_forward_hook(lambda _m, _i, out: feats.append(out))
    with torch.no_grad():
        model.average_clips = None
        logits = model(imgs, return_loss=False)
        assert isinstance(logits, torch.Tensor) and logits.shape == (imgs.shape[0] * imgs.shape[1], logits.shape[1])
        _close(logits, expected["cls_score"], **tol)
        _close(feats[0], expected["backbone_out"], **tol)
        handle.remove()
        model.average_clips = "prob"
        _close(model(imgs, return_loss=False), expected["prob"], **tol)
        model.average_clips = "score"  # same backbone path as 'prob': check the averaging only
        _close(model.average_clip(logits, imgs.shape[1]), expected["score"], **tol)


def _stage_hooks(backbone: nn.Module, names: list[str]) -> tuple[dict, list]:
    """Register forward hooks named like the fixtures' ``stages`` entries."""
    got: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        prefix, _, stage = name.rpartition(".")
        owner = backbone
        if prefix:
            owner = getattr(backbone, {"slow": "slow_path", "fast": "fast_path"}[prefix])
        module = {"stem": "maxpool", "layer1_pool2": "pool2"}.get(stage, stage)

        def hook(_m, _i, out, key=name):
            got[key] = out
        handles.append(getattr(owner, module).register_forward_hook(hook))
    return got, handles


@pytest.mark.parametrize("name", [n for n in RECOGNIZER_FIXTURES + AVA_BACKBONE_FIXTURES
                                  if n in ("i3d_r50_32x2x1_100e_kinetics400_rgb",
                                           "i3d_nl_embedded_gaussian_r50_32x2x1_100e_kinetics400_rgb",
                                           "slowfast_r50_4x16x1_256e_kinetics400_rgb",
                                           "ava_slowfast_r50_4x16x1_tau8_alpha8",
                                           "ava_slowonly_nl_r50_4x16x1", "ava_slowonly_r50_4x16x1")])
def test_stage_outputs_golden(name: str) -> None:
    fx = load_golden(name)
    stages = fx["outputs"]["stages"]
    model = _loaded(fx, torch.float32)
    backbone = model.backbone if isinstance(model, Recognizer3D) else model
    got, handles = _stage_hooks(backbone, list(stages))
    x = fx["inputs"]["imgs"].float().flatten(0, 1) if "imgs" in fx["inputs"] else fx["inputs"]["x"].float()
    with torch.no_grad():
        backbone(x)
    for h in handles:
        h.remove()
    for key, ref in stages.items():
        _close(got[key], ref, **F32)


@pytest.mark.parametrize("name", AVA_BACKBONE_FIXTURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_ava_backbone_golden(name: str, dtype: torch.dtype) -> None:
    fx = load_golden(name)
    assert fx["kind"] == "backbone"
    expected = fx["outputs"] if dtype == torch.float32 else fx["outputs_f64"]
    model = _loaded(fx, dtype)
    assert type(model).__name__ == fx["config"]["type"]
    with torch.no_grad():
        out = model(fx["inputs"]["x"].to(dtype))
    _close(out, expected["backbone_out"], **(F32 if dtype == torch.float32 else F64))


@pytest.mark.parametrize("name", NONLOCAL_FIXTURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_nonlocal_golden(name: str, dtype: torch.dtype) -> None:
    fx = load_golden(name)
    expected = fx["outputs"] if dtype == torch.float32 else fx["outputs_f64"]
    model = _loaded(fx, dtype)
    assert isinstance(model, NonLocal3d)
    assert list(model.state_dict()) == list(fx["state_dict"])
    with torch.no_grad():
        out = model(fx["inputs"]["x"].to(dtype))
    _close(out, expected["out"], **(F32 if dtype == torch.float32 else F64))


@pytest.mark.parametrize("name", ["inflate_i3d_r50_3x1x1", "inflate_i3d_r50_3x3x3"])
def test_inflation_golden(name: str, tmp_path) -> None:
    fx = load_golden(name)
    path = tmp_path / "tv_resnet50.pth"
    torch.save(fx["inputs"]["tv_resnet50_state_dict"], path)
    model = build_from_fixture(fx["config"], pretrained=str(path))
    assert isinstance(model, ResNet3d) and model.inflate_style == fx["config"]["inflate_style"]
    model.init_weights()
    got = model.state_dict()
    ref = fx["outputs"]["inflated_state_dict"]
    assert list(got) == list(ref)
    for key, value in ref.items():
        assert got[key].shape == value.shape, key
        torch.testing.assert_close(got[key], value, atol=0, rtol=0, msg=key)


def test_inflation_wrapped_state_dict_and_report(tmp_path, caplog) -> None:
    fx = load_golden("inflate_i3d_r50_3x1x1")
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": fx["inputs"]["tv_resnet50_state_dict"]}, path)
    model = build_from_fixture(fx["config"], pretrained=str(path))
    with caplog.at_level(logging.INFO, logger="actionkit.models.resnet3d"):
        model.init_weights()
    torch.testing.assert_close(model.state_dict()["layer4.1.conv1.conv.weight"],
                               fx["outputs"]["inflated_state_dict"]["layer4.1.conv1.conv.weight"], atol=0, rtol=0)
    assert "fc.weight" in caplog.text and "not loaded" in caplog.text


# ------------------------------------------------------------------------------------------------
# full-size models: keys, shapes, parameter counts (construction only, on the meta device)
# ------------------------------------------------------------------------------------------------

def _i3d(non_local_mode: str | None = None) -> dict:
    backbone = dict(type="ResNet3d", depth=50, pretrained=None, pretrained2d=True, conv1_kernel=(5, 7, 7),
                    conv1_stride_t=2, pool1_stride_t=2, conv_cfg=dict(type="Conv3d"), norm_eval=False,
                    inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)), zero_init_residual=False)
    if non_local_mode:
        backbone.update(non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0)),
                        non_local_cfg=dict(sub_sample=True, use_scale=False,
                                           norm_cfg=dict(type="BN3d", requires_grad=True), mode=non_local_mode))
    return dict(type="Recognizer3D", backbone=backbone,
                cls_head=dict(type="I3DHead", num_classes=400, in_channels=2048, spatial_type="avg",
                              dropout_ratio=0.5, init_std=0.01),
                test_cfg=dict(average_clips="prob"))


def _slowfast(tau: int, alpha: int, fusion_kernel: int = 5, lateral_norm: bool = False, slow_depth: int = 50,
              fast_depth: int = 50, num_classes: int = 400) -> dict:
    slow = dict(type="resnet3d", depth=slow_depth, pretrained=None, lateral=True, conv1_kernel=(1, 7, 7),
                dilations=(1, 1, 1, 1), conv1_stride_t=1, pool1_stride_t=1, inflate=(0, 0, 1, 1), norm_eval=False,
                fusion_kernel=fusion_kernel, lateral_norm=lateral_norm)
    fast = dict(type="resnet3d", depth=fast_depth, pretrained=None, lateral=False, base_channels=8,
                conv1_kernel=(5, 7, 7), conv1_stride_t=1, pool1_stride_t=1, norm_eval=False)
    return dict(type="Recognizer3D",
                backbone=dict(type="ResNet3dSlowFast", pretrained=None, resample_rate=tau, speed_ratio=alpha,
                              channel_ratio=8, slow_pathway=slow, fast_pathway=fast),
                cls_head=dict(type="SlowFastHead", in_channels=2304, num_classes=num_classes, spatial_type="avg",
                              dropout_ratio=0.5),
                test_cfg=dict(average_clips="prob"))


FULL_SIZE = {
    "i3d_r50_32x2x1": _i3d(),
    "i3d_nl_dot_product_r50_32x2x1": _i3d("dot_product"),
    "i3d_nl_embedded_gaussian_r50_32x2x1": _i3d("embedded_gaussian"),
    "i3d_nl_gaussian_r50_32x2x1": _i3d("gaussian"),
    "slowfast_r50_4x16x1": _slowfast(8, 8),
    "slowfast_r50_8x8x1": _slowfast(4, 4, 7),
    "slowfast_r50_8x8x1_steplr_or_prebn_steplr(lateral_norm)": _slowfast(4, 4, 7, lateral_norm=True),
    "slowfast_r101_r50_4x16x1": _slowfast(8, 8, slow_depth=101),
    "slowfast_r101_8x8x1": _slowfast(4, 4, 7, slow_depth=101, fast_depth=101),
    "slowfast_r152_r50_4x16x1": _slowfast(8, 8, slow_depth=152),
    "slowfast_r50_16x8x1_sthv1": _slowfast(4, 4, 7, num_classes=174),
}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_keys_and_param_counts(name: str) -> None:
    keys_file = require_shared(GOLDEN_KEYS / f"{name}.keys.txt")
    summary = json.loads(require_shared(GOLDEN_KEYS / "summary.json").read_text())[name]
    with torch.device("meta"):
        model = MODELS.build(FULL_SIZE[name], key="model")
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    expected = []
    for line in keys_file.read_text().splitlines():
        key, shape = line.split("\t")
        expected.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    assert got == expected
    assert len(got) == summary["num_keys"]
    assert sum(p.numel() for p in model.parameters()) == summary["num_params"]
    assert len(list(model.buffers())) == summary["num_buffers"]


_AVA_SLOWONLY = dict(type="ResNet3dSlowOnly", depth=50, pretrained=None, pretrained2d=False, lateral=False,
                    num_stages=4, conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
                    spatial_strides=(1, 2, 2, 1))
_AVA_SLOWFAST = dict(type="ResNet3dSlowFast", pretrained=None, resample_rate=8, speed_ratio=8, channel_ratio=8,
                     slow_pathway=dict(type="resnet3d", depth=50, pretrained=None, lateral=True,
                                       conv1_kernel=(1, 7, 7), dilations=(1, 1, 1, 1), conv1_stride_t=1,
                                       pool1_stride_t=1, inflate=(0, 0, 1, 1), spatial_strides=(1, 2, 2, 1)),
                     fast_pathway=dict(type="resnet3d", depth=50, pretrained=None, lateral=False, base_channels=8,
                                       conv1_kernel=(5, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
                                       spatial_strides=(1, 2, 2, 1)))
AVA_FULL_SIZE = {  # spec-detection 1.3 backbone argument blocks
    "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb": _AVA_SLOWONLY,
    "slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb": {**_AVA_SLOWONLY, "depth": 101},
    "slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb": {
        **_AVA_SLOWONLY, "norm_cfg": dict(type="BN3d", requires_grad=True),
        "non_local": ((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0)),
        "non_local_cfg": dict(sub_sample=True, use_scale=True, norm_cfg=dict(type="BN3d", requires_grad=True),
                              mode="embedded_gaussian")},
    "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb": _AVA_SLOWFAST,
    "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb": {
        **_AVA_SLOWFAST, "resample_rate": 4, "speed_ratio": 4,
        "slow_pathway": {**_AVA_SLOWFAST["slow_pathway"], "fusion_kernel": 7}},
}


@pytest.mark.parametrize("name", list(AVA_FULL_SIZE))
def test_ava_full_size_backbone_keys(name: str) -> None:
    keys_file = require_shared(GOLDEN_KEYS / "detection" / f"{name}.keys")
    expected = []
    for line in keys_file.read_text().splitlines():
        if line.startswith("backbone."):
            key, shape = line.split(" ", 1)
            expected.append((key[len("backbone."):], shape.replace(" ", "")))
    with torch.device("meta"):
        backbone = MODELS.build(AVA_FULL_SIZE[name], key="model.backbone")
    got = [(k, str(tuple(v.shape)).replace(" ", "")) for k, v in backbone.state_dict().items()]
    assert got == expected


# ------------------------------------------------------------------------------------------------
# tiny models: training, freezing, init, inflation rule, errors
# ------------------------------------------------------------------------------------------------

def _initialised(cfg: dict) -> nn.Module:
    """The model of ``cfg`` with its ``init_weights()`` run, as ``actionkit.models.builder.build_model`` does
    (constructors leave the layers' default values)."""
    model = MODELS.build(cfg, key="model")
    model.init_weights()
    return model


def _tiny_i3d(**backbone_kw) -> Recognizer3D:
    backbone = dict(type="ResNet3d", depth=50, pretrained=None, base_channels=2, conv1_kernel=(3, 7, 7),
                    conv1_stride_t=2, pool1_stride_t=1,
                    inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
                    non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 0, 0, 1), (0, 0, 0)),
                    non_local_cfg=dict(sub_sample=True, use_scale=True, norm_cfg=dict(type="BN3d"),
                                       mode="embedded_gaussian"),
                    zero_init_residual=False)
    backbone.update(backbone_kw)
    return _initialised(dict(type="Recognizer3D", backbone=backbone,
                             cls_head=dict(type="I3DHead", num_classes=5, in_channels=64, dropout_ratio=0.5),
                             test_cfg=dict(average_clips="prob")))


def _tiny_slowfast(lateral_norm: bool = True, frozen_stages: int = -1, norm_eval: bool = False) -> Recognizer3D:
    slow = dict(type="resnet3d", depth=50, lateral=True, conv1_kernel=(1, 7, 7), conv1_stride_t=1,
                pool1_stride_t=1, inflate=(0, 0, 1, 1), base_channels=4, fusion_kernel=7, lateral_norm=lateral_norm,
                frozen_stages=frozen_stages, norm_eval=norm_eval, zero_init_residual=False)
    fast = dict(type="resnet3d", depth=50, lateral=False, base_channels=2, conv1_kernel=(5, 7, 7),
                conv1_stride_t=1, pool1_stride_t=1, frozen_stages=frozen_stages, norm_eval=norm_eval,
                zero_init_residual=False)
    return _initialised(dict(type="Recognizer3D",
                             backbone=dict(type="ResNet3dSlowFast", resample_rate=4, speed_ratio=4, channel_ratio=2,
                                           slow_pathway=slow, fast_pathway=fast),
                             cls_head=dict(type="SlowFastHead", in_channels=128 + 64, num_classes=5,
                                           dropout_ratio=0.5),
                             test_cfg=dict(average_clips="score", max_testing_views=1)))


def _check_all_grads(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


@pytest.mark.parametrize("factory", [_tiny_i3d, _tiny_slowfast], ids=["i3d_nl", "slowfast_lateral_norm"])
def test_train_forward_backward_all_params_get_grads(factory) -> None:
    torch.manual_seed(0)
    model = factory()
    model.train()
    imgs = torch.randn(2, 1, 3, 8, 32, 32)
    label = torch.tensor([[1], [3]])
    losses = model(imgs, label)
    assert set(losses) == {"loss_cls", "top1_acc", "top5_acc"}
    assert not losses["top1_acc"].requires_grad and not losses["top5_acc"].requires_grad
    assert 0.0 <= float(losses["top1_acc"]) <= float(losses["top5_acc"]) <= 1.0
    losses["loss_cls"].backward()
    _check_all_grads(model)


def test_loss_and_topk_like_mmaction() -> None:
    head = I3DHead(num_classes=6, in_channels=4)
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.0, 0.2, 0.5],
                           [2.0, 1.0, 0.0, -1.0, 3.0, 0.5],
                           [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]], requires_grad=True)
    labels = torch.tensor([1, 1, 0])
    out = head.loss(scores, labels)
    torch.testing.assert_close(out["loss_cls"], F.cross_entropy(scores, labels))
    assert float(out["top1_acc"]) == pytest.approx(1 / 3)
    assert float(out["top5_acc"]) == pytest.approx(2 / 3)  # row 2: label 0 has the lowest score
    assert top_k_accuracy(scores.detach().numpy(), labels.numpy(), (1, 2, 3)) == pytest.approx(
        [1 / 3, 1 / 3, 2 / 3])
    # batch of one with a scalar label; soft labels give no accuracy entries
    single = head.loss(scores[:1], torch.tensor(1))
    assert float(single["top1_acc"]) == 1.0
    soft = torch.softmax(torch.randn(3, 6), 1)
    soft_out = head.loss(scores, soft)
    assert set(soft_out) == {"loss_cls"}
    torch.testing.assert_close(soft_out["loss_cls"], -(soft * F.log_softmax(scores, 1)).sum(1).mean())


def test_slowfast_head_concatenates_fast_then_slow() -> None:
    head = SlowFastHead(num_classes=3, in_channels=6, dropout_ratio=0.0).eval()
    slow = torch.randn(2, 4, 2, 3, 3)
    fast = torch.randn(2, 2, 8, 3, 3)
    expected = F.linear(torch.cat([fast.mean((2, 3, 4)), slow.mean((2, 3, 4))], 1), head.fc_cls.weight,
                        head.fc_cls.bias)
    torch.testing.assert_close(head((slow, fast)), expected)


def test_test_mode_outputs_and_max_testing_views() -> None:
    torch.manual_seed(1)
    model = _tiny_slowfast().eval()
    imgs = torch.randn(2, 3, 3, 8, 32, 32)
    with torch.no_grad():
        model.average_clips = None
        logits = model(imgs, return_loss=False)
        assert logits.shape == (6, 5)
        model.max_testing_views = None
        torch.testing.assert_close(model(imgs, return_loss=False), logits, atol=1e-5, rtol=1e-5)
        model.average_clips = "prob"
        torch.testing.assert_close(model(imgs, return_loss=False), logits.view(2, 3, 5).softmax(2).mean(1))
        model.average_clips = "score"
        torch.testing.assert_close(model(imgs, return_loss=False), logits.view(2, 3, 5).mean(1))
        (dummy,) = model.forward_dummy(imgs)
        torch.testing.assert_close(dummy, logits)
    with pytest.raises(ValueError, match="Label"):
        model(imgs)


def test_i3d_max_testing_views_golden() -> None:
    fx = load_golden("i3d_r50_32x2x1_100e_kinetics400_rgb")
    model = _loaded(fx, torch.float32)
    model.average_clips = None
    model.max_testing_views = 1
    with torch.no_grad():
        _close(model(fx["inputs"]["imgs"].float(), return_loss=False), fx["outputs"]["cls_score"], **F32)


def test_frozen_stages_and_norm_eval() -> None:
    model = _tiny_i3d(frozen_stages=1, norm_eval=False)
    bb = model.backbone
    model.train()
    for p in list(bb.conv1.parameters()) + list(bb.layer1.parameters()):
        assert not p.requires_grad
    assert all(p.requires_grad for p in bb.layer2.parameters())
    assert not bb.conv1.bn.training and not bb.layer1[0].conv1.bn.training
    assert bb.layer2[0].conv1.bn.training and model.cls_head.training

    model = _tiny_i3d(norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert bns and not any(m.training for m in bns)
    assert model.cls_head.dropout.training and all(p.requires_grad for p in model.parameters())
    model.eval()
    model.train()
    assert not any(m.training for m in bns)

    sf = _tiny_slowfast(frozen_stages=1)
    sf.train()
    slow = sf.backbone.slow_path
    assert not any(p.requires_grad for p in slow.layer1_lateral.parameters())
    assert not slow.layer1_lateral.training
    assert all(p.requires_grad for p in slow.layer2_lateral.parameters())
    assert not any(p.requires_grad for p in sf.backbone.fast_path.layer1.parameters())


def test_init_weights_rules() -> None:
    torch.manual_seed(0)
    bb = ResNet3d(depth=50, base_channels=16, non_local=(0, (0, 1, 0, 0), 0, 0),
                  non_local_cfg=dict(sub_sample=True, norm_cfg=dict(type="BN3d")))
    nl = bb.layer2[1].non_local_block
    # NonLocal3d's own (mmcv) init: conv_out.bn zero, g/theta/phi ~ N(0, 0.01), bias 0
    nl.init_weights()
    assert torch.all(nl.conv_out.bn.weight == 0) and torch.all(nl.conv_out.bn.bias == 0)
    assert nl.g[0].conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.all(nl.theta.conv.bias == 0)
    bb.init_weights()
    for name, m in bb.named_modules():
        if isinstance(m, nn.BatchNorm3d):
            expected = 0.0 if name.endswith("conv3.bn") else 1.0
            assert torch.all(m.weight == expected), name
            assert torch.all(m.bias == 0), name
    # A6 overrides the NL init too: conv_out.bn -> 1, convs kaiming(fan_out)
    assert torch.all(nl.conv_out.bn.weight == 1)
    w = bb.layer4[0].conv2.conv.weight
    fan_out = w.shape[0] * w[0, 0].numel()
    assert w.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.1)
    assert torch.all(nl.g[0].conv.bias == 0)

    no_zero = ResNet3d(depth=50, base_channels=2, zero_init_residual=False)
    no_zero.init_weights()
    assert torch.all(no_zero.layer1[0].conv3.bn.weight == 1)
    basic = ResNet3d(depth=18, base_channels=2)
    basic.init_weights()
    assert isinstance(basic.layer1[0], BasicBlock3d)
    assert torch.all(basic.layer1[0].conv2.bn.weight == 0) and torch.all(basic.layer1[0].conv1.bn.weight == 1)

    head = I3DHead(num_classes=50, in_channels=400)
    with torch.no_grad():
        head.fc_cls.weight.fill_(3.0)
    head.init_weights()
    assert head.fc_cls.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.all(head.fc_cls.bias == 0)

    sf = ResNet3dSlowFast(slow_pathway=dict(type="resnet3d", depth=50, lateral=True, base_channels=16,
                                            conv1_kernel=(1, 7, 7), inflate=(0, 0, 1, 1)),
                          fast_pathway=dict(type="resnet3d", depth=50, lateral=False, base_channels=2,
                                            conv1_kernel=(5, 7, 7)), channel_ratio=8)
    with torch.no_grad():
        sf.slow_path.layer3_lateral.conv.weight.fill_(5.0)
    sf.init_weights()
    lw = sf.slow_path.layer3_lateral.conv.weight
    assert lw.std().item() == pytest.approx((2.0 / (lw.shape[0] * lw[0, 0].numel())) ** 0.5, rel=0.15)
    assert torch.all(sf.slow_path.layer1[0].conv3.bn.weight == 0)  # pathway default zero_init_residual


def test_recognizer_calls_init_weights() -> None:
    model = _tiny_i3d(zero_init_residual=True)
    assert torch.all(model.backbone.layer3[0].conv3.bn.weight == 0)
    assert model.cls_head.fc_cls.weight.std().item() == pytest.approx(0.01, rel=0.3)


def _synthetic_2d(model: ResNet3d, gen: torch.Generator, skip_lateral: bool = True) -> dict[str, torch.Tensor]:
    """A torchvision-format 2D state dict matching ``model`` (2D names, 2D shapes, no lateral inputs)."""
    sd: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if not isinstance(m, ConvModule) or (skip_lateral and "lateral" in name) or "non_local" in name:
            continue
        conv, bn = (name + ".0", name + ".1") if "downsample" in name else (name, name.replace("conv", "bn"))
        o, i, _, kh, kw = m.conv.weight.shape
        if name.endswith(".0.conv1") or name.endswith(".0.downsample"):
            i = model.inplanes_2d[name.split(".")[0]]
        sd[conv + ".weight"] = torch.randn(o, i, kh, kw, generator=gen)
        sd[bn + ".weight"] = torch.rand(o, generator=gen) + 0.5
        sd[bn + ".bias"] = torch.randn(o, generator=gen)
        sd[bn + ".running_mean"] = torch.randn(o, generator=gen)
        sd[bn + ".running_var"] = torch.rand(o, generator=gen) + 0.5
        sd[bn + ".num_batches_tracked"] = torch.tensor(7)
    sd["fc.weight"] = torch.randn(10, model.feat_dim, generator=gen)
    sd["fc.bias"] = torch.randn(10, generator=gen)
    return sd


def _inplanes_2d(model: ResNet3d) -> dict[str, int]:
    out, c = {}, model.base_channels
    for i, name in enumerate(model.res_layers):
        out[name] = c
        c = model.base_channels * 2 ** i * model.block.expansion
    return out


@pytest.mark.parametrize("style", ["3x1x1", "3x3x3"])
def test_inflation_rule_tiny(style: str, tmp_path, caplog) -> None:
    gen = torch.Generator().manual_seed(3)
    model = ResNet3d(depth=50, base_channels=2, conv1_kernel=(5, 7, 7), inflate=(1, (1, 0, 1, 0), 0, 1),
                     inflate_style=style, non_local=(0, (0, 1, 0, 0), 0, 0),
                     non_local_cfg=dict(sub_sample=True, norm_cfg=dict(type="BN3d")))
    model.inplanes_2d = _inplanes_2d(model)
    sd2d = _synthetic_2d(model, gen)
    path = tmp_path / "r2d.pth"
    torch.save(sd2d, path)
    model.pretrained = str(path)
    with caplog.at_level(logging.INFO, logger="actionkit.models.resnet3d"):
        model.init_weights()
    sd3d = model.state_dict()
    n_convs = 0
    for name, m in model.named_modules():
        if not isinstance(m, ConvModule) or "non_local" in name:
            continue
        conv, bn = (name + ".0", name + ".1") if "downsample" in name else (name, name.replace("conv", "bn"))
        w3, w2 = m.conv.weight, sd2d[conv + ".weight"]
        kt = w3.shape[2]
        for t in range(kt):
            torch.testing.assert_close(w3[:, :, t], w2 / kt, atol=0, rtol=0)
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(sd3d[f"{name}.bn.{suffix}"], sd2d[f"{bn}.{suffix}"])
        n_convs += 1
    assert n_convs == 1 + sum(model.stage_blocks) * 3 + 4
    assert model.conv1.conv.weight.shape[2] == 5
    k_expected = (3, 1, 1) if style == "3x1x1" else (1, 1, 1)
    assert tuple(model.layer1[0].conv1.conv.weight.shape[2:]) == k_expected
    # the 2D file has no non-local blocks: they get their own (mmcv) init, not ResNet3d's random init (A6)
    nl = model.layer2[1].non_local_block
    assert torch.all(nl.conv_out.bn.weight == 0) and torch.all(nl.conv_out.bn.bias == 0)
    assert nl.theta.conv.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert torch.all(nl.g[0].conv.bias == 0)
    assert "fc.weight" in caplog.text and "non_local_block" in caplog.text

    # a temporally constant clip gives the 2D response on the inflated stem (interior frames)
    x2 = torch.randn(1, 3, 16, 16, generator=gen)
    y2 = F.conv2d(x2, sd2d["conv1.weight"], stride=2, padding=3)
    y3 = F.conv3d(x2.unsqueeze(2).expand(1, 3, 9, 16, 16), model.conv1.conv.weight, stride=(1, 2, 2),
                  padding=(2, 3, 3))
    torch.testing.assert_close(y3[:, :, 4], y2, atol=1e-5, rtol=1e-5)


def test_inflation_shape_mismatch_keeps_init(tmp_path, caplog) -> None:
    model = ResNet3d(depth=50, base_channels=2)
    sd2d = {"conv1.weight": torch.randn(3, 3, 7, 7)}  # wrong out-channels
    before = model.conv1.conv.weight.clone()
    with caplog.at_level(logging.WARNING, logger="actionkit.models.resnet3d"):
        model.inflate_weights(sd2d)
    assert torch.equal(model.conv1.conv.weight, before)
    assert "incompatible shapes" in caplog.text


def test_pathway_inflation_zero_pads_lateral_inputs(tmp_path) -> None:
    gen = torch.Generator().manual_seed(5)
    path_model = ResNet3dPathway(depth=50, lateral=True, base_channels=8, channel_ratio=4, speed_ratio=4,
                                 conv1_kernel=(1, 7, 7), inflate=(0, 0, 1, 1), fusion_kernel=7)
    assert path_model.layer1[0].conv1.conv.weight.shape[1] == 8 + 4
    path_model.inplanes_2d = _inplanes_2d(path_model)
    sd2d = _synthetic_2d(path_model, gen)
    f = tmp_path / "r2d.pth"
    torch.save(sd2d, f)
    lateral_before = path_model.layer2_lateral.conv.weight.clone()
    path_model.inflate_weights(str(f))
    w3 = path_model.layer3[0].conv1.conv.weight  # (P, 64 + 16, 3, 1, 1)
    w2 = sd2d["layer3.0.conv1.weight"]
    assert w3.shape[1] == w2.shape[1] + w2.shape[1] * 2 // 4
    for t in range(3):
        torch.testing.assert_close(w3[:, : w2.shape[1], t], w2 / 3, atol=0, rtol=0)
    assert torch.all(w3[:, w2.shape[1]:] == 0)
    ds = path_model.layer1[0].downsample.conv.weight
    assert torch.all(ds[:, 8:] == 0)
    assert torch.equal(path_model.layer2_lateral.conv.weight, lateral_before)  # laterals are not inflated


def test_missing_pretrained_file_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached torchvision weights anywhere
    monkeypatch.delenv("ACTIONKIT_PRETRAINED_DIR", raising=False)
    missing = tmp_path / "nope" / "resnet50.pth"
    bb = ResNet3d(depth=50, base_channels=2, pretrained=str(missing))
    with pytest.raises(FileNotFoundError, match="resnet50.pth"):
        bb.init_weights()
    with pytest.raises(FileNotFoundError, match="local file path"):
        ResNet3d(depth=50, base_channels=2, pretrained="torchvision://resnet50").init_weights()
    cfg = _i3d()
    cfg["backbone"]["base_channels"] = 2
    cfg["cls_head"]["in_channels"] = 64
    cfg["backbone"]["pretrained"] = "torchvision://resnet50"
    model = MODELS.build(cfg)  # constructors read no file
    with pytest.raises(FileNotFoundError, match="torchvision://resnet50"):
        model.init_weights()
    with pytest.raises(FileNotFoundError, match="local file path"):
        ResNet3d(depth=50, base_channels=2, pretrained="https://example.org/r50.pth").init_weights()
    with pytest.raises(FileNotFoundError):
        ResNet3dSlowFast(pretrained=str(missing),
                         slow_pathway=dict(type="resnet3d", depth=50, lateral=True, base_channels=8),
                         fast_pathway=dict(type="resnet3d", depth=50, base_channels=2)).init_weights()


def test_torchvision_name_resolves_to_a_local_copy(tmp_path, monkeypatch) -> None:
    gen = torch.Generator().manual_seed(9)
    model = ResNet3d(depth=50, base_channels=2, pretrained="torchvision://resnet50")
    model.inplanes_2d = _inplanes_2d(model)
    sd2d = _synthetic_2d(model, gen)
    torch.save(sd2d, tmp_path / "resnet50-0676ba61.pth")
    monkeypatch.setenv("ACTIONKIT_PRETRAINED_DIR", str(tmp_path))
    model.init_weights()
    torch.testing.assert_close(model.layer2[0].conv1.conv.weight[:, :, 0], sd2d["layer2.0.conv1.weight"] / 3,
                               atol=0, rtol=0)


def test_load_3d_checkpoint_pretrained2d_false(tmp_path) -> None:
    torch.manual_seed(2)
    src = ResNet3dSlowOnly(depth=50, base_channels=2, spatial_strides=(1, 2, 2, 1))
    src.init_weights()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    f = tmp_path / "slowonly.pth"
    torch.save({"state_dict": src.state_dict()}, f)
    dst = ResNet3dSlowOnly(depth=50, base_channels=2, spatial_strides=(1, 2, 2, 1), pretrained=str(f),
                           pretrained2d=False)
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_slowonly_defaults_and_shapes() -> None:
    m = ResNet3dSlowOnly(depth=50, base_channels=2, spatial_strides=(1, 2, 2, 1)).eval()
    assert not m.with_pool2 and not m.lateral
    assert tuple(m.conv1.conv.weight.shape[2:]) == (1, 7, 7)
    assert tuple(m.layer3[0].conv1.conv.weight.shape[2:]) == (3, 1, 1)
    assert tuple(m.layer2[0].conv1.conv.weight.shape[2:]) == (1, 1, 1)
    with torch.no_grad():
        out = m(torch.randn(1, 3, 4, 32, 48))
    assert out.shape == (1, 64, 4, 2, 3)
    with pytest.raises(ValueError):
        ResNet3dSlowOnly(depth=50, lateral=True)


def test_basic_block_resnet_and_out_indices() -> None:
    m = ResNet3d(depth=18, base_channels=4, out_indices=(0, 1, 2, 3), inflate=(1, 0, 1, 0), with_pool2=False).eval()
    assert isinstance(m.layer1[0], BasicBlock3d)
    assert tuple(m.layer1[0].conv1.conv.weight.shape[2:]) == (3, 3, 3)
    assert tuple(m.layer2[0].conv1.conv.weight.shape[2:]) == (1, 3, 3)
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 4, 32, 32))
    assert [tuple(o.shape[1:2]) for o in outs] == [(4,), (8,), (16,), (32,)]
    assert outs[-1].shape[-2:] == (1, 1)
    m50 = ResNet3d(depth=50, base_channels=2, num_stages=3, out_indices=(2,), spatial_strides=(1, 2, 2),
                   temporal_strides=(1, 1, 1), dilations=(1, 1, 1))
    assert not hasattr(m50, "layer4") and m50.feat_dim == 32
    assert isinstance(m50.layer1[0], Bottleneck3d)


def test_with_cp_matches_plain() -> None:
    torch.manual_seed(4)
    a = ResNet3d(depth=50, base_channels=2, zero_init_residual=False)
    a.init_weights()
    b = ResNet3d(depth=50, base_channels=2, zero_init_residual=False, with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 4, 32, 32)
    a(x).sum().backward()
    b(x).sum().backward()
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-4, msg=na)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="inflate"):
        ResNet3d(depth=50, base_channels=2, inflate=((1, 1), 0, 0, 0))
    with pytest.raises(KeyError):
        ResNet3d(depth=42)
    with pytest.raises(ConfigError, match="ResNet3d"):
        MODELS.build(dict(type="ResNet3d", depth=50, not_an_arg=1), key="model.backbone")
    with pytest.raises(ConfigError, match="average_clips"):
        MODELS.build(dict(type="Recognizer3D", backbone=dict(type="ResNet3d", depth=18, base_channels=2),
                          cls_head=dict(type="I3DHead", num_classes=2, in_channels=16),
                          test_cfg=dict(average_clips="max")))
    with pytest.raises(ValueError, match="mode"):
        NonLocal3d(8, mode="concat")
