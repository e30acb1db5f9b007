"""SlowFast: ``ResNet3dPathway`` (config type ``'resnet3d'``), ``ResNet3dSlowFast`` and ``ResNet3dSlowOnly``.

Module names match MMAction2 0.x
(``slow_path``, ``fast_path``, ``conv1_lateral``, ``layer{1,2,3}_lateral``).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actionkit.models.common import ConvModule, forwarding_signature, kaiming_init_
from actionkit.models.resnet3d import ResNet3d, load_3d_checkpoint
from actionkit.registry import ConfigError, MODELS

logger = logging.getLogger(__name__)


@MODELS.register("resnet3d", aliases=("ResNet3dPathway",))
class ResNet3dPathway(ResNet3d):
    """One SlowFast pathway: a ResNet3d plus (when ``lateral``) the fast->slow lateral convs.

    ``speed_ratio`` (alpha) is the lateral temporal stride, ``channel_ratio`` (1/beta) the slow/fast width
    ratio, ``fusion_kernel`` the lateral temporal kernel; ``lateral_norm`` adds BN + ReLU to the laterals.
    The first block of every stage takes ``inplanes * 2 // channel_ratio`` extra (lateral) input channels.
    """

    def __init__(self, depth: int, pretrained: str | None = None, lateral: bool = False,
                 lateral_norm: bool = False, speed_ratio: int = 8, channel_ratio: int = 8,
                 fusion_kernel: int = 5, **resnet3d_args: Any) -> None:
        """``resnet3d_args``: any other :class:`ResNet3d` argument, with ResNet3d's defaults."""
        # set before ResNet3d.__init__: make_res_layer and _freeze_stages read them
        self.lateral = bool(lateral)
        self.lateral_norm = bool(lateral_norm)
        self.speed_ratio = int(speed_ratio)
        self.channel_ratio = int(channel_ratio)
        self.fusion_kernel = int(fusion_kernel)
        self.lateral_connections: list[str] = []
        super().__init__(depth, pretrained, **resnet3d_args)
        if self.lateral:
            self.conv1_lateral = self._make_lateral(self.base_channels)
            for i in range(len(self.stage_blocks)):
                planes = self.base_channels * 2 ** i
                if i != self.num_stages - 1:
                    name = f"layer{i + 1}_lateral"
                    self.add_module(name, self._make_lateral(planes * self.block.expansion))
                    self.lateral_connections.append(name)
            self._freeze_stages()  # again, now that the laterals exist

    def _make_lateral(self, slow_channels: int) -> ConvModule:
        k = self.fusion_kernel
        return ConvModule(slow_channels // self.channel_ratio, slow_channels * 2 // self.channel_ratio,
                          kernel_size=(k, 1, 1), stride=(self.speed_ratio, 1, 1), padding=((k - 1) // 2, 0, 0),
                          bias=False, conv_cfg=self.conv_cfg,
                          norm_cfg=self.norm_cfg if self.lateral_norm else None,
                          act_cfg=self.act_cfg if self.lateral_norm else None)

    def _lateral_inplanes(self, inplanes: int) -> int:
        return inplanes * 2 // self.channel_ratio if self.lateral else 0

    # -- init ----------------------------------------------------------------------------------
    def init_weights(self, pretrained: str | None = None) -> None:
        super().init_weights(pretrained)
        if self.pretrained is None or self.pretrained2d:
            # 0.x re-runs kaiming on the stage laterals, which 2D inflation never touches (conv1_lateral was
            # covered by the Conv3d pass).  A loaded 3D checkpoint's laterals are kept.
            for name in self.lateral_connections:
                for m in getattr(self, name).modules():
                    if isinstance(m, (nn.Conv3d, nn.Conv2d)):
                        kaiming_init_(m)

    def _skip_inflation(self, name: str) -> bool:
        return "lateral" in name

    def _adapt_2d_weight(self, w2d: torch.Tensor, w3d: torch.Tensor, name: str) -> torch.Tensor | None:
        old, new = tuple(w2d.shape), tuple(w3d.shape)
        if old[0] != new[0] or old[2:] != new[3:]:
            logger.warning("The parameter of %s is not loaded due to incompatible shapes: 2D %s vs 3D %s",
                           name, old, new)
            return None
        if new[1] != old[1]:
            if new[1] < old[1]:
                logger.warning("The parameter of %s is not loaded: the 3D conv has fewer input channels "
                               "(%d) than the 2D one (%d)", name, new[1], old[1])
                return None
            # the slow path's first blocks take extra lateral channels: zero-pad at the end
            pad = torch.zeros((old[0], new[1] - old[1]) + old[2:], dtype=w2d.dtype, device=w2d.device)
            w2d = torch.cat((w2d, pad), dim=1)
        return w2d

    # -- freezing --------------------------------------------------------------------------------
    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        # the lateral after stage i belongs to stage i (there is none after the last stage)
        for name in self.lateral_connections[:max(self.frozen_stages, 0)]:
            self._freeze_module(getattr(self, name))


@MODELS.register()
class ResNet3dSlowFast(nn.Module):
    """Two-pathway SlowFast backbone; ``forward(x) -> (x_slow, x_fast)``."""

    def __init__(self, pretrained: str | None = None, resample_rate: int = 8, speed_ratio: int = 8,
                 channel_ratio: int = 8, slow_pathway: Mapping[str, Any] | None = None,
                 fast_pathway: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.pretrained = pretrained
        self.resample_rate = int(resample_rate)
        self.speed_ratio = int(speed_ratio)
        self.channel_ratio = int(channel_ratio)
        if self.resample_rate // self.speed_ratio < 1:
            raise ValueError(f"resample_rate ({resample_rate}) must be >= speed_ratio ({speed_ratio})")
        slow = dict(slow_pathway) if slow_pathway is not None else dict(
            type="resnet3d", depth=50, pretrained=None, lateral=True, conv1_kernel=(1, 7, 7),
            dilations=(1, 1, 1, 1), conv1_stride_t=1, pool1_stride_t=1, inflate=(0, 0, 1, 1))
        fast = dict(fast_pathway) if fast_pathway is not None else dict(
            type="resnet3d", depth=50, pretrained=None, lateral=False, base_channels=8, conv1_kernel=(5, 7, 7),
            conv1_stride_t=1, pool1_stride_t=1)
        if slow.get("lateral", False):
            slow["speed_ratio"] = self.speed_ratio
            slow["channel_ratio"] = self.channel_ratio
        self.slow_path = _build_pathway(slow, "backbone.slow_pathway")
        self.fast_path = _build_pathway(fast, "backbone.fast_pathway")

    def init_weights(self, pretrained: str | None = None) -> None:
        if pretrained:
            self.pretrained = pretrained
        if isinstance(self.pretrained, (str, os.PathLike)):
            logger.info("load model from: %s", self.pretrained)
            load_3d_checkpoint(self, os.fspath(self.pretrained), strict=True)
        elif self.pretrained is None:
            self.fast_path.init_weights()
            self.slow_path.init_weights()
        else:
            raise TypeError(f"pretrained must be a str (local file path) or None, got {type(self.pretrained)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_slow = F.interpolate(x, mode="nearest", scale_factor=(1.0 / self.resample_rate, 1.0, 1.0))
        x_slow = self.slow_path.maxpool(self.slow_path.conv1(x_slow))
        x_fast = F.interpolate(x, mode="nearest",
                               scale_factor=(1.0 / (self.resample_rate // self.speed_ratio), 1.0, 1.0))
        x_fast = self.fast_path.maxpool(self.fast_path.conv1(x_fast))
        if self.slow_path.lateral:
            x_slow = torch.cat((x_slow, self.slow_path.conv1_lateral(x_fast)), dim=1)
        n = len(self.slow_path.res_layers)
        for i, layer_name in enumerate(self.slow_path.res_layers):
            x_slow = getattr(self.slow_path, layer_name)(x_slow)
            x_fast = getattr(self.fast_path, layer_name)(x_fast)
            if i != n - 1 and self.slow_path.lateral:
                lateral = getattr(self.slow_path, self.slow_path.lateral_connections[i])
                x_slow = torch.cat((x_slow, lateral(x_fast)), dim=1)
        return x_slow, x_fast


def _build_pathway(cfg: Mapping[str, Any], key: str) -> ResNet3dPathway:
    if "type" not in cfg:
        raise ConfigError("missing 'type' (expected 'resnet3d')", key)
    if cfg["type"] not in ("resnet3d", "ResNet3dPathway"):
        raise ConfigError(f"unknown pathway type {cfg['type']!r}; expected 'resnet3d'", f"{key}.type")
    return MODELS.build(cfg, key=key)


@MODELS.register()
class ResNet3dSlowOnly(ResNet3dPathway):
    """SlowOnly: a single pathway without laterals; MMAction2 0.x's defaults."""

    def __init__(self, depth: int, pretrained: str | None = None, lateral: bool = False,
                 conv1_kernel: Sequence[int] = (1, 7, 7), conv1_stride_t: int = 1, pool1_stride_t: int = 1,
                 inflate: int | Sequence[int | Sequence[int]] = (0, 0, 1, 1), with_pool2: bool = False,
                 **pathway_args: Any) -> None:
        """``pathway_args``: any other :class:`ResNet3dPathway` / :class:`ResNet3d` argument."""
        if lateral:
            raise ValueError("ResNet3dSlowOnly has no lateral connections (lateral must be False)")
        super().__init__(depth, pretrained, lateral=False, conv1_kernel=conv1_kernel, conv1_stride_t=conv1_stride_t,
                         pool1_stride_t=pool1_stride_t, inflate=inflate, with_pool2=with_pool2, **pathway_args)


# The registry checks config keys against a constructor's signature: show it the arguments that reach ResNet3d.
ResNet3dPathway.__signature__ = forwarding_signature(ResNet3dPathway.__init__, ResNet3d.__init__)
ResNet3dSlowOnly.__signature__ = forwarding_signature(ResNet3dSlowOnly.__init__, ResNet3dPathway)
