"""``actionkit detect VIDEO --config CFG --checkpoint CKPT``: who does what, where, in any video.

MMAction2's ``demo/demo_spatiotemporal_det.py`` arguments and defaults (``--det-score-thr 0.9
--action-score-thr 0.5 --predict-stepsize 8 --output-stepsize 4 --output-fps 6``), streaming and exact
(``actionkit.inference.detection``): one sequential decode, a bounded frame buffer, each keyframe's clip as the
config's AVA val pipeline makes it. Outputs: ``--out`` an H.264 mp4 with the person boxes and their top labels
(``predict_stepsize / output_stepsize`` frames per keyframe at ``--output-fps``), ``--csv`` AVA result rows
(``video_id,timestamp,x1,y1,x2,y2,action_id,score``, every class score: ``actionkit eval-ava`` reads them).

Person boxes: torchvision's Faster R-CNN R50-FPN v2 (COCO) by default (``pip install "actionkit[detect]"``),
or ``--person-boxes FILE``: an AVA proposal ``.pkl`` / ``.npz`` (``'<video_id>,<%04d second>'`` keys, e.g. from
``actionkit proposals``; its seconds are the keyframes, frame ``fps * (second - timestamp_start) + 1`` with the
config's ``data.val`` fps and timestamp_start; the video id is the file's stem) or a csv of
``frame,x1,y1,x2,y2,score`` rows (frames from 1, boxes normalised; the listed frames must be keyframes).
The csv's timestamp column is the AVA second for a proposal file and the keyframe's frame number otherwise.

LFB configs (a feature bank head): ``--lfb-baseline CKPT`` (the config's ``lfb_infer`` baseline) first infers the
video's feature bank over all its keyframes, then the LFB model runs with it (see
``actionkit.inference.detection.infer_video_bank``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence


__all__ = ["build_parser", "main", "resolve_config"]


def _unit_interval(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number in [0, 1], got {text!r}") from None
        if not 0.0 <= v <= 1.0 or v != v:
            raise argparse.ArgumentTypeError(f"{name} must be in [0, 1], got {v}")
        return v
    return parse


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {v}")
        return v
    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--output-fps must be a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"--output-fps must be a positive number, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    import torch

    p = argparse.ArgumentParser(prog="actionkit detect",
                                description="Spatio-temporal action detection on a video: person boxes, their "
                                            "actions, an annotated mp4 and AVA result rows.")
    p.add_argument("video", help="input video file")
    p.add_argument("--config", required=True, help="AVA detector config (a file or a model-zoo name)")
    p.add_argument("--checkpoint", required=True, help="detector checkpoint (a file, an http(s) URL or a zoo name)")
    p.add_argument("--det-checkpoint", default=None,
                   help="person detector weights: a state dict of torchvision's fasterrcnn_resnet50_fpn_v2 "
                        "(default: torchvision's COCO weights, downloaded on first use)")
    p.add_argument("--det-score-thr", type=_unit_interval("--det-score-thr"), default=0.9,
                   help="person score threshold (default 0.9)")
    p.add_argument("--action-score-thr", type=_unit_interval("--action-score-thr"), default=0.5,
                   help="labels with a score above this are drawn (default 0.5)")
    p.add_argument("--label-map", default=None,
                   help="action names: a label map file ('id: name' lines, as MMAction2's demo reads) or a "
                        "shipped map name (default: the config's dataset names, AVA's for AVA configs)")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu",
                   help="device of the models (default: cuda:0 when available, else cpu)")
    p.add_argument("--out", default=None, help="annotated output video (.mp4; default: <video stem>_detect.mp4)")
    p.add_argument("--csv", default=None, help="also write the AVA result rows (every class score) here")
    p.add_argument("--person-boxes", default=None,
                   help="person boxes instead of the detector: AVA proposals .pkl/.npz or a csv of "
                        "frame,x1,y1,x2,y2,score (frames from 1, boxes normalised to [0, 1])")
    p.add_argument("--lfb-baseline", default=None,
                   help="for an LFB config: the feature-bank baseline checkpoint (infers the video's bank first)")
    p.add_argument("--predict-stepsize", type=_positive_int("--predict-stepsize"), default=8,
                   help="frames between keyframes (default 8)")
    p.add_argument("--output-stepsize", type=_positive_int("--output-stepsize"), default=4,
                   help="frames between output frames (default 4; must divide --predict-stepsize)")
    p.add_argument("--output-fps", type=_positive_float, default=6.0, help="fps of the output video (default 6)")
    p.add_argument("--fast", action="store_true",
                   help="inference fast path for the action detector: bf16 where native, channels_last_3d, "
                        "torch.compile (actionkit/engine/fast.py)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE", help="override config entries")
    return p


def resolve_config(config: str, cfg_options: Sequence[str] | None = None) -> Any:
    """A config file, or the config of a model-zoo name."""
    from ..config import load_config
    from ..zoo import config_path, get_model_entry, looks_like_path

    if os.path.isfile(config):
        return load_config(config, cfg_options)
    if looks_like_path(config):
        raise FileNotFoundError(f"{config}: config file not found")
    return load_config(config_path(get_model_entry(config)), cfg_options)


def _dataset_timeline(cfg: Any) -> tuple[int, int, int]:
    """``fps``, ``timestamp_start`` and ``num_max_proposals`` of ``data.val`` (AVADataset's defaults)."""
    val = (cfg.get("data") or {}).get("val") or {}
    return int(val.get("fps", 30)), int(val.get("timestamp_start", 900)), int(val.get("num_max_proposals", 1000))


def _custom_ids(cfg: Any) -> list[int] | None:
    val = (cfg.get("data") or {}).get("val") or {}
    custom = val.get("custom_classes")
    return None if custom is None else [int(c) for c in custom]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.predict_stepsize % args.output_stepsize:
        parser.error(f"--output-stepsize ({args.output_stepsize}) must divide --predict-stepsize "
                     f"({args.predict_stepsize})")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from ..inference.detection import (ActionDetector, DetectInputError, DetectorBoxes, KeyframeClipPipeline,
                                       RememberedBoxes, demo_keyframes, infer_video_bank, is_lfb_config,
                                       iter_video_frames, lfb_config_for_bank, load_person_boxes, video_fps,
                                       with_seconds)
    from ..zoo import resolve_checkpoint

    t0 = time.time()
    video = Path(args.video)
    if not video.is_file():
        raise DetectInputError(f"{video}: video file not found")
    video_id = video.stem
    cfg = resolve_config(args.config, args.cfg_options)
    fps, timestamp_start, num_max = _dataset_timeline(cfg)
    num_frames, frames = iter_video_frames(video)
    pipeline = KeyframeClipPipeline(cfg, video_id, num_frames)
    window = pipeline.window
    if num_frames < window:
        raise DetectInputError(f"{video}: the video has {num_frames} frames, shorter than one clip window of "
                               f"{window} frames (clip_len {pipeline.sampler.clip_len} x frame_interval "
                               f"{pipeline.sampler.frame_interval} in {cfg.filename or 'the config'})")
    demo = demo_keyframes(num_frames, window, args.predict_stepsize)
    if args.person_boxes is not None:
        person_boxes = load_person_boxes(args.person_boxes, video_id, fps, timestamp_start, args.det_score_thr,
                                         num_max)
    else:
        from ..inference.person_detector import TorchvisionPersonDetector

        det_weights = "COCO_V1" if args.det_checkpoint is None else args.det_checkpoint
        person_boxes = DetectorBoxes(TorchvisionPersonDetector(args.det_score_thr, args.device, det_weights))
    keyframes = with_seconds(person_boxes.keyframes(num_frames, demo), video_fps(video))
    checkpoint = resolve_checkpoint(args.checkpoint)
    with contextlib.ExitStack() as stack:
        if is_lfb_config(cfg):
            if args.lfb_baseline is None:
                raise DetectInputError(f"{cfg.filename or 'the config'} is an LFB config: give the feature-bank "
                                       "baseline checkpoint with --lfb-baseline (its bank of the video is inferred "
                                       "first)")
            bank_root = stack.enter_context(tempfile.TemporaryDirectory(prefix="actionkit_lfb_"))
            person_boxes = RememberedBoxes(person_boxes)   # the detector runs once per keyframe, not twice
            infer_video_bank(cfg, resolve_checkpoint(args.lfb_baseline), video, pipeline, person_boxes, keyframes,
                             bank_root, args.device)
            cfg = lfb_config_for_bank(cfg, bank_root)
        elif args.lfb_baseline is not None:
            raise DetectInputError(f"--lfb-baseline {args.lfb_baseline}: {cfg.filename or 'the config'} is not an "
                                   "LFB config (no feature bank head)")
        detector = ActionDetector(cfg, checkpoint, args.device)
        from ..engine.fast import FastPathOptions, optimize_for_inference, options_from_config

        fast_options = FastPathOptions() if args.fast else options_from_config(cfg, cfg.filename)
        if fast_options is not None:
            detector.model, description = optimize_for_inference(detector.model, args.device, fast_options)
            print(description, file=sys.stderr)
        return _detect(args, cfg, video, pipeline, detector, person_boxes, keyframes, frames, t0)


def _detect(args: argparse.Namespace, cfg: Any, video: Path, pipeline: Any, detector: Any, person_boxes: Any,
            keyframes: Sequence[Any], frames: Any, t0: float) -> int:
    from ..engine.logging import progress
    from ..data.ava_csv import format_result_rows
    from ..inference.detection import detect_video, top_labels
    from ..inference.video_writer import Mp4Writer, draw_detections, draw_note
    from ..labels import abbreviate, class_names_for_config
    from ..utils import atomic_write

    video_id = video.stem
    names = class_names_for_config(cfg, args.label_map)
    custom = _custom_ids(cfg)
    action_ids = custom if custom is not None else list(range(1, detector.num_classes))
    out_path = Path(args.out) if args.out else Path(f"{video_id}_detect.mp4")

    n_persons = n_labels = 0
    no_person: list[int] = []
    with contextlib.ExitStack() as stack:
        csv_file = stack.enter_context(atomic_write(args.csv, "w", encoding="utf-8")) if args.csv else None
        writer = stack.enter_context(Mp4Writer(out_path, args.output_fps))
        results = detect_video(video, pipeline, detector, person_boxes, keyframes, args.predict_stepsize,
                               args.output_stepsize, frames=frames)
        for res in progress(results, total=len(keyframes), desc=f"detect {video.name}"):
            if csv_file is not None:
                csv_file.write("".join(format_result_rows([res.class_results],
                                                          [(video_id, res.keyframe.timestamp)], custom)))
            labels = top_labels(res.action_scores, action_ids, args.action_score_thr)
            named = [[(abbreviate(names[column_of(a, action_ids)]), s) for a, s in box] for box in labels]
            n_persons += len(res.persons)
            n_labels += sum(len(b) for b in labels)
            if len(res.persons) == 0:
                no_person.append(res.keyframe.frame)
            for _, frame in res.output_frames:
                if len(res.persons) == 0:
                    writer.write(draw_note(frame, f"keyframe {res.keyframe.frame}: no person found"))
                else:
                    writer.write(draw_detections(frame, res.persons, named))
    if no_person:
        shown = ", ".join(map(str, no_person[:10])) + (" ..." if len(no_person) > 10 else "")
        print(f"{video}: no person found at {len(no_person)} of {len(keyframes)} keyframes (frames {shown})",
              file=sys.stderr)
    print(f"{video}: {len(keyframes)} keyframes, {n_persons} person boxes, {n_labels} labels > "
          f"{args.action_score_thr}; wrote {out_path} ({writer.frames_written} frames at {args.output_fps:g} fps)"
          + (f" and {args.csv}" if args.csv else "") + f" in {time.time() - t0:.1f} s")
    return 0


def column_of(action_id: int, action_ids: Sequence[int]) -> int:
    """The model output column (1-based, column 0 is background) of an action id."""
    return action_ids.index(action_id) + 1
