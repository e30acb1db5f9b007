"""``ACRNHead``: actor-context relation shared head."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from actionkit.models.common import ConvModule, constant_init_, kaiming_init_
from actionkit.registry import MODELS

__all__ = ["ACRNHead"]


@MODELS.register()
class ACRNHead(nn.Module):
    """Tile the max-pooled actor feature over the RoI's frame context map, concat, then convs.

    ``forward(x [R, C, 1, h, w], feat [N, C, 1, H, W], rois [R, 5]) -> [R, out_channels, 1, H', W']``
    (``H' = ceil(H / stride)``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, num_convs: int = 1,
                 conv_cfg: Mapping[str, Any] | None = {"type": "Conv3d"},  # noqa: B006 - read only
                 norm_cfg: Mapping[str, Any] | None = {"type": "BN3d", "requires_grad": True},  # noqa: B006
                 act_cfg: Mapping[str, Any] | None = {"type": "ReLU", "inplace": True}) -> None:  # noqa: B006
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.num_convs = num_convs
        self.max_pool = nn.AdaptiveMaxPool3d(1)
        self.conv1 = ConvModule(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=False,
                                conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv2 = ConvModule(out_channels, out_channels, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                                padding=(0, 1, 1), bias=False, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                act_cfg=act_cfg)
        self.convs = nn.ModuleList([
            ConvModule(out_channels, out_channels, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1),
                       bias=False, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
            for _ in range(num_convs - 1)])

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                kaiming_init_(m)
            elif isinstance(m, nn.BatchNorm3d):
                constant_init_(m, 1.0, 0.0)

    def forward(self, x: torch.Tensor, feat: torch.Tensor, rois: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if feat.dim() != 5 or x.dim() != 5:
            raise ValueError(f"ACRNHead expects 5-D x and feat, got {tuple(x.shape)} and {tuple(feat.shape)}")
        x = self.max_pool(x)                                    # [R, C, 1, 1, 1]
        h, w = feat.shape[-2:]
        x_tile = x.repeat(1, 1, 1, h, w)                        # [R, C, 1, H, W]
        ctx = feat[rois[:, 0].long()]                           # [R, C, T, H, W]
        y = torch.cat([x_tile, ctx], dim=1)
        y = self.conv1(y)
        y = self.conv2(y)
        for conv in self.convs:
            y = conv(y)
        return y
