"""SampleFrames / DenseSampleFrames against the spec formulas (spec-recognition.md §A3.1), hand-computed."""
from __future__ import annotations

import numpy as np
import pytest

from actionkit.data.sampling import DenseSampleFrames, SampleFrames
from actionkit.registry import PIPELINES


def run(op, total_frames, start_index=0):
    return op({"total_frames": total_frames, "start_index": start_index})


def clips(offsets, clip_len, interval):
    return np.concatenate([o + np.arange(clip_len) * interval for o in offsets])


# ---------------------------------------------------------------- test mode (0.x offsets)
def test_test_mode_three_clips_hand_computed():
    # F=100, L=8, I=2, N=3: avg = 85/3 = 28.33 -> int(i*avg + avg/2) = 14, 42, 70
    r = run(SampleFrames(8, 2, 3, test_mode=True), 100, start_index=1)
    np.testing.assert_array_equal(r["frame_inds"], clips([14, 42, 70], 8, 2) + 1)
    assert (r["clip_len"], r["frame_interval"], r["num_clips"]) == (8, 2, 3)
    assert r["frame_inds"].dtype == np.int64


def test_test_mode_ten_clips_i3d():
    # F=300, L=32, I=2, N=10: avg = 237/10 = 23.7; offsets int(i*23.7 + 11.85)
    r = run(SampleFrames(32, 2, 10, test_mode=True), 300)
    expected = [11, 35, 59, 82, 106, 130, 154, 177, 201, 225]
    np.testing.assert_array_equal(r["frame_inds"], clips(expected, 32, 2))
    assert r["frame_inds"].shape == (320,)


def test_test_mode_single_clip_and_exact_fit():
    # F=10, L=4, I=2: avg = 3 -> offset int(1.5) = 1
    np.testing.assert_array_equal(run(SampleFrames(4, 2, 1, test_mode=True), 10)["frame_inds"],
                                  [1, 3, 5, 7])
    # F = L*I - 1 + 1 = 8: avg = 1 -> offset int(0.5) = 0
    np.testing.assert_array_equal(run(SampleFrames(4, 2, 1, test_mode=True), 8)["frame_inds"],
                                  [0, 2, 4, 6])


def test_test_mode_short_video_loop_and_repeat_last():
    # F=5 < L*I=8 - 1: offsets zero; loop -> inds % 5; repeat_last -> last in-range index
    np.testing.assert_array_equal(run(SampleFrames(4, 2, 1, test_mode=True), 5)["frame_inds"],
                                  [0, 2, 4, 1])
    r = run(SampleFrames(4, 2, 2, test_mode=True, out_of_bound_opt="repeat_last"), 5, start_index=1)
    np.testing.assert_array_equal(r["frame_inds"], np.array([0, 2, 4, 4, 0, 2, 4, 4]) + 1)


def test_twice_sample():
    # F=100, L=8, I=2, N=3 -> shifted [14, 42, 70] then base [0, 28, 56]
    r = run(SampleFrames(8, 2, 3, test_mode=True, twice_sample=True), 100)
    np.testing.assert_array_equal(r["frame_inds"], clips([14, 42, 70, 0, 28, 56], 8, 2))
    assert r["num_clips"] == 3


# ---------------------------------------------------------------- train mode
def test_train_avg_positive_seeded():
    # F=100, L=8, I=2, N=3: avg = 85 // 3 = 28 -> [0, 28, 56] + randint(28, size=3)
    np.random.seed(3)
    r = run(SampleFrames(8, 2, 3), 100)
    np.random.seed(3)
    offs = np.arange(3) * 28 + np.random.randint(28, size=3)
    np.testing.assert_array_equal(r["frame_inds"], clips(offs, 8, 2))
    for seed in range(20):
        np.random.seed(seed)
        inds = run(SampleFrames(8, 2, 3), 100)["frame_inds"].reshape(3, 8)
        starts = inds[:, 0]
        assert np.all((starts >= [0, 28, 56]) & (starts < [28, 56, 84]))


def test_train_sorted_random_branch():
    # F=20, L=8, I=2, N=10: avg = 5 // 10 = 0 and F > max(N, 16) -> sort(randint(5, size=10))
    np.random.seed(7)
    r = run(SampleFrames(8, 2, 10), 20)
    np.random.seed(7)
    offs = np.sort(np.random.randint(5, size=10))
    np.testing.assert_array_equal(r["frame_inds"], clips(offs, 8, 2) % 20)


def test_train_around_branch():
    # F=16, L=8, I=2, N=3: avg = 1 // 3 = 0, F not > 16 -> around(arange(3) * 1/3) = [0, 0, 1]
    r = run(SampleFrames(8, 2, 3), 16)
    np.testing.assert_array_equal(r["frame_inds"], clips([0, 0, 1], 8, 2) % 16)


def test_train_short_video_zero_offsets_loop():
    # F=10 < L*I=16: avg < 0 -> zeros; loop wraps
    r = run(SampleFrames(8, 2, 1), 10, start_index=1)
    np.testing.assert_array_equal(r["frame_inds"], np.array([0, 2, 4, 6, 8, 0, 2, 4]) + 1)
    r = run(SampleFrames(8, 2, 1, out_of_bound_opt="repeat_last"), 10)
    np.testing.assert_array_equal(r["frame_inds"], [0, 2, 4, 6, 8, 8, 8, 8])


def test_temporal_jitter_seeded():
    np.random.seed(11)
    r = run(SampleFrames(4, 3, 2, temporal_jitter=True), 50)
    np.random.seed(11)
    offs = np.arange(2) * 19 + np.random.randint(19, size=2)  # avg = (50-12+1)//2 = 19
    jitter = np.random.randint(3, size=8)
    np.testing.assert_array_equal(r["frame_inds"], (clips(offs, 4, 3) + jitter) % 50)


def test_keep_tail_frames_reaches_end():
    np.random.seed(0)
    ends = [run(SampleFrames(4, 1, 2, keep_tail_frames=True), 10)["frame_inds"][-1] for _ in range(200)]
    assert max(ends) == 9  # the tail frame is reachable
    assert min(ends) >= 6


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError):
        SampleFrames(0)
    with pytest.raises(ValueError):
        SampleFrames(4, out_of_bound_opt="clamp")
    with pytest.raises(ValueError, match="total_frames"):
        run(SampleFrames(4), 0)
    with pytest.raises(KeyError, match="start_index"):
        SampleFrames(4)({"total_frames": 10})
    with pytest.warns(UserWarning):
        op = SampleFrames(2, start_index=1)
    assert op({"total_frames": 4})["frame_inds"][0] >= 1


# ---------------------------------------------------------------- DenseSampleFrames
def test_dense_test_mode_hand_computed():
    # F=100: pos = 37, starts = linspace(0, 36, 10) = 0, 4, ..., 36; N=1 interval 64
    r = run(DenseSampleFrames(8, 2, 1, test_mode=True), 100, start_index=1)
    starts = np.arange(10) * 4
    np.testing.assert_array_equal(r["frame_inds"], clips(starts, 8, 2) + 1)
    assert r["num_clips"] == 1 and r["frame_inds"].shape == (80,)


def test_dense_test_mode_two_clips_and_short():
    # N=2: interval 32 -> per start s: [s, s+32]
    r = run(DenseSampleFrames(4, 2, 2, test_mode=True), 100)
    offs = np.concatenate([[s, s + 32] for s in np.arange(10) * 4])
    np.testing.assert_array_equal(r["frame_inds"], clips(offs, 4, 2) % 100)
    # F=50 < 64: pos = 1, every start is 0; offsets % F
    r = run(DenseSampleFrames(4, 2, 2, test_mode=True), 50)
    np.testing.assert_array_equal(r["frame_inds"], np.tile(clips([0, 32], 4, 2) % 50, 10))


def test_dense_train():
    np.random.seed(5)
    r = run(DenseSampleFrames(4, 2, 2), 100)
    np.random.seed(5)
    s = np.random.randint(0, 36)
    np.testing.assert_array_equal(r["frame_inds"], clips(np.array([s, s + 32]) % 100, 4, 2) % 100)
    # short video: pos == 1 -> start 0, no randomness
    np.testing.assert_array_equal(run(DenseSampleFrames(4, 2, 1), 30)["frame_inds"], [0, 2, 4, 6])


def test_registry_names():
    op = PIPELINES.build(dict(type="SampleFrames", clip_len=32, frame_interval=2, num_clips=10,
                              test_mode=True))
    assert isinstance(op, SampleFrames) and op.num_clips == 10
    op = PIPELINES.build(dict(type="DenseSampleFrames", clip_len=32, frame_interval=2, num_clips=1))
    assert isinstance(op, DenseSampleFrames) and op.sample_range == 64
