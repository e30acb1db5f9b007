"""Feature Bank Operators (MMAction2 0.x ``FBOHead``): the short-term RoI feature attends to (non-local), or is
pooled with (avg / max), the long-term features sampled from a :class:`~actionkit.data.feature_bank.FeatureBank`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..data.feature_bank import open_lfb, parse_img_key
from ..registry import MODELS, ConfigError
from .common import ConvModule, kaiming_init_

__all__ = ["FBOAvg", "FBOHead", "FBOMax", "FBONonLocal", "NonLocalLayer"]


def _temporal_pool(kind: str) -> nn.Module:
    if kind == "avg":
        return nn.AdaptiveAvgPool3d((1, None, None))
    if kind == "max":
        return nn.AdaptiveMaxPool3d((1, None, None))
    raise ConfigError(f"temporal_pool_type must be 'avg' or 'max', got {kind!r}", "temporal_pool_type")


def _spatial_pool(kind: str) -> nn.Module:
    if kind == "avg":
        return nn.AdaptiveAvgPool3d((None, 1, 1))
    if kind == "max":
        return nn.AdaptiveMaxPool3d((None, 1, 1))
    raise ConfigError(f"spatial_pool_type must be 'avg' or 'max', got {kind!r}", "spatial_pool_type")


class NonLocalLayer(nn.Module):
    """Attention of the short-term RoI feature over its long-term features (MMAction2 ``NonLocalLayer``)."""

    def __init__(self, st_feat_channels: int, lt_feat_channels: int, latent_channels: int, num_st_feat: int,
                 num_lt_feat: int, use_scale: bool = True, pre_activate: bool = True,
                 pre_activate_with_ln: bool = True, conv_cfg: Mapping[str, Any] | None = None,
                 norm_cfg: Mapping[str, Any] | None = None, dropout_ratio: float = 0.2,
                 zero_init_out_conv: bool = False):
        super().__init__()
        if conv_cfg is None:
            conv_cfg = {"type": "Conv3d"}
        self.st_feat_channels = st_feat_channels
        self.lt_feat_channels = lt_feat_channels
        self.latent_channels = latent_channels
        self.num_st_feat = num_st_feat
        self.num_lt_feat = num_lt_feat
        self.use_scale = use_scale
        self.pre_activate = pre_activate
        self.pre_activate_with_ln = pre_activate_with_ln
        self.dropout_ratio = dropout_ratio
        self.zero_init_out_conv = zero_init_out_conv
        kw = dict(kernel_size=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)
        self.st_feat_conv = ConvModule(st_feat_channels, latent_channels, **kw)
        self.lt_feat_conv = ConvModule(lt_feat_channels, latent_channels, **kw)
        self.global_conv = ConvModule(lt_feat_channels, latent_channels, **kw)
        if pre_activate:
            self.ln = nn.LayerNorm([latent_channels, num_st_feat, 1, 1])
        else:
            self.ln = nn.LayerNorm([st_feat_channels, num_st_feat, 1, 1])
        self.relu = nn.ReLU()
        self.out_conv = ConvModule(latent_channels, st_feat_channels, **kw)
        if dropout_ratio > 0:
            self.dropout = nn.Dropout(dropout_ratio)

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                kaiming_init_(m)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_out_conv:
            nn.init.zeros_(self.out_conv.conv.weight)
            if self.out_conv.conv.bias is not None:
                nn.init.zeros_(self.out_conv.conv.bias)

    def forward(self, st_feat: torch.Tensor, lt_feat: torch.Tensor) -> torch.Tensor:
        n, c = st_feat.size(0), self.latent_channels
        theta = self.st_feat_conv(st_feat).view(n, c, self.num_st_feat)
        phi = self.lt_feat_conv(lt_feat).view(n, c, self.num_lt_feat)
        g = self.global_conv(lt_feat).view(n, c, self.num_lt_feat)
        theta_phi = torch.matmul(theta.permute(0, 2, 1), phi)      # [n, num_st, num_lt]
        if self.use_scale:
            theta_phi = theta_phi / c ** 0.5
        p = theta_phi.softmax(dim=-1)
        out = torch.matmul(g, p.permute(0, 2, 1)).view(n, c, self.num_st_feat, 1, 1)
        if self.pre_activate:
            if self.pre_activate_with_ln:
                out = self.ln(out)
            out = self.relu(out)
        out = self.out_conv(out)
        if not self.pre_activate:
            out = self.ln(out)
        if self.dropout_ratio > 0:
            out = self.dropout(out)
        return out


@MODELS.register()
class FBONonLocal(nn.Module):
    """Non-local feature-bank operator: st/lt 1x1x1 convs, then stacked residual :class:`NonLocalLayer`."""

    def __init__(self, st_feat_channels: int, lt_feat_channels: int, latent_channels: int, num_st_feat: int,
                 num_lt_feat: int, num_non_local_layers: int = 2, st_feat_dropout_ratio: float = 0.2,
                 lt_feat_dropout_ratio: float = 0.2, pre_activate: bool = True, zero_init_out_conv: bool = False):
        super().__init__()
        if num_non_local_layers < 1:
            raise ConfigError("num_non_local_layers must be >= 1", "fbo_cfg.num_non_local_layers")
        self.st_feat_conv = nn.Conv3d(st_feat_channels, latent_channels, kernel_size=1)
        self.lt_feat_conv = nn.Conv3d(lt_feat_channels, latent_channels, kernel_size=1)
        self.num_non_local_layers = num_non_local_layers
        self.st_feat_dropout_ratio = st_feat_dropout_ratio
        self.lt_feat_dropout_ratio = lt_feat_dropout_ratio
        self.pre_activate = pre_activate
        self.zero_init_out_conv = zero_init_out_conv
        if st_feat_dropout_ratio > 0:
            self.st_feat_dropout = nn.Dropout(st_feat_dropout_ratio)
        if lt_feat_dropout_ratio > 0:
            self.lt_feat_dropout = nn.Dropout(lt_feat_dropout_ratio)
        if not pre_activate:
            self.relu = nn.ReLU()
        self.non_local_layers: list[str] = []
        for idx in range(num_non_local_layers):
            name = f"non_local_layer_{idx + 1}"
            self.add_module(name, NonLocalLayer(latent_channels, latent_channels, latent_channels, num_st_feat,
                                                num_lt_feat, pre_activate=pre_activate,
                                                zero_init_out_conv=zero_init_out_conv))
            self.non_local_layers.append(name)

    def init_weights(self, pretrained: str | None = None) -> None:
        """Kaiming init, or (``pretrained`` a path) load FBO weights from a checkpoint (strict=False)."""
        if isinstance(pretrained, (str, os.PathLike)):
            from ..checkpoint import load_checkpoint
            load_checkpoint(self, pretrained, strict=False)
            return
        if pretrained is not None:
            raise TypeError(f"pretrained must be a path or None, got {type(pretrained).__name__}")
        kaiming_init_(self.st_feat_conv)
        kaiming_init_(self.lt_feat_conv)
        for name in self.non_local_layers:
            getattr(self, name).init_weights()

    def forward(self, st_feat: torch.Tensor, lt_feat: torch.Tensor) -> torch.Tensor:
        st_feat = self.st_feat_conv(st_feat)
        if self.st_feat_dropout_ratio > 0:
            st_feat = self.st_feat_dropout(st_feat)
        lt_feat = self.lt_feat_conv(lt_feat)
        if self.lt_feat_dropout_ratio > 0:
            lt_feat = self.lt_feat_dropout(lt_feat)
        for name in self.non_local_layers:
            out = st_feat + getattr(self, name)(st_feat, lt_feat)
            if not self.pre_activate:
                out = self.relu(out)
            st_feat = out
        return st_feat


@MODELS.register()
class FBOAvg(nn.Module):
    """Average of the long-term features over the bank slots (zero slots included)."""

    def __init__(self) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d((1, None, None))

    def init_weights(self, pretrained: str | None = None) -> None:
        pass  # no parameters

    def forward(self, st_feat: torch.Tensor, lt_feat: torch.Tensor) -> torch.Tensor:
        return self.avg_pool(lt_feat)


@MODELS.register()
class FBOMax(nn.Module):
    """Maximum of the long-term features over the bank slots (zero slots included)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_pool = nn.AdaptiveMaxPool3d((1, None, None))

    def init_weights(self, pretrained: str | None = None) -> None:
        pass  # no parameters

    def forward(self, st_feat: torch.Tensor, lt_feat: torch.Tensor) -> torch.Tensor:
        return self.max_pool(lt_feat)


_FBO_TYPES = {"non_local": FBONonLocal, "avg": FBOAvg, "max": FBOMax}


def _roi_keys(rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[int]]:
    """Per RoI: ``img_metas[batch_idx]['img_key']`` and the RoI's index within its own sample."""
    batch_idx = rois[:, 0].detach().to("cpu", torch.int64).tolist()
    keys, per_sample, seen = [], [], {}
    for b in batch_idx:
        if not 0 <= b < len(img_metas):
            raise IndexError(f"RoI batch index {b} out of range for {len(img_metas)} img_metas")
        keys.append(img_metas[b]["img_key"])
        per_sample.append(seen.get(b, 0))
        seen[b] = seen.get(b, 0) + 1
    return keys, per_sample


@MODELS.register()
class FBOHead(nn.Module):
    """Shared head: ``cat([st, fbo(st, lt)], 1)`` with ``st = spatial_max(temporal_avg(x))`` and ``lt``
    sampled from the long-term feature bank per RoI (``[R, C, window*K, 1, 1]``)."""

    def __init__(self, lfb_cfg: Mapping[str, Any], fbo_cfg: Mapping[str, Any], temporal_pool_type: str = "avg",
                 spatial_pool_type: str = "max", pretrained: str | None = None):
        super().__init__()
        fbo_cfg = dict(fbo_cfg)
        fbo_type = fbo_cfg.pop("type", "non_local")
        if fbo_type not in _FBO_TYPES:
            raise ConfigError(f"fbo type must be one of {sorted(_FBO_TYPES)}, got {fbo_type!r}", "fbo_cfg.type")
        lfb_cfg = dict(lfb_cfg)
        if "lfb_prefix_path" not in lfb_cfg:
            raise ConfigError("missing 'lfb_prefix_path'", "lfb_cfg.lfb_prefix_path")
        allowed = {"lfb_prefix_path", "max_num_sampled_feat", "window_size", "lfb_channels", "dataset_modes",
                   "device", "lmdb_map_size", "construct_lmdb", "deterministic_test", "seed"}
        unknown = sorted(set(lfb_cfg) - allowed)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown}; accepted: {sorted(allowed)}", "lfb_cfg")
        self.lfb_cfg = lfb_cfg
        self.fbo_cfg = fbo_cfg
        self.pretrained = pretrained
        self.lfb = open_lfb(**lfb_cfg)
        self.deterministic_test = bool(lfb_cfg.get("deterministic_test", False))
        self.fbo = _FBO_TYPES[fbo_type](**fbo_cfg)
        self.temporal_pool = _temporal_pool(temporal_pool_type)
        self.spatial_pool = _spatial_pool(spatial_pool_type)

    def init_weights(self, pretrained: str | None = None) -> None:
        """Initialise the FBO (FBONonLocal loads ``pretrained`` / the constructor's ``pretrained`` if given)."""
        pretrained = pretrained if pretrained is not None else self.pretrained
        if isinstance(self.fbo, FBONonLocal):
            self.fbo.init_weights(pretrained)

    def sample_lfb(self, rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """``[R, C, window_size * K, 1, 1]`` float32 long-term features (on the CPU)."""
        keys, per_sample = _roi_keys(rois, img_metas)
        parsed = [parse_img_key(k) for k in keys]
        det = self.deterministic_test and not self.training
        lt = self.lfb.sample_batch(parsed, per_sample, deterministic=det)
        return torch.from_numpy(lt).permute(0, 2, 1).contiguous()[..., None, None]

    def forward(self, x: torch.Tensor, rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]],
                **kwargs: Any) -> torch.Tensor:
        st_feat = self.spatial_pool(self.temporal_pool(x))
        lt_feat = self.sample_lfb(rois, img_metas).to(device=st_feat.device, dtype=st_feat.dtype)
        fbo_feat = self.fbo(st_feat, lt_feat)
        return torch.cat([st_feat, fbo_feat], dim=1)
