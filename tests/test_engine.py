"""The engine end to end on a tiny model and an in-memory dataset registered under test-only names."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actionkit.checkpoint import safe_load
from actionkit.engine.distributed import DistributedTestSampler, EpochBatchSampler, SeededDataset
from actionkit.cli.test import main as run_test_main
from actionkit.cli.train import main as train_main
from actionkit.registry import DATASETS, MODELS

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


# ------------------------------------------------------------------------------------ test-only model and data
def _register(registry, name: str):
    """Register under a test-only name; a re-import of this module (another module name) is a no-op."""
    def deco(cls):
        if name not in registry._items:
            registry.register(name)(cls)
        return cls
    return deco


@_register(MODELS, "EngineTestRecognizer")
class EngineTestRecognizer(nn.Module):
    """Recognizer-like: ``forward(imgs [B, V, D], label=None, return_loss=True)``."""

    def __init__(self, in_dim: int = 8, hidden: int = 16, num_classes: int = 3, dropout: float = 0.2,
                 train_cfg=None, test_cfg=None):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.drop = nn.Dropout(dropout)
        self.fc_cls = nn.Linear(hidden, num_classes)
        self.average_clips = (test_cfg or {}).get("average_clips", "prob")

    def init_weights(self) -> None:
        nn.init.normal_(self.fc_cls.weight, 0, 0.01)
        nn.init.zeros_(self.fc_cls.bias)

    def forward(self, imgs, label=None, return_loss=True):
        b, v = imgs.shape[:2]
        logits = self.fc_cls(self.drop(F.relu(self.bn(self.fc1(imgs.reshape(b * v, -1))))))
        if return_loss:
            target = label.reshape(-1).repeat_interleave(v)
            return {"loss_cls": F.cross_entropy(logits, target),
                    "top1_acc": (logits.argmax(1) == target).float().mean().detach()}
        if self.average_clips is None:
            return logits
        if self.average_clips == "prob":
            return logits.softmax(-1).reshape(b, v, -1).mean(1)
        return logits.reshape(b, v, -1).mean(1)


@_register(DATASETS, "EngineTestDataset")
class EngineTestDataset(torch.utils.data.Dataset):
    """Gaussian blobs, one per class; ``__getitem__`` adds random noise (an augmentation)."""

    def __init__(self, num: int = 24, dim: int = 8, num_classes: int = 3, views: int = 1, noise: float = 0.3,
                 delay: float = 0.0, test_mode: bool = False):
        rs = np.random.RandomState(123)
        centers = rs.randn(num_classes, dim).astype(np.float32) * 1.5
        self.labels = np.arange(num) % num_classes
        self.feats = centers[self.labels] + 0.5 * rs.randn(num, dim).astype(np.float32)
        self.views, self.noise, self.delay, self.test_mode = views, noise, delay, test_mode

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if self.delay:
            time.sleep(self.delay)
        x = self.feats[i][None].repeat(self.views, 0)
        if not self.test_mode:
            x = x + self.noise * np.random.randn(*x.shape).astype(np.float32)
        return {"imgs": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                "label": torch.tensor(int(self.labels[i]))}

    def evaluate(self, results, metrics=("top_k_accuracy",), logger=None) -> dict:
        pred = np.array([np.asarray(r).reshape(-1, np.asarray(r).shape[-1]).mean(0).argmax() for r in results])
        acc = float((pred == self.labels[: len(pred)]).mean())
        out = {"top1_acc": acc}
        if "mean_class_accuracy" in metrics:
            out["mean_class_accuracy"] = acc
        return out

    def dump_results(self, results, out) -> None:
        Path(out).write_text(json.dumps([np.asarray(r).tolist() for r in results]))


CONFIG = """
model = dict(type='EngineTestRecognizer', in_dim=8, num_classes=3, test_cfg=dict(average_clips='prob'))
data = dict(videos_per_gpu=4, workers_per_gpu=0,
            test_dataloader=dict(videos_per_gpu=2), val_dataloader=dict(videos_per_gpu=3),
            train=dict(type='EngineTestDataset', num=24, delay={delay}),
            val=dict(type='EngineTestDataset', num=12),
            test=dict(type='EngineTestDataset', num=11, views=2))
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
optimizer_config = dict(grad_clip=dict(max_norm=40, norm_type=2))
lr_config = dict(policy='step', step=[{step}], warmup='linear', warmup_iters=1, warmup_by_epoch=True, warmup_ratio=0.1)
total_epochs = {epochs}
checkpoint_config = dict(interval=1, by_iter_interval={by_iter})
evaluation = dict(interval=1, metrics=['top_k_accuracy'], save_best='auto')
log_config = dict(interval=2, hooks=[dict(type='TextLoggerHook')])
workflow = [('train', 1)]
"""

RUNNER = f"""
import os, sys
sys.path.insert(0, {str(TESTS_DIR)!r})
import torch
torch.set_num_threads(int(os.environ.get("ACTIONKIT_TEST_THREADS", "1")))
import test_engine  # registers the test-only model and dataset
from actionkit.cli.train import main as train_main
from actionkit.cli.test import main as test_main
sys.exit((train_main if sys.argv[1] == "train" else test_main)(sys.argv[2:]))
"""


@pytest.fixture(autouse=True)
def _restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def write_config(tmp_path: Path, epochs: int = 4, delay: float = 0.0, by_iter: int = 0, step: int = 3) -> Path:
    p = tmp_path / "tiny_cfg.py"
    p.write_text(CONFIG.format(epochs=epochs, delay=delay, by_iter=by_iter, step=step))
    return p


def read_json_log(work_dir: Path) -> list[dict]:
    logs = sorted(work_dir.glob("*.log.json"))
    assert logs, f"no json log in {work_dir}"
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


def weights(path: Path) -> dict:
    return safe_load(path)["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS_DIR), e.get("PYTHONPATH", "")])
    # same thread count as this process: bit-equal weights need the same reduction order
    e["ACTIONKIT_TEST_THREADS"] = str(torch.get_num_threads())
    e["OMP_NUM_THREADS"] = "1"
    return e


# ------------------------------------------------------------------------------------ tests
def test_samplers_are_pure_functions_of_seed_and_epoch():
    a = EpochBatchSampler(10, 3, shuffle=True, seed=5, rank=0, world_size=1)
    b = EpochBatchSampler(10, 3, shuffle=True, seed=5, rank=0, world_size=1)
    a.set_epoch(2)
    b.set_epoch(2)
    full = list(a)
    assert full == list(b) and len(full) == 4 and sorted(i for bt in full for _, i in bt) == list(range(10))
    b.set_start_batch(2)
    assert list(b) == full[2:] and len(b) == 2
    a.set_epoch(3)
    assert list(a) != full
    shards = [EpochBatchSampler(7, 2, True, 1, rank=r, world_size=2) for r in range(2)]
    seen = [i for s in shards for bt in s for _, i in bt]
    assert len(seen) == 8 and set(seen) == set(range(7))  # padded to a multiple of the world size
    parts = [list(DistributedTestSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]
    ds = SeededDataset(EngineTestDataset(num=6), seed=3)
    state = torch.get_rng_state()
    x1, x2 = ds[(1, 4)]["imgs"], ds[(1, 4)]["imgs"]
    assert torch.equal(x1, x2) and not torch.equal(x1, ds[(2, 4)]["imgs"])
    assert torch.equal(state, torch.get_rng_state())  # main-process RNG untouched


def test_train_loss_decreases_best_checkpoint_and_test(tmp_path, capsys):
    cfg = write_config(tmp_path, epochs=4)
    wd = tmp_path / "run"
    assert train_main([str(cfg), "--work-dir", str(wd), "--validate", "--seed", "0", "--test-best",
                       "--test-last"]) == 0
    log = read_json_log(wd)
    train = [r for r in log if r.get("mode") == "train"]
    val = [r for r in log if r.get("mode") == "val"]
    assert len(train) == 4 * 3 and len(val) == 4  # 6 iters/epoch, logged every 2
    assert {"epoch", "iter", "lr", "loss", "loss_cls", "time", "data_time", "memory"} <= set(train[0])
    assert train[0]["lr"] == pytest.approx(0.1 * (1 - (1 - 1 / 6) * 0.9), rel=1e-4)  # linear warmup, iter 1
    assert train[-1]["lr"] == pytest.approx(0.01)  # step at epoch 3
    first = np.mean([r["loss"] for r in train[:2]])
    last = np.mean([r["loss"] for r in train[-2:]])
    assert last < 0.7 * first, (first, last)
    for n in range(1, 5):
        assert (wd / f"epoch_{n}.pth").is_file()
    assert (wd / "latest.pth").is_file() and not (wd / "latest.pth").is_symlink()
    assert_same_weights(weights(wd / "latest.pth"), weights(wd / "epoch_4.pth"))
    assert (wd / "tiny_cfg.py").is_file()
    assert "EngineTestRecognizer" in (wd / "tiny_cfg.py").read_text()
    # best checkpoint: exactly one, at the first epoch reaching the best top1_acc
    accs = [r["top1_acc"] for r in val]
    best_epoch = int(np.argmax(accs)) + 1
    bests = sorted(p.name for p in wd.glob("best_*.pth"))
    assert bests == [f"best_top1_acc_epoch_{best_epoch}.pth"]
    assert safe_load(wd / bests[0])["meta"]["hook_msgs"]["best_score"] == pytest.approx(max(accs))
    text = next(wd.glob("*[0-9].log")).read_text()
    assert "Testing results of the best checkpoint" in text and "Testing results of the last checkpoint" in text
    assert (wd / "last_pred.pkl").is_file()

    # test.py: strict load, --eval, --out in dataset order, --average-clips
    out = tmp_path / "res.json"
    capsys.readouterr()
    assert run_test_main([str(cfg), str(wd / "latest.pth"), "--eval", "top_k_accuracy", "--out", str(out)]) == 0
    assert "top1_acc:" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert len(res) == 11 and all(len(r) == 3 for r in res)
    np.testing.assert_allclose(np.sum(res, 1), 1.0, rtol=1e-5)  # 'prob' averaging
    run_test_main([str(cfg), str(wd / "latest.pth"), "--out", str(out), "--average-clips", "score"])
    assert not np.allclose(np.sum(json.loads(out.read_text()), 1), 1.0)
    with pytest.raises(SystemExit):
        run_test_main([str(cfg), str(wd / "latest.pth"), "--out", str(out), "--average-clips", "None"])
    run_test_main([str(cfg), str(wd / "latest.pth"), "--out", str(out), "--cfg-options",
               "model.test_cfg.average_clips=None"])
    raw = np.array(json.loads(out.read_text()))
    assert raw.shape == (11, 2, 3)  # per video: the [V, K] raw logits
    with pytest.raises(SystemExit):
        run_test_main([str(cfg), str(wd / "latest.pth")])  # neither --out nor --eval


def test_two_runs_same_seed_identical_and_load_from(tmp_path):
    cfg = write_config(tmp_path, epochs=2)
    runs = []
    for name in ("a", "b"):
        wd = tmp_path / name
        train_main([str(cfg), "--work-dir", str(wd), "--seed", "0", "--deterministic"])
        runs.append(wd)
    la = [r["loss"] for r in read_json_log(runs[0]) if r.get("mode") == "train"]
    lb = [r["loss"] for r in read_json_log(runs[1]) if r.get("mode") == "train"]
    assert la == lb
    assert_same_weights(weights(runs[0] / "latest.pth"), weights(runs[1] / "latest.pth"))
    wd = tmp_path / "c"
    train_main([str(cfg), "--work-dir", str(wd), "--seed", "1"])
    lc = [r["loss"] for r in read_json_log(wd) if r.get("mode") == "train"]
    assert lc != la
    # load_from: non-strict init from another run (a mismatched head is skipped by name)
    wd = tmp_path / "d"
    train_main([str(cfg), "--work-dir", str(wd), "--seed", "0", "--cfg-options", "total_epochs=1",
                "model.num_classes=4", f"load_from={runs[0] / 'latest.pth'}"])
    text = next(wd.glob("*[0-9].log")).read_text()
    assert "size mismatch" in text and "fc_cls.weight" in text


def test_sigkill_mid_training_then_resume_equals_uninterrupted(tmp_path):
    cfg = write_config(tmp_path, epochs=4, delay=0.03, by_iter=2)
    ref = tmp_path / "ref"
    train_main([str(cfg), "--work-dir", str(ref), "--seed", "0", "--cfg-options", "data.train.delay=0.0"])

    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    wd = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(runner), "train", str(cfg), "--work-dir", str(wd), "--seed", "0",
                             "--cfg-options", "data.workers_per_gpu=1"],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_meta = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            latest = wd / "latest.pth"
            if latest.is_file():
                meta = safe_load(latest)["meta"]
                if meta["epoch"] >= 1 and meta["inner_iter"] > 0:  # a mid-epoch checkpoint after epoch 1
                    proc.send_signal(signal.SIGKILL)
                    killed_meta = meta
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_meta is None:
            proc.kill()
        proc.wait(30)
        err = proc.stderr.read().decode()
    assert killed_meta is not None, f"never saw a mid-epoch checkpoint; stderr:\n{err[-3000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not (wd / "epoch_4.pth").exists()
    assert_same_weights(weights(wd / f"epoch_{killed_meta['epoch']}.pth"),
                        weights(ref / f"epoch_{killed_meta['epoch']}.pth"))
    # resume from whatever latest.pth the killed run left, in this process and without workers
    train_main([str(cfg), "--work-dir", str(wd), "--seed", "0", "--resume-from", str(wd / "latest.pth"),
                "--cfg-options", "data.train.delay=0.0"])
    assert_same_weights(weights(wd / "epoch_4.pth"), weights(ref / "epoch_4.pth"))
    ref_opt = safe_load(ref / "epoch_4.pth")["optimizer"]
    new_opt = safe_load(wd / "epoch_4.pth")["optimizer"]
    for k, st in ref_opt["state"].items():
        assert torch.equal(st["momentum_buffer"], new_opt["state"][k]["momentum_buffer"])


def test_precise_bn_recomputes_running_stats():
    from actionkit.engine.hooks import precise_bn

    torch.manual_seed(0)
    model = EngineTestRecognizer(dropout=0.0)
    batches = [{"imgs": torch.randn(4, 2, 8) * (i + 1), "label": torch.zeros(4, dtype=torch.long)} for i in range(5)]
    with torch.no_grad():
        feats = [model.fc1(b["imgs"].reshape(8, 8)) for b in batches[:3]]
    model.bn.momentum = 0.1
    assert precise_bn(model, batches, num_iters=3) == 3
    torch.testing.assert_close(model.bn.running_mean, torch.stack([f.mean(0) for f in feats]).mean(0))
    torch.testing.assert_close(model.bn.running_var, torch.stack([f.var(0, unbiased=True) for f in feats]).mean(0))
    assert model.bn.momentum == 0.1 and model.training


def test_amp_precise_bn_auto_scale_lr_run(tmp_path):
    cfg = write_config(tmp_path, epochs=1)
    with open(cfg, "a") as f:
        f.write("precise_bn = dict(num_iters=2, interval=1)\n")
    wd = tmp_path / "amp"
    assert train_main([str(cfg), "--work-dir", str(wd), "--seed", "0", "--amp", "--auto-scale-lr",
                       "--gpus", "2"]) == 0
    train = [r for r in read_json_log(wd) if r.get("mode") == "train"]
    lr = 0.1 * 4 / 32  # 1 process x 4 videos vs 8 GPUs x 4 videos
    assert train[0]["lr"] == pytest.approx(lr * (1 - (1 - 1 / 6) * 0.9), rel=1e-4)
    assert all(np.isfinite(r["loss"]) for r in train)
    text = next(wd.glob("*[0-9].log")).read_text()
    assert "PreciseBN" in text and "--gpus/--gpu-ids are ignored" in text


def test_fuse_conv_bn_keeps_outputs():
    from actionkit.engine.fuse import fuse_conv_bn

    torch.manual_seed(0)

    class Block(nn.Module):  # ConvModule-like: conv, bn, activate
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm3d(4)
            self.activate = nn.ReLU()

        def forward(self, x):
            return self.activate(self.bn(self.conv(x)))

    net = nn.Sequential(Block(), nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    net.eval()
    x = torch.randn(2, 3, 4, 6, 6)
    ref = net(x)
    fused = fuse_conv_bn(net)
    assert isinstance(fused[0].bn, nn.Identity) and isinstance(fused[2], nn.Identity)
    torch.testing.assert_close(fused(x), ref, rtol=1e-4, atol=1e-5)


def test_collate_chosen_by_dataset():
    from actionkit.engine.loaders import dataset_collate

    class WithFn(EngineTestDataset):
        @staticmethod
        def collate_fn(batch):
            return {"n": len(batch)}

    assert dataset_collate(WithFn(num=3))([1, 2]) == {"n": 2}
    fn = dataset_collate(EngineTestDataset(num=3))
    ava = fn([{"img": torch.zeros(3, 2, 4, 4), "proposals": torch.zeros(n, 4), "img_metas": {"k": n}} for n in (1, 3)])
    assert ava["img"].shape == (2, 3, 2, 4, 4) and [p.shape[0] for p in ava["proposals"]] == [1, 3]
    rec = fn([{"imgs": torch.zeros(2, 8), "label": torch.tensor(i)} for i in range(3)])
    assert rec["imgs"].shape == (3, 2, 8) and rec["label"].tolist() == [0, 1, 2]
    # Collect(nested=True) test items: every value wrapped in a list over augmentations
    nested = fn([{"img": [torch.zeros(3, 2, 4, 4)], "proposals": [torch.zeros(n, 4)], "img_metas": [{"k": n}]}
                 for n in (1, 2, 3)])
    assert len(nested["img"]) == 1 and nested["img"][0].shape == (3, 3, 2, 4, 4)
    assert [p.shape[0] for p in nested["proposals"][0]] == [1, 2, 3]
    assert nested["img_metas"] == [[{"k": 1}, {"k": 2}, {"k": 3}]]
    from actionkit.engine.test import batch_size_of, split_result

    assert batch_size_of(nested) == 3 and batch_size_of(ava) == 2
    assert len(split_result([[np.zeros((0, 5))]] * 3, 3)) == 3


def test_evaluation_schedule_like_mmcv():
    from actionkit.engine.hooks import should_evaluate as _should_evaluate

    assert [e + 1 for e in range(10) if _should_evaluate(e, 5, None)] == [5, 10]
    assert [e + 1 for e in range(22) if _should_evaluate(e, 1, 18)] == [18, 19, 20, 21, 22]
    assert [e + 1 for e in range(12) if _should_evaluate(e, 4, 2)] == [2, 6, 10]


class IndexEcho(nn.Module):
    """Test forward returns the first feature of the first view (the sample index in these tests)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, imgs, label=None, return_loss=True):
        return imgs[:, 0, :1] * self.scale


def _indexed_dataset(n: int) -> EngineTestDataset:
    ds = EngineTestDataset(num=n, views=2, test_mode=True)
    ds.feats[:, 0] = np.arange(n)
    return ds


def _spawned_test(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from actionkit.engine.test import multi_gpu_test
    from actionkit.engine.loaders import build_test_loader

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = _indexed_dataset(7)
        cfg = {"data": {"workers_per_gpu": 0, "test_dataloader": {"videos_per_gpu": 2}}}
        loader = build_test_loader(ds, cfg, "test", distributed=True)
        assert len(loader) == 2  # ceil(7 / 2) = 4 padded samples per rank, 2 per batch
        results = multi_gpu_test(IndexEcho(), loader)
        if rank == 0:
            torch.save([float(np.asarray(r).reshape(-1)[0]) for r in results], out)
        else:
            assert results is None
    finally:
        dist.destroy_process_group()


def test_distributed_test_returns_every_sample_once_in_order(tmp_path):
    import torch.multiprocessing as mp

    from actionkit.engine.test import single_gpu_test
    from actionkit.engine.loaders import build_test_loader

    out = tmp_path / "res.pt"
    mp.spawn(_spawned_test, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    assert torch.load(out, weights_only=True) == [float(i) for i in range(7)]
    single = single_gpu_test(IndexEcho(), build_test_loader(_indexed_dataset(5), {"data": {"workers_per_gpu": 0,
                             "test_dataloader": {"videos_per_gpu": 2}}}, "test", False))
    assert [float(r[0]) for r in single] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_resume_from_mmaction2_style_checkpoint(tmp_path):
    """A 0.x file only has meta.epoch/iter (no position in the epoch, no RNG states): resume at that epoch."""
    cfg = write_config(tmp_path, epochs=3)
    wd = tmp_path / "src"
    train_main([str(cfg), "--work-dir", str(wd), "--seed", "0", "--cfg-options", "total_epochs=2"])
    ck = safe_load(wd / "epoch_2.pth")
    mm = {"meta": {"epoch": 2, "iter": 12, "mmcv_version": "1.3.9", "hook_msgs": {"best_score": np.float64(0.5)}},
          "state_dict": ck["state_dict"], "optimizer": ck["optimizer"]}
    torch.save(mm, tmp_path / "mm.pth")
    wd2 = tmp_path / "resumed"
    train_main([str(cfg), "--work-dir", str(wd2), "--seed", "0", "--resume-from", str(tmp_path / "mm.pth")])
    assert not (wd2 / "epoch_2.pth").exists() and (wd2 / "epoch_3.pth").is_file()
    train = [r for r in read_json_log(wd2) if r.get("mode") == "train"]
    assert {r["epoch"] for r in train} == {3}
    assert safe_load(wd2 / "epoch_3.pth")["meta"]["iter"] == 18


def _failure_text(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if " - INFO - " not in ln]
    return "\n".join(lines[-120:])


@pytest.mark.slow
def test_torchrun_two_process_train_and_test(tmp_path):
    cfg = write_config(tmp_path, epochs=2)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    wd = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(runner)]
    r = subprocess.run(cmd + ["train", str(cfg), "--launcher", "pytorch", "--work-dir", str(wd), "--seed", "0",
                              "--validate"], env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, _failure_text(r)
    log = read_json_log(wd)
    assert [x["epoch"] for x in log if x.get("mode") == "val"] == [1, 2]
    assert len([x for x in log if x.get("mode") == "train"]) == 2 * 1  # 24 / (2 x 4) = 3 iters, logged at 2
    ck = safe_load(wd / "latest.pth")
    assert ck["meta"]["world_size"] == 2 and len(ck["meta"]["rng_states"]) == 2
    dist_out, single_out = tmp_path / "dist.json", tmp_path / "single.json"
    r = subprocess.run(cmd + ["test", str(cfg), str(wd / "latest.pth"), "--launcher", "pytorch", "--out",
                              str(dist_out)], env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, _failure_text(r)
    run_test_main([str(cfg), str(wd / "latest.pth"), "--out", str(single_out)])
    np.testing.assert_allclose(json.loads(dist_out.read_text()), json.loads(single_out.read_text()), rtol=1e-5)
