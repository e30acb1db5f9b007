"""Memory benchmark: peak RSS of ``actionkit recognize`` on a short and a long synthetic video.

Writes synthetic h264 videos (a drifting texture with a moving square; ``--size`` 340x256 at ``--fps`` 30 by
default, one per ``--seconds`` entry, default 60 and 600) frame by frame with PyAV (the whole video is never in
memory), a config with the tiny I3D of ``configs/recognition/synthetic`` (random weights, saved as a checkpoint:
the figures are about decoding and the pipeline, not the model) and the video test pipeline of
``i3d_r50_video_32x2x1_100e_kinetics400_rgb`` (10 clips x 32 frames, short side 256, ThreeCrop 256), then runs
``python -m actionkit recognize VIDEO`` in a subprocess per video and reads the subprocess's peak RSS
(``os.wait4``).  The readers seek to the sampled frames, so the peak should not grow with the video's length.

    python benchmarks/recognize_memory.py [--seconds 60 600] [--size 340 256] [--fps 30] [--clips 10]
                                          [--short-side 256] [--work-dir DIR]
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "recognition" / "synthetic" / "i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb.py"
VIDEO_CONFIG = REPO / "configs" / "recognition" / "i3d" / "i3d_r50_video_32x2x1_100e_kinetics400_rgb.py"


def write_synthetic_video(path: Path, seconds: float, size: tuple[int, int], fps: int, gop: int = 60) -> int:
    """Encode ``seconds`` of a drifting texture with a moving square, one frame at a time; returns the frames."""
    import av

    width, height = size
    num_frames = int(round(seconds * fps))
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), np.uint8))[:height, :width]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for t in range(num_frames):
            frame = np.roll(texture, (t % height, (2 * t) % width), axis=(0, 1))
            y, x = (5 * t) % (height - 32), (7 * t) % (width - 32)
            frame[y:y + 32, x:x + 32] = (235, 20, 20)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return num_frames


def write_config_and_checkpoint(work_dir: Path, num_clips: int = 10, short_side: int = 256) -> tuple[Path, Path]:
    """The tiny I3D with the I3D R50 video test pipeline (``num_clips`` clips, ``short_side`` for the Resize and
    the ThreeCrop), and a checkpoint of its random weights."""
    import torch

    from actionkit.config import load_config
    from actionkit.checkpoint import save_checkpoint
    from actionkit.config import config_to_python
    from actionkit.models.builder import build_model

    model_cfg = load_config(TINY_CONFIG)
    # the video is opened first (the sampler needs its frame count), as in MMAction2's video configs
    steps = [copy.deepcopy(dict(t)) for t in load_config(VIDEO_CONFIG).data.test.pipeline]
    pipeline = [t for t in steps if t["type"] == "DecordInit"] + [t for t in steps if t["type"] != "DecordInit"]
    for step in pipeline:
        if step["type"] == "SampleFrames":
            step["num_clips"] = num_clips
        elif step["type"] == "Resize":
            step["scale"] = (-1, short_side)
        elif step["type"] == "ThreeCrop":
            step["crop_size"] = short_side
    cfg = {"model": copy.deepcopy(dict(model_cfg.model)),
           "data": {"workers_per_gpu": 0, "test_dataloader": {"videos_per_gpu": 1},
                    "test": {"type": "VideoDataset", "ann_file": "unused.txt", "data_prefix": str(work_dir),
                             "pipeline": pipeline}}}
    config = work_dir / f"tiny_i3d_video_test_pipeline_{num_clips}x{short_side}.py"
    config.write_text(config_to_python(cfg))
    torch.manual_seed(0)
    ckpt = work_dir / "tiny_i3d_random.pth"
    save_checkpoint(ckpt, build_model(load_config(config), init_weights=True))
    return config, ckpt


def peak_rss_of(cmd: Sequence[str]) -> tuple[float, float, int]:
    """``(peak RSS in MiB, wall seconds, exit status)`` of ``cmd`` run as a child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t, proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[60.0, 600.0], help="video lengths")
    p.add_argument("--size", type=int, nargs=2, default=(340, 256), metavar=("W", "H"))
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--clips", type=int, default=10, help="clips per video in the test pipeline (I3D: 10)")
    p.add_argument("--short-side", type=int, default=256, help="Resize short side and ThreeCrop size (I3D: 256)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/actionkit_recognize_memory"))
    args = p.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    config, ckpt = write_config_and_checkpoint(args.work_dir, args.clips, args.short_side)
    rows = []
    for seconds in args.seconds:
        video = args.work_dir / f"synthetic_{seconds:g}s_{args.size[0]}x{args.size[1]}_{args.fps}fps.mp4"
        if not video.exists():
            t = time.perf_counter()
            frames = write_synthetic_video(video, seconds, tuple(args.size), args.fps)
            print(f"wrote {video} ({frames} frames) in {time.perf_counter() - t:.1f} s", flush=True)
        frames = int(round(seconds * args.fps))
        cmd = [sys.executable, "-m", "actionkit", "recognize", str(video), "--config", str(config),
               "--checkpoint", str(ckpt), "--num-workers", "0"]
        rss, wall, _ = peak_rss_of(cmd)
        decoded_mib = frames * args.size[0] * args.size[1] * 3 / 2 ** 20
        rows.append((seconds, frames, video.stat().st_size / 2 ** 20, decoded_mib, rss, wall))
    print(f"\ntest pipeline: {args.clips} clips x 32 frames, short side {args.short_side}, ThreeCrop "
          f"{args.short_side}; tiny I3D, random weights")
    print("\n| video | frames | file MiB | all frames decoded MiB | peak RSS MiB | wall s |")
    print("|---|---|---|---|---|---|")
    for seconds, frames, file_mib, decoded_mib, rss, wall in rows:
        print(f"| {seconds:g} s {args.size[0]}x{args.size[1]} {args.fps} fps | {frames} | {file_mib:.1f} | "
              f"{decoded_mib:.0f} | {rss:.0f} | {wall:.1f} |")
    if len(rows) > 1:
        ratio = rows[-1][4] / rows[0][4]
        print(f"\npeak RSS {rows[-1][0]:g} s / {rows[0][0]:g} s: {ratio:.3f} (goal: within 1.2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
