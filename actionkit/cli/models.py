"""``actionkit models``: the model zoo table (published checkpoints and their metrics).

    actionkit models [--task recognition|detection] [--json]
    actionkit models NAME          (one entry: config, URL, cache path, whether it is downloaded)
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence, TextIO

from .. import zoo

_METRIC_COLUMNS = (("Top 1 Accuracy", "top-1"), ("Top 5 Accuracy", "top-5"), ("mAP", "mAP"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionkit models",
                                description="List the published MMAction2 0.x checkpoints of the shipped configs.")
    p.add_argument("name", nargs="?", help="show one entry in full (a zoo name or alias)")
    p.add_argument("--task", choices=zoo.TASKS, help="only recognition or only detection models")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    return p


def _metric(entry: zoo.ZooEntry, key: str) -> str:
    value = entry.metrics.get(key)
    return "-" if value is None else f"{value:.2f}"


def format_table(entries: Sequence[zoo.ZooEntry]) -> str:
    """The table printed by ``actionkit models`` (metrics in percent, as published)."""
    keys = [(k, h) for k, h in _METRIC_COLUMNS if any(k in e.metrics for e in entries)]
    header = ["name", "dataset", "resolution", *(h for _, h in keys)]
    rows = [[e.name, e.dataset, e.resolution or "-", *(_metric(e, k) for k, _ in keys)] for e in entries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = set(range(3, len(header)))

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
    plain = [(e.config_name, e) for e in entries if e.config_name in e.aliases]
    if plain:
        lines += ["", "Configs with two checkpoints: the plain config name stands for",
                  *(f"  {name} -> {e.name}" for name, e in plain)]
    return "\n".join(lines)


def format_entry(entry: zoo.ZooEntry) -> str:
    path = zoo.checkpoint_cache_dir() / entry.filename
    try:
        config = str(zoo.config_path(entry))
    except FileNotFoundError:
        config = f"{entry.config} (not found in this installation)"
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in entry.metrics.items())
    lines = [f"name:        {entry.name}",
             f"aliases:     {', '.join(entry.aliases) or '-'}",
             f"task:        {entry.task}",
             f"dataset:     {entry.dataset}",
             f"metrics:     {metrics}",
             f"resolution:  {entry.resolution or '-'}",
             f"config:      {config}",
             f"url:         {entry.url}",
             f"checkpoint:  {path} ({'downloaded' if path.is_file() else 'not downloaded'})"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out = out or sys.stdout
    if args.name:
        entry = zoo.get_model_entry(args.name)
        print(json.dumps(entry.to_dict(), indent=1) if args.json else format_entry(entry), file=out)
        return 0
    entries = zoo.list_models(args.task)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=1), file=out)
    else:
        print(format_table(entries), file=out)
    return 0
