"""A tiny synthetic AVA-format data set whose action classes need motion to be told apart.

``actionkit make-synthetic ava --out DIR [--seed N]`` (or :func:`make_ava`) writes::

    DIR/rawframes/<video_id>/img_00001.jpg ...   frame k is at t = timestamp_start + (k-1)/fps
    DIR/videos/<video_id>.mp4                    the same frames (H.264, short GOP; video frame k-1 = img k)
    DIR/annotations/train.csv, val.csv           AVA csv rows: vid, ts, x1, y1, x2, y2, action_id, person_id
    DIR/annotations/{train,val}_excluded_timestamps.csv
    DIR/annotations/action_list.pbtxt            item { name: "..." id: N } label map (all classes evaluated)
    DIR/annotations/proposals_{train,val}.pkl    published format {'vid,0903': float64 [N, 5]}
    DIR/annotations/proposals_{train,val}.npz    the pickle-free form (``actionkit.data.ava_proposals.load_proposals``)
    DIR/dataset_info.json                        fps, timestamps, classes, files and the AVADataset arguments

Scene: a static textured background with 2-3 stick figures (coloured body with a stripe, head, two arms and
two legs). Each actor always has one **motion** class (stand still, walk left, walk right, bounce, spin) and
sometimes one **attribute** class (wave: the left arm oscillates; carry: the right arm holds a small box).
Figures have no facing direction, non-spinning figures show their stripe at a random fixed angle, idle arms
rest at random angles in the same range that waving sweeps and figures stand at random heights, so one
frame does not reveal the motion classes (nor wave): they need several frames. Carry is visible in one frame.

Extension points: classes live in :data:`CLASSES` with a ``group``; per-frame actor state is simulated in
:func:`_simulate_actor` (arrays over frames); labels at a keyframe come from the rules in :data:`LABEL_RULES`
(``rule(track, frame_index, tracks, ctx) -> list of class ids``); drawing is :func:`_draw_actor`. Event
classes (an event seconds before/after the keyframe) and relation classes (two actors) add a group, state
and a rule; ``dataset_info.json`` lists the groups present in ``class_groups``.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ..utils import atomic_save_bytes, atomic_save_text
from ..data.ava_proposals import save_proposals_npz

__all__ = ["CLASSES", "EXTRA_CLASSES", "SynthClass", "make_ava"]


@dataclass(frozen=True)
class SynthClass:
    id: int
    name: str
    group: str            # 'motion' (exactly one per actor) | 'attribute' (zero or one) | later: 'event', 'relation'
    needs_motion: bool    # True when one frame cannot tell it apart


CLASSES: tuple[SynthClass, ...] = (
    SynthClass(1, "stand still", "motion", True),
    SynthClass(2, "walk left", "motion", True),
    SynthClass(3, "walk right", "motion", True),
    SynthClass(4, "bounce", "motion", True),
    SynthClass(5, "spin", "motion", True),
    SynthClass(6, "wave", "attribute", True),
    SynthClass(7, "carry", "attribute", False),
)
STAND, WALK_LEFT, WALK_RIGHT, BOUNCE, SPIN, WAVE, CARRY = (c.id for c in CLASSES)

# Optional groups (``make_ava(extra_groups=...)``), off by default so the basic set stays as it is.
#  * relation: the label of an actor depends on what ANOTHER actor does at the same time, which the actor's own
#    RoI feature does not show but a relation model that sees the whole frame next to the actor (ACRN) can:
#    "cross": the actor walks left / right while another actor walks the other way; "watch": the actor stands
#    still while another actor spins. Neither can fire on the actor itself (its own motion is never both), so a
#    model that pairs the actor with every place of the frame needs no position of the actor to learn them.
#  * event: a scene-wide flash (every actor's body and head lit white for 1 s, centred on a keyframe second)
#    happens 0-2 times per video; an actor is labelled "flash 5-25 s before or after" when a flash lies 5-25 s
#    from the keyframe, far outside any short clip but inside a +-25 s feature bank window. Keyframes 1-4 s from a
#    flash are written to the excluded timestamps (AVA's mechanism for unannotated keyframes): neither "in the
#    window" nor "not in the window" would be right for a model that sees the window as an unordered set, as the
#    LFB heads do (they cannot tell 3 s from 10 s). The flash is scene-wide because a feature bank records no
#    identities: a per-actor event in a scene of several people would not say whose it was.
#    Use videos of >= 30 keyframes for useful event labels.
#  * flash: the flash itself ("lit by a flash" at the keyframe), a short-term class visible in the clip: a
#    detector trained with it learns to see flashes, so a feature bank of its RoI features holds the long-term
#    context of the 'event' class (as AVA banks hold the actions around a keyframe).
EXTRA_CLASSES: dict[str, tuple[SynthClass, ...]] = {
    "relation": (SynthClass(8, "cross (another person walking the other way)", "relation", True),
                 SynthClass(9, "watch (a person spinning)", "relation", True)),
    "event": (SynthClass(10, "flash 5-25 s before or after", "event", True),),
    "flash": (SynthClass(11, "lit by a flash", "flash", False),),
}
CROSS, WATCH = (c.id for c in EXTRA_CLASSES["relation"])
(FLASH_AWAY,) = (c.id for c in EXTRA_CLASSES["event"])
(LIT,) = (c.id for c in EXTRA_CLASSES["flash"])
EVENT_WINDOW_S = (5, 25)
FLASHES_PER_VIDEO = ((0, 1, 2), (0.5, 0.35, 0.15))   # choices and their probabilities
FLASH_MIN_GAP_S = 12

FORMAT_VERSION = "actionkit-synthetic-ava-2"
TIMESTAMP_START = 900

# figure geometry in pixels at scale 1 (body centre = (x, y))
_BODY_HW, _BODY_HH = 6.0, 11.0
_HEAD_R, _HEAD_DY = 5.0, 16.0
_ARM_LEN, _SHOULDER_DX, _SHOULDER_DY = 11.0, 5.0, 7.0
_LEG_LEN, _HIP_DX, _HIP_DY = 10.0, 3.0, 9.0
_BOX = 3.0                              # half size of the carried box
_LEFT_ARM_BASE, _ARM_SWEEP = -2.3, 0.8  # left arm: waving and idle angles share [base-sweep, base+sweep]
_RIGHT_ARM_IDLE = (0.6, 1.5)            # right arm resting angles; carrying holds it at _RIGHT_ARM_CARRY
_RIGHT_ARM_CARRY = 0.35
_SHIFT = 4                              # cv2 sub-pixel drawing (coordinates * 16)
# spinning speed (rad/s): the stripe is drawn on the visible half of the turn only, so a slower spin can hide it
# for the whole ~0.8 s of a 4x4 clip and look exactly like standing still; at >= 5.5 rad/s the hidden half-turn
# lasts < 0.6 s, so in every 4x4 clip of a spinner the stripe moves, appears or vanishes while a stander's stays
# put (one frame still cannot tell the two apart)
SPIN_OMEGA = (5.5, 7.5)


@dataclass
class Track:
    """One actor: per-frame state arrays (0-based frame index) and static appearance."""
    person_id: int
    scale: float
    body_color: tuple[int, int, int]
    stripe_color: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    phase: np.ndarray          # stripe angle (changes only while spinning)
    left_arm: np.ndarray
    right_arm: np.ndarray
    motion: np.ndarray         # class id per frame
    attribute: np.ndarray      # 0, WAVE or CARRY per frame
    segment: np.ndarray        # index of the behaviour segment per frame
    extra: dict[str, np.ndarray] = field(default_factory=dict)   # state added by extensions


def _segment_bounds(rng: np.random.Generator, n_frames: int, fps: int, min_s: int, max_s: int) -> list[tuple[int, int]]:
    """Segments whose boundaries fall half-way between integer seconds (keyframes sit inside segments)."""
    bounds = []
    t = float(rng.integers(1, max_s)) + 0.5
    start = 0
    while start < n_frames:
        end = min(n_frames, int(round(t * fps)))
        if end > start:
            bounds.append((start, end))
        start = end
        t += float(rng.integers(min_s, max_s + 1))
    return bounds


def _simulate_actor(rng: np.random.Generator, person_id: int, n_frames: int, fps: int, width: int, height: int,
                    x_range: tuple[float, float]) -> Track:
    scale = float(rng.uniform(0.85, 1.15))
    margin = (_SHOULDER_DX + _ARM_LEN + 2) * scale
    x = np.zeros(n_frames)
    y = np.zeros(n_frames)
    phase = np.zeros(n_frames)
    left = np.zeros(n_frames)
    right = np.zeros(n_frames)
    motion = np.zeros(n_frames, dtype=np.int64)
    attribute = np.zeros(n_frames, dtype=np.int64)
    segment = np.zeros(n_frames, dtype=np.int64)

    top_need = (_HEAD_DY + _HEAD_R + 9) * scale + 2          # head top, with bounce room
    bottom_need = (_HIP_DY + _LEG_LEN) * scale + 2
    y_base = float(rng.uniform(top_need, height - bottom_need))
    cur_x = float(rng.uniform(*x_range))
    cur_phase = float(rng.uniform(0, 2 * math.pi))
    t_of = np.arange(n_frames) / fps
    for si, (f0, f1) in enumerate(_segment_bounds(rng, n_frames, fps, 2, 5)):
        segment[f0:f1] = si
        dur = (f1 - f0) / fps
        speed = float(rng.uniform(9.0, 15.0))
        cands = [STAND, BOUNCE, SPIN]
        if cur_x - speed * dur >= margin:
            cands.append(WALK_LEFT)
        if cur_x + speed * dur <= width - margin:
            cands.append(WALK_RIGHT)
        m = int(rng.choice(cands))
        ts = t_of[f0:f1] - t_of[f0]
        motion[f0:f1] = m
        y[f0:f1] = y_base
        phase[f0:f1] = cur_phase
        x[f0:f1] = cur_x
        if m in (WALK_LEFT, WALK_RIGHT):
            v = speed if m == WALK_RIGHT else -speed
            x[f0:f1] = cur_x + v * (ts + 1.0 / fps)
            cur_x = float(x[f1 - 1])
        elif m == BOUNCE:
            amp = float(rng.uniform(6.0, 9.0)) * scale
            freq = float(rng.uniform(1.0, 1.6))
            y[f0:f1] = y_base - amp * np.abs(np.sin(math.pi * freq * (ts + 1.0 / fps)))
        elif m == SPIN:
            omega = float(rng.choice([-1, 1]) * rng.uniform(SPIN_OMEGA[0], SPIN_OMEGA[1]))
            phase[f0:f1] = cur_phase + omega * (ts + 1.0 / fps)
            cur_phase = float(phase[f1 - 1])
        # attribute for this segment (independent of the motion)
        a = int(rng.choice([0, 0, WAVE, CARRY]))
        attribute[f0:f1] = a
        if a == WAVE:
            freq = float(rng.uniform(1.0, 1.6))
            left[f0:f1] = _LEFT_ARM_BASE + _ARM_SWEEP * np.sin(2 * math.pi * freq * ts + rng.uniform(0, 2 * math.pi))
        else:
            left[f0:f1] = _LEFT_ARM_BASE + float(rng.uniform(-_ARM_SWEEP, _ARM_SWEEP))
        right[f0:f1] = _RIGHT_ARM_CARRY if a == CARRY else float(rng.uniform(*_RIGHT_ARM_IDLE))
    body = tuple(int(c) for c in rng.integers(60, 256, size=3))
    stripe = tuple(int(255 - c) for c in body)
    return Track(person_id, scale, body, stripe, x, y, phase, left, right, motion, attribute, segment)


def _points(track: Track, f: int) -> dict[str, Any]:
    s = track.scale
    x, y = float(track.x[f]), float(track.y[f])
    sh_l = (x - _SHOULDER_DX * s, y - _SHOULDER_DY * s)
    sh_r = (x + _SHOULDER_DX * s, y - _SHOULDER_DY * s)
    al, ar = float(track.left_arm[f]), float(track.right_arm[f])
    hand_l = (sh_l[0] + _ARM_LEN * s * math.cos(al), sh_l[1] + _ARM_LEN * s * math.sin(al))
    hand_r = (sh_r[0] + _ARM_LEN * s * math.cos(ar), sh_r[1] + _ARM_LEN * s * math.sin(ar))
    hip_y = y + _HIP_DY * s
    legs = [((x - _HIP_DX * s, hip_y), (x - (_HIP_DX + 2) * s, hip_y + _LEG_LEN * s)),
            ((x + _HIP_DX * s, hip_y), (x + (_HIP_DX + 2) * s, hip_y + _LEG_LEN * s))]
    head = (x, y - _HEAD_DY * s)
    return dict(x=x, y=y, sh_l=sh_l, sh_r=sh_r, hand_l=hand_l, hand_r=hand_r, legs=legs, head=head)


def _actor_box(track: Track, f: int, width: int, height: int) -> tuple[float, float, float, float]:
    """Normalized [x1, y1, x2, y2] of everything drawn for the actor, clipped to the frame."""
    p = _points(track, f)
    s = track.scale
    xs = [p["x"] - _BODY_HW * s, p["x"] + _BODY_HW * s, p["head"][0] - _HEAD_R * s, p["head"][0] + _HEAD_R * s,
          p["hand_l"][0], p["hand_r"][0]] + [q[0] for leg in p["legs"] for q in leg]
    ys = [p["y"] - _BODY_HH * s, p["y"] + _BODY_HH * s, p["head"][1] - _HEAD_R * s,
          p["hand_l"][1], p["hand_r"][1]] + [q[1] for leg in p["legs"] for q in leg]
    if track.attribute[f] == CARRY:
        xs += [p["hand_r"][0] - _BOX * s, p["hand_r"][0] + _BOX * s]
        ys += [p["hand_r"][1] - _BOX * s, p["hand_r"][1] + _BOX * s]
    x1, x2 = max(0.0, min(xs) - 1), min(float(width), max(xs) + 1)
    y1, y2 = max(0.0, min(ys) - 1), min(float(height), max(ys) + 1)
    return x1 / width, y1 / height, x2 / width, y2 / height


def _fx(v: float) -> int:
    return int(round(v * (1 << _SHIFT)))


def _pt(p: tuple[float, float]) -> tuple[int, int]:
    return _fx(p[0]), _fx(p[1])


def _draw_actor(img: np.ndarray, track: Track, f: int) -> None:
    p = _points(track, f)
    s = track.scale
    col, scol = track.body_color, track.stripe_color
    aa = cv2.LINE_AA
    thick = max(1, int(round(2 * s)))
    for a, b in p["legs"]:
        cv2.line(img, _pt(a), _pt(b), col, thick, aa, _SHIFT)
    cv2.line(img, _pt(p["sh_l"]), _pt(p["hand_l"]), col, thick, aa, _SHIFT)
    cv2.line(img, _pt(p["sh_r"]), _pt(p["hand_r"]), col, thick, aa, _SHIFT)
    cv2.ellipse(img, _pt((p["x"], p["y"])), (_fx(_BODY_HW * s), _fx(_BODY_HH * s)), 0, 0, 360, col, -1, aa, _SHIFT)
    cv2.circle(img, _pt(p["head"]), _fx(_HEAD_R * s), col, -1, aa, _SHIFT)
    lit = track.extra.get("lit")
    if lit is not None and lit[f]:
        col = (255, 255, 255)
        cv2.ellipse(img, _pt((p["x"], p["y"])), (_fx(_BODY_HW * s), _fx(_BODY_HH * s)), 0, 0, 360, col, -1, aa,
                    _SHIFT)
        cv2.circle(img, _pt(p["head"]), _fx(_HEAD_R * s), col, -1, aa, _SHIFT)
    ph = float(track.phase[f])
    if math.cos(ph) > 0:   # the stripe is on the visible side of the (rotating) body
        sx = p["x"] + 0.7 * _BODY_HW * s * math.sin(ph)
        cv2.line(img, _pt((sx, p["y"] - 0.75 * _BODY_HH * s)), _pt((sx, p["y"] + 0.75 * _BODY_HH * s)), scol,
                 max(1, int(round(2 * s))), aa, _SHIFT)
    if track.attribute[f] == CARRY:
        h = p["hand_r"]
        cv2.rectangle(img, _pt((h[0] - _BOX * s, h[1] - _BOX * s)), _pt((h[0] + _BOX * s, h[1] + _BOX * s)),
                      (250, 220, 40), -1, aa, _SHIFT)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    coarse = rng.uniform(40, 150, size=(height // 12 + 2, width // 12 + 2, 3)).astype(np.float32)
    bg = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 10, size=(height, width, 1)).astype(np.float32)
    bg = bg + cv2.GaussianBlur(fine, (3, 3), 0).reshape(height, width, 1)
    grey = bg.mean(axis=2, keepdims=True)
    bg = 0.45 * bg + 0.55 * grey            # muted colours: the actors stand out
    return np.clip(bg, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- labels

def _motion_rule(track: Track, f: int, tracks: Sequence[Track], ctx: dict) -> list[int]:
    return [int(track.motion[f])]


def _attribute_rule(track: Track, f: int, tracks: Sequence[Track], ctx: dict) -> list[int]:
    a = int(track.attribute[f])
    return [a] if a else []


def _relation_rule(track: Track, f: int, tracks: Sequence[Track], ctx: dict) -> list[int]:
    m = int(track.motion[f])
    others = {int(o.motion[f]) for o in tracks if o is not track}
    out = []
    if m in (WALK_LEFT, WALK_RIGHT) and (WALK_RIGHT if m == WALK_LEFT else WALK_LEFT) in others:
        out.append(CROSS)
    if m == STAND and SPIN in others:
        out.append(WATCH)
    return out


def _keyframe_flash_distance(f: int, ctx: dict) -> int | None:
    """Whole seconds from the keyframe at frame ``f`` to the nearest flash of the video (None: no flash)."""
    flashes = ctx.get("flash_frames")
    if flashes is None or len(flashes) == 0:
        return None
    return int(round(np.min(np.abs(np.asarray(flashes) - f)) / ctx["fps"]))


def _event_rule(track: Track, f: int, tracks: Sequence[Track], ctx: dict) -> list[int]:
    flashes = ctx.get("flash_frames")
    if flashes is None or len(flashes) == 0:
        return []
    dist_s = np.abs(np.asarray(flashes) - f) / ctx["fps"]
    lo, hi = EVENT_WINDOW_S
    return [FLASH_AWAY] if np.any((dist_s >= lo) & (dist_s <= hi)) else []


def _flash_rule(track: Track, f: int, tracks: Sequence[Track], ctx: dict) -> list[int]:
    lit = track.extra.get("lit")
    return [LIT] if lit is not None and lit[f] else []


def _schedule_flashes(rng: np.random.Generator, keyframe_frames: Sequence[int], n_frames: int, fps: int,
                      flashes_per_video: tuple[Sequence[int], Sequence[float]] = FLASHES_PER_VIDEO,
                      flash_s: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Flashes of ``flash_s`` seconds (odd: they light that many keyframes) centred on keyframes at least
    FLASH_MIN_GAP_S apart: (centre frames, per-frame lit mask)."""
    choices, probs = flashes_per_video
    n = int(rng.choice(np.asarray(choices), p=np.asarray(probs, dtype=float)))
    centres: list[int] = []
    for f in rng.permutation(np.asarray(keyframe_frames)):
        if len(centres) == n:
            break
        if all(abs(int(f) - c) >= FLASH_MIN_GAP_S * fps for c in centres):
            centres.append(int(f))
    lit = np.zeros(n_frames, dtype=bool)
    half = (flash_s * fps) // 2
    for c in centres:
        lit[max(0, c - half):c + half + 1] = True
    return np.array(sorted(centres), dtype=np.int64), lit


LabelRule = Callable[[Track, int, Sequence[Track], dict], list]
LABEL_RULES: list[LabelRule] = [_motion_rule, _attribute_rule]
EXTRA_RULES: dict[str, LabelRule] = {"relation": _relation_rule, "event": _event_rule, "flash": _flash_rule}


# ---------------------------------------------------------------------------------------------- proposals

def _detections(rng: np.random.Generator, gt_boxes: list[tuple[float, float, float, float]], p_miss: float,
                n_false: float, p_confident: float) -> np.ndarray:
    """Detector-like person boxes: jittered GT (mostly high scores), some missed, a few low-score false boxes."""
    rows = []
    for b in gt_boxes:
        if rng.random() < p_miss:
            continue
        w, h = b[2] - b[0], b[3] - b[1]
        jit = rng.normal(0, 0.04, size=4) * np.array([w, h, w, h])
        x1, y1, x2, y2 = np.clip(np.array(b) + jit, 0.0, 1.0)
        if x2 <= x1 or y2 <= y1:
            continue
        score = rng.uniform(0.9, 1.0) if rng.random() < p_confident else rng.uniform(0.6, 0.9)
        rows.append([x1, y1, x2, y2, score])
        if rng.random() < 0.15:   # a duplicate, looser box with a lower score
            jit = rng.normal(0, 0.1, size=4) * np.array([w, h, w, h])
            x1, y1, x2, y2 = np.clip(np.array(b) + jit, 0.0, 1.0)
            if x2 > x1 and y2 > y1:
                rows.append([x1, y1, x2, y2, rng.uniform(0.3, 0.8)])
    for _ in range(int(rng.poisson(n_false))):
        w, h = rng.uniform(0.1, 0.25), rng.uniform(0.3, 0.5)
        x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        rows.append([x1, y1, x1 + w, y1 + h, rng.uniform(0.05, 0.75)])
    if not rows:
        return np.zeros((0, 5), dtype=np.float64)
    arr = np.array(rows, dtype=np.float64)
    arr[:, :4] = np.round(arr[:, :4], 3)
    return arr[np.argsort(-arr[:, 4], kind="stable")]


# ---------------------------------------------------------------------------------------------- writer

def _write_video(path: Path, frames: list[np.ndarray], fps: int, gop: int) -> None:
    import av

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.mp4")
    height, width = frames[0].shape[:2]
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "16", "preset": "veryfast",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
        stream.codec_context.thread_count = 1
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def _pbtxt(classes: Sequence[SynthClass]) -> str:
    return "".join(f'item {{\n  name: "{c.name}"\n  id: {c.id}\n}}\n' for c in classes)


def make_ava(out_dir: str | os.PathLike, seed: int = 0, num_train: int = 8, num_val: int = 3,
             num_keyframes: int = 20, fps: int = 15, width: int = 160, height: int = 120,
             actors: tuple[int, int] = (2, 3), margin_s: int = 3, timestamp_start: int = TIMESTAMP_START,
             jpeg_quality: int = 95, gop: int = 8, write_videos: bool = True, num_excluded: tuple[int, int] = (2, 1),
             p_miss: float = 0.03, n_false: float = 0.7, p_confident: float = 0.95, extra_groups: Sequence[str] = (),
             flashes_per_video: tuple[Sequence[int], Sequence[float]] = FLASHES_PER_VIDEO, flash_s: int = 1) -> dict:
    """Write the synthetic AVA set into ``out_dir`` (replacing a previous one) and return ``dataset_info``.

    Keyframes of every video are the integer seconds ``timestamp_start + margin_s + i`` (``i < num_keyframes``);
    videos last ``num_keyframes + 2*margin_s - 1`` seconds. ``margin_s * fps`` must exceed half of the longest
    clip (64 frames in the AVA configs) so that sampled indices stay >= 1. ``extra_groups`` adds the optional
    class groups of :data:`EXTRA_CLASSES` (``'relation'``, ``'event'``); they draw from their own random stream,
    so the basic labels of a seed do not change (flashes do change the pixels, and 'event' adds the keyframes
    1-4 s from a flash to the excluded timestamps). ``flashes_per_video`` = (choices, probabilities) of the number
    of flashes in a video ('event' / 'flash' groups) and ``flash_s`` (odd) the seconds each lasts: the keyframes
    it lights are labelled 'lit by a flash', the others less than 5 s away are excluded.
    """
    if flash_s < 1 or flash_s % 2 == 0 or flash_s // 2 >= EVENT_WINDOW_S[0]:
        raise ValueError(f"flash_s must be odd and lit keyframes must stay out of the event window, got {flash_s}")
    unknown = [g for g in extra_groups if g not in EXTRA_CLASSES]
    if unknown:
        raise ValueError(f"unknown extra class groups {unknown}; expected some of {sorted(EXTRA_CLASSES)}")
    groups = [g for g in EXTRA_CLASSES if g in extra_groups]      # canonical order, no duplicates
    classes = list(CLASSES) + [c for g in groups for c in EXTRA_CLASSES[g]]
    rules = list(LABEL_RULES) + [EXTRA_RULES[g] for g in groups]
    ext_rng = np.random.default_rng([seed, 1])
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even (H.264 4:2:0), got {width}x{height}")
    if num_train < 1 or num_val < 1 or num_keyframes < 1 or fps < 1:
        raise ValueError("num_train, num_val, num_keyframes and fps must be >= 1")
    if actors[0] < 1 or actors[1] < actors[0]:
        raise ValueError(f"actors must be (min, max) with 1 <= min <= max, got {actors}")
    t0 = time.time()
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    duration = num_keyframes + 2 * margin_s - 1
    timestamp_end = timestamp_start + duration
    n_frames = duration * fps
    keyframes = [timestamp_start + margin_s + i for i in range(num_keyframes)]

    existing = [sub for sub in ("rawframes", "videos", "annotations") if (out / sub).exists()]
    if existing:
        try:
            previous = json.loads((out / "dataset_info.json").read_text()).get("format")
        except (OSError, ValueError, AttributeError):
            previous = None
        if not (isinstance(previous, str) and previous.startswith("actionkit-synthetic-ava-")):
            raise FileExistsError(f"{out} already holds {existing} that this generator did not write "
                                  "(no synthetic dataset_info.json); choose an empty --out folder")
        for sub in existing:
            shutil.rmtree(out / sub)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict] = {}
    for split, n_videos in (("train", num_train), ("val", num_val)):
        csv_rows: list[str] = []
        proposals: dict[str, np.ndarray] = {}
        videos = []
        all_keys = []
        near_flash: list[tuple[str, int]] = []      # 'event': keyframes 1-4 s from a flash (see EXTRA_CLASSES)
        flash_seconds: dict[str, list[int]] = {}
        for vi in range(n_videos):
            video_id = f"syn{split}{vi:03d}"
            videos.append(video_id)
            n_act = int(rng.integers(actors[0], actors[1] + 1))
            lanes = np.linspace(0, width, n_act + 1)
            order = rng.permutation(n_act)
            margin = (_SHOULDER_DX + _ARM_LEN + 2) * 1.2
            tracks = []
            for a in range(n_act):
                lo, hi = lanes[order[a]], lanes[order[a] + 1]
                x_range = (max(margin, lo + 4), min(width - margin, hi - 4))
                if x_range[1] <= x_range[0]:
                    x_range = (margin, width - margin)
                tracks.append(_simulate_actor(rng, a, n_frames, fps, width, height, x_range))
            flash_frames = None
            if "event" in groups or "flash" in groups:
                flash_frames, lit = _schedule_flashes(ext_rng, [fps * (ts - timestamp_start) for ts in keyframes],
                                                      n_frames, fps, flashes_per_video, flash_s)
                for tr in tracks:
                    tr.extra["lit"] = lit
                flash_seconds[video_id] = [timestamp_start + int(c) // fps for c in flash_frames]
            bg = _background(rng, width, height)
            frame_dir = out / "rawframes" / video_id
            frame_dir.mkdir(parents=True, exist_ok=True)
            frames = []
            for f in range(n_frames):
                img = bg.copy()
                for tr in sorted(tracks, key=lambda t: t.y[f]):   # lower figures are nearer: drawn last
                    _draw_actor(img, tr, f)
                frames.append(img)
                cv2.imwrite(str(frame_dir / f"img_{f + 1:05d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if write_videos:
                (out / "videos").mkdir(parents=True, exist_ok=True)
                _write_video(out / "videos" / f"{video_id}.mp4", frames, fps, gop)
            ctx = dict(fps=fps, width=width, height=height, timestamp_start=timestamp_start,
                       flash_frames=flash_frames)
            for ts in keyframes:
                f = fps * (ts - timestamp_start)           # 0-based index of img_{fps*(ts-start)+1}
                boxes = []
                for tr in tracks:
                    box = _actor_box(tr, f, width, height)
                    box = tuple(round(v, 3) for v in box)
                    boxes.append(box)
                    labels = sorted(set(cid for rule in rules for cid in rule(tr, f, tracks, ctx)))
                    for cid in labels:
                        csv_rows.append(f"{video_id},{ts:04d},{box[0]:.3f},{box[1]:.3f},{box[2]:.3f},{box[3]:.3f},"
                                        f"{cid},{tr.person_id}")
                key = f"{video_id},{ts:04d}"
                all_keys.append((video_id, ts))
                if "event" in groups and flash_s // 2 < (_keyframe_flash_distance(f, ctx) or 0) < EVENT_WINDOW_S[0]:
                    near_flash.append((video_id, ts))
                det = _detections(rng, boxes, p_miss, n_false, p_confident)
                if len(det):
                    proposals[key] = det
        n_exc = min(num_excluded[0 if split == "train" else 1], max(0, len(all_keys) - 1))
        excluded = [all_keys[i] for i in sorted(rng.choice(len(all_keys), size=n_exc, replace=False))] if n_exc else []
        excluded = sorted(set(excluded) | set(near_flash))
        ann = out / "annotations" / f"{split}.csv"
        atomic_save_text(ann, "\n".join(csv_rows) + "\n")
        exc = out / "annotations" / f"{split}_excluded_timestamps.csv"
        atomic_save_text(exc, "".join(f"{v},{t:04d}\n" for v, t in excluded))
        pkl = out / "annotations" / f"proposals_{split}.pkl"
        atomic_save_bytes(pkl, pickle.dumps(proposals, protocol=2))
        npz = out / "annotations" / f"proposals_{split}.npz"
        save_proposals_npz(proposals, npz)
        splits[split] = dict(videos=videos, ann_file=str(ann.relative_to(out)), exclude_file=str(exc.relative_to(out)),
                             proposal_file=str(pkl.relative_to(out)), proposal_file_npz=str(npz.relative_to(out)),
                             num_keyframes=len(all_keys), excluded=[f"{v},{t:04d}" for v, t in excluded])
        if flash_seconds:
            splits[split]["flash_seconds"] = flash_seconds
    label_file = out / "annotations" / "action_list.pbtxt"
    atomic_save_text(label_file, _pbtxt(classes))
    num_classes = max(c.id for c in classes) + 1
    info = dict(
        format=FORMAT_VERSION, seed=seed, fps=fps, width=width, height=height,
        timestamp_start=timestamp_start, timestamp_end=timestamp_end, frames_per_video=n_frames,
        keyframes=keyframes, filename_tmpl="img_{:05}.jpg", start_index=0,
        num_classes=num_classes,
        classes=[dict(id=c.id, name=c.name, group=c.group, needs_motion=c.needs_motion) for c in classes],
        class_groups=sorted({c.group for c in classes}), extra_groups=groups,
        event_window_s=list(EVENT_WINDOW_S) if "event" in groups else None,
        label_file=str(label_file.relative_to(out)), rawframes_dir="rawframes",
        videos_dir="videos" if write_videos else None, video_suffix=".mp4" if write_videos else None,
        gop=gop, splits=splits,
        dataset_args=dict(fps=fps, timestamp_start=timestamp_start, timestamp_end=timestamp_end,
                          num_classes=num_classes, filename_tmpl="img_{:05}.jpg", start_index=0,
                          person_det_score_thr=0.9),
        notes=("frame k (img_%05d.jpg, 1-based) is at t = timestamp_start + (k-1)/fps; the keyframe t is "
               "img_{fps*(t-timestamp_start)+1}; video frame k-1 equals img k up to JPEG/H.264 error; "
               "paths are relative to this file's folder"),
    )
    atomic_save_text(out / "dataset_info.json", json.dumps(info, indent=2) + "\n")
    info["seconds"] = round(time.time() - t0, 2)
    return info
