"""LR schedules against hand-computed values of the mmcv 1.x formulas (spec-detection §5.2, spec-recognition A2.2)."""
from __future__ import annotations

import math

import pytest
import torch

from actionkit.engine.optim import auto_scale_lr, build_optimizer, clip_grads
from actionkit.engine.schedule import LrScheduler
from actionkit.registry import ConfigError


BASE = 0.1


def sched(**cfg):
    return LrScheduler.from_config(None, cfg, base_lrs=[BASE])


def test_step_by_epoch_with_epoch_warmup_ava_20e():
    # spec-detection §1.2/§5.2: step=[10,15], linear warmup 5 epochs, ratio 0.1
    s = sched(policy="step", step=[10, 15], warmup="linear", warmup_by_epoch=True, warmup_iters=5, warmup_ratio=0.1)
    ipe, E = 100, 20
    W = 500
    for it in (0, 1, 250, 499):
        expect = BASE * (1 - (1 - it / W) * (1 - 0.1))
        assert s.lrs_at(it // ipe, it, ipe, E)[0] == pytest.approx(expect, rel=1e-12)
    assert s.lrs_at(0, 0, ipe, E)[0] == pytest.approx(0.01)
    assert s.lrs_at(5, 500, ipe, E)[0] == pytest.approx(0.1)  # it == warmup_iters -> regular lr
    assert s.lrs_at(9, 999, ipe, E)[0] == pytest.approx(0.1)
    assert s.lrs_at(10, 1000, ipe, E)[0] == pytest.approx(0.01)
    assert s.lrs_at(14, 1499, ipe, E)[0] == pytest.approx(0.01)
    assert s.lrs_at(15, 1500, ipe, E)[0] == pytest.approx(0.001)
    assert s.lrs_at(19, 1999, ipe, E)[0] == pytest.approx(0.001)


def test_step_int_gamma_min_lr():
    s = sched(policy="step", step=3, gamma=0.5, min_lr=0.02)
    assert [s.lrs_at(e, e * 10, 10, 20)[0] for e in (0, 2, 3, 5, 6, 9)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.02])  # 0.0125 clipped to min_lr


def test_warmup_multiplies_regular_lr_inside_decayed_epoch():
    # warmup longer than the first step: warmup multiplies the already decayed regular lr
    s = sched(policy="step", step=[1], warmup="linear", warmup_iters=15, warmup_ratio=0.1)
    it = 12  # epoch 1 (10 iters/epoch): regular = 0.01
    assert s.lrs_at(1, it, 10, 5)[0] == pytest.approx(0.01 * (1 - (1 - 12 / 15) * 0.9))


def test_cosine_by_epoch_slowfast_with_warmup():
    # spec-recognition A2.2: CosineAnnealing min_lr=0 by epoch, linear warmup 34 epochs
    s = sched(policy="CosineAnnealing", min_lr=0, warmup="linear", warmup_by_epoch=True, warmup_iters=34)
    ipe, E = 7, 256
    W = 34 * ipe
    for e, it in ((0, 0), (3, 25), (33, W - 1)):
        regular = 0.5 * BASE * (1 + math.cos(math.pi * e / E))
        assert s.lrs_at(e, it, ipe, E)[0] == pytest.approx(regular * (1 - (1 - it / W) * 0.9), rel=1e-12)
    for e in (34, 100, 255):
        assert s.lrs_at(e, e * ipe + 3, ipe, E)[0] == pytest.approx(0.5 * BASE * (1 + math.cos(math.pi * e / E)))


def test_cosine_by_iter_ava_with_min_lr_ratio():
    s = sched(policy="CosineAnnealing", by_epoch=False, min_lr=0, warmup="linear", warmup_by_epoch=True,
              warmup_iters=2, warmup_ratio=0.1)
    ipe, E = 50, 10
    M = ipe * E
    for it in (0, 10, 99):
        reg = 0.5 * BASE * (1 + math.cos(math.pi * it / M))
        assert s.lrs_at(it // ipe, it, ipe, E)[0] == pytest.approx(reg * (1 - (1 - it / 100) * 0.9))
    for it in (100, 250, 499):
        assert s.lrs_at(it // ipe, it, ipe, E)[0] == pytest.approx(0.5 * BASE * (1 + math.cos(math.pi * it / M)))
    r = sched(policy="CosineAnnealing", by_epoch=False, min_lr_ratio=0.01)
    target = BASE * 0.01
    assert r.lrs_at(0, 250, 50, 10)[0] == pytest.approx(target + 0.5 * (BASE - target) * (1 + math.cos(math.pi / 2)))


def test_constant_and_exp_warmup_iter_based():
    c = sched(policy="fixed", warmup="constant", warmup_iters=510, warmup_ratio=0.1)
    assert c.lrs_at(0, 509, 1000, 22)[0] == pytest.approx(0.01)
    assert c.lrs_at(0, 510, 1000, 22)[0] == pytest.approx(0.1)
    x = sched(policy="fixed", warmup="exp", warmup_iters=100, warmup_ratio=0.1)
    assert x.lrs_at(0, 40, 1000, 22)[0] == pytest.approx(0.1 * 0.1 ** (1 - 0.4))


def test_step_applies_to_optimizer_and_state_roundtrip():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, {"type": "SGD", "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True})
    s = LrScheduler.from_config(opt, {"policy": "step", "step": [2]})
    assert s.step(2, 20, 10, 4) == pytest.approx([0.02])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)
    s2 = LrScheduler.from_config(None, {"policy": "step", "step": [2]}, base_lrs=[1.0])
    s2.load_state_dict(s.state_dict())
    assert s2.base_lrs == [0.2]


def test_bad_lr_configs_raise():
    with pytest.raises(ConfigError, match="policy"):
        LrScheduler.from_config(None, {"policy": "bogus"}, base_lrs=[0.1])
    with pytest.raises(ConfigError, match="warmup"):
        LrScheduler.from_config(None, {"policy": "fixed", "warmup": "cubic", "warmup_iters": 3}, base_lrs=[0.1])
    with pytest.raises(ConfigError, match="min_lr"):
        LrScheduler.from_config(None, {"policy": "CosineAnnealing"}, base_lrs=[0.1])
    with pytest.raises(ConfigError, match="step"):
        LrScheduler.from_config(None, {"policy": "step", "step": "x"}, base_lrs=[0.1])


def test_optimizers_clip_and_auto_scale():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    model[0].bias.requires_grad_(False)
    opt = build_optimizer(model, {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.05})
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups[0]["params"]) == 3
    with pytest.warns(UserWarning, match="paramwise_cfg"):
        build_optimizer(model, {"type": "Adam", "lr": 1e-3, "paramwise_cfg": {"norm_decay_mult": 0}})
    with pytest.raises(ConfigError, match="optimizer"):
        build_optimizer(model, {"type": "LBFGS", "lr": 1})
    model(torch.randn(5, 3)).pow(2).sum().mul(1000).backward()
    norm = clip_grads(model.parameters(), max_norm=1.0, norm_type=2)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
    assert float(norm) > 1.0 and float(total) == pytest.approx(1.0, rel=1e-4)
    cfg = {"optimizer": {"lr": 0.1}, "data": {"videos_per_gpu": 8}}
    assert auto_scale_lr(cfg, world_size=2) == pytest.approx(0.1 * 16 / 64)
    cfg = {"optimizer": {"lr": 0.1}, "data": {"videos_per_gpu": 8}, "auto_scale_lr": {"base_batch_size": 16}}
    assert auto_scale_lr(cfg, world_size=1) == pytest.approx(0.05)
