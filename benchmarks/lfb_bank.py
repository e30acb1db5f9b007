#!/usr/bin/env python
"""Long-term feature bank: actionkit's memory-mapped bank vs MMAction2's torch-saved pickle.

Builds an AVA-sized synthetic bank (default 430,000 x 2048 float16 = 1.65 GB, over 299 videos x 897
seconds, like AVA train+val) in both formats, then reports:

* open/load time and resident memory (RSS, PSS from /proc/self/smaps_rollup, minus the reader's own
  baseline after imports) for 1 and 4 concurrent reader processes (spawned, loading at the same time
  like DDP ranks or data-loader workers), right after loading and after every feature has been read once;
* per-batch long-term feature sampling time (``--batch`` RoIs, spec §4.11 rule) for the vectorised
  ``FeatureBank.sample_batch`` (random and deterministic modes) and for MMAction2's per-RoI Python loop
  over the unpickled dict.

The page cache is warmed first (both files read once), so the load times are warm-cache times.
Usage: ``python benchmarks/lfb_bank.py [--features 430000] [--channels 2048] [--readers 1 4]``.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIRST_SEC, LAST_SEC = 902, 1798          # AVA keyframe seconds (inclusive)


def smaps() -> dict[str, int]:
    """Rss / Pss (+ anon/file split) of this process in bytes."""
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].rstrip(":") in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def build_index(n_features: int, n_videos: int, seed: int):
    rng = np.random.default_rng(seed)
    n_secs = LAST_SEC - FIRST_SEC + 1
    slots = np.bincount(rng.integers(0, n_videos * n_secs, n_features), minlength=n_videos * n_secs)
    present = np.flatnonzero(slots)
    video_of = present // n_secs
    seconds = (present % n_secs + FIRST_SEC).astype(np.int64)
    video_offsets = np.searchsorted(video_of, np.arange(n_videos + 1)).astype(np.int64)
    second_offsets = np.zeros(len(present) + 1, np.int64)
    np.cumsum(slots[present], out=second_offsets[1:])
    video_ids = [f"vid{i:04d}_{'abcdefghijk'[i % 11] * 6}" for i in range(n_videos)]
    return video_ids, video_offsets, seconds, second_offsets


def feature_chunks(n: int, c: int, seed: int, rows: int = 8192):
    rng = np.random.default_rng(seed + 1)
    for i in range(0, n, rows):
        m = min(rows, n - i)
        yield rng.standard_normal((m, c), dtype=np.float32).astype(np.float16)


def build_pickle(bank_dir: Path, out: Path) -> None:
    import torch

    from actionkit.data.feature_bank import FeatureBank
    fb = FeatureBank.open(bank_dir)
    p = fb.parts[0]
    feats = np.asarray(p.features)
    d: dict[str, dict[int, list]] = {}
    for vi, vid in enumerate(p.video_ids):
        per = d[vid] = {}
        for i in range(int(p.video_offsets[vi]), int(p.video_offsets[vi + 1])):
            a, b = int(p.second_offsets[i]), int(p.second_offsets[i + 1])
            per[int(p.seconds[i])] = [torch.from_numpy(feats[j].copy()) for j in range(a, b)]
    torch.save(d, out)


def warm(path: Path) -> None:
    files = [path] if path.is_file() else sorted(path.iterdir())
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def reader(kind: str, path: str, barrier, queue) -> None:
    import torch

    from actionkit.data.feature_bank import FeatureBank
    torch.set_num_threads(1)
    base = smaps()
    barrier.wait()
    t0 = time.perf_counter()
    if kind == "mmap":
        bank = FeatureBank.open(path)
    else:
        bank = torch.load(path, map_location="cpu", weights_only=True)
    t_load = time.perf_counter() - t0
    barrier.wait()                       # everyone has loaded: measure while all are alive
    m_load = smaps()
    barrier.wait()
    t0 = time.perf_counter()
    if kind == "mmap":                   # read every feature once (what a full epoch eventually touches)
        total = 0
        for part in bank.parts:      # touch one byte per 4 KiB page: maps every page of the bank
            for i in range(0, part.num_features, 65536):
                total += int(np.asarray(part.features[i:i + 65536]).view(np.uint8).reshape(-1)[::4096].sum())
    else:
        total = 0                        # an unpickled dict is resident already
    t_scan = time.perf_counter() - t0
    barrier.wait()
    m_full = smaps()
    barrier.wait()
    queue.put({"kind": kind, "t_load": t_load, "t_scan": t_scan,
               "rss_load": m_load["Rss"] - base["Rss"], "pss_load": m_load["Pss"] - base["Pss"],
               "rss_full": m_full["Rss"] - base["Rss"], "pss_full": m_full["Pss"] - base["Pss"]})
    barrier.wait()


def run_readers(kind: str, path: Path, n: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    procs = [ctx.Process(target=reader, args=(kind, str(path), barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    res = [queue.get() for _ in range(n)]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"reader exited with {p.exitcode}")
    return res


def mmaction_style_sample(lfb: dict, video_id: str, t: int, window: int = 60, k: int = 5):
    """MMAction2 0.x LFB.sample_long_term_features on the unpickled dict (for timing)."""
    import torch
    video_features = lfb[video_id]
    start = t - window // 2
    lt = torch.zeros(window * k, next(iter(video_features.values()))[0].shape[0])
    for idx, sec in enumerate(range(start, start + window)):
        if sec in video_features:
            n = len(video_features[sec])
            sel = np.random.choice(range(n), min(n, k), replace=False)
            for j, s in enumerate(sel):
                lt[idx * k + j] = video_features[sec][s]
    return lt


def fmt_mb(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=430_000, help="number of features N (AVA: ~430k)")
    ap.add_argument("--channels", type=int, default=2048)
    ap.add_argument("--videos", type=int, default=299)
    ap.add_argument("--readers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--batch", type=int, default=16, help="RoIs per sampled batch")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--workdir", default=None, help="where to build the banks (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built banks")
    ap.add_argument("--no-pickle", action="store_true", help="skip the MMAction2 pickle side")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from actionkit.data.feature_bank import FeatureBank
    from actionkit.data.feature_bank_writer import write_feature_bank_arrays
    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lfb_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    bank_dir, pkl = work / "lfb_train", work / "lfb_train.pkl"
    N, C = args.features, args.channels
    try:
        t0 = time.perf_counter()
        vids, vo, secs, so = build_index(N, args.videos, args.seed)
        write_feature_bank_arrays(bank_dir, feature_chunks(N, C, args.seed), vids, vo, secs, so, channels=C)
        t_build = time.perf_counter() - t0
        size_bank = sum(f.stat().st_size for f in bank_dir.iterdir())
        t_pkl = size_pkl = None
        if not args.no_pickle:
            t0 = time.perf_counter()
            build_pickle(bank_dir, pkl)
            t_pkl = time.perf_counter() - t0
            size_pkl = pkl.stat().st_size
        warm(bank_dir)
        if not args.no_pickle:
            warm(pkl)

        rows = []
        for n in args.readers:
            for kind, path in (("mmap", bank_dir), ("pickle", pkl)):
                if kind == "pickle" and args.no_pickle:
                    continue
                res = run_readers(kind, path, n)
                rows.append((kind, n, res))

        # sampling, in this process
        fb = FeatureBank.open(bank_dir)
        opens = []
        for _ in range(5):
            t0 = time.perf_counter()
            FeatureBank.open(bank_dir)
            opens.append(time.perf_counter() - t0)
        rng = np.random.default_rng(args.seed + 2)
        batches = [[(vids[int(rng.integers(len(vids)))], int(rng.integers(FIRST_SEC, LAST_SEC + 1)))
                    for _ in range(args.batch)] for _ in range(args.batches)]
        batches = [[(v, t) for v, t in b if v in fb] for b in batches]

        def timeit(fn) -> float:
            fn(batches[0])  # warm-up
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            return (time.perf_counter() - t0) / len(batches) * 1e3

        t_rand = timeit(lambda b: fb.sample_batch(b))
        t_det = timeit(lambda b: fb.sample_batch(b, deterministic=True))
        t_mm = None
        if not args.no_pickle:
            lfb = torch.load(pkl, map_location="cpu", weights_only=True)
            t_mm = timeit(lambda b: torch.stack([mmaction_style_sample(lfb, v, t) for v, t in b]))
            del lfb

        print(f"\nLFB bank benchmark: N={N:,} features x C={C} float16, {args.videos} videos, "
              f"{int(secs.shape[0]):,} stored seconds; warm page cache; {os.cpu_count()} CPUs")
        print(f"bank dir {fmt_mb(size_bank)} MB written in {t_build:.1f} s"
              + ("" if t_pkl is None else f"; MMAction2 pickle {fmt_mb(size_pkl)} MB written in {t_pkl:.1f} s"))
        print(f"FeatureBank.open (validated) in this process: median {statistics.median(opens) * 1e3:.1f} ms\n")
        print("| format | readers | load s (mean / max) | RSS after load MB/proc | PSS after load MB total "
              "| full read s | RSS after full read MB/proc | PSS after full read MB total |")
        print("|---|---|---|---|---|---|---|---|")
        for kind, n, res in rows:
            name = "actionkit mmap dir" if kind == "mmap" else "MMAction2 torch pickle"
            tl = [r["t_load"] for r in res]
            print(f"| {name} | {n} | {statistics.mean(tl):.3f} / {max(tl):.3f} "
                  f"| {fmt_mb(statistics.mean(r['rss_load'] for r in res))} "
                  f"| {fmt_mb(sum(r['pss_load'] for r in res))} "
                  f"| {statistics.mean(r['t_scan'] for r in res):.2f} "
                  f"| {fmt_mb(statistics.mean(r['rss_full'] for r in res))} "
                  f"| {fmt_mb(sum(r['pss_full'] for r in res))} |")
        print(f"\n| sampling ({args.batch} RoIs -> [{args.batch}, 300, {C}] float32) | ms / batch |")
        print("|---|---|")
        print(f"| FeatureBank.sample_batch, random | {t_rand:.1f} |")
        print(f"| FeatureBank.sample_batch, deterministic (seeded per RoI) | {t_det:.1f} |")
        if t_mm is not None:
            print(f"| MMAction2-style per-RoI loop over the unpickled dict | {t_mm:.1f} |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
