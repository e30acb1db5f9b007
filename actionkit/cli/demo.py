"""``actionkit demo [--out demo_out]``: synthetic AVA data -> train SlowOnly -> test -> mAP, video and chart."""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

from .. import demo
from ..demo import DEMO_DATA, _data_ready, demo_config, proposal_recall, render_predictions


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="actionkit demo", description=demo.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the training run")
    p.add_argument("--epochs", type=int, default=None, help="override total_epochs of the demo config")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: half the cores)")
    p.add_argument("--num-train", type=int, default=DEMO_DATA["num_train"],
                   help=f"synthetic training videos (default {DEMO_DATA['num_train']})")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override values of the demo config, e.g. data.train.pipeline.0.clip_len=8")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    # Half the cores for compute, the rest for the data-loader workers: oversubscribing a 2-core
    # machine made training steps many times slower (measured).
    torch.set_num_threads(a.threads or max(1, (os.cpu_count() or 2) // 2))
    from ..synthetic.ava import make_ava
    from ..engine.entry import config_to_python, test_main, train_main
    from ..evaluation.ava_map import frame_map
    from ..utils import atomic_save_text
    from ..visualize import bar_chart_png

    start = time.time()
    out = Path(a.out).resolve()
    data_dir = out / "data"
    data_args = dict(DEMO_DATA, num_train=a.num_train)
    if _data_ready(data_dir, a.seed, data_args):
        print(f"[1/4] synthetic AVA data: reusing {data_dir}")
    else:
        print(f"[1/4] writing synthetic AVA-format data to {data_dir}")
        make_ava(data_dir, seed=a.seed, **data_args)
    cfg, info = demo_config(data_dir, a.epochs, a.cfg_options)
    work = out / "work_dir"
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "demo_config.py"
    atomic_save_text(cfg_path, config_to_python(cfg))
    final_ckpt = work / f"epoch_{cfg.total_epochs}.pth"
    if final_ckpt.is_file():
        print(f"[2/4] training: reusing {final_ckpt}")
    else:
        print(f"[2/4] training a SlowOnly detector for {cfg.total_epochs} epochs (CPU, {torch.get_num_threads()} threads)")
        resume = ["--resume-from", str(work / "latest.pth")] if (work / "latest.pth").is_file() else []
        train_main([str(cfg_path), "--work-dir", str(work), "--validate", "--seed", str(a.seed), "--deterministic",
                    *resume])
    results_csv = out / "results.csv"
    print(f"[3/4] testing {final_ckpt.name} -> {results_csv}")
    test_main([str(cfg_path), str(final_ckpt), "--eval", "mAP", "--out", str(results_csv)])
    res = frame_map(cfg.data.val.ann_file, results_csv, cfg.data.val.label_file, cfg.data.val.exclude_file)
    val = cfg.data.val
    recall = proposal_recall(val.ann_file, val.proposal_file, val.exclude_file, val.get("person_det_score_thr", 0.0))
    print(f"\nframe mAP@0.5 on the validation keyframes: {res.mAP:.4f}  (the person proposals with score >= "
          f"{val.get('person_det_score_thr', 0.0)} cover {recall:.1%} of the people at IoU 0.5)")
    width = max(len(n) for n in res.names.values())
    for cid, ap in res.per_class.items():
        print(f"  {res.names[cid].ljust(width)}  AP {ap:.4f}  ({res.num_gt.get(cid, 0)} GT boxes)")
    atomic_save_text(out / "metrics.json", json.dumps(res.to_json(), indent=2))
    print("[4/4] drawing predictions and the per-class AP chart")
    chart = out / "per_class_ap.png"
    bar_chart_png([res.names[c] for c in res.per_class], list(res.per_class.values()), chart,
                  title=f"Per-class AP@0.5 (frame mAP {res.mAP:.3f})")
    videos = render_predictions(results_csv, data_dir, info, out)
    print(f"\nwrote: {results_csv}\n       {out / 'metrics.json'}\n       {chart}")
    for v in videos:
        print(f"       {v}")
    print(f"done in {time.time() - start:.0f} s")
    return 0
