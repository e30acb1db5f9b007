"""``FramewiseClip`` (decode + geometric transforms + Normalize/FormatShape, one frame at a time) gives what the
transforms give one by one: the same pixels bit for bit, the same keys, the same random draws, the same errors."""
from __future__ import annotations

import random

import numpy as np
import pytest

from actionkit.data.decode import DecodeError
from actionkit.data.pipeline import (Compose, FramewiseClip, NormalizeFormatShape, apply_deferred_normalize,
                                     deferred_normalization)
from actionkit.synthetic.kinetics import write_frame_folder, write_video

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
FRAMES, H, W = 30, 48, 64


def norm(to_bgr=False):
    return dict(type="Normalize", mean=MEAN[::-1] if to_bgr else MEAN, std=STD[::-1] if to_bgr else STD,
                to_bgr=to_bgr)


def tail(collapse=False):
    # no Collect: every key of the results is compared
    return [dict(type="FormatShape", input_format="NCTHW", collapse=collapse)]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("framewise")
    rng = np.random.default_rng(0)
    # smooth content, so that JPEG / x264 keep detail and crops of different places differ
    base = rng.integers(0, 256, (FRAMES, H // 8, W // 8, 3)).astype(np.uint8)
    video = np.stack([np.kron(f, np.ones((8, 8, 1), np.uint8)) for f in base])
    video = (video.astype(np.int32) + rng.integers(0, 40, video.shape)).clip(0, 255).astype(np.uint8)
    write_frame_folder(root / "frames", video)
    write_video(root / "clip.mp4", video, gop=6)
    return root


def decode_steps(kind):
    if kind == "folder":
        return [dict(type="RawFrameDecode")], {}
    if kind == "folder_pillow":
        return [dict(type="RawFrameDecode", decoding_backend="pillow")], {}
    if kind == "video_as_frames":
        return [dict(type="RawFrameDecode")], {}
    init = "DecordInit" if kind == "pyav" else "OpenCVInit"
    decode = "DecordDecode" if kind == "pyav" else "OpenCVDecode"
    return [dict(type=init)], dict(type=decode)


def build(kind, sampler, transforms, to_bgr=False, collapse=False):
    pre, dec = decode_steps(kind)
    if kind.startswith("folder") or kind == "video_as_frames":
        ops = [sampler] + pre
    else:
        ops = pre + [sampler, dec]
    return ops + transforms + [norm(to_bgr)] + tail(collapse)


def item(media, kind):
    if kind.startswith("folder"):
        return dict(frame_dir=str(media / "frames"), total_frames=FRAMES, start_index=1, label=2, modality="RGB")
    if kind == "video_as_frames":
        return dict(frame_dir=str(media / "clip.mp4"), total_frames=FRAMES, start_index=1, label=2,
                    modality="RGB")
    return dict(filename=str(media / "clip.mp4"), start_index=0, label=2, modality="RGB")


def stepwise(pipe, results, seed):
    """The configured transforms one by one: no fusion of any kind."""
    np.random.seed(seed)
    random.seed(seed)
    r = dict(results)
    for t in pipe.transforms:
        r = t(r)
    return r


def fused(pipe, results, seed, defer=False):
    np.random.seed(seed)
    random.seed(seed)
    with deferred_normalization(defer):
        r = pipe(dict(results))
    return apply_deferred_normalize(r)


def as_numpy(x):
    return x.numpy() if hasattr(x, "numpy") else x


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        x, y = as_numpy(a[k]), as_numpy(b[k])
        if isinstance(x, dict):
            assert_same(x, y)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, k
            np.testing.assert_array_equal(x, y, err_msg=k)
        else:
            assert type(x) is type(y) and np.array_equal(np.asarray(x), np.asarray(y)), k


TRAIN = [dict(type="Resize", scale=(-1, 40)),
         dict(type="MultiScaleCrop", input_size=32, scales=(1, 0.875, 0.75), random_crop=False, max_wh_scale_gap=1),
         dict(type="Resize", scale=(32, 32), keep_ratio=False), dict(type="Flip", flip_ratio=0.5)]
CASES = {
    "train": (dict(type="SampleFrames", clip_len=8, frame_interval=2, num_clips=1), TRAIN),
    "rrc_flip": (dict(type="SampleFrames", clip_len=6, frame_interval=3, num_clips=1),
                 [dict(type="RandomResizedCrop"), dict(type="Resize", scale=(28, 28), keep_ratio=False),
                  dict(type="Flip", flip_ratio=0.5)]),
    "three_crop": (dict(type="SampleFrames", clip_len=8, frame_interval=2, num_clips=3, test_mode=True),
                   [dict(type="Resize", scale=(-1, 40)), dict(type="ThreeCrop", crop_size=40)]),
    "ten_crop": (dict(type="SampleFrames", clip_len=4, frame_interval=1, num_clips=2, test_mode=True),
                 [dict(type="Resize", scale=(-1, 36)), dict(type="TenCrop", crop_size=28)]),
    "nested_views": (dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=2, test_mode=True),
                     [dict(type="Resize", scale=(-1, 40)), dict(type="ThreeCrop", crop_size=40),
                      dict(type="TenCrop", crop_size=28)]),
    "center": (dict(type="SampleFrames", clip_len=5, frame_interval=4, num_clips=2, test_mode=True),
               [dict(type="Resize", scale=(-1, 36)), dict(type="CenterCrop", crop_size=30)]),
    "decode_only": (dict(type="SampleFrames", clip_len=4, frame_interval=1, num_clips=1), []),
    "flip_then_resize": (dict(type="SampleFrames", clip_len=4, frame_interval=2, num_clips=1),
                         [dict(type="Flip", flip_ratio=1.0), dict(type="Resize", scale=(50, 30), keep_ratio=False),
                          dict(type="RandomCrop", size=24)]),
}


# every case on JPEG folders and PyAV; the other decoders on a train and a multi-view case
PAIRS = ([(kind, case) for kind in ("folder", "pyav") for case in sorted(CASES)]
         + [(kind, case) for kind in ("folder_pillow", "opencv", "video_as_frames") for case in ("train", "three_crop")])


@pytest.mark.parametrize("kind,case", PAIRS)
def test_framewise_equals_stepwise(media, kind, case):
    sampler, transforms = CASES[case]
    pipe = Compose(build(kind, sampler, transforms))
    # two multi-view crops are left to the stepwise path (the second one's plan needs the clip's frame count)
    assert any(isinstance(t, FramewiseClip) for t in pipe._run) == (case != "nested_views")
    for seed in range(3):  # flips both ways, different crops, overlapping (duplicate) test clips
        ref = stepwise(pipe, item(media, kind), seed)
        assert_same(fused(pipe, item(media, kind), seed), ref)
        assert_same(fused(pipe, item(media, kind), seed, defer=True), ref)


@pytest.mark.parametrize("case", ["train", "ten_crop"])
def test_framewise_to_bgr(media, case):
    sampler, transforms = CASES[case]
    pipe = Compose(build("folder", sampler, transforms, to_bgr=True))
    assert isinstance(pipe._run[1], FramewiseClip)
    for seed in range(2):
        assert_same(fused(pipe, item(media, "folder"), seed), stepwise(pipe, item(media, "folder"), seed))


def test_framewise_ava_boxes_and_rng(media):
    """AVA training: boxes move with the frames; the random draws after the fused step are the same."""
    ops = [dict(type="SampleAVAFrames", clip_len=4, frame_interval=2), dict(type="RawFrameDecode"),
           dict(type="RandomRescale", scale_range=(40, 56)), dict(type="RandomCrop", size=36),
           dict(type="Flip", flip_ratio=0.5), norm(), dict(type="FormatShape", input_format="NCTHW", collapse=True),
           dict(type="Rename", mapping=dict(imgs="img")),
           dict(type="Collect", keys=["img", "proposals", "gt_bboxes"], meta_keys=["scale_factor", "img_shape"]),
           dict(type="ToTensor", keys=["img", "proposals", "gt_bboxes"])]
    pipe = Compose(ops)
    assert any(isinstance(t, FramewiseClip) for t in pipe._run)
    boxes = np.array([[0.1, 0.2, 0.5, 0.9], [0.4, 0.1, 0.95, 0.6]], np.float32)
    results = dict(frame_dir=str(media / "frames"), timestamp=15, timestamp_start=0, shot_info=(0, FRAMES), fps=1,
                   total_frames=FRAMES, start_index=1, modality="RGB", proposals=boxes, gt_bboxes=boxes[:1],
                   gt_labels=np.zeros((1, 3), np.float32))
    for seed in range(4):
        ref = stepwise(pipe, results, seed)
        after_ref = np.random.rand()
        got = fused(pipe, results, seed)
        assert np.random.rand() == after_ref
        assert_same(got, ref)


def test_lazy_transforms_are_not_fused(media):
    ops = build("folder", CASES["train"][0],
                [dict(type="MultiScaleCrop", input_size=32, scales=(1, 0.875), lazy=True),
                 dict(type="Resize", scale=(32, 32), keep_ratio=False, lazy=True), dict(type="Fuse")])
    pipe = Compose(ops)
    assert not any(isinstance(t, FramewiseClip) for t in pipe._run)
    assert any(isinstance(t, NormalizeFormatShape) for t in pipe._run)
    assert_same(fused(pipe, item(media, "folder"), 0), stepwise(pipe, item(media, "folder"), 0))


def test_framewise_errors_as_stepwise(media, tmp_path):
    """A missing frame is reported as by the stepwise pipeline, even when a transform would fail too."""
    import shutil

    frames = tmp_path / "frames"
    shutil.copytree(media / "frames", frames)
    (frames / "img_00020.jpg").unlink()
    results = dict(frame_dir=str(frames), total_frames=FRAMES, start_index=1, label=0, modality="RGB")
    for transforms in (TRAIN, [dict(type="CenterCrop", crop_size=500)]):  # the second cannot fit
        pipe = Compose(build("folder", dict(type="SampleFrames", clip_len=30, frame_interval=1, num_clips=1),
                             transforms))
        for run in (lambda r: stepwise(pipe, r, 0), lambda r: fused(pipe, r, 0)):
            with pytest.raises(DecodeError, match="img_00020.jpg: frame 20 not found"):
                run(dict(results))
    # without a decoding error, the transform's own error
    pipe = Compose(build("folder", dict(type="SampleFrames", clip_len=8, frame_interval=1, num_clips=1),
                         [dict(type="CenterCrop", crop_size=500)]))
    with pytest.raises(ValueError, match="does not fit"):
        fused(pipe, item(media, "folder"), 0)


def test_multi_crop_views_follow_the_clip_order():
    """Per frame, views come out in the clip's crop-major order, also for frames that already have several."""
    from actionkit.data.transforms import MultiCropFrames

    clip = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    first, second = MultiCropFrames([(0, 0), (10, 0)], 20, 20, False), MultiCropFrames([(2, 3), (0, 0)], 12, 10, True)
    want = second.apply_clip(first.apply_clip(clip))  # [4 * 2 * 3, 10, 12, 3], view-major
    per_frame = [second.apply_views(first.apply_views([f])) for f in clip]
    got = np.stack([per_frame[i][k] for k in range(8) for i in range(3)])
    np.testing.assert_array_equal(got, want)
