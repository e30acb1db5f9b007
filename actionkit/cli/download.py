"""``actionkit download NAME|URL ...``: put published checkpoints into the cache (verified, resumable).

Prints the local path of each file.  The cache is ``$ACTIONKIT_HOME/checkpoints`` (default
``~/.cache/actionkit/checkpoints``) or ``--dir``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence, TextIO

from .. import zoo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionkit download",
                                description="Download checkpoints (zoo names or http(s) URLs) into the cache: "
                                            "progress bar, resumes a cut download, checks the SHA-256 prefix in "
                                            "the file name.")
    p.add_argument("specs", nargs="+", metavar="NAME|URL", help="model zoo name (see 'actionkit models') or URL")
    p.add_argument("--dir", default=None, help=f"folder to download into (default: {zoo.checkpoint_cache_dir()})")
    p.add_argument("--timeout", type=float, default=zoo.DEFAULT_TIMEOUT, help="network timeout in seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out = out or sys.stdout
    for spec in args.specs:
        path = zoo.download_checkpoint(spec, directory=args.dir, progress=not args.no_progress, timeout=args.timeout)
        print(path, file=out)
    return 0
