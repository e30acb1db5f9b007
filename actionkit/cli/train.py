"""``actionkit train CONFIG [...]`` = ``python tools/train.py CONFIG [...]``: MMAction2 0.x ``tools/train.py``.

Parses the command line, loads the config (``--cfg-options`` applied) and calls
:func:`actionkit.engine.run.train`.  Under torchrun: ``torchrun --nproc_per_node N tools/train.py CONFIG
--launcher pytorch`` (``--local_rank`` / ``--local-rank`` from torch.distributed.launch are accepted).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..config import load_config
from ..engine import run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train a recognizer / detector")
    p.add_argument("config", help="train config file path")
    p.add_argument("--work-dir", help="the dir to save logs and models")
    p.add_argument("--resume-from", help="the checkpoint file to resume from")
    p.add_argument("--validate", action="store_true", help="whether to evaluate the checkpoint during training")
    p.add_argument("--test-last", action="store_true", help="test the final checkpoint after training")
    p.add_argument("--test-best", action="store_true", help="test the best checkpoint (evaluation.save_best)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpus", type=int, help="(ignored: one process per device; use torchrun)")
    g.add_argument("--gpu-ids", type=int, nargs="+", help="(ignored: one process per device; use torchrun)")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms / cudnn")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override config entries, e.g. data.videos_per_gpu=4")
    p.add_argument("--launcher", choices=list(run.LAUNCHERS), default="none", help="job launcher")
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=0)
    p.add_argument("--auto-scale-lr", action="store_true", help="scale lr by total batch / base batch")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last_3d weights (config: channels_last=True); on CPU use it with --amp")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    cfg = load_config(args.config, args.cfg_options)
    run.train(cfg, work_dir=args.work_dir, resume_from=args.resume_from, validate=args.validate,
              test_last=args.test_last, test_best=args.test_best, seed=args.seed, deterministic=args.deterministic,
              launcher=args.launcher, local_rank=args.local_rank, auto_scale_lr=args.auto_scale_lr, amp=args.amp,
              channels_last=args.channels_last, gpus=args.gpus, gpu_ids=args.gpu_ids)
    return 0
