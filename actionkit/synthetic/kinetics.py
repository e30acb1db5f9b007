"""A small synthetic Kinetics-format data set whose classes need motion to be told apart.

Every clip shows a textured background drifting in a random direction, a few distractor squares
moving in random directions, and one *target*: a red disc with a white centre.  The class is the
direction in which the target moves (``num_classes`` directions evenly spread around the circle; 4 =
right, down, left, up).  Everything wraps around the frame borders (a torus), so the target's position
in any single frame is uniform over the frame whatever the class: one frame, or a temporally shuffled
clip, carries no information about the label; two frames in order do.

``make_kinetics`` writes both Kinetics layouts used by MMAction2:

    out_dir/videos/{train,val}/vid_00000.mp4              (libx264, short GOP: cheap random access)
    out_dir/rawframes/{train,val}/vid_00000/img_00001.jpg (the same clips as JPEG frames)
    out_dir/kinetics_{train,val}_list_videos.txt          ``train/vid_00000.mp4 <label>``
    out_dir/kinetics_{train,val}_list_rawframes.txt       ``train/vid_00000 <total_frames> <label>``
    out_dir/label_map.txt                                 one class name per line
    out_dir/meta.json                                     the generation parameters

Command line: ``actionkit make-synthetic kinetics --out DIR [--seed N] [--videos N]``.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..utils import atomic_save_text

__all__ = ["class_names", "render_clip", "write_video", "write_frame_folder", "make_kinetics",
           "TARGET_RGB"]

TARGET_RGB = (235, 20, 20)
_CENTRE_RGB = (255, 255, 255)
_DIRECTION_NAMES = {0: "right", 45: "down_right", 90: "down", 135: "down_left", 180: "left",
                    225: "up_left", 270: "up", 315: "up_right"}


def class_names(num_classes: int) -> list[str]:
    """Names of the motion directions (angle 0 = right, 90 = down in image coordinates)."""
    names = []
    for c in range(num_classes):
        deg = 360.0 * c / num_classes
        key = int(round(deg))
        if abs(deg - key) < 1e-9 and key in _DIRECTION_NAMES:
            names.append(f"move_{_DIRECTION_NAMES[key]}")
        else:
            names.append(f"move_{deg:.1f}deg")
    return names


def _periodic_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency colour noise that tiles seamlessly (filtered in the Fourier domain)."""
    noise = rng.standard_normal((h, w, 3))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    sigma = rng.uniform(0.04, 0.10)
    filt = np.exp(-(fx ** 2 + fy ** 2) / (2 * sigma ** 2))[..., None]
    tex = np.real(np.fft.ifft2(np.fft.fft2(noise, axes=(0, 1)) * filt, axes=(0, 1)))
    tex /= tex.std() + 1e-8
    return tex


def _draw_wrapped(img: np.ndarray, draw, x: float, y: float) -> None:
    """Call ``draw(img, x, y)`` at every toroidal copy of (x, y) that can touch the image."""
    h, w = img.shape[:2]
    for ox in (-w, 0, w):
        for oy in (-h, 0, h):
            draw(img, x + ox, y + oy)


def render_clip(rng: np.random.Generator, label: int, num_classes: int, size: tuple[int, int] = (64, 64),
                num_frames: int = 48, return_info: bool = False):
    """Render one clip of class ``label``: uint8 RGB array ``[num_frames, H, W, 3]``.

    With ``return_info`` also returns a dict with the target trajectory (for tests).
    """
    import cv2

    w, h = size
    s = min(w, h)
    shift = 4  # cv2 fixed-point drawing: 1/16 px
    one = 1 << shift

    # background: grey base with a low-saturation texture, drifting in a random direction
    base = rng.uniform(70, 170)
    tex = base + _periodic_texture(rng, h, w) * rng.uniform(12, 22)
    tex = np.clip(tex, base - 45, base + 45).astype(np.float32)
    bg_angle = rng.uniform(0, 2 * math.pi)
    bg_speed = rng.uniform(0.0, 0.02 * s)
    bg_v = (bg_speed * math.cos(bg_angle), bg_speed * math.sin(bg_angle))

    # target: class direction (with a little jitter), random speed and start
    angle = 2 * math.pi * label / num_classes + rng.uniform(-1, 1) * (math.pi / num_classes) * 0.3
    speed = rng.uniform(0.018, 0.035) * s
    tv = (speed * math.cos(angle), speed * math.sin(angle))
    t0 = (rng.uniform(0, w), rng.uniform(0, h))
    radius = max(2.0, 0.085 * s)

    # distractors: squares in random colours (never target-like), random directions and speeds
    n_dis = int(rng.integers(2, 5))
    distractors = []
    for _ in range(n_dis):
        while True:
            col = rng.integers(0, 256, size=3)
            if not (col[0] > 150 and col[1] < 130 and col[2] < 130):
                break
        a = rng.uniform(0, 2 * math.pi)
        sp = rng.uniform(0.01, 0.04) * s
        half = rng.uniform(0.05, 0.09) * s
        distractors.append(((rng.uniform(0, w), rng.uniform(0, h)), (sp * math.cos(a), sp * math.sin(a)),
                            half, tuple(int(c) for c in col)))

    frames = np.empty((num_frames, h, w, 3), np.uint8)
    traj = np.empty((num_frames, 2), np.float64)
    for t in range(num_frames):
        dx = int(round(bg_v[0] * t))
        dy = int(round(bg_v[1] * t))
        img = np.roll(tex, (dy, dx), axis=(0, 1))
        img = np.clip(img, 0, 255).astype(np.uint8)
        img = np.ascontiguousarray(img)
        for (p0, v, half, col) in distractors:
            x = (p0[0] + v[0] * t) % w
            y = (p0[1] + v[1] * t) % h

            def sq(im, cx, cy, half=half, col=col):
                p1 = (int((cx - half) * one), int((cy - half) * one))
                p2 = (int((cx + half) * one), int((cy + half) * one))
                cv2.rectangle(im, p1, p2, col, -1, cv2.LINE_AA, shift)

            _draw_wrapped(img, sq, x, y)
        x = (t0[0] + tv[0] * t) % w
        y = (t0[1] + tv[1] * t) % h
        traj[t] = (x, y)

        def disc(im, cx, cy):
            c = (int(cx * one), int(cy * one))
            cv2.circle(im, c, int(radius * one), TARGET_RGB, -1, cv2.LINE_AA, shift)
            cv2.circle(im, c, int(radius * 0.35 * one), _CENTRE_RGB, -1, cv2.LINE_AA, shift)

        _draw_wrapped(img, disc, x, y)
        frames[t] = img
    if return_info:
        return frames, {"target_xy": traj, "target_velocity": tv, "angle": angle}
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 30, gop: int = 12, crf: int = 18,
                codec: str = "libx264", preset: str = "veryfast", faststart: bool = False) -> None:
    """Encode RGB uint8 frames ``[T, H, W, 3]`` (even H, W) to ``path`` with PyAV.

    ``gop`` is the keyframe interval (scene-cut keyframes are disabled so GOPs are regular).  The file
    is written next to ``path`` and renamed into place.  ``faststart`` puts the mp4 index first.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"{path}: frame size {w}x{h} must be even for yuv420p")
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        options = {"movflags": "faststart"} if faststart else {}
        with av.open(str(tmp), "w", options=options) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width = w
            stream.height = h
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = int(gop)
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": preset,
                                  "x264-params": f"keyint={int(gop)}:min-keyint={int(gop)}:scenecut=0:threads=1"}
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_frame_folder(frame_dir: str | os.PathLike, frames: np.ndarray, filename_tmpl: str = "img_{:05}.jpg",
                       start_index: int = 1, quality: int = 90) -> None:
    """Write RGB frames as JPEG files ``filename_tmpl.format(start_index + i)`` (4:4:4 chroma when cv2 allows)."""
    import cv2

    frame_dir = Path(frame_dir)
    frame_dir.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_444"):
        # full-resolution chroma: with the default 4:2:0 a 32x32 frame keeps its colour at 16x16, which blurs
        # the small red target into the background (the class cue is colour + motion)
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    for i, rgb in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"{frame_dir}: JPEG encoding failed for frame {i}")
        (frame_dir / filename_tmpl.format(start_index + i)).write_bytes(buf.tobytes())


def make_kinetics(out_dir: str | os.PathLike, seed: int = 0, num_videos: int = 160,
                  num_val_videos: int | None = None, num_classes: int = 4, size: tuple[int, int] = (64, 64),
                  num_frames: int = 48, fps: int = 30, gop: int = 12, write_videos: bool = True,
                  write_rawframes: bool = True, jpeg_quality: int = 90, verbose: bool = False) -> dict:
    """Generate the synthetic motion-direction data set in ``out_dir`` (see the module docstring).

    ``num_videos`` train clips and ``num_val_videos`` (default ``max(num_classes, 0.3 * num_videos)``)
    val clips, classes balanced and shuffled; the same ``seed`` gives the same pixels.
    Returns a dict with the paths of the annotation files, the data prefixes and the label map.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    if not (write_videos or write_rawframes):
        raise ValueError("nothing to write: enable write_videos or write_rawframes")
    if num_val_videos is None:
        num_val_videos = max(num_classes, int(round(0.3 * num_videos)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = class_names(num_classes)
    t_start = time.time()
    lists: dict[str, dict[str, list[str]]] = {}
    for split, n in (("train", num_videos), ("val", num_val_videos)):
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        vid_lines, raw_lines = [], []
        for i, label in enumerate(labels.tolist()):
            clip_rng = np.random.default_rng(rng.integers(0, 2 ** 63))
            frames = render_clip(clip_rng, label, num_classes, size=size, num_frames=num_frames)
            name = f"vid_{i:05d}"
            if write_videos:
                write_video(out / "videos" / split / f"{name}.mp4", frames, fps=fps, gop=gop)
            if write_rawframes:
                write_frame_folder(out / "rawframes" / split / name, frames, quality=jpeg_quality)
            vid_lines.append(f"{split}/{name}.mp4 {label}")
            raw_lines.append(f"{split}/{name} {num_frames} {label}")
        lists[split] = {"videos": vid_lines, "rawframes": raw_lines}
        if verbose:
            print(f"{split}: {n} clips ({time.time() - t_start:.1f} s)")
    result = {"out_dir": str(out), "label_map": str(out / "label_map.txt"), "num_classes": num_classes,
              "class_names": names}
    atomic_save_text(out / "label_map.txt", "\n".join(names) + "\n")
    for split in ("train", "val"):
        for layout, enabled in (("videos", write_videos), ("rawframes", write_rawframes)):
            if not enabled:
                continue
            p = out / f"kinetics_{split}_list_{layout}.txt"
            atomic_save_text(p, "\n".join(lists[split][layout]) + "\n")
            result[f"ann_file_{split}_{layout}"] = str(p)
    if write_videos:
        result["data_prefix_videos"] = str(out / "videos")
    if write_rawframes:
        result["data_prefix_rawframes"] = str(out / "rawframes")
    meta = {"generator": "actionkit.synthetic.kinetics", "seed": seed, "num_videos": num_videos,
            "num_val_videos": num_val_videos, "num_classes": num_classes, "class_names": names,
            "size": list(size), "num_frames": num_frames, "fps": fps, "gop": gop,
            "task": "direction of motion of the red disc with a white centre"}
    atomic_save_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    return result
