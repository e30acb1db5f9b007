"""Drawing helpers for the demo: boxes + labels on frames (GIF / MP4) and a per-class AP bar chart (PNG).

Pure PIL (no matplotlib), so the demo has no plotting dependency.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .utils import atomic_save_bytes

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40)]


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_boxes(frame: np.ndarray, boxes: Sequence[Sequence[float]], texts: Sequence[str],
               normalized: bool = True, scale: int = 1) -> Image.Image:
    """Draw ``boxes`` (x1, y1, x2, y2; normalised to [0, 1] by default) with one caption each."""
    img = Image.fromarray(np.ascontiguousarray(frame))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    font = _font(max(10, 5 * scale))
    w, h = img.size
    for i, (box, text) in enumerate(zip(boxes, texts)):
        x1, y1, x2, y2 = box
        if normalized:
            x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
        else:
            x1, y1, x2, y2 = (v * scale for v in (x1, y1, x2, y2))
        color = PALETTE[i % len(PALETTE)]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=max(1, scale))
        lines = text.split("\n")
        ty = y1
        for line in lines:
            tw = draw.textlength(line, font=font)
            draw.rectangle([x1, ty, x1 + tw + 4, ty + font.size + 3], fill=color)
            draw.text((x1 + 2, ty + 1), line, fill=(0, 0, 0), font=font)
            ty += font.size + 3
    return img


def save_gif(frames: Sequence[Image.Image], path: str | os.PathLike, fps: float = 6.0) -> None:
    if not frames:
        raise ValueError("no frames to write")
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=list(frames[1:]),
                   duration=int(1000 / fps), loop=0)
    atomic_save_bytes(path, buf.getvalue())


def save_mp4(frames: Sequence[Image.Image], path: str | os.PathLike, fps: int = 6) -> None:
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.mp4")
    w, h = frames[0].size
    w, h = w - w % 2, h - h % 2  # yuv420p needs even sizes
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for im in frames:
            arr = np.asarray(im.convert("RGB"))[:h, :w]
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)


def bar_chart_png(names: Sequence[str], values: Sequence[float], path: str | os.PathLike,
                  title: str = "", vmax: float = 1.0) -> None:
    """A horizontal bar chart (one bar per class) saved as PNG."""
    font = _font(13)
    row, left, right, top = 24, 220, 90, 40 if title else 12
    width = left + 420 + right
    height = top + row * len(names) + 16
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    if title:
        d.text((12, 10), title, fill="black", font=_font(15))
    span = width - left - right
    for i, (name, v) in enumerate(zip(names, values)):
        y = top + i * row
        d.text((8, y + 4), name[:30], fill="black", font=font)
        frac = 0.0 if v is None or np.isnan(v) else max(0.0, min(1.0, float(v) / vmax))
        d.rectangle([left, y + 3, left + span, y + row - 3], outline=(200, 200, 200))
        d.rectangle([left, y + 3, left + int(span * frac), y + row - 3], fill=PALETTE[3])
        label = "n/a" if v is None or np.isnan(v) else f"{v:.3f}"
        d.text((left + span + 8, y + 4), label, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_save_bytes(path, buf.getvalue())
