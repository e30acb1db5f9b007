"""Shared building blocks with MMAction2/mmcv state_dict names (``conv`` -> ``bn`` -> ``activate``)."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

_IntOr3 = int | Sequence[int]


def _triple(v: _IntOr3) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def build_norm3d(norm_cfg: Mapping[str, Any] | None, channels: int) -> nn.Module | None:
    """BN3d (eps 1e-5, momentum 0.1, affine) as mmcv builds it; ``requires_grad=False`` freezes it."""
    if norm_cfg is None:
        return None
    kind = norm_cfg.get("type", "BN3d")
    if kind not in ("BN3d", "BN", "SyncBN"):
        raise ValueError(f"unsupported norm type '{kind}' (expected 'BN3d')")
    bn = nn.BatchNorm3d(channels, eps=norm_cfg.get("eps", 1e-5), momentum=norm_cfg.get("momentum", 0.1))
    if not norm_cfg.get("requires_grad", True):
        for p in bn.parameters():
            p.requires_grad_(False)
    return bn


def build_activation(act_cfg: Mapping[str, Any] | None) -> nn.Module | None:
    if act_cfg is None:
        return None
    kind = act_cfg.get("type", "ReLU")
    if kind != "ReLU":
        raise ValueError(f"unsupported activation '{kind}' (expected 'ReLU')")
    return nn.ReLU(inplace=act_cfg.get("inplace", True))


def kaiming_init_(conv: nn.Module) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if getattr(conv, "bias", None) is not None:
        nn.init.zeros_(conv.bias)


def constant_init_(module: nn.Module, value: float, bias: float = 0.0) -> None:
    if getattr(module, "weight", None) is not None:
        nn.init.constant_(module.weight, value)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


class ConvModule(nn.Module):
    """Conv3d -> BN3d -> ReLU, with mmcv's submodule names so checkpoints load unchanged.

    ``bias='auto'`` gives the conv a bias only when there is no norm layer (mmcv's rule).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _IntOr3,
                 stride: _IntOr3 = 1, padding: _IntOr3 = 0, dilation: _IntOr3 = 1, groups: int = 1,
                 bias: bool | str = "auto", conv_cfg: Mapping[str, Any] | None = None,
                 norm_cfg: Mapping[str, Any] | None = None,
                 act_cfg: Mapping[str, Any] | None = {"type": "ReLU"}) -> None:  # noqa: B006 - read only
        super().__init__()
        if conv_cfg is not None and conv_cfg.get("type", "Conv3d") != "Conv3d":
            raise ValueError(f"unsupported conv type {conv_cfg.get('type')!r} (expected 'Conv3d')")
        with_norm = norm_cfg is not None
        if bias == "auto":
            bias = not with_norm
        self.conv = nn.Conv3d(in_channels, out_channels, _triple(kernel_size), _triple(stride),
                              _triple(padding), _triple(dilation), groups, bias=bool(bias))
        self.with_norm = with_norm
        self.with_activation = act_cfg is not None
        if with_norm:
            self.bn = build_norm3d(norm_cfg, out_channels)
        if act_cfg is not None:
            self.activate = build_activation(act_cfg)
        # mmcv initialises at construction: kaiming (fan_out, relu) conv, BN weight 1 / bias 0
        kaiming_init_(self.conv)
        if with_norm:
            constant_init_(self.bn, 1.0, 0.0)

    @property
    def norm(self) -> nn.Module | None:
        return self.bn if self.with_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.with_norm:
            x = self.bn(x)
        if self.with_activation:
            x = self.activate(x)
        return x


def forwarding_signature(init: Callable, target: Callable) -> inspect.Signature:
    """The signature of a constructor ``init(self, ..., **kwargs)`` that passes ``kwargs`` on to ``target``: its
    own parameters, then those of ``target`` that it does not name (``self`` and ``**kwargs`` left out)."""
    own = [p for n, p in inspect.signature(init).parameters.items() if n != "self" and p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in own}
    rest = [p.replace(kind=p.KEYWORD_ONLY) for n, p in inspect.signature(target).parameters.items()
            if n != "self" and n not in names and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return inspect.Signature(own + rest)


def build_module(cfg: Mapping[str, Any] | nn.Module, key: str) -> nn.Module:
    """A sub-module from its config (errors name ``key``), or the module itself when one is given."""
    if isinstance(cfg, Mapping):
        from actionkit.registry import MODELS

        return MODELS.build(cfg, key=key)
    return cfg
