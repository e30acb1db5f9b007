"""``actionkit eval-ava``: AVA frame mAP@IoU of a detection csv (MMAction2 0.x rules, or ``--official``)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

import numpy as np

from ..data.ava_csv import AVAFormatError
from ..evaluation.ava_map import frame_map
from ..utils import atomic_write


def _fmt(x: float) -> str:
    return "nan" if x is None or np.isnan(x) else f"{x:.6f}"


def _iou_arg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return v


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="actionkit eval-ava", description="AVA frame mAP@0.5IoU of a detection csv.")
    p.add_argument("--gt", required=True, help="ground-truth csv (video,ts,x1,y1,x2,y2,action[,person])")
    p.add_argument("--det", required=True, help="detection csv (video,ts,x1,y1,x2,y2,action,score)")
    p.add_argument("--label-map", required=True, help="label map pbtxt (the evaluated classes)")
    p.add_argument("--exclude", default=None, help="csv of excluded video,timestamp keyframes")
    p.add_argument("--official", action="store_true",
                   help="ActivityNet get_ava_performance.py rules (top-50 per keyframe, unknown keyframes ignored)")
    p.add_argument("--iou", type=_iou_arg, default=0.5, help="IoU threshold in (0, 1] (default 0.5)")
    p.add_argument("--json", default=None, help="write the results as json here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    mode = "official" if args.official else "mmaction"
    try:
        res = frame_map(args.gt, args.det, args.label_map, args.exclude, mode, args.iou)
    except (AVAFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    thr = f"{args.iou:g}"
    print(f"mode: {mode}")
    print(f"mAP@{thr}IOU = {_fmt(res.mAP)}")
    for gname, v in res.groups.items():
        print(f"{gname:16s} AP = {_fmt(v)}")
    print(f"{'id':>4s}  {'num_gt':>7s}  {'AP':>9s}  name")
    for cid, ap in res.per_class.items():
        print(f"{cid:4d}  {res.num_gt[cid]:7d}  {_fmt(ap):>9s}  {res.names[cid]}")
    for k, v in res.stats.items():
        print(f"{k}: {v}")
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            json.dump(res.to_json(), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
