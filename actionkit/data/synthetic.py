"""``actionkit make-synthetic {kinetics,ava} --out DIR [--seed N]``: dispatch to the two generators."""
from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: actionkit make-synthetic {kinetics,ava} --out DIR [--seed N] [...]\n\n"
              "  kinetics  small mp4 videos + JPEG frame folders + train/val lists; the class is a motion\n"
              "  ava       AVA-format videos, frame folders, csvs, label map, exclusions and proposals")
        return 0
    kind, rest = argv[0], argv[1:]
    if kind == "kinetics":
        from .synthetic_kinetics import main as run
    elif kind == "ava":
        from .synthetic_ava import main as run
    else:
        print(f"make-synthetic: unknown dataset kind '{kind}' (expected 'kinetics' or 'ava')", file=sys.stderr)
        return 2
    return int(run(rest) or 0)
