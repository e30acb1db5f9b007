"""``actionkit benchmark CONFIG...``: the command line of :mod:`actionkit.benchmark`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from .. import benchmark
from ..benchmark import format_table, run_benchmark


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionkit benchmark", description=benchmark.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="*", help="one or more config files")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--channels-last", action="store_true", help="channels_last_3d memory format")
    p.add_argument("--fast", action="store_true",
                   help="time the inference fast path (actionkit/engine/fast.py; the first call compiles)")
    p.add_argument("--train-step", action="store_true", help="time forward+backward+SGD step instead of test")
    p.add_argument("--views", type=int, help="override the number of test views (e.g. 2 on CPU)")
    p.add_argument("--clip-len", type=int, help="override the clip length")
    p.add_argument("--size", type=int, help="override the spatial size")
    p.add_argument("--batch-size", type=int, help="train-step batch size (default: videos_per_gpu)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="discarded warm-up iterations (default 5)")
    p.add_argument("--proposals", type=int, default=8, help="RoIs per keyframe for detectors")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--cfg-options", nargs="+", default=None, help="override config values: key=value")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument("--table-from", nargs="+", metavar="JSON", default=None,
                   help="print one table of the rows of these --json files and exit (configs are ignored)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.table_from:
        rows = []
        for path in a.table_from:
            try:
                loaded = json.loads(Path(path).read_text())
                rows.extend(loaded)
                format_table(loaded)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                p.error(f"{path}: not a file of rows written by --json ({type(exc).__name__}: {exc})")
        print(format_table(rows))
        return 0
    if not a.config:
        p.error("give one or more config files (or --table-from)")
    rows = []
    for cfg in a.config:
        rows.append(run_benchmark(cfg, a.device, a.amp, a.channels_last, a.train_step, a.views, a.clip_len,
                                  a.size, a.batch_size, a.iters, a.warmup, a.proposals, a.cfg_options, a.threads,
                                  fast=a.fast))
    print(format_table(rows))
    if a.json:
        from ..utils import atomic_save_text

        atomic_save_text(a.json, json.dumps(rows, indent=2))
    return 0
