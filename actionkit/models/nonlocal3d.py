"""The mmcv ``NonLocal3d`` block (embedded_gaussian / gaussian / dot_product), same state-dict keys.

Keys (sub_sample=True): ``g.0.conv.*``, ``conv_out.conv.weight``, ``conv_out.bn.*``, ``theta.conv.*``,
``phi.0.conv.*`` (theta/phi absent in ``gaussian`` mode).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from actionkit.models.common import ConvModule, constant_init_
from actionkit.registry import MODELS

_MODES = ("embedded_gaussian", "gaussian", "dot_product")


def normal_init_(module: nn.Module, std: float = 0.01, bias: float = 0.0) -> None:
    nn.init.normal_(module.weight, 0.0, std)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


@MODELS.register()
class NonLocal3d(nn.Module):
    """Non-local block for [N, C, T, H, W] features: ``out = x + conv_out(attention(x))``.

    Args follow mmcv: ``in_channels``, ``sub_sample`` (max-pool (1,2,2) on the key/value side),
    ``use_scale`` (divide by sqrt(inter) in embedded_gaussian), ``reduction`` (inter = C // reduction),
    ``conv_cfg`` (Conv3d), ``norm_cfg`` (norm of ``conv_out``), ``mode``.  ``std`` / ``zeros_init`` control
    :meth:`init_weights` (mmcv ``_NonLocalNd.init_weights``: normal(0, std) for the g/theta/phi convs, a zero
    ``conv_out`` norm, or conv when there is no norm).  The constructor leaves the layers' default values; the
    owner (``ResNet3d.init_weights``) calls :meth:`init_weights`.
    """

    def __init__(self, in_channels: int, sub_sample: bool = False, use_scale: bool = True,
                 reduction: int = 2, conv_cfg: Mapping[str, Any] | None = {"type": "Conv3d"},  # noqa: B006
                 norm_cfg: Mapping[str, Any] | None = None, mode: str = "embedded_gaussian",
                 std: float = 0.01, zeros_init: bool = True) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"NonLocal3d mode must be one of {_MODES}, got {mode!r}")
        self.in_channels = int(in_channels)
        self.reduction = int(reduction)
        self.use_scale = bool(use_scale)
        self.inter_channels = max(self.in_channels // self.reduction, 1)
        self.mode = mode
        self.sub_sample = bool(sub_sample)

        g = ConvModule(self.in_channels, self.inter_channels, 1, conv_cfg=conv_cfg, act_cfg=None)
        self.g = g  # registration order = mmcv's state-dict order: g, conv_out, theta, phi
        self.conv_out = ConvModule(self.inter_channels, self.in_channels, 1, conv_cfg=conv_cfg,
                                   norm_cfg=norm_cfg, act_cfg=None)
        theta = phi = None
        if mode != "gaussian":
            theta = ConvModule(self.in_channels, self.inter_channels, 1, conv_cfg=conv_cfg, act_cfg=None)
            phi = ConvModule(self.in_channels, self.inter_channels, 1, conv_cfg=conv_cfg, act_cfg=None)
            self.theta, self.phi = theta, phi
        self.std = float(std)
        self.zeros_init = bool(zeros_init)
        self.with_norm = norm_cfg is not None

        if self.sub_sample:
            pool = nn.MaxPool3d(kernel_size=(1, 2, 2))
            self.g = nn.Sequential(g, pool)
            if mode != "gaussian":
                self.theta = theta
                self.phi = nn.Sequential(phi, pool)
            else:
                self.phi = pool
        else:
            self.g = g
            if mode != "gaussian":
                self.theta = theta
                self.phi = phi

    def init_weights(self) -> None:
        """mmcv's init: normal(0, std) g / theta / phi convs; ``conv_out``'s norm (its conv when it has no
        norm) zero (``zeros_init``) or normal(0, std)."""
        for name in ("g", "theta", "phi"):
            m = getattr(self, name, None)
            m = m[0] if isinstance(m, nn.Sequential) else m  # (conv, pool) when sub_sample
            if isinstance(m, ConvModule):
                normal_init_(m.conv, std=self.std)
        target = self.conv_out.bn if self.with_norm else self.conv_out.conv
        if self.zeros_init:
            constant_init_(target, 0.0)
        else:
            normal_init_(target, std=self.std)

    def _pairwise(self, theta_x: torch.Tensor, phi_x: torch.Tensor) -> torch.Tensor:
        w = torch.matmul(theta_x, phi_x)
        if self.mode == "embedded_gaussian":
            if self.use_scale:
                w = w / theta_x.shape[-1] ** 0.5
            return w.softmax(dim=-1)
        if self.mode == "gaussian":
            return w.softmax(dim=-1)
        return w / w.shape[-1]  # dot_product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        if self.mode == "gaussian":
            theta_x = x.view(n, self.in_channels, -1).permute(0, 2, 1)
            if self.sub_sample:
                phi_x = self.phi(x).view(n, self.in_channels, -1)
            else:
                phi_x = x.view(n, self.in_channels, -1)
        else:
            theta_x = self.theta(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
            phi_x = self.phi(x).view(n, self.inter_channels, -1)
        w = self._pairwise(theta_x, phi_x)
        y = torch.matmul(w, g_x)
        y = y.permute(0, 2, 1).contiguous().reshape(n, self.inter_channels, *x.size()[2:])
        return x + self.conv_out(y)
