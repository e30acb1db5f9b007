"""``actionkit convert-proposals IN.pkl OUT.npz``: an AVA proposal pickle -> a pickle-free ``.npz``."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..data.ava_proposals import convert_proposals


def main(argv: Sequence[str] | None = None) -> int:
    """``actionkit convert-proposals IN.pkl OUT.npz``."""
    parser = argparse.ArgumentParser(prog="actionkit convert-proposals",
                                     description="Convert an AVA proposal pickle into a pickle-free .npz "
                                                 "(read with a restricted unpickler).")
    parser.add_argument("input", help="proposal file (.pkl {'vid,0902': float64 [N,5]} or .npz)")
    parser.add_argument("output", help="output .npz")
    args = parser.parse_args(argv)
    if not str(args.output).endswith(".npz"):
        parser.error(f"output must end with .npz, got {args.output}")
    n = convert_proposals(args.input, args.output)
    print(f"wrote {n} keyframes to {args.output}")
    return 0
