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
    with Mp4Writer(path, fps) as writer:
        for im in frames:
            writer.write(np.asarray(im.convert("RGB")))


class Mp4Writer:
    """Write RGB frames as an H.264 mp4 (yuv420p) at ``fps``; written to a temporary file next to ``path`` and
    renamed into place by :meth:`close` (an interrupted run leaves no truncated video). Odd frame sizes are
    padded by one pixel (4:2:0 needs even sizes)."""

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 20):
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}.mp4")
        self._container = None
        self._stream = None
        self.frames_written = 0

    def _open(self, h: int, w: int) -> None:
        import av
        from fractions import Fraction

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.tmp), "w")
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        import av

        h, w = frame.shape[:2]
        if self._container is None:
            self._open(h, w)
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the file into place (an mp4 without frames is not written)."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        try:
            os.remove(self.tmp)
        except OSError:
            pass

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


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
