"""The synthetic Kinetics generator: layout, determinism, motion-only labels, frame-accurate mp4s."""
from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from actionkit.data.decode import FrameFolderReader, open_video
from actionkit.cli.make_synthetic import main
from actionkit.synthetic.kinetics import class_names, make_kinetics, render_clip

K = 4


def render_set(n_per_class=20, frames=24, size=(32, 32), seed=0):
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for i in range(n_per_class * K):
        lab = i % K
        clips.append(render_clip(np.random.default_rng(rng.integers(2 ** 62)), lab, K, size, frames))
        labels.append(lab)
    return np.stack(clips), np.array(labels)


def target_mask(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.int16)
    return ((f[..., 0] > 170) & (f[..., 1] < 100) & (f[..., 2] < 100)).astype(np.float32)


def motion_direction_class(clip: np.ndarray) -> int:
    """Sum of phase-correlation shifts of the target mask between consecutive frames -> direction."""
    dx = dy = 0.0
    for a, b in zip(clip[:-1], clip[1:]):
        (sx, sy), _ = cv2.phaseCorrelate(target_mask(a), target_mask(b))
        dx += sx
        dy += sy
    ang = math.atan2(dy, dx) % (2 * math.pi)
    return int(round(ang / (2 * math.pi / K))) % K


def nearest_centroid_accuracy(feats: np.ndarray, labels: np.ndarray) -> float:
    tr = (np.arange(len(labels)) // K) % 2 == 0  # half of the clips of every class
    mu, sd = feats[tr].mean(0), feats[tr].std(0) + 1e-6
    f = (feats - mu) / sd
    cents = np.stack([f[tr & (labels == c)].mean(0) for c in range(K)])
    pred = np.argmin(((f[~tr][:, None] - cents[None]) ** 2).sum(-1), 1)
    return float((pred == labels[~tr]).mean())


def frame_features(frame: np.ndarray) -> np.ndarray:
    m = target_mask(frame)
    ys, xs = np.nonzero(m)
    cx, cy = (xs.mean(), ys.mean()) if len(xs) else (0.0, 0.0)
    return np.concatenate([frame.reshape(-1, 3).mean(0), frame.reshape(-1, 3).std(0), [cx, cy, m.sum()]])


def test_single_frames_carry_no_label_but_motion_does():
    clips, labels = render_set()
    rng = np.random.default_rng(1)
    shuffled = np.stack([c[rng.permutation(len(c))] for c in clips])
    # (1) mean colour of single frames: class averages agree within sampling noise
    means = shuffled[:, 0].reshape(len(clips), -1, 3).mean(1)  # first frame of each shuffled clip
    per_class = np.stack([means[labels == c].mean(0) for c in range(K)])
    se = means.std(0) / math.sqrt((labels == 0).sum())
    assert np.all(np.abs(per_class - per_class.mean(0)) < 4 * se)
    # (2) a classifier on single-frame statistics (colour + target position/size) is at chance
    feats = np.stack([frame_features(c[0]) for c in shuffled])
    assert nearest_centroid_accuracy(feats, labels) < 0.5
    # (3) ...while the motion of the target in the ordered clip gives the label
    ordered = np.mean([motion_direction_class(c) == lab for c, lab in zip(clips, labels)])
    assert ordered > 0.9
    # (4) a temporally shuffled clip loses the direction: the same estimator then sees where the target
    # went between two random frames, i.e. the axis of motion with a random sign (1/2 for 4 directions)
    shuffled_acc = np.mean([motion_direction_class(c) == lab for c, lab in zip(shuffled, labels)])
    assert shuffled_acc < 0.7


def test_render_deterministic_and_wraps():
    a, info = render_clip(np.random.default_rng(5), 2, K, (40, 32), 10, return_info=True)
    b = render_clip(np.random.default_rng(5), 2, K, (40, 32), 10)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (10, 32, 40, 3) and a.dtype == np.uint8
    assert info["target_velocity"][0] < 0  # class 2 of 4 = left
    assert class_names(4) == ["move_right", "move_down", "move_left", "move_up"]
    assert class_names(8)[1] == "move_down_right" and len(set(class_names(6))) == 6


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    t = time.time()
    res = make_kinetics(out, seed=3, num_videos=8, num_val_videos=4, size=(32, 32), num_frames=30, gop=6)
    res["elapsed"] = time.time() - t
    return res


def test_layout_and_lists(small):
    out = small["out_dir"]
    lines = open(small["ann_file_train_videos"]).read().split("\n")[:-1]
    assert len(lines) == 8 and lines[0].startswith("train/vid_00000.mp4 ")
    labels = sorted(int(ln.split()[1]) for ln in lines)
    assert labels == [0, 0, 1, 1, 2, 2, 3, 3]  # balanced
    raw = open(small["ann_file_val_rawframes"]).read().split("\n")[:-1]
    assert len(raw) == 4 and raw[0].split()[:2] == ["val/vid_00000", "30"]
    assert open(small["label_map"]).read().split() == class_names(4)
    r = FrameFolderReader(f"{out}/rawframes/val/vid_00000")
    assert r.num_frames == 30 and r.get_frames([29]).shape == (1, 32, 32, 3)
    with open_video(f"{out}/videos/val/vid_00000.mp4") as v:
        assert v.num_frames == 30 and v._index.keyframes == [0, 6, 12, 18, 24]


def test_generated_mp4_random_access_equals_sequential(small):
    import av

    path = f"{small['out_dir']}/videos/train/vid_00003.mp4"
    with av.open(path) as c:
        seq = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    rng = np.random.default_rng(0)
    with open_video(path) as r:
        for _ in range(10):
            idx = rng.integers(0, 30, size=6)
            np.testing.assert_array_equal(r.get_frames(idx), seq[idx])
    # the JPEG copy holds the same clip
    jpg = FrameFolderReader(f"{small['out_dir']}/rawframes/train/vid_00003").get_frames(range(30))
    assert np.abs(jpg.astype(int) - seq).mean() < 8


def test_same_seed_same_data(tmp_path):
    a = make_kinetics(tmp_path / "a", seed=7, num_videos=4, num_val_videos=4, size=(16, 16), num_frames=6)
    b = make_kinetics(tmp_path / "b", seed=7, num_videos=4, num_val_videos=4, size=(16, 16), num_frames=6,
                      write_videos=False)
    assert open(a["ann_file_train_rawframes"]).read() == open(b["ann_file_train_rawframes"]).read()
    fa = (tmp_path / "a/rawframes/train/vid_00002/img_00004.jpg").read_bytes()
    assert fa == (tmp_path / "b/rawframes/train/vid_00002/img_00004.jpg").read_bytes()
    assert "ann_file_train_videos" not in b


def test_cli(tmp_path, capsys):
    assert main(["kinetics", "--out", str(tmp_path / "o"), "--videos", "4", "--val-videos", "4",
                 "--frames", "6", "--size", "16", "16", "--seed", "2", "--no-rawframes"]) == 0
    assert "wrote synthetic Kinetics" in capsys.readouterr().out
    assert len(list((tmp_path / "o/videos/val").glob("*.mp4"))) == 4
    assert not (tmp_path / "o/rawframes").exists()
    with pytest.raises(ValueError):
        make_kinetics(tmp_path / "p", num_classes=1)


@pytest.mark.slow
def test_default_size_generates_fast(tmp_path):
    t = time.time()
    res = make_kinetics(tmp_path / "d")
    assert time.time() - t < 60
    assert len(open(res["ann_file_train_videos"]).read().split("\n")) - 1 == 160
