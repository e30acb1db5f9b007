#!/usr/bin/env python
"""Do long-term feature banks and ACRN help where they should?  An end-to-end check on synthetic data.

The synthetic AVA generator (``actionkit.synthetic.ava``) with ``extra_groups=('relation', 'event', 'flash')``
adds

* an **event** class ("flash 5-25 s before or after"): the label depends on a scene-wide flash 5-25 s away from the
  keyframe, far outside any clip: only long-term context (a feature bank covering +-25 s) can see it;
* **relation** classes ("cross": walking while another person walks the other way; "watch": standing while another
  person spins): they need what the *other* people do, which a RoI feature alone does not show (ACRN pairs the
  actor with every place of the feature map);
* a short-term **flash** class ("lit by a flash"), so that the baseline learns to see flashes and its feature bank
  records them.

This script writes that data, then trains and tests, with the configs of ``configs/detection/synthetic/``:

1. the plain SlowOnly baseline (``slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py``);
2. LFB-NL, LFB-avg, LFB-max through ``actionkit lfb`` (:func:`actionkit.engine.lfb_workflow.run_lfb_workflow`):
   the baseline infers the train and val banks once, each LFB model is trained (initialised from the baseline,
   ``--init-from-baseline``) and tested;
3. ACRN (``slowonly_acrn_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py``), initialised from the baseline as well;
4. a control, "baseline-ft": the baseline config trained on from the baseline checkpoint for the same number of
   epochs as the LFB / ACRN models (they all start from the baseline, so they get more training than it);

and prints frame AP@0.5 per class group (event, relation, motion, attribute, all) on the validation videos and
the wall time of every model.  Everything goes to ``--root`` (default ``work_dirs/lfb_acrn_proof``); a rerun
reuses finished steps (delete the folder to start over).  ``--threads 1`` (the default) keeps torch to one
thread, which is much faster than two on a busy 2-core machine (OpenMP threads spin while they wait).

    python benchmarks/lfb_acrn_proof.py [--root DIR] [--seed 0] [--epochs 8] [--lfb-epochs 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CFG_DIR = REPO / "configs" / "detection" / "synthetic"
BASELINE_CFG = CFG_DIR / "slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py"
LFB_CFGS = {kind: CFG_DIR / f"lfb_{kind}_slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py" for kind in ("nl", "avg", "max")}
ACRN_CFG = CFG_DIR / "slowonly_acrn_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py"
DATA_DIR = Path("data/synthetic_ava_lt")          # relative to --root, as in the configs
GROUPS = ("event", "relation", "motion", "attribute", "flash")


def _quiet(enabled: bool):
    return contextlib.redirect_stdout(io.StringIO()) if enabled else contextlib.nullcontext()


def group_ap(results_csv: Path, data_dir: Path) -> dict:
    """Frame AP@0.5 per class group (mean over the group's classes with GT) on the val split."""
    from actionkit.evaluation.ava_map import frame_map

    info = json.loads((data_dir / "dataset_info.json").read_text())
    val = info["splits"]["val"]
    res = frame_map(data_dir / val["ann_file"], results_csv, data_dir / info["label_file"],
                    data_dir / val["exclude_file"])
    group_of = {c["id"]: c["group"] for c in info["classes"]}
    out = {}
    for g in GROUPS + ("all",):
        aps = [ap for cid, ap in res.per_class.items()
               if (g == "all" or group_of[cid] == g) and not math.isnan(ap)]
        out[g] = float(sum(aps) / len(aps)) if aps else float("nan")
    out["per_class"] = {res.names[c]: (None if math.isnan(ap) else float(ap)) for c, ap in res.per_class.items()}
    return out


def make_data(data_dir: Path, seed: int, num_train: int, num_val: int, num_keyframes: int,
              actors: tuple[int, int] = (3, 4), flashes: list[int] | None = None, flash_s: int = 1) -> float:
    from actionkit.synthetic.ava import FORMAT_VERSION, make_ava

    want = dict(seed=seed, num_train=num_train, num_val=num_val, num_keyframes=num_keyframes, actors=list(actors),
                format=FORMAT_VERSION, flashes=flashes, flash_s=flash_s)
    stamp = data_dir / "proof_params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        print(f"data: {data_dir} (reused)")
        return 0.0
    t0 = time.time()
    info = make_ava(data_dir, seed=seed, num_train=num_train, num_val=num_val, num_keyframes=num_keyframes,
                    actors=tuple(actors), write_videos=False,
                    extra_groups=("relation", "event", "flash"), flash_s=flash_s,
                    **({"flashes_per_video": (flashes, [1 / len(flashes)] * len(flashes))} if flashes else {}))
    stamp.write_text(json.dumps(want))
    print(f"data: {data_dir}: {info['splits']['train']['num_keyframes']} train / "
          f"{info['splits']['val']['num_keyframes']} val keyframes ({info['seconds']} s)")
    return time.time() - t0


def train_and_test(config: Path, work: Path, seed: int, options: list[str], quiet: bool) -> float | None:
    """tools/train.py --validate + tools/test.py on the final checkpoint; None when both were reused."""
    from actionkit.cli.test import main as test_main
    from actionkit.cli.train import main as train_main
    from actionkit.engine.lfb_workflow import checkpoint_status
    from actionkit.config import load_config
    from actionkit.engine.train import _max_epochs

    cfg = load_config(config, options or None)
    final = work / f"epoch_{_max_epochs(cfg)}.pth"
    results = work / "results.csv"
    opt = ["--cfg-options", *options] if options else []
    t0 = time.time()
    ran = False
    if not checkpoint_status(final)[0]:
        resume = ["--resume-from", str(work / "latest.pth")] if checkpoint_status(work / "latest.pth")[0] else []
        with _quiet(quiet):
            train_main([str(config), "--work-dir", str(work), "--validate", "--seed", str(seed), *opt, *resume])
        ran = True
    if not results.is_file():
        with _quiet(quiet):
            test_main([str(config), str(final), "--eval", "mAP", "--out", str(results), *opt])
        ran = True
    return time.time() - t0 if ran else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="work_dirs/lfb_acrn_proof", help="output folder (data, work dirs, proof.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=16, help="training videos")
    p.add_argument("--num-val", type=int, default=6, help="validation videos")
    p.add_argument("--num-keyframes", type=int, default=40, help="keyframes (seconds) per video")
    p.add_argument("--actors", type=int, nargs=2, default=[3, 4], metavar=("MIN", "MAX"), help="people per video")
    p.add_argument("--flashes", type=int, nargs="+", default=None, metavar="N",
                   help="flashes per video, drawn uniformly from these numbers (default: the generator's 0-2)")
    p.add_argument("--flash-seconds", type=int, default=1, help="length of a flash (odd; it lights that many "
                   "keyframes, so more keyframes show the short-term flash class)")
    p.add_argument("--epochs", type=int, default=None, help="baseline epochs (default: the config's)")
    p.add_argument("--lfb-epochs", type=int, default=None, help="LFB / ACRN epochs (default: the config's)")
    p.add_argument("--models", nargs="+", default=["ft", "nl", "avg", "max", "acrn"],
                   choices=["ft", "nl", "avg", "max", "acrn"],
                   help="models besides the baseline (ft: the baseline trained on for --lfb-epochs more epochs "
                        "from its checkpoint, like the LFB and ACRN models: the control for the extra training)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for every model and the bank inference (e.g. a smaller frame size)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    p.add_argument("--verbose", action="store_true", help="show the training / test logs")
    a = p.parse_args(argv)

    import torch

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    root = Path(a.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)                      # the configs' relative data / bank paths resolve under --root
    quiet = not a.verbose
    times_path = root / "times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}

    def record(name: str, seconds: float | None) -> None:
        if seconds is not None:
            times[name] = round(seconds, 1)
            times_path.write_text(json.dumps(times, indent=1))

    t_all = time.time()
    record("data", make_data(DATA_DIR, a.seed, a.num_train, a.num_val, a.num_keyframes, a.actors, a.flashes,
                             a.flash_seconds) or None)

    base_opts = ([f"total_epochs={a.epochs}"] if a.epochs else []) + a.cfg_options
    head_opts = ([f"total_epochs={a.lfb_epochs}"] if a.lfb_epochs else []) + a.cfg_options
    print(f"baseline: training + testing {BASELINE_CFG.name}", flush=True)
    record("baseline", train_and_test(BASELINE_CFG, Path("work_dirs/baseline"), a.seed, base_opts, quiet))
    from actionkit.config import load_config
    from actionkit.engine.train import _max_epochs

    base_epochs = _max_epochs(load_config(BASELINE_CFG, base_opts or None))
    baseline_ckpt = Path("work_dirs/baseline") / f"epoch_{base_epochs}.pth"

    from actionkit.engine.lfb_workflow import run_lfb_workflow

    if "ft" in a.models:
        print("baseline-ft: the baseline config trained on from the baseline checkpoint (control)", flush=True)
        record("baseline_ft", train_and_test(BASELINE_CFG, Path("work_dirs/baseline_ft"), a.seed,
                                             head_opts + [f"load_from={baseline_ckpt.resolve()}"], quiet))
    for kind in [m for m in a.models if m in LFB_CFGS]:
        print(f"lfb-{kind}: actionkit lfb {LFB_CFGS[kind].name} --baseline {baseline_ckpt} --init-from-baseline",
              flush=True)
        with _quiet(quiet):
            summary = run_lfb_workflow(LFB_CFGS[kind], baseline_ckpt, f"work_dirs/lfb_{kind}", head_opts,
                                       seed=a.seed, init_from_baseline=True)
        for step in ("bank_train", "bank_val"):
            if step in summary["seconds"]:
                record(step, summary["seconds"][step])
        if "train" in summary["seconds"] or "test" in summary["seconds"]:
            record(f"lfb_{kind}", summary["seconds"].get("train", 0) + summary["seconds"].get("test", 0))
        print(f"  ran {summary['ran'] or 'nothing'}, skipped {summary['skipped'] or 'nothing'}", flush=True)
    if "acrn" in a.models:
        print(f"acrn: training + testing {ACRN_CFG.name} (initialised from the baseline)", flush=True)
        record("acrn", train_and_test(ACRN_CFG, Path("work_dirs/acrn"), a.seed,
                                      head_opts + [f"load_from={baseline_ckpt.resolve()}"], quiet))

    rows = [("baseline (SlowOnly)", "baseline", Path("work_dirs/baseline/results.csv"))]
    if "ft" in a.models:
        rows.append(("baseline-ft (control)", "baseline_ft", Path("work_dirs/baseline_ft/results.csv")))
    rows += [(f"LFB-{k.upper() if k == 'nl' else k}", f"lfb_{k}", Path(f"work_dirs/lfb_{k}/results.csv"))
             for k in a.models if k in LFB_CFGS]
    if "acrn" in a.models:
        rows.append(("ACRN", "acrn", Path("work_dirs/acrn/results.csv")))
    table = {}
    for label, key, csv_path in rows:
        table[label] = group_ap(csv_path, DATA_DIR)
        table[label]["seconds"] = times.get(key)
    bank_s = sum(times.get(k, 0) for k in ("bank_train", "bank_val"))

    print(f"\nframe AP@0.5 per class group on the validation videos ({a.num_val} x {a.num_keyframes} keyframes; "
          f"{a.num_train} training videos; seed {a.seed}; torch threads {torch.get_num_threads()})\n")
    head = ("| model | event AP (10) | relation AP (8-9) | motion AP (1-5) | attribute AP (6-7) | flash AP (11) "
            "| all (mAP) | train+test wall s |")
    print(head)
    print("|" + "---|" * 8)
    for label, r in table.items():
        s = "-" if r["seconds"] is None else f"{r['seconds']:.0f}"
        print(f"| {label} | {r['event']:.3f} | {r['relation']:.3f} | {r['motion']:.3f} | {r['attribute']:.3f} | "
              f"{r['flash']:.3f} | {r['all']:.3f} | {s} |")
    print(f"\nbank inference (train + val, baseline checkpoint): {bank_s:.0f} s; data: {times.get('data', 0):.0f} s")
    refs = ["baseline (SlowOnly)"] + (["baseline-ft (control)"] if "ft" in a.models else [])
    deltas = {}
    for ref in refs:
        base = table[ref]
        for label, r in table.items():
            if label in refs:
                continue
            d = {"event": r["event"] - base["event"], "relation": r["relation"] - base["relation"]}
            deltas[f"{label} vs {ref}"] = d
            print(f"{label}: event AP {d['event']:+.3f}, relation AP {d['relation']:+.3f} vs {ref}")
    out = {"args": vars(a), "table": table, "deltas": deltas, "times": times,
           "total_seconds_this_run": round(time.time() - t_all, 1)}
    (root / "proof.json").write_text(json.dumps(out, indent=1))
    print(f"\nwrote {root / 'proof.json'} (this run: {time.time() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
