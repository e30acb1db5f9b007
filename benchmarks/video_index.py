"""Opening an AVI in a new process: the counting decode vs the decode-order index kept on disk.

Writes (cached under --workdir) MPEG-4 Part 2 AVI files of Kinetics-like and AVA-like sizes, then times, per file,
what a process that has not seen the file pays to read one 32-frame clip of it (``open_video`` + ``get_frames``):
with the index store off (the reader numbers the frames by one sequential decode of the whole file) and with the
entry the first open stored (read from ``$ACTIONKIT_VIDEO_INDEX_DIR``). The per-process cache is cleared before every
open, which is what a new DataLoader worker or a new run starts from. Medians of ``--repeat`` opens, one thread.

    python benchmarks/video_index.py [--workdir /tmp/video_index_bench] [--repeat 5] [--scale 1.0]
    python benchmarks/video_index.py --open FILE --start 900    # one open + 32 frames (for whole-process timers)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actionkit.data import decode as D  # noqa: E402
from actionkit.data import video_index_store as S  # noqa: E402
from actionkit.synthetic.kinetics import write_video  # noqa: E402

FILES = {  # name: (seconds, height, width)
    "kinetics_340x256": (10, 256, 340),
    "ava_640x360": (60, 360, 640),
}
FPS = 30


def make_video(path: Path, seconds: int, h: int, w: int) -> None:
    if path.is_file():
        return
    rng = np.random.default_rng(0)
    n = seconds * FPS
    base = rng.integers(0, 256, (-(-h // 8), -(-w // 8), 3), np.uint8)
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):  # a moving textured scene: motion for the encoder's P / B frames
        tile = np.roll(base, shift=(t // 2, t), axis=(0, 1))
        frames[t] = np.kron(tile, np.ones((8, 8, 1), np.uint8))[:h, :w]
    write_video(path, frames, fps=FPS, gop=FPS, codec="mpeg4")


def middle_clip(num_frames: int) -> list[int]:
    start = max(0, min(num_frames // 2, num_frames - 32))
    return list(range(start, min(start + 32, num_frames)))


def open_and_read(path: Path, frames: list[int]) -> float:
    D.clear_index_cache()
    t0 = time.perf_counter()
    with D.open_video(path) as r:
        r.get_frames(frames)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/video_index_bench")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each video's length")
    ap.add_argument("--open", metavar="FILE", help="only open FILE and read 32 frames from --start")
    ap.add_argument("--start", type=int, default=0)
    args = ap.parse_args(argv)
    if args.open:  # one process, one open: what a new DataLoader worker pays (time it from outside)
        seconds = open_and_read(Path(args.open), list(range(args.start, args.start + 32)))
        print(f"{args.open}: open + 32 frames {seconds:.3f} s")
        return 0
    previous = os.environ.get(S.DIR_ENV)
    try:
        return _run(args)
    finally:
        if previous is None:
            os.environ.pop(S.DIR_ENV, None)
        else:
            os.environ[S.DIR_ENV] = previous
        D.clear_index_cache()


def _run(args) -> int:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print("| video | frames | file MiB | store off: open + 32 frames (s) | stored index: open + 32 frames (s) "
          "| speed-up |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as store:
        for name, (seconds, h, w) in FILES.items():
            seconds = max(1, round(seconds * args.scale))
            name = f"{name}_{seconds}s"
            path = work / f"{name}.avi"
            make_video(path, seconds, h, w)
            with D.open_video(path) as r:
                n = r.num_frames
                assert r._index.decode_order, "an AVI is numbered in decode order"
            clip = middle_clip(n)
            os.environ[S.DIR_ENV] = store
            open_and_read(path, clip)  # the first open stores the entry
            off, on = [], []
            for i in range(args.repeat):  # alternate, so that drift of the machine hits both
                for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
                    os.environ[S.DIR_ENV] = "off" if mode == "off" else store
                    (off if mode == "off" else on).append(open_and_read(path, clip))
            a, b = statistics.median(off), statistics.median(on)
            print(f"| {name} | {n} | {path.stat().st_size / 2**20:.1f} | {a:.3f} | {b:.3f} | {a / b:.2f}x |")
    print(f"\nmedians of {args.repeat} opens each; load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
