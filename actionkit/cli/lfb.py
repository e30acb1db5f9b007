"""``actionkit lfb CONFIG --baseline CKPT``: the whole Long-Term Feature Bank workflow (infer banks, train, test)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from ..engine.lfb_workflow import _say, run_lfb_workflow


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="actionkit lfb",
        description="Long-Term Feature Bank workflow for an LFB config (FBOHead shared head): infer the train "
                    "and val banks with the baseline checkpoint, train the LFB model (--validate), test it "
                    "(--eval mAP --out). Valid outputs of earlier runs are kept, so an interrupted run resumes.")
    p.add_argument("config", help="LFB config (e.g. configs/detection/lfb/lfb_nl_...py)")
    p.add_argument("--baseline", required=True, help="baseline detector checkpoint used to infer the banks")
    p.add_argument("--work-dir", help="work dir of the LFB model (default: the config's work_dir)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override config entries (applied to bank inference, training and testing)")
    p.add_argument("--seed", type=int, default=None, help="training seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic training")
    p.add_argument("--init-from-baseline", action="store_true",
                   help="initialise the LFB model from the baseline checkpoint (load_from; the new heads are "
                        "reported as missing / size-mismatched and keep their init)")
    p.add_argument("--out", help="results csv (default: WORK_DIR/results.csv)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    t0 = time.time()
    summary = run_lfb_workflow(args.config, args.baseline, args.work_dir, args.cfg_options, args.seed,
                               args.init_from_baseline, args.deterministic, args.out)
    _say(f"finished in {time.time() - t0:.1f} s: ran {summary['ran'] or 'nothing'}, "
         f"skipped {summary['skipped'] or 'nothing'}; results {summary['results']}")
    return 0

