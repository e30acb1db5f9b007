"""Throughput of the i3d_r50_32x2x1 data pipelines on 340x256 synthetic input.

Measures, for mp4 videos (PyAV reader; x264 with a short and a Kinetics-like long GOP) and JPEG frame
folders:

* bare decoding of the frames the pipeline samples (``reader.get_frames`` only, main process);
* the train pipeline  SampleFrames(32,2,1) -> decode -> Resize(-1,256) -> MultiScaleCrop(224,(1,.8))
  -> Resize(224,224) -> Flip(0.5) -> Normalize -> FormatShape('NCTHW') -> Collect -> ToTensor;
* the test pipeline   SampleFrames(32,2,10,test_mode) -> decode -> Resize(-1,256) -> ThreeCrop(256)
  -> Normalize -> FormatShape -> Collect -> ToTensor  (one item = 10 clips x 3 crops = 30 views);

through a ``torch.utils.data.DataLoader`` (batch 1) with 1 and 2 workers (one torch thread each).
Prints a table; ``clips/s`` counts 32-frame clips (a test item holds 10 clips, each read once and
cropped 3 times).

    python benchmarks/data_pipeline.py [--data-dir DIR] [--videos 6] [--frames 250] [--train-items 24]
                                       [--test-items 3] [--workers 1 2] [--gops 12 250]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from actionkit.data.collate import collate_recognition
from actionkit.data.decode import FrameFolderReader, open_video
from actionkit.data.kinetics import RawframeDataset, VideoDataset
from actionkit.data.pipeline import Compose
from actionkit.data.synthetic_kinetics import render_clip, write_frame_folder, write_video

NORM = dict(type="Normalize", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)
TAIL = [dict(type="FormatShape", input_format="NCTHW"),
        dict(type="Collect", keys=["imgs", "label"], meta_keys=[]),
        dict(type="ToTensor", keys=["imgs", "label"])]


def train_pipeline(kind: str) -> list[dict]:
    sample = dict(type="SampleFrames", clip_len=32, frame_interval=2, num_clips=1)
    decode = ([dict(type="DecordInit"), sample, dict(type="DecordDecode")] if kind == "video"
              else [sample, dict(type="RawFrameDecode")])
    return decode + [dict(type="Resize", scale=(-1, 256)),
                     dict(type="MultiScaleCrop", input_size=224, scales=(1, 0.8), random_crop=False,
                          max_wh_scale_gap=0),
                     dict(type="Resize", scale=(224, 224), keep_ratio=False),
                     dict(type="Flip", flip_ratio=0.5), NORM] + TAIL


def test_pipeline(kind: str) -> list[dict]:
    sample = dict(type="SampleFrames", clip_len=32, frame_interval=2, num_clips=10, test_mode=True)
    decode = ([dict(type="DecordInit"), sample, dict(type="DecordDecode")] if kind == "video"
              else [sample, dict(type="RawFrameDecode")])
    return decode + [dict(type="Resize", scale=(-1, 256)), dict(type="ThreeCrop", crop_size=256), NORM] + TAIL


def make_data(root: Path, videos: int, frames: int, gops: list[int]) -> None:
    """Write ``videos`` 340x256 clips as mp4 (one file per GOP) and as JPEG folders, plus the lists."""
    marker = root / f"done_{videos}_{frames}_{'_'.join(map(str, gops))}"
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    t = time.time()
    for i in range(videos):
        clip = render_clip(np.random.default_rng(rng.integers(2 ** 62)), i % 4, 4, (340, 256), frames)
        for g in gops:
            write_video(root / f"gop{g}" / f"v{i:03d}.mp4", clip, gop=g)
        write_frame_folder(root / "rawframes" / f"v{i:03d}", clip)
    for g in gops:
        (root / f"gop{g}_list.txt").write_text("".join(f"v{i:03d}.mp4 {i % 4}\n" for i in range(videos)))
    (root / "rawframes_list.txt").write_text("".join(f"v{i:03d} {frames} {i % 4}\n" for i in range(videos)))
    marker.write_text("ok\n")
    print(f"generated {videos} clips of {frames} frames at 340x256 in {time.time() - t:.1f} s", file=sys.stderr)


def _worker_init(_):
    torch.set_num_threads(1)


def loader_rate(ds, workers: int, items: int) -> float:
    """Items per second after the first item (worker start-up excluded)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=1, shuffle=False, num_workers=workers,
                                         collate_fn=collate_recognition, worker_init_fn=_worker_init,
                                         prefetch_factor=1 if workers else None,
                                         sampler=[i % len(ds) for i in range(items + 1)])
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    n = 0
    for batch in it:
        n += 1
        del batch
    dt = time.perf_counter() - t
    return n / dt


def bare_decode_rate(make_reader, paths: list[str], pipeline_cfg: list[dict], total_frames: int,
                     items: int, start_index: int) -> tuple[float, float]:
    """(items/s, frames/s) of reader.get_frames on the indices the sampler of the pipeline draws (best of 3)."""
    sampler = Compose([pipeline_cfg_sampler(pipeline_cfg)])
    jobs = []
    for i in range(items):
        res = sampler(dict(total_frames=total_frames, start_index=start_index, modality="RGB"))
        jobs.append((paths[i % len(paths)], res["frame_inds"]))
    best = float("inf")
    nframes = sum(len(inds) for _, inds in jobs)
    for _ in range(3):  # best of 3: the machine is shared
        t = time.perf_counter()
        for path, inds in jobs:
            r = make_reader(path)
            r.get_frames(inds - start_index)
            r.close()
        best = min(best, time.perf_counter() - t)
    return items / best, nframes / best


def pipeline_cfg_sampler(cfg: list[dict]) -> dict:
    return next(c for c in cfg if c["type"] == "SampleFrames")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "actionkit_bench_data"))
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--train-items", type=int, default=24)
    p.add_argument("--test-items", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gops", type=int, nargs="+", default=[12, 250])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.data_dir)
    make_data(root, args.videos, args.frames, args.gops)

    sources = [(f"mp4 gop{g}", "video", str(root / f"gop{g}_list.txt"), str(root / f"gop{g}")) for g in args.gops]
    sources.append(("jpeg", "rawframes", str(root / "rawframes_list.txt"), str(root / "rawframes")))
    rows = []
    for name, kind, ann, prefix in sources:
        for mode, cfg_fn, items in (("train", train_pipeline, args.train_items),
                                    ("test", test_pipeline, args.test_items)):
            cfg = cfg_fn(kind)
            clips_per_item = 10 if mode == "test" else 1
            if kind == "video":
                paths = [os.path.join(prefix, f"v{i:03d}.mp4") for i in range(args.videos)]
                readers = [("pyav", lambda pth: open_video(pth, "pyav"))]
                if mode == "train" and name.endswith(f"gop{args.gops[0]}"):
                    readers.append(("opencv", lambda pth: open_video(pth, "opencv")))
                start = 0
            else:
                paths = [os.path.join(prefix, f"v{i:03d}") for i in range(args.videos)]
                readers = [("cv2", lambda pth: FrameFolderReader(pth, num_frames=args.frames))]
                start = 1
            for rname, mk in readers:
                ips, fps = bare_decode_rate(mk, paths, cfg, args.frames, max(items, 4), start)
                rows.append((name, mode, f"decode only ({rname})", "-", ips * clips_per_item, fps))
            ds_cls = VideoDataset if kind == "video" else RawframeDataset
            ds = ds_cls(ann, cfg, data_prefix=prefix)
            for w in args.workers:
                ips = loader_rate(ds, w, items)
                rows.append((name, mode, "full pipeline", str(w), ips * clips_per_item, float("nan")))
            print(f"done {name} {mode}", file=sys.stderr)

    print(f"\ni3d_r50_32x2x1 data pipelines, 340x256 input, {args.videos} clips x {args.frames} frames, "
          f"{os.cpu_count()} cores, torch threads 1 per process, load average {os.getloadavg()[0]:.1f}")
    print("clips/s: 32-frame clips per second (a test item = 10 clips x 3 crops); frames/s: frames returned by "
          "the reader (duplicates included)\n")
    print(f"| input | pipeline | stage | workers | clips/s | frames/s |")
    print(f"|---|---|---|---|---|---|")
    for name, mode, stage, w, cps, fps in rows:
        fps_s = "-" if fps != fps else f"{fps:,.0f}"
        print(f"| {name} | {mode} | {stage} | {w} | {cps:.2f} | {fps_s} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
