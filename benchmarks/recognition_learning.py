"""Learning benchmark: the tiny I3D config on the synthetic motion-direction Kinetics data (CPU).

Generates ``--videos`` train / ``--val-videos`` val clips with ``actionkit.synthetic.kinetics.make_kinetics``
(frame folders), trains ``configs/recognition/synthetic/i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb.py`` through
``train_main`` (the ``tools/train.py`` command line) for ``--epochs`` epochs, then tests the last checkpoint
through ``test_main`` (the ``tools/test.py`` command line; 3 clips per video) with the frames in order and
shuffled in time (``ShuffleFrames``).  Prints a table of top-1 / mean-class accuracy, the top-1 among the videos
predicted on the right axis of motion ("sense | axis") and wall times.  Chance is 1 / 4; shuffled clips still show
the axis of motion but not its sense, so a trained model scores up to ~0.5 on them and ~0.5 "sense | axis".

``--train-seeds 0 1 2 ...`` trains once per seed on the same data (``--seed`` makes the data) and prints one row per
seed (the seed-robustness table of BENCHMARKS.md); ``--cfg-options`` changes the config for every run (e.g. another
optimizer).

    python benchmarks/recognition_learning.py [--videos 800] [--val-videos 200] [--epochs 6] [--size 32]
                                              [--seed 0] [--train-seeds N ...] [--threads 2] [--out-dir DIR]
                                              [--cfg-options KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from actionkit import load_config
from actionkit.synthetic.kinetics import make_kinetics
from actionkit.cli.test import main as test_main
from actionkit.cli.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "recognition" / "synthetic" / "i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb.py"


def data_options(root: Path) -> list[str]:
    opts = []
    for split, ann in (("train", "kinetics_train_list_rawframes.txt"), ("val", "kinetics_val_list_rawframes.txt"),
                       ("test", "kinetics_val_list_rawframes.txt")):
        opts += [f"data.{split}.ann_file={root / ann}", f"data.{split}.data_prefix={root / 'rawframes'}"]
    return opts + ["data.workers_per_gpu=0"]


def shuffled_test_pipeline() -> list[dict]:
    pipeline = [dict(t) for t in load_config(CONFIG).data.test.pipeline]
    i = next(k for k, t in enumerate(pipeline) if t["type"] == "SampleFrames")
    return pipeline[: i + 1] + [dict(type="ShuffleFrames")] + pipeline[i + 1:]


def direction_given_axis(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 among the videos whose predicted class moves along the label's axis (4 directions: c and c + 2)."""
    pred = scores.argmax(1)
    on_axis = pred % 2 == labels % 2
    return float((pred[on_axis] == labels[on_axis]).mean()) if on_axis.any() else float("nan")


def run_test(ckpt: Path, root: Path, name: str, extra: list[str]) -> tuple[dict, float]:
    """test_main on ``ckpt``: the printed metrics plus ``direction_given_axis``, and the wall time."""
    buf = io.StringIO()
    out = ckpt.parent / f"scores_{name}.json"
    t = time.time()
    with contextlib.redirect_stdout(buf):
        test_main([str(CONFIG), str(ckpt), "--eval", "top_k_accuracy", "mean_class_accuracy", "--out", str(out),
                   "--cfg-options", *data_options(root), *extra])
    wall = time.time() - t
    ann = root / "kinetics_val_list_rawframes.txt"
    labels = np.array([int(line.split()[-1]) for line in ann.read_text().splitlines() if line.strip()])
    res = {"direction_given_axis": direction_given_axis(np.array(json.loads(out.read_text())), labels)}
    for line in buf.getvalue().splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            try:
                res[k.strip()] = float(v)
            except ValueError:
                pass
    return res, wall


def train_and_test(root: Path, work: Path, seed: int, epochs: int, validate_every: int,
                   options: list[str]) -> dict:
    """tools/train.py with ``seed`` for ``epochs`` epochs, then tools/test.py on the last checkpoint in order and
    shuffled: the val records, both test results and the wall times."""
    t = time.time()
    train_main([str(CONFIG), "--work-dir", str(work), "--validate", "--seed", str(seed),
                "--cfg-options", *data_options(root), f"total_epochs={epochs}", f"evaluation.interval={validate_every}",
                f"checkpoint_config.interval={epochs}", *options])
    t_train = time.time() - t
    logs = sorted(work.glob("*.log.json"))
    recs = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    ckpt = work / f"epoch_{epochs}.pth"
    test_res, t_test = run_test(ckpt, root, "in_order", options)
    shuf_res, t_shuf = run_test(ckpt, root, "shuffled",
                                [*options, f"data.test.pipeline={shuffled_test_pipeline()!r}"])
    return dict(val=[r for r in recs if r.get("mode") == "val"], t_train=t_train, test=test_res, t_test=t_test,
                shuffled=shuf_res, t_shuffled=t_shuf)


def print_seed_rows(runs: dict[int, dict]) -> None:
    print(f"| {'seed':>4} | {'val top-1':>9} | {'test top-1':>10} | {'shuffled top-1':>14} | "
          f"{'sense | axis in order / shuffled':>32} | {'train s':>7} |")
    print(f"|{'-' * 6}|{'-' * 11}|{'-' * 12}|{'-' * 16}|{'-' * 34}|{'-' * 9}|")
    for seed, r in runs.items():
        print(f"| {seed:>4} | {r['val'][-1]['top1_acc']:9.3f} | {r['test'].get('top1_acc', float('nan')):10.3f} | "
              f"{r['shuffled'].get('top1_acc', float('nan')):14.3f} | "
              f"{r['test']['direction_given_axis']:14.3f} / {r['shuffled']['direction_given_axis']:15.3f} | "
              f"{r['t_train']:7.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=800, help="training clips")
    p.add_argument("--val-videos", type=int, default=200, help="held-out clips")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--size", type=int, default=32, help="frame size of the generated clips (square)")
    p.add_argument("--frames", type=int, default=32, help="frames per generated clip")
    p.add_argument("--seed", type=int, default=0, help="seed of the data (and of training without --train-seeds)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=None,
                   help="train once per seed on the same data and print a row per seed")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out-dir", default=None, help="keep data and work dir here (default: a temp dir)")
    p.add_argument("--cfg-options", nargs="+", default=[], help="config overrides for every run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    with contextlib.ExitStack() as stack:
        base = Path(args.out_dir) if args.out_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base.mkdir(parents=True, exist_ok=True)
        root = base / "synthetic_kinetics"
        t = time.time()
        make_kinetics(root, seed=args.seed, num_videos=args.videos, num_val_videos=args.val_videos,
                      num_frames=args.frames, size=(args.size, args.size), write_videos=False)
        t_gen = time.time() - t
        if args.train_seeds is not None:
            runs = {s: train_and_test(root, base / f"work_seed{s}", s, args.epochs, args.epochs, args.cfg_options)
                    for s in args.train_seeds}
            print(f"\ntiny I3D ({CONFIG.name}), synthetic Kinetics {args.videos} train / {args.val_videos} val clips "
                  f"(data seed {args.seed}), {args.epochs} epochs, {args.threads} torch threads, "
                  f"options: {' '.join(args.cfg_options) or 'none'}")
            print_seed_rows(runs)
            return 0
        run = train_and_test(root, base / "work", args.seed, args.epochs, 1, args.cfg_options)
    val, t_train = run["val"], run["t_train"]
    test_res, t_test, shuf_res, t_shuf = run["test"], run["t_test"], run["shuffled"], run["t_shuffled"]
    batch = int(load_config(CONFIG).data.videos_per_gpu)
    iters = args.epochs * (args.videos // batch)  # drop_last

    print()
    print(f"tiny I3D ({CONFIG.name}), synthetic Kinetics {args.videos} train / {args.val_videos} val clips "
          f"{args.size}x{args.size}x{args.frames}, 4 classes (chance 0.25), {args.epochs} epochs, "
          f"{args.threads} torch threads")
    print(f"data generation {t_gen:.1f} s, training {t_train:.1f} s (incl. per-epoch validation), "
          f"{iters} iterations of {batch} clips")
    print("val top-1 per epoch: " + ", ".join(f"{r['epoch']}: {r['top1_acc']:.3f}" for r in val))
    print()
    print(f"| {'evaluation':<43} | {'top-1':>6} | {'mean class acc':>14} | {'sense | axis':>12} | {'wall s':>7} |")
    print(f"|{'-' * 45}|{'-' * 8}|{'-' * 16}|{'-' * 14}|{'-' * 9}|")
    print(f"| {'val, 1 clip (during training, last epoch)':<43} | {val[-1]['top1_acc']:6.3f} | "
          f"{val[-1].get('mean_class_accuracy', float('nan')):14.3f} | {'':>12} | {'':>7} |")
    for name, res, wall in (("test_main, 3 clips, frames in order", test_res, t_test),
                            ("test_main, 3 clips, frames shuffled in time", shuf_res, t_shuf)):
        print(f"| {name:<43} | {res.get('top1_acc', float('nan')):6.3f} | "
              f"{res.get('mean_class_accuracy', float('nan')):14.3f} | {res['direction_given_axis']:12.3f} | "
              f"{wall:7.1f} |")
    print("(sense | axis: top-1 among the videos predicted on the right axis of motion; 0.5 = the sense is a guess)")
    ok = test_res.get("top1_acc", 0.0) >= 0.95
    print(f"\ntarget top-1 >= 0.95 on the val split: {'met' if ok else 'NOT met'}")
    return 0 if np.isfinite(test_res.get("top1_acc", np.nan)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
