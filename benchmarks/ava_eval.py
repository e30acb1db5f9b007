"""Benchmark the AVA frame-mAP evaluation on AVA-val-sized files.

Generates (seeded, cached under --workdir) a ground-truth csv of ~276k rows over 64 videos x 897 keyframes, and a
detection csv of ~3.2M rows shaped like MMAction2 output: every proposal box near a GT person (plus false boxes)
with many classes per box and 3-decimal scores (so scores tie), classes from all 80 AVA ids while the label map holds
the 60 evaluated ones. Then times reading (the two csvs concurrently, as ``frame_map`` / ``eval-ava`` read them)
+ evaluating in a fresh process per run (the modes interleaved) and prints the wall and CPU times (process time of
all threads) and the peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of that process.

    python benchmarks/ava_eval.py [--workdir /tmp/ava_eval_bench] [--scale 1.0] [--modes mmaction official]
                                  [--repeat N] [--baseline DIR] [--compare-parsers]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_mod
import resource
import sys
import time
from pathlib import Path

import numpy as np

EVAL_IDS = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37, 38, 41,
            43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73, 74,
            76, 77, 78, 79, 80]


def _fmt3(v: np.ndarray) -> list[str]:
    return [f"{x:.3f}" for x in v.tolist()]


def generate(workdir: Path, scale: float = 1.0, seed: int = 0) -> tuple[Path, Path, Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"s{scale:g}_seed{seed}"
    gt_p, det_p = workdir / f"gt_{tag}.csv", workdir / f"det_{tag}.csv"
    lm_p, ex_p = workdir / "labels.pbtxt", workdir / f"excluded_{tag}.csv"
    if all(p.exists() for p in (gt_p, det_p, lm_p, ex_p)):
        return gt_p, det_p, lm_p, ex_p
    rng = np.random.default_rng(seed)
    lm_p.write_text("".join(f'item {{\n  name: "action {i}"\n  id: {i}\n}}\n' for i in EVAL_IDS))
    n_vid = max(1, int(round(64 * scale)))
    vids = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"), 11))
            for _ in range(n_vid)]
    ts = np.arange(902, 1799)
    # long-tailed class prior over the 80 ids (AVA-like)
    prior = 1.0 / np.arange(1, 81) ** 1.1
    prior = prior[rng.permutation(80)]
    prior /= prior.sum()

    gt_lines, det_lines, ex_lines = [], [], []
    for v, vid in enumerate(vids):
        nk = len(ts)
        n_person = rng.integers(1, 6, nk)  # 1..5 persons per keyframe
        tot_p = int(n_person.sum())
        x1 = rng.random(tot_p) * 0.7
        y1 = rng.random(tot_p) * 0.5
        w = 0.08 + rng.random(tot_p) * 0.25
        h = 0.25 + rng.random(tot_p) * 0.45
        pbox = np.round(np.stack([x1, y1, np.minimum(x1 + w, 1), np.minimum(y1 + h, 1)], 1), 3)
        pkey = np.repeat(np.arange(nk), n_person)
        pid = np.concatenate([np.arange(k) for k in n_person])
        n_act = rng.choice([1, 2, 3], tot_p, p=[0.5, 0.4, 0.1])  # ~1.6 actions per person -> ~276k GT rows
        acts = []
        for p in range(tot_p):
            t = f"{vid},{ts[pkey[p]]:04d},{pbox[p, 0]:.3f},{pbox[p, 1]:.3f},{pbox[p, 2]:.3f},{pbox[p, 3]:.3f}"
            a_p = rng.choice(80, n_act[p], replace=False, p=prior) + 1
            acts.append(a_p)
            for a in a_p.tolist():
                gt_lines.append(f"{t},{a},{pid[p]}\n")
        if v % 16 == 0:
            for k in rng.choice(nk, 3, replace=False):
                ex_lines.append(f"{vid},{ts[k]:04d}\n")
        # detections: jittered GT persons + 1 false box per keyframe; ~14 classes per box
        jit = np.clip(pbox + rng.normal(0, 0.015, pbox.shape), 0, 1)
        fx, fy = rng.random(nk) * 0.7, rng.random(nk) * 0.5
        fbox = np.stack([fx, fy, fx + 0.2, fy + 0.4], 1)
        dbox = np.round(np.concatenate([jit, fbox]), 3)
        dbox[:, 2:] = np.maximum(dbox[:, 2:], dbox[:, :2])
        dkey = np.concatenate([pkey, np.arange(nk)])
        truth = acts + [np.zeros(0, np.int64)] * nk
        order = np.argsort(dkey, kind="stable")
        dbox, dkey = dbox[order], dkey[order]
        n_cls = rng.integers(6, 22, len(dkey))
        for b in range(len(dkey)):
            t = f"{vid},{ts[dkey[b]]},{dbox[b, 0]:.3f},{dbox[b, 1]:.3f},{dbox[b, 2]:.3f},{dbox[b, 3]:.3f}"
            cls = np.union1d(rng.choice(80, n_cls[b], replace=False, p=prior) + 1, truth[order[b]])
            sc = rng.random(len(cls)) ** 3  # mostly low scores -> many 3-decimal ties
            true = np.isin(cls, truth[order[b]])
            sc[true] = 0.2 + 0.8 * rng.random(int(true.sum()))  # the person's GT actions score higher
            sc = np.maximum(sc, 0.002)
            for a, s in zip(cls.tolist(), _fmt3(sc)):
                det_lines.append(f"{t},{a},{s}\n")
    gt_p.write_text("".join(gt_lines))
    det_p.write_text("".join(det_lines))
    ex_p.write_text("".join(ex_lines))
    return gt_p, det_p, lm_p, ex_p


def _measure(args, queue):
    gt_p, det_p, lm_p, ex_p, mode, tree = args
    if tree is not None:  # another checkout's actionkit (--baseline): first on the path of this fresh process
        sys.path.insert(0, str(tree))
    from actionkit.evaluation import ava_map

    if tree is not None and not Path(ava_map.__file__).resolve().is_relative_to(tree):
        raise RuntimeError(f"--baseline {tree}: actionkit was imported from {ava_map.__file__}")
    t_imp = time.perf_counter()
    import polars  # noqa: F401 - the csv reader's library, imported on first use: timed apart, like numpy's import
    imp = time.perf_counter() - t_imp
    c0, t0 = time.process_time(), time.perf_counter()
    cats, ids = ava_map.read_labelmap(lm_p)
    if hasattr(ava_map, "read_inputs"):  # what frame_map / eval-ava do
        gt, det, excluded = ava_map.read_inputs(gt_p, det_p, ids, ex_p, mode)
    else:  # a baseline from before read_inputs: its frame_map read one file after the other
        gt = ava_map.read_ava_csv(gt_p, "gt", mode, ids)
        det = ava_map.read_ava_csv(det_p, "det", mode, ids)
        excluded = ava_map.read_exclusions(ex_p, mode)
    t1, c1 = time.perf_counter(), time.process_time()
    evaluate_rows = ava_map.evaluate_rows
    res = evaluate_rows(gt, det, cats, excluded, mode)
    t2, c2 = time.perf_counter(), time.process_time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB on Linux
    queue.put(dict(mode=mode, tree="baseline" if tree is not None else "this tree", imp=imp, read=t1 - t0, read_cpu=c1 - c0, evaluate=t2 - t1, evaluate_cpu=c2 - c1,
                   total=t2 - t0, cpu=c2 - c0, rss=rss, mAP=res.mAP, det_rows=det.num_rows, gt_rows=gt.num_rows))


def _run_measure(ctx, args) -> dict:
    """One measurement in a fresh process; a process that dies without a result is reported, not waited on."""
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(args, q))
    p.start()
    while True:
        try:
            r = q.get(timeout=1.0)
            break
        except queue_mod.Empty:
            if not p.is_alive():
                raise RuntimeError(f"the measuring process exited with code {p.exitcode} without a result "
                                   "(is actionkit importable?)") from None
    p.join()
    return r


def compare_parsers(det_p: Path, rounds: int = 3) -> None:
    """Wall time of parsing the detection csv alone with polars (the reader's dependency) and with pyarrow (when
    installed), the two libraries considered for it; medians of ``rounds`` runs in this process."""
    cols = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score"]
    import polars as pl

    def run_polars():
        pl.read_csv(det_p, has_header=False, new_columns=cols, quote_char=None,
                    schema_overrides={"video_id": pl.String, "timestamp": pl.Int64})

    runs = [("polars", run_polars)]
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        def run_pyarrow():
            pacsv.read_csv(det_p, read_options=pacsv.ReadOptions(column_names=cols),
                           convert_options=pacsv.ConvertOptions(column_types={"video_id": pa.string()}))

        runs.append(("pyarrow", run_pyarrow))
    except ImportError:
        print("pyarrow is not installed: only polars is timed")
    print("\n| csv parser | parse det file (s, median) |\n|---|---|")
    for name, fn in runs:
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        print(f"| {name} | {sorted(times)[len(times) // 2]:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/ava_eval_bench")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 64 videos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="+", default=["mmaction", "official"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--baseline", metavar="DIR",
                    help="a directory holding another version's actionkit/ package (e.g. a `git worktree` of an "
                         "earlier commit): each run is repeated with it, alternately, and the ratios are printed")
    ap.add_argument("--compare-parsers", action="store_true",
                    help="also time the bare csv parse with polars and pyarrow (the libraries considered)")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    gt_p, det_p, lm_p, ex_p = generate(Path(args.workdir), args.scale, args.seed)
    n_det = sum(1 for _ in open(det_p, "rb"))
    n_gt = sum(1 for _ in open(gt_p, "rb"))
    print(f"files: {gt_p} ({n_gt} rows), {det_p} ({n_det} rows, {det_p.stat().st_size / 2**20:.0f} MiB); "
          f"ready in {time.perf_counter() - t:.1f} s")
    ctx = mp.get_context("spawn")
    load = os.getloadavg()
    trees = [None] + ([Path(args.baseline).resolve()] if args.baseline else [])
    rows = []
    for _ in range(args.repeat):  # modes (and trees) interleaved, so that a change of machine load touches all
        for mode in args.modes:
            for tree in trees:
                rows.append(_run_measure(ctx, (gt_p, det_p, lm_p, ex_p, mode, tree)))
    rows.sort(key=lambda r: (args.modes.index(r["mode"]), r["tree"] != "this tree"))
    print(f"\nload average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after: "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("\n| tree | mode | import polars (s) | read GT + det (s) | evaluate (s) | read + evaluate wall (s) "
          "| read CPU (s) | evaluate CPU (s) | read + evaluate CPU (s) | peak RSS (MiB) | mAP |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tree']} | {r['mode']} | {r['imp']:.2f} | {r['read']:.2f} | {r['evaluate']:.2f} | "
              f"{r['total']:.2f} | {r['read_cpu']:.2f} | {r['evaluate_cpu']:.2f} | {r['cpu']:.2f} | {r['rss']:.0f} "
              f"| {r['mAP']:.9f} |")
    print("(wall times include waiting for the CPU when the machine is shared; CPU = process time of all threads)")
    if args.baseline:
        print("\n| mode | median wall, this tree / baseline | median CPU, this tree / baseline | mAP difference |")
        print("|---|---|---|---|")
        for mode in args.modes:
            mine = [r for r in rows if r["mode"] == mode and r["tree"] == "this tree"]
            base = [r for r in rows if r["mode"] == mode and r["tree"] == "baseline"]
            med = lambda rs, k: float(np.median([r[k] for r in rs]))  # noqa: E731
            print(f"| {mode} | {med(mine, 'total') / med(base, 'total'):.3f} | {med(mine, 'cpu') / med(base, 'cpu'):.3f} "
                  f"| {max(abs(a['mAP'] - b['mAP']) for a in mine for b in base):.1e} |")
    if args.compare_parsers:
        compare_parsers(det_p)
    print(f"\nmachine: {os.cpu_count()} cpus, python {sys.version.split()[0]}, numpy {np.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
