"""``actionkit demo``: the main job end to end on synthetic AVA-format data, on a CPU, in minutes.

1. writes synthetic AVA-format data (frame folders, csvs, label map, proposals; many short videos);
2. trains a small SlowOnly Fast-RCNN-style detector (configs/detection/synthetic/...);
3. tests it (``tools/test.py ... --eval mAP --out results.csv``) and prints frame mAP@0.5 and per-class AP;
4. draws the predictions on the validation keyframes (GIF + MP4) and a per-class AP bar chart (PNG).
Re-running reuses the data and a finished training run (delete the output folder to start over).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "detection" / "synthetic" / "slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py"
# make_ava arguments of the demo data: many short videos (many different actors: a small detector trained on a few
# long videos memorises the actors instead of learning their motion); 3-4 actors per video (each keyframe trains
# the RoI head on more people for the same backbone cost: measured +0.02-0.05 mAP over 2-3); 1 s margins are
# enough for 4x4 clips.
DEMO_DATA = dict(num_train=64, num_val=6, num_keyframes=10, margin_s=1, write_videos=False, actors=(3, 4))

log = logging.getLogger("actionkit.demo")


PRECISIONS = ("fp32", "bf16")


def training_precision(precision: str = "fp32") -> tuple[bool, str]:
    """``(train with bf16 autocast + channels_last_3d?, what it is, for the log line)``.

    ``fp32`` (the default) is the run whose figures BENCHMARKS.md records. ``bf16`` trains about twice as fast on
    a CPU that computes bfloat16 natively (``benchmarks/train_speed.py``: 1.99x at 1 thread; the whole demo 6 min
    instead of 10-11) but its recorded run reached mAP 0.799 (float32: 0.851 at 1 thread, 0.832 at 2 threads; runs
    that differ only in rounding differ by a few points here, and bf16 rounds most), just under the demo's 0.8
    target, so it is not the default. On a CPU without avx512_bf16 / AMX it is slower than float32 (``train``
    warns).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return (True, "bf16 autocast + channels-last") if precision == "bf16" else (False, "float32")


def default_threads() -> int:
    """Torch threads of a demo run: half the cores for compute, the rest for the data-loader workers
    (oversubscribing a 2-core machine made training steps many times slower)."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote and measured: the frame mAP@0.5 result on the validation keyframes
    (:class:`~actionkit.evaluation.ava_map.FrameMAPResult`), the proposal recall bounding it, and the files."""

    frame_map: Any
    proposal_recall: float
    results_csv: Path
    metrics_json: Path
    chart: Path
    videos: list[Path] = field(default_factory=list)


def run_demo(out: str | os.PathLike = "demo_out", *, seed: int = 0, epochs: int | None = None,
             num_train: int = DEMO_DATA["num_train"], cfg_options: Sequence[str] | None = None,
             precision: str = "fp32") -> DemoResult:
    """The demo end to end into the folder ``out`` (see the module docstring), printing each step.

    ``seed`` seeds the data and the (deterministic) training run; ``epochs`` overrides the config's
    ``total_epochs``; ``num_train`` is the number of synthetic training videos; ``cfg_options`` (``key=value``)
    are applied to the demo config last; ``precision`` is how the detector trains (:func:`training_precision`).
    Data of the same size and seed and a finished training run in ``out`` are reused; an interrupted training run
    resumes from ``out/work_dir/latest.pth``.
    """
    import torch

    from .config import config_to_python, load_config
    from .engine import run
    from .evaluation.ava_map import frame_map
    from .synthetic.ava import make_ava
    from .utils import atomic_save_text
    from .visualize import bar_chart_png

    start = time.time()
    bf16, precision_note = training_precision(precision)
    out = Path(out).resolve()
    data_dir = out / "data"
    data_args = dict(DEMO_DATA, num_train=num_train)
    if _data_ready(data_dir, seed, data_args):
        print(f"[1/4] synthetic AVA data: reusing {data_dir}")
    else:
        print(f"[1/4] writing synthetic AVA-format data to {data_dir}")
        make_ava(data_dir, seed=seed, **data_args)
    cfg, info = demo_config(data_dir, epochs, cfg_options)
    work = out / "work_dir"
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "demo_config.py"
    atomic_save_text(cfg_path, config_to_python(cfg))
    run_cfg = load_config(cfg_path)      # the run uses the file it leaves behind
    final_ckpt = work / f"epoch_{cfg.total_epochs}.pth"
    if final_ckpt.is_file():
        print(f"[2/4] training: reusing {final_ckpt}")
    else:
        print(f"[2/4] training a SlowOnly detector for {cfg.total_epochs} epochs "
              f"({torch.get_num_threads()} threads, {precision_note})")
        latest = work / "latest.pth"
        run.train(run_cfg, work_dir=work, validate=True, seed=seed, deterministic=True,
                  resume_from=latest if latest.is_file() else None, amp=bf16, channels_last=bf16)
    results_csv = out / "results.csv"
    print(f"[3/4] testing {final_ckpt.name} -> {results_csv}")
    tested = run.test(run_cfg, final_ckpt, out=results_csv, metrics=["mAP"])
    for line in run.metric_lines(tested.metrics):
        print(line, flush=True)
    res = frame_map(cfg.data.val.ann_file, results_csv, cfg.data.val.label_file, cfg.data.val.exclude_file)
    val = cfg.data.val
    recall = proposal_recall(val.ann_file, val.proposal_file, val.exclude_file, val.get("person_det_score_thr", 0.0))
    print(f"\nframe mAP@0.5 on the validation keyframes: {res.mAP:.4f}  (the person proposals with score >= "
          f"{val.get('person_det_score_thr', 0.0)} cover {recall:.1%} of the people at IoU 0.5)")
    width = max(len(n) for n in res.names.values())
    for cid, ap in res.per_class.items():
        print(f"  {res.names[cid].ljust(width)}  AP {ap:.4f}  ({res.num_gt.get(cid, 0)} GT boxes)")
    metrics_json = out / "metrics.json"
    atomic_save_text(metrics_json, json.dumps(res.to_json(), indent=2))
    print("[4/4] drawing predictions and the per-class AP chart")
    chart = out / "per_class_ap.png"
    bar_chart_png([res.names[c] for c in res.per_class], list(res.per_class.values()), chart,
                  title=f"Per-class AP@0.5 (frame mAP {res.mAP:.3f})")
    videos = render_predictions(results_csv, data_dir, info, out)
    print(f"\nwrote: {results_csv}\n       {metrics_json}\n       {chart}")
    for v in videos:
        print(f"       {v}")
    print(f"done in {time.time() - start:.0f} s")
    return DemoResult(res, recall, results_csv, metrics_json, chart, videos)


def _data_ready(data_dir: Path, seed: int | None = None, data_args: dict | None = None) -> bool:
    """True when ``data_dir`` holds a complete synthetic set of the demo's size (and ``seed``, if given)."""
    data_args = data_args or DEMO_DATA
    info = data_dir / "dataset_info.json"
    if not info.is_file():
        return False
    meta = json.loads(info.read_text())
    from .synthetic.ava import FORMAT_VERSION

    if meta.get("format") != FORMAT_VERSION:      # written by an older generator: different data
        return False
    sizes_match = (len(meta["splits"]["train"]["videos"]) == data_args["num_train"]
                   and len(meta["splits"]["val"]["videos"]) == data_args["num_val"]
                   and len(meta["keyframes"]) == data_args["num_keyframes"]
                   and (seed is None or meta.get("seed") == seed))
    return sizes_match and all((data_dir / meta["splits"][s]["ann_file"]).is_file() for s in ("train", "val"))


def demo_config(data_dir: Path, epochs: int | None = None, cfg_options: Sequence[str] | None = None):
    """The demo config with its data paths pointed at ``data_dir`` (dataset args from dataset_info.json).

    ``cfg_options`` (``key=value`` strings, as ``--cfg-options``) are applied last, so experiments such as
    ``data.train.pipeline.0.clip_len=8`` are plain command lines.
    """
    from .config import apply_cfg_options, load_config

    cfg = load_config(DEMO_CONFIG)
    info = json.loads((data_dir / "dataset_info.json").read_text())
    for split, name in (("train", "train"), ("val", "val"), ("test", "val")):
        s = info["splits"][name]
        d = cfg.data[split]
        d.ann_file = str(data_dir / s["ann_file"])
        d.exclude_file = str(data_dir / s["exclude_file"])
        d.proposal_file = str(data_dir / s["proposal_file_npz"])
        d.label_file = str(data_dir / info["label_file"])
        d.data_prefix = str(data_dir / info["rawframes_dir"])
        for k, v in info["dataset_args"].items():
            if k in ("fps", "timestamp_start", "timestamp_end", "num_classes", "filename_tmpl", "start_index"):
                d[k] = v
    cfg.model.roi_head.bbox_head.num_classes = info["dataset_args"]["num_classes"]
    if epochs is not None:
        cfg.total_epochs = epochs
    if cfg_options:
        apply_cfg_options(cfg, cfg_options, cfg.filename)
    return cfg, info


def _read_results(path: Path) -> dict[str, list[tuple[list[float], int, float]]]:
    out: dict[str, list] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 8:
                continue
            key = f"{row[0]},{int(row[1]):04d}"
            out[key].append(([float(x) for x in row[2:6]], int(row[6]), float(row[7])))
    return out


def proposal_recall(ann_file: str | os.PathLike, proposal_file: str | os.PathLike,
                    exclude_file: str | os.PathLike | None, score_thr: float, iou_thr: float = 0.5) -> float:
    """Fraction of the annotated people that a proposal with score >= ``score_thr`` covers at IoU >= ``iou_thr``.

    The detector only classifies the given proposals, so a person no proposal covers can never be detected: this
    recall bounds the attainable frame AP of every class.
    """
    import torch

    from .data.ava import read_ava_csv, read_exclusions
    from .data.ava_proposals import load_proposals
    from .models.roi import bbox_overlaps

    excluded = read_exclusions(exclude_file)
    people = {(r.video_id, r.timestamp, r.box) for r in read_ava_csv(ann_file)
              if (r.video_id, r.timestamp) not in excluded}
    proposals = load_proposals(proposal_file)
    found = 0
    for vid, ts, box in people:
        p = proposals.get(f"{vid},{ts:04d}", np.zeros((0, 5)))
        p = p[p[:, 4] >= score_thr]
        iou = bbox_overlaps(torch.from_numpy(p[:, :4]), torch.tensor([box], dtype=torch.float64))
        found += bool((iou >= iou_thr).any())
    return found / max(1, len(people))


def render_predictions(results_csv: Path, data_dir: Path, info: dict, out_dir: Path, thr: float = 0.5,
                       max_keyframes: int = 24) -> list[Path]:
    """Draw predicted boxes + labels (score >= thr) on the validation keyframes: a GIF and an MP4."""
    import cv2

    from .visualize import draw_boxes, save_gif, save_mp4

    names = {c["id"]: c["name"] for c in info["classes"]}
    dets = _read_results(results_csv)
    fps, t0 = info["fps"], info["timestamp_start"]
    frames = []
    for key in sorted(dets)[:max_keyframes]:
        vid, ts = key.split(",")
        idx = fps * (int(ts) - t0) + 1
        img_path = data_dir / info["rawframes_dir"] / vid / info["filename_tmpl"].format(idx)
        img = cv2.imread(str(img_path))
        if img is None:
            continue
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        by_box: dict[tuple, list[str]] = defaultdict(list)
        for box, label, score in sorted(dets[key], key=lambda r: -r[2]):
            if score >= thr:
                by_box[tuple(box)].append(f"{names.get(label, label)} {score:.2f}")
        boxes = list(by_box)
        frame = draw_boxes(img, boxes, ["\n".join(v[:2]) for v in by_box.values()], normalized=True, scale=3)
        from PIL import ImageDraw

        ImageDraw.Draw(frame).text((4, frame.height - 14), key, fill=(255, 255, 255))
        frames.append(frame)
    written = []
    if frames:
        gif, mp4 = out_dir / "predictions.gif", out_dir / "predictions.mp4"
        save_gif(frames, gif, fps=2)
        written.append(gif)
        try:
            save_mp4(frames, mp4, fps=2)
            written.append(mp4)
        except Exception as exc:  # an FFmpeg build without libx264: the GIF is enough
            log.warning("could not write %s: %s", mp4, exc)
    return written
