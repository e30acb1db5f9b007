"""``actionkit proposals VIDEO... --out proposals.pkl|npz``: person proposals for a new AVA-format dataset.

FAIR's layout: ``{'<video_id>,<%04d second>': float32 [N, 5]}``, boxes ``x1, y1, x2, y2``
normalised by the frame's width / height, then the person score, best first. One keyframe per second: second
``s`` (from ``--timestamp-start``) is the 1-based frame ``fps * (s - timestamp_start) + 1`` at ``--fps``, as
``AVADataset`` indexes frames, for every second whose frame is in the video. The video id is the file's stem.
A keyframe without a person gets an empty ``[0, 5]`` array. Boxes: torchvision's Faster R-CNN R50-FPN v2 (COCO)
person class at ``score >= --det-score-thr`` (0.5 by default: ``AVADataset`` applies its own
``person_det_score_thr`` when it loads them).

``.pkl`` output is a plain pickle of a dict of numpy arrays (what the restricted loader of ``AVADataset`` and
``convert-proposals`` reads); ``.npz`` is the pickle-free form. Resumable per video: the output is rewritten
atomically after each finished video, and a rerun skips the videos already in it.
"""
from __future__ import annotations

import argparse
import io
import pickle
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["keyframe_seconds", "video_proposals", "write_proposals", "read_finished", "run_proposals", "main"]


def keyframe_seconds(num_frames: int, fps: int, timestamp_start: int) -> list[tuple[int, int]]:
    """``(second, 1-based frame)`` of every whole second from ``timestamp_start`` whose frame is in the video."""
    return [(timestamp_start + k, fps * k + 1) for k in range((num_frames - 1) // fps + 1)]


def video_proposals(video: str | Path, detector: Callable[[np.ndarray], np.ndarray], fps: int,
                    timestamp_start: int, show_progress: bool | None = None) -> dict[str, np.ndarray]:
    """The proposals of one video: its keyframes decoded in one forward pass, the detector on each."""
    from ..data.decode import PyAVReader
    from ..engine.logging import progress

    video = Path(video)
    reader = PyAVReader(video)
    try:
        seconds = keyframe_seconds(reader.num_frames, fps, timestamp_start)
        out: dict[str, np.ndarray] = {}
        frames = reader.iter_frames(np.array([f - 1 for _, f in seconds], np.int64))
        for (sec, _), (_, frame, _) in progress(zip(seconds, frames), total=len(seconds), desc=video.name,
                                                enabled=show_progress):
            boxes = np.asarray(detector(frame), dtype=np.float32).reshape(-1, 5)
            out[f"{video.stem},{sec:04d}"] = boxes
    finally:
        reader.close()
    return out


def write_proposals(proposals: Mapping[str, np.ndarray], out: str | Path) -> None:
    """Write atomically: ``.npz`` (pickle-free, ``save_proposals_npz``) or a ``.pkl`` of a plain dict of
    float32 arrays."""
    from ..data.ava_proposals import save_proposals_npz
    from ..utils import atomic_write

    out = Path(out)
    if out.suffix.lower() == ".npz":
        save_proposals_npz(dict(proposals), out)
        return
    buf = io.BytesIO()
    pickle.dump({str(k): np.ascontiguousarray(v, dtype=np.float32) for k, v in proposals.items()}, buf, protocol=2)
    with atomic_write(out, "wb") as f:
        f.write(buf.getvalue())


def read_finished(out: str | Path) -> dict[str, np.ndarray]:
    """The proposals already in ``out`` (empty when it does not exist), read with the safe loaders."""
    from ..data.ava_proposals import load_proposals

    out = Path(out)
    return load_proposals(out) if out.exists() else {}


def run_proposals(videos: Iterable[str | Path], out: str | Path, detector: Callable[[np.ndarray], np.ndarray],
                  fps: int = 30, timestamp_start: int = 900, show_progress: bool | None = None,
                  log: Callable[[str], None] = print) -> dict[str, int]:
    """Proposals of ``videos`` into ``out``, resuming: videos already in ``out`` are skipped, and ``out`` is
    rewritten (atomically) after each video. Returns ``{'done', 'skipped', 'keyframes'}``."""
    from ..inference.detection import DetectInputError

    videos = [Path(v) for v in videos]
    stems: dict[str, Path] = {}
    for v in videos:
        if v.stem in stems:
            raise DetectInputError(f"{v}: same video id '{v.stem}' as {stems[v.stem]} (ids are file stems)")
        stems[v.stem] = v
    proposals = read_finished(out)
    finished = {k.rsplit(",", 1)[0] for k in proposals}
    done = skipped = 0
    for v in videos:
        if v.stem in finished:
            skipped += 1
            continue
        if not v.is_file():
            raise DetectInputError(f"{v}: video file not found")
        proposals.update(video_proposals(v, detector, fps, timestamp_start, show_progress))
        write_proposals(proposals, out)
        done += 1
        log(f"{v}: proposals written ({done} of {len(videos) - skipped})")
    return dict(done=done, skipped=skipped, keyframes=len(proposals))


def build_parser() -> argparse.ArgumentParser:
    import torch

    from .detect import _unit_interval

    p = argparse.ArgumentParser(prog="actionkit proposals",
                                description="Person proposals for an AVA-format dataset (FAIR's layout, one keyframe "
                                            "per second), with torchvision's COCO Faster R-CNN; resumable.")
    p.add_argument("videos", nargs="+", help="video files (the video id is the file's stem)")
    p.add_argument("--out", required=True, help="output .pkl (plain dict of arrays) or .npz (pickle-free)")
    p.add_argument("--fps", type=int, default=30, help="frames per second of the dataset's timeline (default 30)")
    p.add_argument("--timestamp-start", type=int, default=900,
                   help="the second of each video's first frame (default 900, AVA's and AVADataset's)")
    p.add_argument("--det-score-thr", type=_unit_interval("--det-score-thr"), default=0.5,
                   help="keep person boxes with at least this score (default 0.5)")
    p.add_argument("--det-checkpoint", default=None,
                   help="state dict of torchvision's fasterrcnn_resnet50_fpn_v2 (default: its COCO weights)")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if Path(args.out).suffix.lower() not in (".pkl", ".npz"):
        parser.error(f"--out must end with .pkl or .npz, got {args.out}")
    if args.fps < 1:
        parser.error(f"--fps must be >= 1, got {args.fps}")
    from ..inference.person_detector import TorchvisionPersonDetector

    t0 = time.time()
    weights = "COCO_V1" if args.det_checkpoint is None else args.det_checkpoint
    detector = TorchvisionPersonDetector(args.det_score_thr, args.device, weights)
    stats = run_proposals(args.videos, args.out, detector, args.fps, args.timestamp_start)
    print(f"{args.out}: {stats['keyframes']} keyframes; {stats['done']} videos done, {stats['skipped']} already "
          f"there (skipped) in {time.time() - t0:.1f} s")
    return 0
