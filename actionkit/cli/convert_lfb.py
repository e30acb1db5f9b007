"""``actionkit convert-lfb``: MMAction2 ``lfb_*.pkl`` feature banks -> actionkit's memory-mapped bank directory."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..data.feature_bank import _DTYPES, FeatureBank, FeatureBankError
from ..data.feature_bank_writer import convert_lfb


def main(argv: Sequence[str] | None = None) -> int:
    """``actionkit convert-lfb IN.pkl [IN2.pkl ...] --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="actionkit convert-lfb",
        description="Convert MMAction2 long-term feature bank pickles (lfb_{train,val}.pkl, torch.save'd "
                    "{video_id: {second: [tensor]}}) into actionkit's memory-mapped bank directory. Several "
                    "inputs are merged into one bank (a later file's video replaces an earlier one's).")
    parser.add_argument("inputs", nargs="+", help="MMAction2 lfb_*.pkl file(s)")
    parser.add_argument("--out", help="output bank directory (default: the single input without '.pkl', "
                                      "e.g. data/ava/lfb_half/lfb_train)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                        help="feature dtype in the bank (default: keep the input's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        if len(args.inputs) != 1 or not args.inputs[0].endswith(".pkl"):
            parser.error("--out is required with several inputs or an input not ending in .pkl")
        out = args.inputs[0][:-len(".pkl")]
    try:
        path = convert_lfb(args.inputs, out, dtype=args.dtype, overwrite=args.overwrite)
    except (FeatureBankError, FileNotFoundError, FileExistsError) as e:
        parser.exit(2, f"actionkit convert-lfb: error: {e}\n")
    bank = FeatureBank.open(path)
    print(f"wrote {path}: {bank.num_features} features x {bank.channels} channels ({bank.dtype}), "
          f"{len(bank)} videos, {bank.num_seconds} seconds")
    return 0
