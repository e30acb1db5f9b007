"""A small LFB comparison for the default suite: does the non-local FBO recover an event outside the clip?

The full comparison (``benchmarks/lfb_acrn_proof.py``: detectors trained on synthetic videos, banks inferred by the
baseline; numbers in BENCHMARKS.md) takes about a quarter of an hour. This is the same question at the scale of
the heads, in seconds: per-actor RoI features of synthetic "videos" play the baseline's features (appearance
noise, plus a fixed "lit" direction at the second of a scene-wide flash); they are written as a real feature bank
(:func:`write_feature_bank`), read back through :class:`FBOHead` (window sampling of spec §4.11, deterministic at
test time) into the non-local FBO, and the label is the event class of the synthetic AVA data: "a flash 5-25 s
before or after" (keyframes 1-4 s from a flash excluded, as ``make_ava`` does). The baseline head sees the RoI
feature alone, so it is at chance except on the flash second itself.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from actionkit.evaluation.ava_map import voc_average_precision
from actionkit.data.feature_bank_writer import write_feature_bank
from actionkit.models.fbo_head import FBOHead

SECONDS, ACTORS, CHANNELS = 40, 3, 16
WINDOW, PER_SECOND, LATENT = 51, 3, 16


def _videos(rng: np.random.Generator, prefix: str, n: int, lit: np.ndarray):
    """Bank dict {video: {second: [ACTORS, C]}} and samples (key, actor, feature, label)."""
    bank, samples = {}, []
    for v in range(n):
        vid = f"{prefix}{v:03d}"
        flash = int(rng.integers(0, SECONDS)) if rng.random() < 0.5 else None
        looks = rng.normal(size=(ACTORS, CHANNELS))                  # each actor's appearance
        bank[vid] = {}
        for t in range(SECONDS):
            x = looks + 0.5 * rng.normal(size=(ACTORS, CHANNELS))
            if flash == t:
                x = x + 3.0 * lit                                    # everyone lit at the flash second
            bank[vid][t] = x.astype(np.float32)
            dist = None if flash is None else abs(t - flash)
            if dist is not None and 1 <= dist <= 4:
                continue                                             # excluded timestamps
            label = float(dist is not None and 5 <= dist <= 25)
            samples.extend((f"{vid},{t:04d}", a, bank[vid][t][a], label) for a in range(ACTORS))
    return bank, samples


class _Heads(nn.Module):
    """The RoI-side of an LFB detector at feature level: FBOHead (or nothing) then a linear classifier."""

    def __init__(self, fbo_head: FBOHead | None):
        super().__init__()
        self.fbo_head = fbo_head
        self.fc = nn.Linear(CHANNELS + (LATENT if fbo_head is not None else 0), 1)

    def forward(self, feats: torch.Tensor, keys: list[str]) -> torch.Tensor:
        if self.fbo_head is None:
            return self.fc(feats).squeeze(1)
        x = feats[:, :, None, None, None]                            # [R, C, T=1, H=1, W=1]
        rois = torch.zeros(len(keys), 5)
        rois[:, 0] = torch.arange(len(keys))                         # one RoI per sample
        out = self.fbo_head(x, rois, [{"img_key": k} for k in keys])
        return self.fc(out.flatten(1)).squeeze(1)


def _train_and_eval(model: _Heads, train, val, steps: int, seed: int) -> float:
    g = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(steps):
        batch = [train[i] for i in g.integers(0, len(train), size=64)]
        feats = torch.from_numpy(np.stack([s[2] for s in batch]))
        labels = torch.tensor([s[3] for s in batch])
        loss = loss_fn(model(feats, [s[0] for s in batch]), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        feats = torch.from_numpy(np.stack([s[2] for s in val]))
        scores = model(feats, [s[0] for s in val]).numpy()
    labels = np.array([s[3] for s in val])
    return voc_average_precision(scores, labels, int(labels.sum()))    # the AP of the frame-mAP evaluator


@pytest.mark.parametrize("seed", [0, 2])
def test_lfb_nl_recovers_events_outside_the_clip(tmp_path, seed):
    """150 training videos seen about twice; VOC AP as the frame-mAP evaluator computes it. With the bank's
    sampling seeded too, the run is reproducible: seed 0 LFB-NL event AP 0.865 vs baseline 0.544, seed 2 0.874 vs
    0.494 (the baseline sits near the prevalence, 0.38-0.50; it only sees the flash second itself). Unseeded, the
    same seed 2 gave 0.54-0.88: the non-local attention has a slow start. Thresholds: LFB-NL >= 0.6 and
    >= baseline + 0.15 (the benchmark's target)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lit = rng.normal(size=CHANNELS)
    lit /= np.linalg.norm(lit)
    bank_train, train = _videos(rng, "train", 150, lit)     # enough videos that memorising them does not pay
    bank_val, val = _videos(rng, "val", 30, lit)
    write_feature_bank(tmp_path / "lfb_train", bank_train, dtype="float16")
    write_feature_bank(tmp_path / "lfb_val", bank_val, dtype="float16")
    lfb_cfg = dict(lfb_prefix_path=str(tmp_path), max_num_sampled_feat=PER_SECOND, window_size=WINDOW,
                   lfb_channels=CHANNELS, dataset_modes=("train", "val"), device="cpu", deterministic_test=True,
                   seed=seed)  # the training-time sampling too: a reproducible test
    fbo_cfg = dict(type="non_local", st_feat_channels=CHANNELS, lt_feat_channels=CHANNELS, latent_channels=LATENT,
                   num_st_feat=1, num_lt_feat=WINDOW * PER_SECOND, num_non_local_layers=2,
                   st_feat_dropout_ratio=0.2, lt_feat_dropout_ratio=0.2, pre_activate=True)
    fbo_head = FBOHead(lfb_cfg, fbo_cfg)
    fbo_head.init_weights()  # what the model builder does after construction
    lfb_ap = _train_and_eval(_Heads(fbo_head), train, val, steps=600, seed=seed)
    base_ap = _train_and_eval(_Heads(None), train, val, steps=600, seed=seed)
    prevalence = float(np.mean([s[3] for s in val]))
    msg = f"LFB-NL event AP {lfb_ap:.3f}, baseline {base_ap:.3f}, prevalence {prevalence:.3f}"
    print(msg)
    assert lfb_ap >= 0.6, msg
    assert lfb_ap - base_ap >= 0.15, msg
