"""CPU train-step speed of float32 vs bf16 autocast (``--amp``) and channels_last_3d (``--channels-last``).

The synthetic demo (``actionkit demo``: its config, data generator and optimizer, lr schedule and grad clipping)
is trained for ``--iters`` iterations in each mode from the same initial weights on the same batches: the batches
are loaded once beforehand (data loading is not timed), and in each iteration every mode takes its step in turn
(the order alternates), with the same random seed for each (dropout, RoI sampling). Reported per mode: clips/s
(batch size / median step time, the first ``--warmup`` steps excluded), the speed-up over float32 measured in the
same run, and how the loss curve tracks float32's (largest absolute difference and Pearson correlation over all
iterations).

    python benchmarks/train_speed.py                 # 50 iterations, batches of 8, 2 threads
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

MODES = {  # name -> (bf16 autocast, channels_last_3d)
    "float32": (False, False),
    "bf16 autocast": (True, False),
    "channels-last": (False, True),
    "bf16 autocast + channels-last": (True, True),
}


def load_batches(data_dir: Path, iters: int, batch_size: int, seed: int, videos: int) -> tuple[Any, list]:
    """The demo config and ``iters`` train batches of the demo data (written to ``data_dir`` when absent)."""
    from actionkit.synthetic.ava import make_ava
    from actionkit.demo import DEMO_DATA, _data_ready, demo_config
    from actionkit.engine.test import prepare_batch
    from actionkit.engine.loaders import build_train_loader
    from actionkit.registry import DATASETS

    data_args = {**DEMO_DATA, "num_train": videos}
    if not _data_ready(data_dir, seed, data_args):
        make_ava(data_dir, seed=seed, **data_args)
    cfg, _ = demo_config(data_dir)
    cfg.data.videos_per_gpu = batch_size
    cfg.data.workers_per_gpu = 0
    dataset = DATASETS.build(cfg.data.train, key="data.train", filename=cfg.filename)
    loader, sampler = build_train_loader(dataset, cfg, seed)
    batches: list = []
    epoch = 0
    while len(batches) < iters:
        sampler.set_epoch(epoch)
        for data in loader:
            batches.append(prepare_batch(data, torch.device("cpu")))
            if len(batches) == iters:
                break
        epoch += 1
    return cfg, batches


def run(cfg: Any, batches: list, warmup: int, seed: int) -> dict[str, dict[str, Any]]:
    from actionkit.models.builder import build_model
    from actionkit.engine.optim import build_optimizer, clip_grads
    from actionkit.engine.schedule import LrScheduler
    from actionkit.engine.test import autocast_context
    from actionkit.engine.trainer import parse_losses

    torch.manual_seed(seed)
    initial = build_model(cfg, init_weights=True)
    device = torch.device("cpu")
    grad_clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    state: dict[str, dict[str, Any]] = {}
    for name, (_, channels_last) in MODES.items():
        model = copy.deepcopy(initial).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        optimizer = build_optimizer(model, cfg.optimizer, cfg.filename)
        scheduler = LrScheduler.from_config(optimizer, cfg.get("lr_config"), cfg.filename)
        state[name] = dict(model=model, optimizer=optimizer, scheduler=scheduler, times=[], losses=[])
    n = len(batches)
    try:
        from tqdm import tqdm

        iterator = tqdm(range(n), desc="train steps", disable=not sys.stderr.isatty())
    except ImportError:  # pragma: no cover
        iterator = range(n)
    for it in iterator:
        order = list(MODES) if it % 2 == 0 else list(reversed(MODES))
        for name in order:
            amp, _ = MODES[name]
            s = state[name]
            s["scheduler"].step(0, it, n, 1)
            torch.manual_seed(seed * 100003 + it)
            t0 = time.perf_counter()
            with autocast_context(amp, device):
                outputs = s["model"](**batches[it], return_loss=True)
            loss, log_vars = parse_losses(outputs)
            s["optimizer"].zero_grad()
            loss.backward()
            if grad_clip is not None:
                clip_grads(s["model"].parameters(), **grad_clip)
            s["optimizer"].step()
            elapsed = time.perf_counter() - t0
            if it >= warmup:
                s["times"].append(elapsed)
            s["losses"].append(log_vars["loss"])
    return state


def summarize(state: dict[str, dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    ref_losses = np.array(state["float32"]["losses"])
    ref_speed = batch_size / statistics.median(state["float32"]["times"])
    rows = []
    for name, s in state.items():
        losses = np.array(s["losses"])
        speed = batch_size / statistics.median(s["times"])
        corr = float(np.corrcoef(ref_losses, losses)[0, 1]) if ref_losses.std() > 0 and losses.std() > 0 else 1.0
        rows.append(dict(mode=name, clips_per_s=speed, speedup=speed / ref_speed,
                         max_abs_loss_diff=float(np.abs(losses - ref_losses).max()), correlation=corr,
                         first_loss=float(losses[0]), last_loss=float(losses[-1])))
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    head = ["mode", "clips/s", "speed-up vs float32", "loss: max abs diff vs float32", "loss: correlation",
            "loss first / last"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['clips_per_s']:.2f} | {r['speedup']:.2f}x | {r['max_abs_loss_diff']:.4f} | "
                     f"{r['correlation']:.4f} | {r['first_loss']:.4f} / {r['last_loss']:.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=50, help="iterations per mode (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="steps excluded from the timing (default 3)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch (default 8, the demo's)")
    p.add_argument("--videos", type=int, default=16, help="synthetic train videos (default 16; the demo has 64)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--data-dir", help="where the synthetic data is written / reused (default: a temporary dir)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.iters <= a.warmup:
        p.error("--iters must exceed --warmup")
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(a.data_dir) if a.data_dir else Path(tmp) / "synthetic_ava"
        cfg, batches = load_batches(data_dir, a.iters, a.batch_size, a.seed, a.videos)
        state = run(cfg, batches, a.warmup, a.seed)
    rows = summarize(state, a.batch_size)
    from actionkit.engine.fast import native_bf16

    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, {native_bf16(torch.device('cpu'))[1]}, "
          f"{a.iters} iterations of batch {a.batch_size} (timing: median after {a.warmup})")
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
