"""The trainer's step and each training hook on its own, on a tiny model and tensors (``actionkit.engine.trainer``,
``actionkit.engine.hooks``); the whole loop through ``train_main`` is tested in test_engine.py."""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actionkit.checkpoint import safe_load
from actionkit.engine.hooks import CheckpointHook, EvalHook, LoggerHook, PreciseBNHook, precise_bn
from actionkit.engine.loaders import build_precise_bn_loader, build_train_loader
from actionkit.engine.logging import TrainLogger
from actionkit.engine.schedule import LrScheduler
from actionkit.engine.train import resume_training
from actionkit.engine.trainer import HookBase, NonFiniteTrainingError, Trainer
from actionkit.registry import ConfigError

NUM, DIM, CLASSES, BATCH = 8, 4, 3, 2  # 4 iterations per epoch
LOGGER = logging.getLogger("test_trainer_hooks")  # outside "actionkit" (which does not propagate): caplog sees it


class TinyNet(nn.Module):
    """``forward(imgs [B, DIM], label [B], return_loss)``: BN then a linear classifier."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(DIM)
        self.fc = nn.Linear(DIM, CLASSES)
        self.seen: list[torch.Tensor] = []  # the training batches, in order

    def forward(self, imgs, label=None, return_loss=True):
        if return_loss:
            self.seen.append(imgs.detach().clone())
        logits = self.fc(self.bn(imgs))
        if return_loss:
            return {"loss_cls": F.cross_entropy(logits, label),
                    "acc": (logits.argmax(1) == label).float().mean().detach()}
        return logits.softmax(-1)


class TinyDataset(torch.utils.data.Dataset):
    """Fixed random features; ``scores`` (one per ``evaluate`` call) script the validation metric."""

    def __init__(self, scores=(), key: str = "top1_acc"):
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(NUM, DIM, generator=g) * 2 + 1
        self.y = torch.arange(NUM) % CLASSES
        self.scores, self.key, self.evaluated = list(scores), key, 0

    def __len__(self) -> int:
        return NUM

    def __getitem__(self, i: int) -> dict:
        return {"imgs": self.x[i].clone(), "label": self.y[i].clone()}

    def evaluate(self, results, metrics=("top_k_accuracy",), logger=None) -> dict:
        self.evaluated += 1
        assert len(results) == NUM
        return {self.key: self.scores[self.evaluated - 1], "other": 1.0}


class Recorder(HookBase):
    """Records every hook call with the trainer's position, and each step's log variables."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.log_vars: list[dict] = []

    def _rec(self, stage, t):
        self.calls.append((stage, t.epoch, t.inner_iter, t.iter))

    def before_train(self, t):
        self._rec("before_train", t)

    def before_epoch(self, t):
        self._rec("before_epoch", t)

    def after_iter(self, t):
        self._rec("after_iter", t)
        self.log_vars.append(dict(t.log_vars))

    def after_epoch(self, t):
        self._rec("after_epoch", t)

    def after_train(self, t):
        self._rec("after_train", t)


def make_trainer(tmp_path: Path, hooks=(), epochs: int = 2, dataset=None, resume: Path | None = None,
                 **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = TinyNet()
    dataset = dataset or TinyDataset()
    cfg = {"data": {"videos_per_gpu": BATCH, "workers_per_gpu": 0}}
    loader, sampler = build_train_loader(dataset, cfg, seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = LrScheduler.from_config(optimizer, kwargs.pop("lr_config", None))
    if resume is not None:
        start = resume_training(resume, model, optimizer, scheduler, None, sampler.num_batches, LOGGER)
        kwargs.update(zip(("start_epoch", "start_iter", "start_inner", "hook_msgs"), start))
    return Trainer(model, optimizer, scheduler, loader, sampler, epochs, work_dir=tmp_path, seed=3,
                   checkpoint_meta={"note": "tiny"}, config_text="cfg text", hooks=hooks, logger=LOGGER, **kwargs)


def batch(i: int = 0, nan: bool = False) -> dict:
    ds = TinyDataset()
    items = [ds[(i + k) % NUM] for k in range(BATCH)]
    imgs = torch.stack([it["imgs"] for it in items])
    return {"imgs": imgs * float("nan") if nan else imgs, "label": torch.stack([it["label"] for it in items])}


def state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------ Trainer
def test_run_step_is_one_clipped_optimizer_step_at_the_scheduled_lr(tmp_path):
    trainer = make_trainer(tmp_path, grad_clip={"max_norm": 0.5, "norm_type": 2},
                           lr_config={"policy": "step", "step": [1], "warmup": "linear", "warmup_iters": 2,
                                      "warmup_ratio": 0.5})
    reference = copy.deepcopy(trainer.model)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1 * (1 - (1 - 0 / 2) * 0.5), momentum=0.9)
    out = reference(**batch(), return_loss=True)
    out["loss_cls"].backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    ref_opt.step()

    log_vars = trainer.run_step(batch())
    assert trainer.lr == pytest.approx(0.05) and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert (trainer.iter, trainer.inner_iter) == (1, 1)
    assert set(log_vars) == {"loss_cls", "acc", "loss", "grad_norm"}
    assert log_vars["loss"] == pytest.approx(float(out["loss_cls"].detach()))
    assert log_vars["grad_norm"] == pytest.approx(float(norm))
    assert_same(state(trainer.model), state(reference))


def test_run_step_skips_nonfinite_losses_and_stops_after_max_in_a_row(tmp_path, caplog):
    trainer = make_trainer(tmp_path, max_nonfinite_losses=2)
    trainer.last_checkpoint = str(tmp_path / "epoch_1.pth")
    trainer.run_step(batch())
    before = state(trainer.model)
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        assert math.isnan(trainer.run_step(batch(nan=True))["loss"])
    weights = {k: v for k, v in state(trainer.model).items() if "running" not in k and "num_batches" not in k}
    assert_same(weights, {k: v for k, v in before.items() if k in weights})  # update skipped
    assert trainer.nonfinite_run == 1 and "non-finite loss nan at epoch 1 iter 2" in caplog.text
    trainer.run_step(batch())  # a finite loss resets the count
    assert trainer.nonfinite_run == 0
    trainer.run_step(batch(nan=True))
    with pytest.raises(NonFiniteTrainingError, match=r"epoch 1, iteration 5: the loss was NaN / Inf for 2 "
                                                     r"consecutive iterations.*epoch_1\.pth"):
        trainer.run_step(batch(nan=True))


def test_train_runs_hooks_in_order_and_starts_a_resumed_epoch_at_its_position(tmp_path):
    rec = Recorder()
    trainer = make_trainer(tmp_path, hooks=[rec], epochs=2, start_epoch=0, start_iter=3, start_inner=3)
    trainer.train()
    assert rec.calls == [("before_train", 0, 3, 3), ("before_epoch", 0, 3, 3), ("after_iter", 0, 4, 4),
                         ("after_epoch", 0, 4, 4), ("before_epoch", 1, 0, 4)] + [
        ("after_iter", 1, k, 4 + k) for k in range(1, 5)] + [("after_epoch", 1, 4, 8), ("after_train", 1, 4, 8)]
    # the resumed epoch gets the last batch of the epoch's order, as an uninterrupted run does
    full = make_trainer(tmp_path, epochs=2)
    full.train()
    assert len(trainer.model.seen) == 5 and len(full.model.seen) == 8
    for resumed, uninterrupted in zip(trainer.model.seen, full.model.seen[3:]):
        assert torch.equal(resumed, uninterrupted)


# ------------------------------------------------------------------------------------------ LoggerHook
def test_logger_hook_writes_the_mean_of_each_interval_as_text_and_json(tmp_path, caplog):
    tlog = TrainLogger(tmp_path, "ts", LOGGER)
    rec = Recorder()
    trainer = make_trainer(tmp_path, hooks=[rec, LoggerHook(tlog, interval=2)], epochs=1)
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        trainer.train()
    records = [json.loads(line) for line in (tmp_path / "ts.log.json").read_text().splitlines()]
    assert [(r["mode"], r["epoch"], r["iter"]) for r in records] == [("train", 1, 2), ("train", 1, 4)]
    for r, pair in zip(records, (rec.log_vars[:2], rec.log_vars[2:])):
        assert r["loss"] == pytest.approx((pair[0]["loss"] + pair[1]["loss"]) / 2, rel=1e-4)
        assert r["lr"] == 0.1 and {"time", "data_time", "memory", "loss_cls", "acc"} <= set(r)
    lines = [m for m in caplog.messages if m.startswith("Epoch [")]
    assert len(lines) == 2 and lines[0].startswith("Epoch [1][2/4]\tlr: 1.000e-01, eta: ")
    assert f"loss: {float(np.mean([v['loss'] for v in rec.log_vars[2:]])):.4f}" in lines[1]


# ------------------------------------------------------------------------------------------ CheckpointHook
def test_checkpoint_hook_keeps_max_keep_epochs_and_latest_with_full_meta(tmp_path):
    trainer = make_trainer(tmp_path, hooks=[CheckpointHook(tmp_path, interval=1, max_keep=2)], epochs=3)
    trainer.hook_msgs["best_score"] = 0.5
    trainer.train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_2.pth", "epoch_3.pth", "latest.pth"]
    assert trainer.last_checkpoint == str(tmp_path / "epoch_3.pth")
    latest, last = safe_load(tmp_path / "latest.pth"), safe_load(tmp_path / "epoch_3.pth")
    assert_same(latest["state_dict"], last["state_dict"])
    assert_same(last["state_dict"], state(trainer.model))
    meta = last["meta"]
    assert list(meta) == ["note", "epoch", "iter", "inner_iter", "seed", "time", "world_size", "config",
                          "iters_per_epoch", "hook_msgs", "rng_states"]
    assert (meta["epoch"], meta["iter"], meta["inner_iter"], meta["iters_per_epoch"]) == (3, 12, 0, 4)
    assert meta["seed"] == 3 and meta["config"] == "cfg text" and meta["hook_msgs"] == {"best_score": 0.5}
    assert len(meta["rng_states"]) == 1 and {"python", "numpy", "torch"} <= set(meta["rng_states"][0])
    assert {"optimizer", "scheduler"} <= set(last)


def test_checkpoint_hook_save_last_and_by_iter_latest_inside_an_epoch(tmp_path):
    trainer = make_trainer(tmp_path, hooks=[CheckpointHook(tmp_path, interval=2, by_iter_interval=3)], epochs=3)
    seen = []

    class ReadLatest(HookBase):
        def after_iter(self, t):
            if (tmp_path / "latest.pth").exists():
                m = safe_load(tmp_path / "latest.pth")["meta"]
                seen.append((t.iter, m["epoch"], m["iter"], m["inner_iter"]))
                (tmp_path / "latest.pth").unlink()

    trainer.register_hooks([ReadLatest()])
    trainer.train()
    # iteration 12 ends the last epoch: no by-iter file there; the epochs' files are written after each epoch
    assert seen == [(3, 0, 3, 3), (6, 1, 6, 2), (9, 2, 9, 1)]
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pth")) == ["epoch_2.pth", "epoch_3.pth"]  # save_last


def test_resuming_from_a_by_iter_checkpoint_equals_the_uninterrupted_run(tmp_path):
    lr_config = {"policy": "step", "step": [1], "warmup": "linear", "warmup_iters": 3, "warmup_ratio": 0.1}

    class KeepMidEpoch(HookBase):  # keeps the latest.pth written at iteration 6 (epoch 2, inner 2)
        def after_iter(self, t):
            if t.iter == 6:
                (tmp_path / "mid.pth").write_bytes((tmp_path / "ref" / "latest.pth").read_bytes())

    ref = make_trainer(tmp_path / "ref", hooks=[CheckpointHook(tmp_path / "ref", by_iter_interval=3),
                                                KeepMidEpoch()], epochs=3, lr_config=lr_config)
    (tmp_path / "ref").mkdir()
    ref.train()
    resumed = make_trainer(tmp_path / "res", hooks=[CheckpointHook(tmp_path / "res")], epochs=3,
                           lr_config=lr_config, resume=tmp_path / "mid.pth")
    assert (resumed.epoch, resumed.iter, resumed.inner_iter) == (1, 6, 2)
    (tmp_path / "res").mkdir()
    resumed.train()
    assert_same(state(resumed.model), state(ref.model))
    assert resumed.lr == ref.lr and resumed.iter == ref.iter == 12
    for a, b in zip(resumed.optimizer.state.values(), ref.optimizer.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    for name in ("epoch_2.pth", "epoch_3.pth"):  # the same checkpoint meta apart from the time
        ma, mb = (safe_load(tmp_path / d / name)["meta"] for d in ("ref", "res"))
        assert {k: v for k, v in ma.items() if k not in ("time", "rng_states")} == \
            {k: v for k, v in mb.items() if k not in ("time", "rng_states")}


def test_nonfinite_weights_are_never_saved(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.last_checkpoint = "work/epoch_1.pth"
    with torch.no_grad():
        trainer.model.fc.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteTrainingError, match=r"1 weight tensors are NaN / Inf \(first: fc.weight\); "
                                                     r"epoch_2.pth was not written.*work/epoch_1.pth"):
        trainer.save_checkpoint(tmp_path / "epoch_2.pth", 2, 0)
    assert not list(tmp_path.glob("*.pth"))


# ------------------------------------------------------------------------------------------ EvalHook
def _eval_hook(tmp_path, dataset, **eval_cfg) -> tuple[EvalHook, TrainLogger]:
    tlog = TrainLogger(tmp_path, "ts", LOGGER)
    loader = [batch(i) for i in range(0, NUM, BATCH)]
    return EvalHook(dataset, loader, eval_cfg, tlog, tmp_path), tlog


def test_eval_hook_keeps_one_best_checkpoint_and_a_nan_never_wins(tmp_path, caplog):
    val = TinyDataset(scores=[float("nan"), 0.5, 0.75, float("nan"), 0.6])
    hook, _ = _eval_hook(tmp_path, val, interval=1, save_best="auto")
    files = []

    class ListFiles(HookBase):
        def after_epoch(self, t):
            files.append(sorted(p.name for p in tmp_path.glob("*.pth")))

    trainer = make_trainer(tmp_path, hooks=[hook, ListFiles()], epochs=5)
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        trainer.train()
    assert files == [[]] + [[f"best_top1_acc_epoch_{n}.pth"] for n in (2, 3, 3, 3)]
    assert "epoch 1: top1_acc is nan; not a candidate for the best checkpoint" in caplog.text
    assert val.evaluated == 5 and hook.results == {"top1_acc": 0.6, "other": 1.0}
    assert [p.name for p in tmp_path.glob("*.pth")] == ["best_top1_acc_epoch_3.pth"]
    assert trainer.hook_msgs == {"best_score": 0.75, "best_ckpt": str(tmp_path / "best_top1_acc_epoch_3.pth"),
                                 "best_key": "top1_acc"}
    meta = safe_load(tmp_path / "best_top1_acc_epoch_3.pth")["meta"]
    assert (meta["epoch"], meta["iter"], meta["hook_msgs"]["best_score"]) == (3, 12, 0.75)
    vals = [json.loads(line) for line in (tmp_path / "ts.log.json").read_text().splitlines()]
    assert [(r["mode"], r["epoch"], r["iter"]) for r in vals] == [("val", e, 4 * e) for e in range(1, 6)]


def test_eval_hook_rule_interval_start_and_unknown_key(tmp_path):
    val = TinyDataset(scores=[0.3, 0.2], key="val_loss")
    hook, _ = _eval_hook(tmp_path, val, interval=2, start=1, save_best="val_loss")  # 'loss' -> rule 'less'
    make_trainer(tmp_path, hooks=[hook], epochs=4).train()
    assert val.evaluated == 2  # epochs 1 and 3
    assert [p.name for p in tmp_path.glob("*.pth")] == ["best_val_loss_epoch_3.pth"]

    val = TinyDataset(scores=[0.3, 0.2])
    hook, _ = _eval_hook(tmp_path / "greater", val, save_best="top1_acc", rule="greater")
    make_trainer(tmp_path / "greater", hooks=[hook], epochs=2).train()
    assert [p.name for p in (tmp_path / "greater").glob("*.pth")] == ["best_top1_acc_epoch_1.pth"]

    hook, _ = _eval_hook(tmp_path / "bad", TinyDataset(scores=[0.3]), save_best="mAP")
    with pytest.raises(ConfigError, match="'mAP' is not among the evaluation results"):
        make_trainer(tmp_path / "bad", hooks=[hook], epochs=1).train()


# ------------------------------------------------------------------------------------------ PreciseBNHook
def test_precise_bn_hook_recomputes_statistics_at_its_interval_only(tmp_path, caplog):
    snapshots = []

    class Snapshot(HookBase):
        def after_epoch(self, t):
            snapshots.append((t.model.bn.running_mean.clone(), t.model.bn.running_var.clone()))

    before, after = Snapshot(), Snapshot()
    dataset = TinyDataset()
    trainer = make_trainer(tmp_path, hooks=[before, PreciseBNHook(dataset, num_iters=3, interval=2, seed=11), after],
                           epochs=2, dataset=dataset)
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        trainer.train()
    (m1b, v1b), (m1a, v1a), (m2b, _), (m2a, v2a) = snapshots
    assert torch.equal(m1b, m1a) and torch.equal(v1b, v1a)  # epoch 1: not its turn
    assert not torch.equal(m2b, m2a)
    # epoch 2: the mean of 3 batches' statistics, in the PreciseBN loader's own order
    loader = build_precise_bn_loader(dataset, trainer.loader, trainer.batch_sampler, 11, 1)
    feats = [b["imgs"] for _, b in zip(range(3), loader)]
    torch.testing.assert_close(m2a, torch.stack([f.mean(0) for f in feats]).mean(0))
    torch.testing.assert_close(v2a, torch.stack([f.var(0, unbiased=True) for f in feats]).mean(0))
    assert trainer.model.bn.momentum == 0.1 and trainer.model.training
    assert "PreciseBN: recomputed 1 BN layers' statistics over 3 batches" in caplog.text


def test_precise_bn_without_bn_layers_does_nothing():
    assert precise_bn(nn.Linear(2, 2), [{"imgs": torch.zeros(1, 2)}], num_iters=5) == 0
