"""``actionkit demo [--out demo_out]``: synthetic AVA data -> train SlowOnly -> test -> mAP, video and chart.

Parses the command line and calls :func:`actionkit.demo.run_demo`."""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

from .. import demo


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionkit demo", description=demo.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the training run")
    p.add_argument("--epochs", type=int, default=None, help="override total_epochs of the demo config")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: half the cores)")
    p.add_argument("--num-train", type=int, default=demo.DEMO_DATA["num_train"],
                   help=f"synthetic training videos (default {demo.DEMO_DATA['num_train']})")
    p.add_argument("--precision", choices=demo.PRECISIONS, default="fp32",
                   help="fp32 (default), or bf16 autocast + channels-last: about 2x faster on a CPU with "
                        "avx512_bf16 / AMX, lower mAP (BENCHMARKS.md)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override values of the demo config, e.g. data.train.pipeline.0.clip_len=8")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(a.threads or demo.default_threads())
    demo.run_demo(a.out, seed=a.seed, epochs=a.epochs, num_train=a.num_train, cfg_options=a.cfg_options,
                  precision=a.precision)
    return 0
