"""``LFBInferHead`` (MMAction2 0.x): the shared head of the bank-inference run, which pools each RoI's feature and
collects it under its ``img_key``; :meth:`LFBInferHead.write_bank` writes the Long-Term Feature Bank.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..data.feature_bank_writer import FeatureBankWriter
from ..registry import MODELS
from .fbo_head import _roi_keys, _spatial_pool, _temporal_pool

__all__ = ["LFBInferHead", "write_lfb_banks"]


@MODELS.register()
class LFBInferHead(nn.Module):
    """Collects ``spatial_max(temporal_avg(x))`` per RoI with its ``img_key`` and returns ``x`` unchanged.

    Call :meth:`write_bank` after the test loop (every rank): it writes ``{lfb_prefix_path}/lfb_{mode}``.
    """

    def __init__(self, lfb_prefix_path: str, dataset_mode: str = "train", use_half_precision: bool = True,
                 temporal_pool_type: str = "avg", spatial_pool_type: str = "max", pretrained: str | None = None):
        super().__init__()
        self.lfb_prefix_path = lfb_prefix_path
        self.dataset_mode = dataset_mode
        self.use_half_precision = use_half_precision
        self.pretrained = pretrained
        self.temporal_pool = _temporal_pool(temporal_pool_type)
        self.spatial_pool = _spatial_pool(spatial_pool_type)
        self.writer = FeatureBankWriter(lfb_prefix_path, dataset_mode)  # creates lfb_prefix_path when it writes

    def init_weights(self, pretrained: str | None = None) -> None:
        pass

    def forward(self, x: torch.Tensor, rois: torch.Tensor, img_metas: Sequence[Mapping[str, Any]],
                **kwargs: Any) -> torch.Tensor:
        features = self.spatial_pool(self.temporal_pool(x))
        if self.use_half_precision:
            features = features.half()
        keys, _ = _roi_keys(rois, img_metas)
        self.writer.add(keys, features)
        return x

    @property
    def all_metadata(self) -> list[str]:
        return self.writer.metadata

    def collected_features(self) -> torch.Tensor:
        """The stored features ``[N, C, 1, 1, 1]`` in arrival order."""
        f = self.writer.features()
        return f.reshape(f.shape[0], -1, 1, 1, 1)

    def write_bank(self, rank: int | None = None, world_size: int | None = None,
                   barrier: Callable[[], None] | None = None) -> Path:
        """Write the collected features as ``{lfb_prefix_path}/lfb_{dataset_mode}`` (see FeatureBankWriter)."""
        return self.writer.write(rank, world_size, barrier)


def write_lfb_banks(model: nn.Module) -> list[Path]:
    """Call :meth:`LFBInferHead.write_bank` on every LFBInferHead inside ``model`` (for the test tool)."""
    return [m.write_bank() for m in model.modules() if isinstance(m, LFBInferHead)]
