#!/usr/bin/env python
"""``actionkit detect`` on long videos and with a full-width detector.

1. **Peak memory vs video length**: ``actionkit detect`` (a child of a fresh wrapper process each; its peak RSS
   from ``getrusage(RUSAGE_CHILDREN)``) on a
   synthetic 1-minute and a 10-minute video (a moving box on a textured background, ``--size`` at ``--fps``),
   the tiny synthetic SlowOnly detector (random weights), a ``--person-boxes`` csv with two people on every
   keyframe, ``--predict-stepsize`` (default 8), output step 4, mp4 and csv written. Streaming keeps only the
   frames of the pending keyframes, so the peak should not grow with the length (the issue's bar: within 20 %).
2. **Throughput of the full-width SlowOnly R50 4x16 detector** (``slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb``,
   random weights) on the CPU at 1 and 2 threads: keyframes/s of the streaming loop (decode, val pipeline, model;
   two person boxes per keyframe) on a synthetic 456x256 video at 30 fps, after one warm-up keyframe.

Usage: ``python benchmarks/detect_video.py [--minutes 1 10] [--predict-stepsize 8] [--threads 1 2]
[--speed-seconds 5] [--skip-rss] [--skip-speed]``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY_CFG = REPO / "configs/detection/synthetic/slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py"
R50_CFG = REPO / "configs/detection/ava/slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb.py"
BOXES = [(0.1, 0.2, 0.4, 0.9, 0.99), (0.55, 0.15, 0.9, 0.95, 0.98)]


def write_video(path: Path, frames: int, fps: int, width: int, height: int) -> Path:
    """A textured background with a box moving across it (H.264 via the project's writer)."""
    from actionkit.inference.video_writer import Mp4Writer

    rng = np.random.default_rng(0)
    background = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    with Mp4Writer(path, fps) as w:
        for i in range(frames):
            img = background.copy()
            x = (i * 3) % max(1, width - width // 5)
            img[height // 4: 3 * height // 4, x: x + width // 5] = (220, 60, 40)
            w.write(img)
    return path


def boxes_csv(path: Path, keyframes: list[int]) -> Path:
    path.write_text("frame,x1,y1,x2,y2,score\n" + "".join(
        f"{t},{b[0]},{b[1]},{b[2]},{b[3]},{b[4]}\n" for t in keyframes for b in BOXES))
    return path


def random_checkpoint(cfg: Path, out: Path, options: list[str] | None = None) -> Path:
    import torch

    from actionkit.checkpoint import save_checkpoint
    from actionkit.models.builder import build_model_from_config

    torch.manual_seed(0)
    save_checkpoint(out, build_model_from_config(cfg, cfg_options=options))
    return out


def rss_vs_length(work: Path, minutes: list[float], fps: int, width: int, height: int, step: int) -> None:
    from actionkit.inference.detection import demo_keyframes

    ckpt = random_checkpoint(TINY_CFG, work / "tiny.pth")
    print(f"## peak RSS of `actionkit detect` ({width}x{height} at {fps} fps, tiny synthetic SlowOnly, "
          f"2 person boxes per keyframe, --predict-stepsize {step}, --output-stepsize 4)")
    print("| video | frames | keyframes | peak RSS (MB) | wall (s) |")
    print("|---|---|---|---|---|")
    results = []
    for m in sorted(minutes):
        n = int(round(m * 60 * fps))
        video = write_video(work / f"video_{m:g}min.mp4", n, fps, width, height)
        kfs = demo_keyframes(n, 16, step)
        csv = boxes_csv(work / f"boxes_{m:g}min.csv", kfs)
        # each run in its own process: ru_maxrss of RUSAGE_CHILDREN is a maximum over all children so far,
        # so the runs go from the shortest video to the longest and each is measured in a fresh wrapper
        wrapper = [sys.executable, "-c",
                   "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                   "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"]
        cmd = [sys.executable, "-m", "actionkit", "detect", str(video), "--config", str(TINY_CFG), "--checkpoint",
               str(ckpt), "--person-boxes", str(csv), "--out", str(work / "out.mp4"), "--csv", str(work / "out.csv"),
               "--device", "cpu", "--predict-stepsize", str(step)]
        t0 = time.time()
        res = subprocess.run(wrapper + cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(res.stderr)
        rss_mb = int(res.stdout.strip().splitlines()[-1]) / 1024.0
        wall = time.time() - t0
        results.append(rss_mb)
        print(f"| {m:g} min | {n} | {len(kfs)} | {rss_mb:.0f} | {wall:.0f} |", flush=True)
    if len(results) > 1:
        print(f"\nlongest / shortest peak RSS: {results[-1] / results[0]:.3f}")


def speed(work: Path, threads: list[int], seconds: float) -> None:
    import torch

    from actionkit.config import load_config
    from actionkit.inference.detection import (ActionDetector, CsvBoxes, Keyframe, KeyframeClipPipeline,
                                               demo_keyframes, detect_video, iter_video_frames)

    fps, width, height = 30, 456, 256
    n = int(seconds * fps)
    video = write_video(work / "r50.mp4", n, fps, width, height)
    cfg = load_config(R50_CFG, ["model.backbone.pretrained=None"])
    pipe = KeyframeClipPipeline(cfg, "r50", n)
    kfs = demo_keyframes(n, pipe.window, 8)
    boxes = CsvBoxes(boxes_csv(work / "r50.csv", kfs), 0.9)
    torch.manual_seed(0)
    detector = ActionDetector(cfg, None, "cpu")
    print(f"\n## keyframes/s, SlowOnly R50 4x16 (full width, random weights), {width}x{height} at {fps} fps, "
          f"{len(kfs)} keyframes, 2 person boxes each")
    print("| threads | keyframes/s | s/keyframe |")
    print("|---|---|---|")
    old = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            # warm-up: one keyframe
            _, frames = iter_video_frames(video)
            for _ in detect_video(video, pipe, detector, boxes, [Keyframe(kfs[0], kfs[0])], 8, 4, frames=frames):
                pass
            _, frames = iter_video_frames(video)
            t0 = time.perf_counter()
            count = sum(1 for _ in detect_video(video, pipe, detector, boxes, [Keyframe(k, k) for k in kfs], 8, 4,
                                                frames=frames))
            dt = time.perf_counter() - t0
            print(f"| {t} | {count / dt:.2f} | {dt / count:.2f} |", flush=True)
    finally:
        torch.set_num_threads(old)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--size", default="160x120", help="WxH of the memory-test videos")
    p.add_argument("--predict-stepsize", type=int, default=8, help="keyframe step of the memory runs")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--speed-seconds", type=float, default=5.0, help="length of the R50 throughput video")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"# detect_video benchmark: {os.cpu_count()} CPUs, torch threads per row as listed, python "
          f"{sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="actionkit_detect_bench_") as tmp:
        work = Path(tmp)
        if not args.skip_rss:
            rss_vs_length(work, args.minutes, args.fps, width, height, args.predict_stepsize)
        if not args.skip_speed:
            speed(work, args.threads, args.speed_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
