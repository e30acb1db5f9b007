"""Throughput of the i3d_r50_32x2x1 data pipelines on 340x256 synthetic input.

Measures, for mp4 videos (PyAV reader; x264 with a short and a Kinetics-like long GOP) and JPEG frame
folders:

* bare decoding of the frames the pipeline samples (``reader.get_frames`` only, main process);
* the train pipeline  SampleFrames(32,2,1) -> decode -> Resize(-1,256) -> MultiScaleCrop(224,(1,.8))
  -> Resize(224,224) -> Flip(0.5) -> Normalize -> FormatShape('NCTHW') -> Collect -> ToTensor;
* the test pipeline   SampleFrames(32,2,10,test_mode) -> decode -> Resize(-1,256) -> ThreeCrop(256)
  -> Normalize -> FormatShape -> Collect -> ToTensor  (one item = 10 clips x 3 crops = 30 views);

through a ``torch.utils.data.DataLoader`` (batch 1, the engine's loader dataset and collate,
``engine.loaders.loader_data``, and default prefetching) with 1 and 2 workers (one torch and one OpenCV thread per
process, the main process included), timing what a training step receives, in the steady state (see
``loader_rate``).  Three placements of ``Normalize``:

* ``uint8 to the device (normalised there)`` (the engine's default on a GPU): workers send uint8 clips (the
  pipeline without its ``Normalize``); the main process copies each batch once, as ``pin_memory`` does, and the
  accelerator applies the ``BatchNormalize`` after the device copy, so no CPU of this machine normalises (the copy
  into a reused buffer stands in for pinning);
* ``uint8, normalised in main`` (the engine's default on a CPU): the main process applies the
  ``BatchNormalize`` (``engine.test.prepare_batch``) on the CPU, alongside the workers;
* ``normalised in worker``: the configured pipeline, ``Normalize`` included; workers send float32 clips
  (``data.defer_normalize=False``).

``overhead vs decode`` = per-clip time through the loader / per-clip bare decode time - 1 (the decode of
the pipeline's own reader: pyav for mp4, cv2 for JPEG).  Each loader run is paired with the mean of the bare
decode runs just before and just after it (so that both see the same speed of a shared machine, which was seen
to drift by 50 % over minutes), and the overhead is the median over ``--repeat`` rounds; clips/s and CPU ms/clip
are the best of the rounds.  The rounds interleave the rows.  ``CPU ms/clip`` adds up the CPU time of the main
process and its workers (load-independent as far as the work goes; on a busy machine the wall-clock figures also
depend on what the other processes leave to ours).  Prints a table; ``clips/s`` counts 32-frame clips (a test
item holds 10 clips, each read once and cropped 3 times).

    python benchmarks/data_pipeline.py [--data-dir DIR] [--videos 6] [--frames 250] [--train-items 24]
                                       [--test-items 6] [--workers 1 2] [--gops 12 250] [--repeat 5]
                                       [--pipelines train test] [--inputs mp4 jpeg]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from actionkit.data.decode import FrameFolderReader, open_video
from actionkit.data.kinetics import RawframeDataset, VideoDataset
from actionkit.data.pipeline import Compose
from actionkit.data.preprocess import split_normalize
from actionkit.synthetic.kinetics import render_clip, write_frame_folder, write_video
from actionkit.engine.test import prepare_batch
from actionkit.engine.loaders import loader_data

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
    cv2.setNumThreads(1)


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux ``/proc``, clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# what the main process does with each batch: key -> (Normalize after the copy, main-process work, row name)
STAGES = {
    "device": (True, "copy", "full pipeline, uint8 to the device (normalised there)"),
    "main": (True, "normalise", "full pipeline, uint8, normalised in main"),
    "worker": (False, "check", "full pipeline, normalised in worker"),
}


def _ready_batches(it) -> int:
    """Batches the workers have finished and the main process has not taken yet (torch's private state: the
    result queue and the out-of-order buffer); 0 where that cannot be read."""
    try:
        return it._data_queue.qsize() + sum(len(v) == 2 for v in it._task_info.values())
    except (AttributeError, NotImplementedError):
        return 0


def loader_rate(ds, workers: int, items: int, stage: str) -> tuple[float, float]:
    """(batches per second, CPU seconds per batch of the main process and its workers together) in the steady
    state: over ``items`` batches taken by the main process after as many as the loader keeps in flight.  Batches
    the workers had finished before the window and still held at its start (a head start, when the main process
    was slow on its first batches) are not counted as made in it: the rate is that of the slower side, batches
    made by the workers in the window (``items`` + ready at the end - ready at the start) when they are the
    bottleneck, ``items`` taken when the main process is (then as many are ready at both ends).

    What the main process does with a batch (``STAGES``): ``normalise`` the uint8 clip on the CPU
    (``prepare_batch``, as a CPU-only training step does), ``copy`` it into a reused buffer (the stand-in for a
    GPU step: ``pin_memory`` copies the uint8 batch into page-locked memory, the device copy and the
    normalisation then run on the accelerator), or ``check`` the float32 batch of the workers.
    """
    defer, main_work, _ = STAGES[stage]
    cpu = torch.device("cpu")
    in_flight = workers * 2 if workers else 1  # DataLoader's default prefetch_factor, as the engine uses it
    data = loader_data(ds, 0, defer)
    assert (data.batch_normalize is not None) == defer
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=1,
                                         shuffle=False, num_workers=workers, collate_fn=data.collate_fn,
                                         worker_init_fn=_worker_init,
                                         sampler=[i % len(ds) for i in range(2 * in_flight + items)])
    it = iter(loader)
    pids = [w.pid for w in getattr(it, "_workers", [])]  # torch's worker processes (a private attribute)
    staging: dict[tuple, torch.Tensor] = {}

    def cpu_seconds() -> tuple[float, float]:
        return time.process_time(), sum(_process_cpu_seconds(pid) for pid in pids)

    for n, batch in enumerate(it, start=1):
        if main_work == "copy":
            clip = batch["imgs"]
            assert clip.dtype == torch.uint8
            if tuple(clip.shape) not in staging:
                staging[tuple(clip.shape)] = torch.empty_like(clip)
            staging[tuple(clip.shape)].copy_(clip)
            del clip
        else:
            batch = prepare_batch(batch, cpu)
            assert batch["imgs"].dtype == torch.float32
        del batch
        if n == in_flight:
            t0, c0, r0 = time.perf_counter(), cpu_seconds(), _ready_batches(it)
        elif n == in_flight + items:
            t1, c1, r1 = time.perf_counter(), cpu_seconds(), _ready_batches(it)
            break
    del it  # shuts the workers down
    made = max(1, items + r1 - r0) if workers else items
    main_cpu, worker_cpu = c1[0] - c0[0], c1[1] - c0[1]
    return min(items, made) / (t1 - t0), main_cpu / items + worker_cpu / made


def decode_jobs(pipeline_cfg: list[dict], paths: list[str], total_frames: int, items: int,
                start_index: int) -> list[tuple[str, np.ndarray]]:
    """(path, 0-based frame indices) of ``items`` draws of the pipeline's sampler."""
    sampler = Compose([pipeline_cfg_sampler(pipeline_cfg)])
    jobs = []
    for i in range(items):
        res = sampler(dict(total_frames=total_frames, start_index=start_index, modality="RGB"))
        jobs.append((paths[i % len(paths)], res["frame_inds"] - start_index))
    return jobs


def bare_decode_seconds(make_reader, jobs: list[tuple[str, np.ndarray]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one pass of reader.get_frames over the jobs."""
    c, t = time.process_time(), time.perf_counter()
    for path, inds in jobs:
        r = make_reader(path)
        r.get_frames(inds)
        r.close()
    return time.perf_counter() - t, time.process_time() - c


def warm_page_cache(folder: str) -> None:
    """Read every file under ``folder`` once: what is timed is decoding, not the disk.  (Some machines reclaim
    idle page cache within minutes: a cold 30 KB JPEG was measured at 6 ms to read, a warm one at 0.01 ms.)"""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def pipeline_cfg_sampler(cfg: list[dict]) -> dict:
    return next(c for c in cfg if c["type"] == "SampleFrames")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "actionkit_bench_data"))
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--train-items", type=int, default=24)
    p.add_argument("--test-items", type=int, default=6)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gops", type=int, nargs="+", default=[12, 250])
    p.add_argument("--repeat", type=int, default=5, help="rounds (overheads: median; clips/s: best)")
    p.add_argument("--pipelines", nargs="+", choices=("train", "test"), default=["train", "test"])
    p.add_argument("--inputs", nargs="+", choices=("mp4", "jpeg"), default=["mp4", "jpeg"])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_start = os.getloadavg()[0]
    root = Path(args.data_dir)
    make_data(root, args.videos, args.frames, args.gops)

    sources = [(f"mp4 gop{g}", "video", str(root / f"gop{g}_list.txt"), str(root / f"gop{g}")) for g in args.gops
               if "mp4" in args.inputs]
    if "jpeg" in args.inputs:
        sources.append(("jpeg", "rawframes", str(root / "rawframes_list.txt"), str(root / "rawframes")))
    rows = []
    for name, kind, ann, prefix in sources:
        for mode, cfg_fn, items in (("train", train_pipeline, args.train_items),
                                    ("test", test_pipeline, args.test_items)):
            if mode not in args.pipelines:
                continue
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
            jobs = decode_jobs(cfg, paths, args.frames, max(items, 4), start)
            ds_cls = VideoDataset if kind == "video" else RawframeDataset
            ds = ds_cls(ann, cfg, data_prefix=prefix)
            assert split_normalize(ds.pipeline.transforms)[1] is not None
            loaders = [(w, stage) for w in args.workers for stage in STAGES]
            decode_s = {rname: [float("inf"), float("inf")] for rname, _ in readers}  # best wall, best CPU
            loader_best = {key: [0.0, float("inf")] for key in loaders}  # best items/s, best CPU s/item
            paired = {key: [] for key in loaders}  # per round: (overhead, CPU overhead) vs the decode around it

            def decode_pass(rname, mk):
                # two passes: the first one after a loader run pays the copy-on-write faults that forking its
                # workers left on this process's memory, which a bare decoder would not
                warm_page_cache(prefix)
                best = [float("inf"), float("inf")]
                for _ in range(2):
                    wall, cpu_s = bare_decode_seconds(mk, jobs)
                    best = [min(best[0], wall), min(best[1], cpu_s)]
                decode_s[rname] = [min(decode_s[rname][0], best[0]), min(decode_s[rname][1], best[1])]
                return best

            for _ in range(args.repeat):  # rounds interleave all rows, so that they see the same load
                for rname, mk in readers[1:]:
                    decode_pass(rname, mk)
                # the pipeline's own reader before the first loader run, between runs and after the last: each
                # loader run is paired with the mean of the decode runs just before and just after it
                passes = [decode_pass(*readers[0])]
                runs = []
                for key in loaders:
                    warm_page_cache(prefix)
                    ips, cpu_s = loader_rate(ds, key[0], items, key[1])
                    runs.append((key, ips, cpu_s))
                    passes.append(decode_pass(*readers[0]))
                for (key, ips, cpu_s), before, after in zip(runs, passes, passes[1:]):
                    wall, dec_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
                    loader_best[key] = [max(loader_best[key][0], ips), min(loader_best[key][1], cpu_s)]
                    paired[key].append((len(jobs) / wall / ips - 1, cpu_s / (dec_cpu / len(jobs)) - 1))
            nframes = sum(len(inds) for _, inds in jobs)
            for rname, _ in readers:
                wall, cpu_s = decode_s[rname]
                rows.append((name, mode, f"decode only ({rname})", "-", len(jobs) / wall * clips_per_item,
                             nframes / wall, None, 1000 * cpu_s / len(jobs) / clips_per_item, None))
            for (w, stage), (ips, cpu_s) in loader_best.items():
                overhead, cpu_overhead = np.median(np.array(paired[(w, stage)]), axis=0)
                rows.append((name, mode, STAGES[stage][2], str(w), ips * clips_per_item, float("nan"), overhead,
                             1000 * cpu_s / clips_per_item, cpu_overhead))
            print(f"done {name} {mode}", file=sys.stderr)

    print(f"\ni3d_r50_32x2x1 data pipelines, 340x256 input, {args.videos} clips x {args.frames} frames, "
          f"{os.cpu_count()} cores, torch and OpenCV threads 1 per process, load average {load_start:.2f} at the "
          f"start, {os.getloadavg()[0]:.2f} at the end; clips/s and CPU ms/clip: best of {args.repeat} interleaved "
          "rounds; overheads: median over the rounds of each loader run vs the bare decode runs just before and "
          "after it")
    print("clips/s: 32-frame clips per second (a test item = 10 clips x 3 crops); frames/s: frames returned by "
          "the reader (duplicates included); overhead vs decode: per-clip time / bare decode time - 1; CPU ms/clip: "
          "CPU time of the main process and the workers together (load-independent: the work done, whether "
          "or not processes overlap), and its overhead vs the bare decode's CPU time\n")
    print("| input | pipeline | stage | workers | clips/s | frames/s | overhead vs decode | CPU ms/clip "
          "| CPU overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mode, stage, w, cps, fps, overhead, cpu_ms, cpu_overhead in rows:
        fps_s = "-" if fps != fps else f"{fps:,.0f}"
        over_s = "-" if overhead is None else f"{100 * overhead:.0f} %"
        cpu_over_s = "-" if cpu_overhead is None else f"{100 * cpu_overhead:.0f} %"
        print(f"| {name} | {mode} | {stage} | {w} | {cps:.2f} | {fps_s} | {over_s} | {cpu_ms:.1f} | {cpu_over_s} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
