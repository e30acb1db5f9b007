"""``--fuse-conv-bn``: fold each BatchNorm into the convolution registered just before it (mmcv semantics)."""
from __future__ import annotations

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fuse_conv_bn_pair(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """Return ``conv`` with ``bn`` (eval statistics) folded into its weight and bias."""
    w = conv.weight
    mean, var = bn.running_mean, bn.running_var
    gamma = bn.weight if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(mean)
    factor = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    with torch.no_grad():
        conv.weight = nn.Parameter(w * factor.reshape([-1] + [1] * (w.dim() - 1)))
        conv.bias = nn.Parameter((bias - mean) * factor + beta)
    return conv


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Walk the children in registration order; a BN right after a conv is folded and becomes Identity."""
    last_conv, last_name = None, None
    for name, child in module.named_children():
        if isinstance(child, _BNS) and child.track_running_stats and last_conv is not None \
                and last_conv.out_channels == child.num_features:
            module._modules[last_name] = fuse_conv_bn_pair(last_conv, child)
            module._modules[name] = nn.Identity()
            last_conv = None
        elif isinstance(child, _CONVS):
            last_conv, last_name = child, name
        else:
            fuse_conv_bn(child)
    return module
