"""MMAction2 0.x ``ResNet3d`` (I3D backbone) with ``BasicBlock3d`` / ``Bottleneck3d`` and 2D->3D inflation.

Module names and state-dict keys match MMAction2, so published
checkpoints load unchanged.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils import checkpoint as cp

from actionkit.checkpoint import extract_state_dict, load_checkpoint, safe_load
from actionkit.models.common import ConvModule, _triple, build_activation, constant_init_, kaiming_init_
from actionkit.models.nonlocal3d import NonLocal3d
from actionkit.registry import MODELS

logger = logging.getLogger(__name__)

_DEFAULT_CONV = {"type": "Conv3d"}
_DEFAULT_NORM = {"type": "BN3d", "requires_grad": True}
_DEFAULT_ACT = {"type": "ReLU", "inplace": True}


def _ntuple(value: int | Sequence[Any], n: int, what: str) -> tuple:
    if isinstance(value, int):
        return (value,) * n
    t = tuple(value)
    if len(t) < n:  # longer is accepted (only the first num_stages entries are used, as in MMAction2)
        raise ValueError(f"{what} must be an int or a sequence of at least {n} entries, got {value!r}")
    return t[:n]


def _per_block(value: int | Sequence[int], blocks: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * blocks
    t = tuple(int(v) for v in value)
    if len(t) != blocks:
        raise ValueError(f"{what}: expected {blocks} per-block flags, got {list(value)!r}")
    return t


# ----------------------------------------------------------------------------------------------
# checkpoint files
# ----------------------------------------------------------------------------------------------

def _check_local_file(name: str, what: str) -> str:
    """Return a local file path for ``name``; a clear error when there is none.

    ``torchvision://<arch>`` resolves to an already-downloaded copy (torch hub cache or
    ``$ACTIONKIT_PRETRAINED_DIR``, see ``actionkit.models.pretrained``); nothing is ever downloaded, so other
    ``scheme://`` names (``open-mmlab://``, ``http(s)://``) ask for a local file path instead.
    """
    if name.startswith("torchvision://"):
        from actionkit.models.pretrained import resolve_pretrained
        try:
            return resolve_pretrained(name)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"cannot load {what}: {exc} Pass a local file path instead, e.g. "
                                    f"pretrained='/path/to/resnet50-0676ba61.pth'.") from None
    if "://" in name:
        scheme = name.split("://", 1)[0]
        raise FileNotFoundError(
            f"cannot load {what} '{name}': '{scheme}://' names are not downloaded by actionkit (no network "
            f"access). Download the file yourself and pass a local file path instead "
            f"(e.g. pretrained='/path/to/file.pth').")
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{what} file not found: '{name}' (pass an existing local .pth file path)")
    return name


def load_state_dict_file(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict of a local ``.pth`` file, read by the project's safe loader (``{'state_dict': ...}``
    unwrapped)."""
    name = _check_local_file(os.fspath(path), what)
    return {str(k): v for k, v in extract_state_dict(safe_load(name), name).items()}


def load_3d_checkpoint(module: nn.Module, path: str, strict: bool = False) -> None:
    """Load a full 3D checkpoint into ``module`` (the ``pretrained2d=False`` / SlowFast path)."""
    path = _check_local_file(os.fspath(path), "3D checkpoint")
    load_checkpoint(module, path, map_location="cpu", strict=strict, logger=logger)


# ----------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------

def _init_block_attrs(block: nn.Module, inplanes: int, planes: int, spatial_stride: int, temporal_stride: int,
                      dilation: int, style: str, inflate: bool, inflate_style: str, non_local: bool,
                      with_cp: bool) -> None:
    """Validate and store the arguments BasicBlock3d and Bottleneck3d share."""
    if style not in ("pytorch", "caffe"):
        raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
    if inflate_style not in ("3x1x1", "3x3x3"):
        raise ValueError(f"inflate_style must be '3x1x1' or '3x3x3', got {inflate_style!r}")
    block.inplanes, block.planes = inplanes, planes
    block.spatial_stride, block.temporal_stride, block.dilation = spatial_stride, temporal_stride, dilation
    block.style, block.inflate, block.inflate_style = style, inflate, inflate_style
    block.with_cp = with_cp
    block.non_local = non_local


class BasicBlock3d(nn.Module):
    """Two 3D convs (R18 / R34).  Inflated blocks use 3x3x3 kernels, others 1x3x3; stride on conv1."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 dilation: int = 1, downsample: nn.Module | None = None, style: str = "pytorch",
                 inflate: bool = True, inflate_style: str = "3x1x1", non_local: bool = False,
                 non_local_cfg: Mapping[str, Any] | None = None,
                 conv_cfg: Mapping[str, Any] | None = _DEFAULT_CONV,
                 norm_cfg: Mapping[str, Any] | None = _DEFAULT_NORM,
                 act_cfg: Mapping[str, Any] | None = _DEFAULT_ACT, with_cp: bool = False) -> None:
        super().__init__()
        _init_block_attrs(self, inplanes, planes, spatial_stride, temporal_stride, dilation, style, inflate,
                          inflate_style, non_local, with_cp)
        if inflate:
            k1, p1, k2, p2 = (3, 3, 3), (1, dilation, dilation), (3, 3, 3), (1, 1, 1)
        else:
            k1, p1, k2, p2 = (1, 3, 3), (0, dilation, dilation), (1, 3, 3), (0, 1, 1)
        self.conv1 = ConvModule(inplanes, planes, k1, stride=(temporal_stride, spatial_stride, spatial_stride),
                                padding=p1, dilation=(1, dilation, dilation), bias=False,
                                conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv2 = ConvModule(planes, planes * self.expansion, k2, stride=1, padding=p2, bias=False,
                                conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)
        self.downsample = downsample
        self.relu = _activation(act_cfg)
        if non_local:
            self.non_local_block = NonLocal3d(self.conv2.bn.num_features, **dict(non_local_cfg or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def _inner(x: torch.Tensor) -> torch.Tensor:
            identity = x
            out = self.conv2(self.conv1(x))
            if self.downsample is not None:
                identity = self.downsample(x)
            return out + identity

        out = cp.checkpoint(_inner, x, use_reentrant=False) if self.with_cp and x.requires_grad else _inner(x)
        out = self.relu(out)
        if self.non_local:
            out = self.non_local_block(out)
        return out


class Bottleneck3d(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (expansion 4)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 dilation: int = 1, downsample: nn.Module | None = None, style: str = "pytorch",
                 inflate: bool = True, inflate_style: str = "3x1x1", non_local: bool = False,
                 non_local_cfg: Mapping[str, Any] | None = None,
                 conv_cfg: Mapping[str, Any] | None = _DEFAULT_CONV,
                 norm_cfg: Mapping[str, Any] | None = _DEFAULT_NORM,
                 act_cfg: Mapping[str, Any] | None = _DEFAULT_ACT, with_cp: bool = False) -> None:
        super().__init__()
        _init_block_attrs(self, inplanes, planes, spatial_stride, temporal_stride, dilation, style, inflate,
                          inflate_style, non_local, with_cp)
        if style == "pytorch":
            s1, t1, s2, t2 = 1, 1, spatial_stride, temporal_stride
        else:
            s1, t1, s2, t2 = spatial_stride, temporal_stride, 1, 1
        if inflate and inflate_style == "3x1x1":
            k1, p1, k2, p2 = (3, 1, 1), (1, 0, 0), (1, 3, 3), (0, dilation, dilation)
        elif inflate:
            k1, p1, k2, p2 = (1, 1, 1), (0, 0, 0), (3, 3, 3), (1, dilation, dilation)
        else:
            k1, p1, k2, p2 = (1, 1, 1), (0, 0, 0), (1, 3, 3), (0, dilation, dilation)
        self.conv1 = ConvModule(inplanes, planes, k1, stride=(t1, s1, s1), padding=p1, bias=False,
                                conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv2 = ConvModule(planes, planes, k2, stride=(t2, s2, s2), padding=p2,
                                dilation=(1, dilation, dilation), bias=False,
                                conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv3 = ConvModule(planes, planes * self.expansion, 1, bias=False,
                                conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)
        self.downsample = downsample
        self.relu = _activation(act_cfg)
        if non_local:
            self.non_local_block = NonLocal3d(planes * self.expansion, **dict(non_local_cfg or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def _inner(x: torch.Tensor) -> torch.Tensor:
            identity = x
            out = self.conv3(self.conv2(self.conv1(x)))
            if self.downsample is not None:
                identity = self.downsample(x)
            return out + identity

        out = cp.checkpoint(_inner, x, use_reentrant=False) if self.with_cp and x.requires_grad else _inner(x)
        out = self.relu(out)
        if self.non_local:
            out = self.non_local_block(out)
        return out


def _activation(act_cfg: Mapping[str, Any] | None) -> nn.Module:
    act = build_activation(act_cfg)
    return nn.ReLU(inplace=True) if act is None else act


# ----------------------------------------------------------------------------------------------
# ResNet3d
# ----------------------------------------------------------------------------------------------

@MODELS.register()
class ResNet3d(nn.Module):
    """3D ResNet (I3D) backbone, MMAction2 0.x ``ResNet3d``.

    ``pretrained``: ``None`` (random init, A6) or a local file path; with ``pretrained2d=True`` the file is a
    torchvision-format 2D ResNet state dict that is inflated (A5), otherwise a 3D checkpoint loaded
    non-strictly.  ``init_weights()`` applies it.
    """

    arch_settings: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
        18: (BasicBlock3d, (2, 2, 2, 2)),
        34: (BasicBlock3d, (3, 4, 6, 3)),
        50: (Bottleneck3d, (3, 4, 6, 3)),
        101: (Bottleneck3d, (3, 4, 23, 3)),
        152: (Bottleneck3d, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, pretrained: str | None = None, stage_blocks: Sequence[int] | None = None,
                 pretrained2d: bool = True, in_channels: int = 3, num_stages: int = 4,
                 base_channels: int = 64, out_indices: Sequence[int] = (3,),
                 spatial_strides: Sequence[int] = (1, 2, 2, 2), temporal_strides: Sequence[int] = (1, 1, 1, 1),
                 dilations: Sequence[int] = (1, 1, 1, 1), conv1_kernel: Sequence[int] = (3, 7, 7),
                 conv1_stride_s: int = 2, conv1_stride_t: int = 1, pool1_stride_s: int = 2,
                 pool1_stride_t: int = 1, with_pool1: bool = True, with_pool2: bool = True,
                 style: str = "pytorch", frozen_stages: int = -1,
                 inflate: int | Sequence[int | Sequence[int]] = (1, 1, 1, 1), inflate_style: str = "3x1x1",
                 conv_cfg: Mapping[str, Any] | None = _DEFAULT_CONV,
                 norm_cfg: Mapping[str, Any] | None = _DEFAULT_NORM,
                 act_cfg: Mapping[str, Any] | None = _DEFAULT_ACT, norm_eval: bool = False,
                 with_cp: bool = False, non_local: int | Sequence[int | Sequence[int]] = (0, 0, 0, 0),
                 non_local_cfg: Mapping[str, Any] | None = None, zero_init_residual: bool = True) -> None:
        super().__init__()
        if depth not in self.arch_settings:
            raise KeyError(f"invalid depth {depth} for ResNet3d (expected one of {sorted(self.arch_settings)})")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be in 1..4, got {num_stages}")
        self.depth = depth
        self.pretrained = pretrained
        self.pretrained2d = pretrained2d
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.out_indices = tuple(out_indices)
        if not self.out_indices or max(self.out_indices) >= num_stages:
            raise ValueError(f"out_indices {self.out_indices} must index the {num_stages} stages")
        self.spatial_strides = tuple(spatial_strides)
        self.temporal_strides = tuple(temporal_strides)
        self.dilations = tuple(dilations)
        for name, v in (("spatial_strides", self.spatial_strides), ("temporal_strides", self.temporal_strides),
                        ("dilations", self.dilations)):
            if len(v) != num_stages:
                raise ValueError(f"{name} needs {num_stages} entries (num_stages), got {list(v)}")
        self.conv1_kernel = _triple(conv1_kernel)
        self.conv1_stride_s, self.conv1_stride_t = conv1_stride_s, conv1_stride_t
        self.pool1_stride_s, self.pool1_stride_t = pool1_stride_s, pool1_stride_t
        self.with_pool1, self.with_pool2 = with_pool1, with_pool2
        self.style = style
        self.frozen_stages = frozen_stages
        self.inflate_style = inflate_style
        self.conv_cfg, self.norm_cfg, self.act_cfg = conv_cfg, norm_cfg, act_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.non_local_cfg = dict(non_local_cfg or {})
        self.zero_init_residual = zero_init_residual

        self.block, blocks = self.arch_settings[depth]
        if stage_blocks is not None:
            blocks = tuple(stage_blocks)
        self.stage_blocks = tuple(blocks[:num_stages])
        self.stage_inflations = _ntuple(inflate, num_stages, "inflate")
        self.non_local_stages = _ntuple(non_local, num_stages, "non_local")

        self.inplanes = base_channels
        self._make_stem_layer()

        self.res_layers: list[str] = []
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2 ** i
            res_layer = self.make_res_layer(
                self.block, self.inplanes, planes, num_blocks,
                spatial_stride=self.spatial_strides[i], temporal_stride=self.temporal_strides[i],
                dilation=self.dilations[i], style=style, inflate=self.stage_inflations[i],
                inflate_style=inflate_style, non_local=self.non_local_stages[i],
                non_local_cfg=self.non_local_cfg, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg,
                with_cp=with_cp, stage_index=i)
            self.inplanes = planes * self.block.expansion
            layer_name = f"layer{i + 1}"
            self.add_module(layer_name, res_layer)
            self.res_layers.append(layer_name)
        self.feat_dim = self.block.expansion * base_channels * 2 ** (len(self.stage_blocks) - 1)
        self._freeze_stages()

    # -- construction ------------------------------------------------------------------------
    def _make_stem_layer(self) -> None:
        self.conv1 = ConvModule(self.in_channels, self.base_channels, self.conv1_kernel,
                                stride=(self.conv1_stride_t, self.conv1_stride_s, self.conv1_stride_s),
                                padding=tuple((k - 1) // 2 for k in self.conv1_kernel), bias=False,
                                conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3),
                                    stride=(self.pool1_stride_t, self.pool1_stride_s, self.pool1_stride_s),
                                    padding=(0, 1, 1))
        self.pool2 = nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1))

    def _lateral_inplanes(self, inplanes: int) -> int:
        """Extra input channels of a stage's first block (SlowFast laterals); 0 for plain ResNet3d."""
        return 0

    def make_res_layer(self, block: type[nn.Module], inplanes: int, planes: int, blocks: int,
                       spatial_stride: int = 1, temporal_stride: int = 1, dilation: int = 1,
                       style: str = "pytorch", inflate: int | Sequence[int] = 1, inflate_style: str = "3x1x1",
                       non_local: int | Sequence[int] = 0, non_local_cfg: Mapping[str, Any] | None = None,
                       conv_cfg: Mapping[str, Any] | None = None, norm_cfg: Mapping[str, Any] | None = None,
                       act_cfg: Mapping[str, Any] | None = None, with_cp: bool = False,
                       stage_index: int = 0) -> nn.Sequential:
        inflate_t = _per_block(inflate, blocks, f"inflate[{stage_index}]")
        non_local_t = _per_block(non_local, blocks, f"non_local[{stage_index}]")
        in0 = inplanes + self._lateral_inplanes(inplanes)
        expansion = block.expansion  # type: ignore[attr-defined]
        downsample = None
        if spatial_stride != 1 or in0 != planes * expansion:
            downsample = ConvModule(in0, planes * expansion, 1,
                                    stride=(temporal_stride, spatial_stride, spatial_stride), bias=False,
                                    conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)
        common = dict(style=style, inflate_style=inflate_style, non_local_cfg=non_local_cfg, conv_cfg=conv_cfg,
                      norm_cfg=norm_cfg, act_cfg=act_cfg, with_cp=with_cp)
        layers = [block(in0, planes, spatial_stride, temporal_stride, dilation, downsample,
                        inflate=inflate_t[0] == 1, non_local=non_local_t[0] == 1, **common)]
        inplanes = planes * expansion
        for j in range(1, blocks):
            layers.append(block(inplanes, planes, 1, 1, dilation, None,
                                inflate=inflate_t[j] == 1, non_local=non_local_t[j] == 1, **common))
        return nn.Sequential(*layers)

    # -- init ----------------------------------------------------------------------------------
    def init_weights(self, pretrained: str | None = None) -> None:
        """MMAction2 init: inflate 2D weights (A5), load a 3D checkpoint, or random init (A6)."""
        if pretrained:
            self.pretrained = pretrained
        if isinstance(self.pretrained, (str, os.PathLike)):
            logger.info("load model from: %s", self.pretrained)
            # a 2D file has no non-local blocks and a partial 3D load may lack them: their own (mmcv) init first
            for m in self.modules():
                if isinstance(m, NonLocal3d):
                    m.init_weights()
            if self.pretrained2d:
                self.inflate_weights(self.pretrained)
            else:
                load_3d_checkpoint(self, os.fspath(self.pretrained), strict=False)
        elif self.pretrained is None:
            self._random_init()
        else:
            raise TypeError(f"pretrained must be a str (local file path) or None, got {type(self.pretrained)}")

    def _random_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                kaiming_init_(m)
            elif isinstance(m, _BatchNorm):
                constant_init_(m, 1.0, 0.0)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck3d):
                    constant_init_(m.conv3.bn, 0.0, 0.0)
                elif isinstance(m, BasicBlock3d):
                    constant_init_(m.conv2.bn, 0.0, 0.0)

    def _skip_inflation(self, name: str) -> bool:
        return False

    @torch.no_grad()
    def inflate_weights(self, path: str | os.PathLike | Mapping[str, torch.Tensor]) -> list[str]:
        """Inflate a torchvision-format 2D ResNet state dict (file path or mapping) into this 3D net (A5).

        Returns the 2D key names that were used; the others are reported through ``logging``.
        """
        sd2d = dict(path) if isinstance(path, Mapping) else load_state_dict_file(path, "2D pretrained weights")
        if "state_dict" in sd2d and isinstance(sd2d["state_dict"], Mapping):
            sd2d = dict(sd2d["state_dict"])
        used: list[str] = []
        for name, module in self.named_modules():
            if not isinstance(module, ConvModule) or self._skip_inflation(name):
                continue
            if "downsample" in name:
                conv2d, bn2d = name + ".0", name + ".1"
            else:
                conv2d, bn2d = name, name.replace("conv", "bn")
            if conv2d + ".weight" not in sd2d:
                logger.warning("Module not exist in the state_dict_r2d: %s", conv2d)
            else:
                self._inflate_conv_params(module.conv, sd2d, conv2d, used)
            if bn2d + ".weight" not in sd2d:
                logger.warning("Module not exist in the state_dict_r2d: %s", bn2d)
            elif module.norm is None:
                logger.warning("%s has no norm layer; %s not loaded", name, bn2d)
            else:
                self._inflate_bn_params(module.norm, sd2d, bn2d, used)
        used_set = set(used)
        remaining = [k for k in sd2d if k not in used_set]
        if remaining:
            logger.info("These parameters in the 2d checkpoint are not loaded: %s", remaining)
        return used

    def _adapt_2d_weight(self, w2d: torch.Tensor, w3d: torch.Tensor, name: str) -> torch.Tensor | None:
        if tuple(w2d.shape) != tuple(w3d.shape[:2]) + tuple(w3d.shape[3:]):
            logger.warning("The parameter of %s is not loaded due to incompatible shapes: 2D %s vs 3D %s",
                           name, tuple(w2d.shape), tuple(w3d.shape))
            return None
        return w2d

    def _inflate_conv_params(self, conv3d: nn.Conv3d, sd2d: Mapping[str, torch.Tensor], name2d: str,
                             used: list[str]) -> None:
        key = name2d + ".weight"
        w2d = self._adapt_2d_weight(sd2d[key], conv3d.weight, name2d)
        if w2d is None:
            return
        kernel_t = conv3d.weight.shape[2]
        new_w = w2d.to(conv3d.weight.dtype).unsqueeze(2).expand_as(conv3d.weight) / kernel_t
        conv3d.weight.copy_(new_w)
        used.append(key)
        if conv3d.bias is not None and name2d + ".bias" in sd2d:
            conv3d.bias.copy_(sd2d[name2d + ".bias"])
            used.append(name2d + ".bias")

    def _inflate_bn_params(self, bn3d: nn.Module, sd2d: Mapping[str, torch.Tensor], name2d: str,
                           used: list[str]) -> None:
        for pname, param in bn3d.named_parameters():
            key = f"{name2d}.{pname}"
            if key not in sd2d:
                logger.warning("%s not found in the 2D state dict", key)
                continue
            if param.shape != sd2d[key].shape:
                logger.warning("The parameter of %s is not loaded due to incompatible shapes: 2D %s vs 3D %s",
                               key, tuple(sd2d[key].shape), tuple(param.shape))
                return
            param.copy_(sd2d[key])
            used.append(key)
        for bname, buf in bn3d.named_buffers():
            key = f"{name2d}.{bname}"
            if key in sd2d:
                buf.copy_(sd2d[key])
                used.append(key)

    # -- train / freeze ------------------------------------------------------------------------
    def _freeze_module(self, m: nn.Module) -> None:
        m.eval()
        for p in m.parameters():
            p.requires_grad = False

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self._freeze_module(self.conv1)
        for i in range(1, self.frozen_stages + 1):
            self._freeze_module(getattr(self, f"layer{i}"))

    def train(self, mode: bool = True) -> "ResNet3d":
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = self.conv1(x)
        if self.with_pool1:
            x = self.maxpool(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i == 0 and self.with_pool2:
                x = self.pool2(x)
            if i in self.out_indices:
                outs.append(x)
        if len(outs) == 1:
            return outs[0]
        return tuple(outs)
