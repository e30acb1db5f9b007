"""``actionkit test CONFIG CHECKPOINT [...]`` = ``python tools/test.py CONFIG CHECKPOINT [...]``: MMAction2 0.x
``tools/test.py``.

Parses the command line, loads the config (``--cfg-options`` applied), calls :func:`actionkit.engine.run.test`
and prints the ``--eval`` metrics as ``name: value`` lines.  At least one of ``--out`` / ``--eval`` is required
(a usage error otherwise, as in MMAction2).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..config import load_config
from ..engine import run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="test.py", description="Test (and eval) a model")
    p.add_argument("config", help="test config file path")
    p.add_argument("checkpoint", help="checkpoint file")
    p.add_argument("--out", default=None, help="output result file (format chosen by the dataset)")
    p.add_argument("--fuse-conv-bn", action="store_true", help="fuse conv and bn (slightly faster)")
    p.add_argument("--eval", type=str, nargs="+", help="evaluation metrics, e.g. top_k_accuracy mean_class_accuracy mAP")
    p.add_argument("--gpu-collect", action="store_true", help="(accepted; results are gathered with all_gather_object)")
    p.add_argument("--tmpdir", help="(accepted; results are gathered with all_gather_object)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE", help="override config entries")
    p.add_argument("--average-clips", choices=[*run.AVERAGE_CLIPS, None], default=None,
                   help="average type when averaging test clips")
    p.add_argument("--launcher", choices=list(run.LAUNCHERS), default="none", help="job launcher")
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=0)
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--amp", action="store_true", help="mixed precision inference (autocast)")
    speed.add_argument("--fast", action="store_true",
                       help="inference fast path: folded BN, bf16 where native, channels_last_3d, torch.compile "
                            "(also config: inference = dict(fast=True); see actionkit/engine/fast.py)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.out and not args.eval:
        p.error('Please specify at least one operation (save or eval the results) with the argument '
                '"--out" or "--eval"')
    cfg = load_config(args.config, args.cfg_options)
    result = run.test(cfg, args.checkpoint, out=args.out or None, metrics=args.eval or (),
                      average_clips=args.average_clips, fuse_conv_bn=args.fuse_conv_bn, amp=args.amp, fast=args.fast,
                      launcher=args.launcher, local_rank=args.local_rank, gpu_collect=args.gpu_collect,
                      tmpdir=args.tmpdir)
    for line in run.metric_lines(result.metrics):
        print(line, flush=True)
    return 0


# ``main`` is imported into test modules as ``test_main``: keep pytest from collecting it there.
main.__test__ = False  # type: ignore[attr-defined]
