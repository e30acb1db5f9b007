"""The ``actionkit`` console command: one entry point for every job.

    actionkit train CONFIG [--validate --seed 0 --deterministic --work-dir D ...]   (= tools/train.py)
    actionkit test CONFIG CKPT [--eval mAP --out results.csv --fast ...]           (= tools/test.py)
    actionkit eval-ava --gt GT.csv --det DET.csv --label-map L.pbtxt [--official]
    actionkit models [--task recognition|detection] [--json]
    actionkit download NAME|URL
    actionkit recognize VIDEO|FOLDER|LIST ... --checkpoint CKPT [--config CFG] [--fast]
    actionkit detect VIDEO --config CFG --checkpoint CKPT [--out out.mp4 --csv results.csv --fast]
    actionkit proposals VIDEO ... --out proposals.pkl|npz
    actionkit make-synthetic {kinetics,ava} --out DIR [--seed N]
    actionkit demo [--out DIR]
    actionkit lfb CONFIG --baseline CKPT
    actionkit benchmark CONFIG [--device cpu|cuda] [--amp] [--channels-last] [--fast] [--train-step]
    actionkit convert-proposals IN.pkl OUT.npz
    actionkit convert-lfb IN.pkl [IN2.pkl ...] --out DIR

Each command is a module of this package with ``main(argv)``, registered in ``COMMANDS``.

Errors: the project's own error types (ConfigError, CheckpointError, DecodeError, FeatureBankError, ...:
every exception class defined in ``actionkit``), ValueError (bad input data named by file and line) and
OSError (missing / unwritable files) print ``<prog>: error: <Type>: <message>`` alone and exit with 2
(ConfigError: a config or command-line problem) or 1 (anything else).  ``--debug`` (anywhere on the command
line) or ``ACTIONKIT_DEBUG=1`` shows the full traceback instead.  Any other exception is a bug and always
shows its traceback.  Ctrl-C exits with 130.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Sequence

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("actionkit.cli.train", "main", "train a model from a config (MMAction2 tools/train.py)"),
    "test": ("actionkit.cli.test", "main", "test a checkpoint (MMAction2 tools/test.py)"),
    "eval-ava": ("actionkit.cli.eval_ava", "main", "AVA frame mAP of a results csv"),
    "make-synthetic": ("actionkit.cli.make_synthetic", "main", "write synthetic Kinetics- or AVA-format data"),
    "demo": ("actionkit.cli.demo", "main", "synthetic AVA data -> train SlowOnly -> test -> mAP, video and chart"),
    "lfb": ("actionkit.cli.lfb", "main", "the whole Long-Term Feature Bank workflow"),
    "benchmark": ("actionkit.cli.benchmark", "main", "model speed (videos/s, clips/s) and peak memory"),
    "convert-proposals": ("actionkit.cli.convert_proposals", "main", "AVA proposal pickle -> safe .npz"),
    "convert-lfb": ("actionkit.cli.convert_lfb", "main", "MMAction2 lfb_*.pkl -> memory-mapped bank"),
    "models": ("actionkit.cli.models", "main", "the model zoo: published checkpoints and their metrics"),
    "download": ("actionkit.cli.download", "main", "download checkpoints by zoo name or URL into the cache"),
    "recognize": ("actionkit.cli.recognize", "main", "top-k actions of videos / frame folders with a model"),
    "detect": ("actionkit.cli.detect", "main", "people and their actions in a video: annotated mp4 + AVA rows"),
    "proposals": ("actionkit.cli.proposals", "main", "person proposals (FAIR's AVA layout) for new videos"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: actionkit COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'actionkit COMMAND -h' for the arguments of a command.",
              "--debug (or ACTIONKIT_DEBUG=1) shows the full traceback of an error."]
    return "\n".join(lines)


def resolve(command: str) -> Callable[[Sequence[str]], int | None]:
    module, func, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), func)


DEBUG_FLAG = "--debug"
DEBUG_ENV = "ACTIONKIT_DEBUG"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` on the command line or ``ACTIONKIT_DEBUG`` set to anything but '', '0', 'false', 'no'."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return DEBUG_FLAG in argv or env not in ("", "0", "false", "no", "off")


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` reports bad input or environment (message alone) rather than a bug (traceback).

    User errors: every exception class defined in the ``actionkit`` package (ConfigError, CheckpointError,
    DecodeError, FeatureBankError, AVAFormatError, ...), ValueError (the datasets' ``file:line`` errors;
    UnicodeDecodeError included) and OSError (FileNotFoundError, PermissionError, disk full, ...)."""
    module = type(exc).__module__ or ""
    return module == "actionkit" or module.startswith("actionkit.") or isinstance(exc, (ValueError, OSError))


def error_message(exc: BaseException) -> str:
    """``Type: message``; an error re-raised from a DataLoader worker keeps only the worker's own
    ``Type: message`` (torch puts the worker's traceback text into the message)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    head, sep, tail = text.partition(_WORKER_TRACEBACK)
    if sep:
        lines = tail.splitlines()
        first = next((i for i, ln in enumerate(lines) if ln and not ln.startswith(" ")), None)
        if first is not None:
            caught = head.strip().splitlines()[0].rstrip(".") if head.strip() else ""
            where = "in " + caught.split(" in ", 1)[1] if " in " in caught else "in a DataLoader worker"
            return f"{chr(10).join(lines[first:]).strip()} ({where})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_command(func: Callable[[Sequence[str]], int | None], argv: Sequence[str], prog: str) -> int:
    """Run one command's ``main(argv)`` and turn its errors into an exit status (see the module doc).

    ``--debug`` is removed from ``argv`` before the command sees it."""
    argv = list(argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return int(func(argv) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the command line's last word on every error
        if debug or not is_user_error(exc):
            raise
        from ..registry import ConfigError

        print(f"{prog}: error: {error_message(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from ..version import __version__

        print(f"actionkit {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"actionkit: unknown command '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    if debug:
        rest = [*rest, DEBUG_FLAG]
    return run_command(lambda args: resolve(command)(args), rest, f"actionkit {command}")


if __name__ == "__main__":
    sys.exit(main())
