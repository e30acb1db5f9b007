"""The ``actionkit`` console command: one entry point for every job.

    actionkit train CONFIG [--validate --seed 0 --deterministic --work-dir D ...]   (= tools/train.py)
    actionkit test CONFIG CKPT [--eval mAP --out results.csv ...]                  (= tools/test.py)
    actionkit eval-ava --gt GT.csv --det DET.csv --label-map L.pbtxt [--official]
    actionkit make-synthetic {kinetics,ava} --out DIR [--seed N]
    actionkit demo [--out DIR]
    actionkit lfb CONFIG --baseline CKPT
    actionkit benchmark CONFIG [--device cpu|cuda] [--amp] [--channels-last] [--train-step]
    actionkit convert-proposals IN.pkl OUT.npz
    actionkit convert-lfb IN.pkl [IN2.pkl ...] --out DIR
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Sequence

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("actionkit.engine.entry", "train_main", "train a model from a config (MMAction2 tools/train.py)"),
    "test": ("actionkit.engine.entry", "test_main", "test a checkpoint (MMAction2 tools/test.py)"),
    "eval-ava": ("actionkit.evaluation.ava_map", "main", "AVA frame mAP of a results csv"),
    "make-synthetic": ("actionkit.data.synthetic", "main", "write synthetic Kinetics- or AVA-format data"),
    "demo": ("actionkit.demo", "main", "synthetic AVA data -> train SlowOnly -> test -> mAP, video and chart"),
    "lfb": ("actionkit.engine.lfb_workflow", "main", "the whole Long-Term Feature Bank workflow"),
    "benchmark": ("actionkit.benchmark", "main", "model speed (videos/s, clips/s) and peak memory"),
    "convert-proposals": ("actionkit.data.ava", "convert_proposals_main", "AVA proposal pickle -> safe .npz"),
    "convert-lfb": ("actionkit.models.lfb", "convert_lfb_main", "MMAction2 lfb_*.pkl -> memory-mapped bank"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: actionkit COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'actionkit COMMAND -h' for the arguments of a command."]
    return "\n".join(lines)


def resolve(command: str) -> Callable[[Sequence[str]], int | None]:
    module, func, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"actionkit {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"actionkit: unknown command '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    ret = resolve(command)(rest)
    return int(ret or 0)


if __name__ == "__main__":
    sys.exit(main())
