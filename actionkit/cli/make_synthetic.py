"""``actionkit make-synthetic {kinetics,ava} --out DIR [--seed N] ...``: write the bundled synthetic data sets."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from ..synthetic.ava import EXTRA_CLASSES, make_ava
from ..synthetic.kinetics import make_kinetics


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: actionkit make-synthetic {kinetics,ava} --out DIR [--seed N] [...]\n\n"
              "  kinetics  small mp4 videos + JPEG frame folders + train/val lists; the class is a motion\n"
              "  ava       AVA-format videos, frame folders, csvs, label map, exclusions and proposals")
        return 0
    kind, rest = argv[0], argv[1:]
    if kind == "kinetics":
        return kinetics_main(rest)
    if kind == "ava":
        return ava_main(rest)
    print(f"make-synthetic: unknown dataset kind '{kind}' (expected 'kinetics' or 'ava')", file=sys.stderr)
    return 2


def kinetics_main(argv: Sequence[str] | None = None) -> int:
    """``actionkit make-synthetic kinetics --out DIR [--seed N] [--videos N] ...`` (the leading
    ``kinetics`` word is optional here)."""
    argv = list(argv) if argv is not None else None
    if argv and argv[0] == "kinetics":
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="actionkit make-synthetic kinetics",
                                description="Write a small synthetic Kinetics-format data set "
                                            "(class = direction of motion).")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--videos", type=int, default=160, help="number of training clips")
    p.add_argument("--val-videos", type=int, default=None, help="number of val clips (default 0.3 x --videos)")
    p.add_argument("--classes", type=int, default=4, help="number of motion directions")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("W", "H"))
    p.add_argument("--frames", type=int, default=48, help="frames per clip")
    p.add_argument("--gop", type=int, default=12, help="keyframe interval of the mp4 files")
    p.add_argument("--no-videos", action="store_true", help="write only frame folders")
    p.add_argument("--no-rawframes", action="store_true", help="write only mp4 videos")
    args = p.parse_args(argv)
    t = time.time()
    res = make_kinetics(args.out, seed=args.seed, num_videos=args.videos, num_val_videos=args.val_videos,
                        num_classes=args.classes, size=tuple(args.size), num_frames=args.frames, gop=args.gop,
                        write_videos=not args.no_videos, write_rawframes=not args.no_rawframes)
    print(f"wrote synthetic Kinetics ({res['num_classes']} classes) to {res['out_dir']} in {time.time() - t:.1f} s")
    for k, v in res.items():
        if k.startswith(("ann_file", "data_prefix")) or k == "label_map":
            print(f"  {k}: {v}")
    return 0


def ava_main(argv: Sequence[str] | None = None) -> int:
    """``actionkit make-synthetic ava --out DIR [--seed N]`` (a leading ``ava`` argument is accepted)."""
    argv = list(argv) if argv is not None else None
    if argv and argv[0] == "ava":
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="actionkit make-synthetic ava",
                                     description="Write a tiny synthetic AVA-format data set (frames, videos, csv, "
                                                 "label map, proposals, dataset_info.json).")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=8, help="training videos")
    parser.add_argument("--num-val", type=int, default=3, help="validation videos")
    parser.add_argument("--num-keyframes", type=int, default=20, help="keyframes (seconds) per video")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--actors", type=int, nargs=2, default=[2, 3], metavar=("MIN", "MAX"),
                        help="people per video (drawn uniformly from MIN..MAX)")
    parser.add_argument("--no-videos", action="store_true", help="write only the frame folders")
    parser.add_argument("--extra", nargs="*", default=[], choices=sorted(EXTRA_CLASSES),
                        help="optional class groups: relation (cross / watch another person), event (a scene-wide "
                             "flash 5-25 s before or after the keyframe; use >= 30 keyframes), flash (the flash "
                             "itself)")
    args = parser.parse_args(argv)
    info = make_ava(args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                    num_keyframes=args.num_keyframes, fps=args.fps, write_videos=not args.no_videos,
                    actors=tuple(args.actors),
                    extra_groups=args.extra)
    print(f"wrote synthetic AVA to {args.out}: {info['splits']['train']['num_keyframes']} train / "
          f"{info['splits']['val']['num_keyframes']} val keyframes, {len(info['classes'])} classes "
          f"({info['seconds']} s)")
    return 0
