"""``actionkit recognize VIDEO_OR_FOLDER_OR_LIST ... --config CFG --checkpoint CKPT``: top-k actions per video.

Each input is a video file, a frame folder, or a list file (``.txt`` / ``.lst`` / ``.list``: one path per line,
``#`` comments and blank lines skipped, relative paths taken from the list's folder).  The inputs go through
the engine's test loader (``--batch-size`` videos per forward, ``--num-workers`` decoding processes) with the
config's test pipeline, exactly as ``tools/test.py`` runs it; a tqdm bar shows the progress on a terminal.
An input that cannot be read (missing, not a video, corrupt, an empty folder) is reported by name and counted,
and the others go on.  ``--out`` writes every input's top-k and full score vector (``.json``) or one row per
input (``.csv``) atomically.

Exit status: 0 when at least one input was recognised (unreadable ones are listed on stderr and in ``--out``),
1 when none was, 2 for a usage error; setup errors (config, checkpoint, unknown zoo name, a checkpoint for
another number of classes) raise, and the ``actionkit`` dispatcher prints them in one line.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..inference.recognition import (InputError, RecognitionInputs, build_recognition_loader, class_names_of,
                                     forward_batch, init_recognizer, top_k_predictions)
from ..utils import atomic_save_text

LIST_SUFFIXES = (".txt", ".lst", ".list")
OUT_SUFFIXES = (".json", ".csv")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionkit recognize",
                                description="Recognise the actions in videos or frame folders (top-k classes "
                                            "per input, scored with the config's test pipeline).")
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER_OR_LIST",
                   help="video files, frame folders, or list files (.txt/.lst/.list, one path per line)")
    p.add_argument("--config", default=None,
                   help="model config (a file or a model-zoo name); optional when --checkpoint is a zoo name")
    p.add_argument("--checkpoint", required=True, help="checkpoint: a file, an http(s) URL or a model-zoo name")
    p.add_argument("--top-k", type=int, default=5, help="classes to print per input (default 5)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    p.add_argument("--batch-size", type=int, default=1, help="videos per forward pass (default 1)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="decoding processes (default: the config's workers_per_gpu, 0 for a single input)")
    p.add_argument("--average-clips", choices=["prob", "score"], default=None,
                   help="how the views of a video are averaged (default: the config's test_cfg)")
    p.add_argument("--label-map", default=None,
                   help="class names: a shipped map (kinetics400, sthv1) or a file with one name per line "
                        "(default: the names of the config's dataset, else class_<k>)")
    p.add_argument("--out", default=None, help="write every input's predictions to a .json or .csv file")
    p.add_argument("--fast", action="store_true",
                   help="inference fast path: bf16 where native, channels_last_3d, torch.compile "
                        "(actionkit/engine/fast.py)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE", help="override config entries")
    return p


# --------------------------------------------------------------------------------------------- inputs
def read_list_file(path: Path) -> list[str]:
    """The paths listed in ``path`` (one per line; ``#`` comments and blank lines skipped), relative ones
    taken from the list's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the list file ({e})") from e
    out = []
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            out.append(entry if os.path.isabs(entry) else str(path.parent / entry))
    if not out:
        raise InputError(f"{path}: the list file names no videos")
    return out


def expand_inputs(args: Sequence[str]) -> list[str]:
    """Command-line inputs with list files replaced by the paths they hold (other paths kept as given)."""
    out: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            out.extend(read_list_file(path))
        else:
            out.append(arg)
    return out


def default_workers(cfg: Any, num_inputs: int) -> int:
    if num_inputs <= 1:
        return 0
    data = cfg.get("data") or {}
    configured = (data.get("test_dataloader") or {}).get("workers_per_gpu", data.get("workers_per_gpu", 0))
    return max(0, min(int(configured or 0), num_inputs, os.cpu_count() or 1))


# --------------------------------------------------------------------------------------------- outputs
@dataclass
class Outcome:
    """One input's result: its score vector, or the reason it could not be read."""

    video: str
    scores: np.ndarray | None = None
    error: str | None = None
    top: list[tuple[int, str, float]] = field(default_factory=list)


def format_outcome(outcome: Outcome) -> str:
    lines = [f"{outcome.video}:"]
    for rank, (index, name, score) in enumerate(outcome.top, 1):
        lines.append(f"  {rank}. {name} [{index}]  {score:.4f}")
    return "\n".join(lines)


def outcomes_json(outcomes: Sequence[Outcome], meta: dict) -> str:
    videos = []
    for o in outcomes:
        if o.error is not None:
            videos.append({"video": o.video, "error": o.error})
        else:
            videos.append({"video": o.video,
                           "top_k": [{"index": i, "name": n, "score": s} for i, n, s in o.top],
                           "scores": [float(x) for x in o.scores]})
    return json.dumps({**meta, "videos": videos}, indent=1) + "\n"


def outcomes_csv(outcomes: Sequence[Outcome], top_k: int) -> str:
    num_classes = next((len(o.scores) for o in outcomes if o.scores is not None), 0)
    header = ["video", "error"]
    for r in range(1, top_k + 1):
        header += [f"top{r}_index", f"top{r}_name", f"top{r}_score"]
    header += [f"score_{k}" for k in range(num_classes)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for o in outcomes:
        if o.error is not None:
            writer.writerow([o.video, o.error] + [""] * (len(header) - 2))
            continue
        row: list[Any] = [o.video, ""]
        for r in range(top_k):
            row += list(o.top[r]) if r < len(o.top) else ["", "", ""]
        row += [repr(float(x)) for x in o.scores]
        writer.writerow(row)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- main
def recognize(model: Any, videos: Sequence[str], batch_size: int, num_workers: int, top_k: int,
              label_map: str | None = None) -> tuple[list[Outcome], list[str]]:
    """Every input through the engine's test loader; each input's top-k (stdout) or why it could not be read
    (stderr) is printed as its batch comes, in input order. Returns the outcomes and the class names (looked up
    once: empty when no input could be read)."""
    from tqdm import tqdm

    from ..engine.logging import progress

    cfg = model.cfg
    inputs = RecognitionInputs(videos, cfg, catch_errors=True)
    loader = build_recognition_loader(inputs, cfg, batch_size=batch_size, num_workers=num_workers)
    outcomes = [Outcome(str(v)) for v in videos]
    names: list[str] | None = None
    for items, batches in progress(loader, total=len(loader), desc="recognize"):
        for indices, batch in batches:
            for index, s in zip(indices, forward_batch(model, batch)):
                if names is None:
                    names = class_names_of(model, s.shape[0], label_map)
                outcomes[index].scores = s
                outcomes[index].top = top_k_predictions(s, names, top_k)
        for it in items:
            if it.error is not None:
                outcomes[it.index].error = it.error
                tqdm.write(f"cannot read {it.error}", file=sys.stderr)
            else:
                tqdm.write(format_outcome(outcomes[it.index]))
    return outcomes, names or []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.top_k < 1 or args.batch_size < 1 or (args.num_workers is not None and args.num_workers < 0):
        parser.error("--top-k and --batch-size must be >= 1, --num-workers >= 0")
    if args.out is not None and Path(args.out).suffix.lower() not in OUT_SUFFIXES:
        parser.error(f"{args.out}: --out must end in {' or '.join(OUT_SUFFIXES)}")
    videos = expand_inputs(args.inputs)
    model = init_recognizer(args.config, args.checkpoint, device=args.device, cfg_options=args.cfg_options)
    if args.average_clips is not None:
        model.average_clips = args.average_clips
    from ..engine.fast import FastPathOptions, optimize_for_inference, options_from_config

    fast_options = FastPathOptions() if args.fast else options_from_config(model.cfg, model.cfg.filename)
    if fast_options is not None:
        model, description = optimize_for_inference(model, args.device, fast_options)
        print(description, file=sys.stderr)
    workers = default_workers(model.cfg, len(videos)) if args.num_workers is None else args.num_workers
    outcomes, names = recognize(model, videos, args.batch_size, workers, args.top_k, args.label_map)
    failed = [o for o in outcomes if o.error is not None]
    if args.out is not None:
        meta = {"config": model.cfg.filename, "checkpoint": str(args.checkpoint),
                "average_clips": getattr(model, "average_clips", None), "class_names": names}
        text = outcomes_json(outcomes, meta) if args.out.lower().endswith(".json") \
            else outcomes_csv(outcomes, args.top_k)
        atomic_save_text(args.out, text)
    done = len(outcomes) - len(failed)
    summary = f"recognised {done} of {len(outcomes)} input(s)"
    if failed:
        summary += f"; {len(failed)} could not be read: " + ", ".join(o.video for o in failed)
    print(summary, file=sys.stderr)
    return 0 if done else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
