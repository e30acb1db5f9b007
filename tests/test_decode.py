"""Decoding: frame-accurate PyAV access, OpenCV / frame-folder readers, pipeline ops, errors."""
from __future__ import annotations

import numpy as np
import pytest

from actionkit.data import decode as D
from actionkit.data.decode import DecodeError, FrameFolderReader, open_video
from actionkit.synthetic.kinetics import write_frame_folder, write_video
from actionkit.registry import PIPELINES, ConfigError

H, W = 48, 64
N_BITS = 7


def counter_frames(n: int, h: int = H, w: int = W) -> np.ndarray:
    """Frames with the frame number burnt in as N_BITS black/white 8x8 blocks plus a moving gradient."""
    frames = np.empty((n, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.stack([(xx * 3 + i * 5) % 256, (yy * 4 + i * 3) % 256, np.full_like(xx, 128)], -1)
        img = img.astype(np.uint8)
        for b in range(N_BITS):
            img[h - 8:h, b * 8:(b + 1) * 8] = 255 if (i >> b) & 1 else 0
        frames[i] = img
    return frames


def read_counter(img: np.ndarray) -> int:
    h = img.shape[0]
    v = 0
    for b in range(N_BITS):
        if img[h - 6:h - 2, b * 8 + 2:b * 8 + 6].mean() > 128:
            v |= 1 << b
    return v


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frames = counter_frames(60)
    paths = {}
    for name, gop in (("gop5", 5), ("gop250", 250)):
        p = d / f"{name}.mp4"
        write_video(p, frames, gop=gop)
        paths[name] = p
    for name, codec in (("avi", "mpeg4"), ("webm", "libvpx-vp9")):
        p = d / f"clip.{name}"
        write_video(p, frames[:24], gop=7, codec=codec)
        paths[name] = p
    mkv = d / "clip.mkv"
    write_video(mkv, frames[:20], gop=6)
    paths["mkv"] = mkv
    folder = d / "frames"
    write_frame_folder(folder, frames[:20])
    paths["folder"] = folder
    return paths, frames


def sequential(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("name", ["gop5", "gop250", "mkv", "avi", "webm"])
def test_random_access_matches_sequential(videos, name):
    paths, _ = videos
    seq = sequential(paths[name])
    with open_video(paths[name]) as r:
        assert r.num_frames == len(seq)
        assert r.fps == pytest.approx(30.0)
        # burnt-in counter: decoded frame i is frame i
        assert [read_counter(f) for f in seq] == list(range(len(seq)))
        rng = np.random.default_rng(0)
        for _ in range(15):  # unsorted, duplicated, backwards across calls
            idx = rng.integers(0, len(seq), size=int(rng.integers(1, 9)))
            got = r.get_frames(idx)
            assert got.dtype == np.uint8 and got.shape == (len(idx), H, W, 3)
            np.testing.assert_array_equal(got, seq[idx])
        np.testing.assert_array_equal(r.get_frames([len(seq) - 1, 0, len(seq) - 1]), seq[[-1, 0, -1]])
        assert r.get_frames([]).shape == (0, H, W, 3)


def test_seek_policy(videos, monkeypatch):
    """Seek only when a keyframe lies ahead of the decoding position (or to go back)."""
    paths, _ = videos
    r = open_video(paths["gop5"])
    assert r._index.keyframes == list(range(0, 60, 5))
    seeks = []
    orig = D.PyAVReader._seek_to_keyframe
    monkeypatch.setattr(D.PyAVReader, "_seek_to_keyframe", lambda self, k: (seeks.append(k), orig(self, k)))
    r.get_frames([0, 1, 2, 3, 4])
    assert seeks == [0]
    r.get_frames([6, 7])          # keyframe 5 is the next frame to decode: no seek
    assert seeks == [0]
    r.get_frames([23, 24])        # keyframe 20 ahead of position 8 -> one seek
    assert seeks == [0, 20]
    r.get_frames([2])             # going back -> seek
    assert seeks == [0, 20, 0]
    r.get_frames([40, 3, 40, 41])  # sorted internally: 3 (forward), then 40 (seek to 40)
    assert seeks == [0, 20, 0, 40]
    r.close()


def test_opencv_reader_agrees(videos):
    paths, _ = videos
    seq = sequential(paths["gop5"])
    with open_video(paths["gop5"], backend="opencv") as r:
        assert r.num_frames == 60
        got = r.get_frames([10, 3, 3, 59])
        assert [read_counter(f) for f in got] == [10, 3, 3, 59]
        assert np.abs(got.astype(int) - seq[[10, 3, 3, 59]]).mean() < 3
    with pytest.raises(ConfigError):
        open_video(paths["gop5"], backend="nope")


def test_frame_folder_reader(videos, tmp_path):
    paths, frames = videos
    r = FrameFolderReader(paths["folder"])  # img_00001.jpg ... (start_index 1)
    assert r.num_frames == 20
    got = r.get_frames([0, 5, 5, 19])
    assert [read_counter(f) for f in got] == [0, 5, 5, 19]
    assert np.abs(got.astype(int) - frames[[0, 5, 5, 19]]).mean() < 6  # JPEG loss only
    pil = FrameFolderReader(paths["folder"], decoding_backend="pillow").get_frames([0, 5, 5, 19])
    assert np.abs(pil.astype(int) - got).max() <= 2
    np.testing.assert_array_equal(r.get_files([1, 6]), got[[0, 1]])
    with open_video(paths["folder"]) as same:  # one interface for both layouts
        np.testing.assert_array_equal(same.get_frames([0, 5, 5, 19]), got)
    with pytest.raises(DecodeError, match="img_00021.jpg") as e:
        r.get_frames([3, 20])
    assert e.value.frame == 21
    bad = tmp_path / "bad"
    write_frame_folder(bad, frames[:3])
    (bad / "img_00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DecodeError, match="img_00002.jpg"):
        FrameFolderReader(bad).get_frames([0, 1])
    with pytest.raises(DecodeError, match="not found"):
        FrameFolderReader(tmp_path / "nowhere")


def test_video_errors(videos, tmp_path):
    paths, _ = videos
    with pytest.raises(DecodeError, match="missing.mp4.*not found"):
        open_video(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DecodeError, match="garbage.mp4"):
        open_video(garbage)
    data = paths["gop5"].read_bytes()
    trunc = tmp_path / "truncated.mp4"
    trunc.write_bytes(data[: len(data) // 2])  # moov atom (at the end) is lost
    with pytest.raises(DecodeError, match="truncated.mp4"):
        open_video(trunc).get_frames(range(60))
    fast = tmp_path / "faststart.mp4"
    write_video(fast, counter_frames(20), gop=6, faststart=True)
    assert open_video(fast).num_frames == 20
    data = fast.read_bytes()
    trunc = tmp_path / "truncated_faststart.mp4"
    trunc.write_bytes(data[: int(len(data) * 0.8)])  # index intact, frame data cut
    with pytest.raises(DecodeError, match="truncated_faststart.mp4: truncated"):
        open_video(trunc)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match=r"empty.mp4: empty file \(0 bytes\)"):
        open_video(empty)
    with open_video(paths["gop5"]) as r, pytest.raises(DecodeError, match="frame 60 out of range") as e:
        r.get_frames([1, 60])
    assert e.value.frame == 60 and e.value.path.endswith("gop5.mp4")


def test_edit_list_skips_hidden_frames(videos, tmp_path):
    """An mp4 cut with stream copy starts mid-GOP: the frames before the edit point are not frames."""
    import av

    paths, _ = videos
    out = tmp_path / "edit.mp4"
    with av.open(str(paths["gop5"])) as src, av.open(str(out), "w") as dst:
        s = src.streams.video[0]
        o = dst.add_stream_from_template(s)
        packets = [p for p in src.demux(s) if p.size]
        dur = sorted(p.pts for p in packets)[1]
        started = False
        for p in packets:
            started = started or (p.is_keyframe and p.pts == 10 * dur)
            if started:  # keep from keyframe 10, show from frame 13 on
                p.pts -= 13 * dur
                p.dts -= 13 * dur
                p.stream = o
                dst.mux(p)
    seq = sequential(out)
    assert read_counter(seq[0]) == 13
    with open_video(out) as r:
        assert r.num_frames == len(seq) == 47
        idx = [0, 1, 5, 2, 46, 0]
        np.testing.assert_array_equal(r.get_frames(idx), seq[idx])
        assert [read_counter(f) for f in r.get_frames([0, 7])] == [13, 20]


def _write_with_audio(path, video: bool):
    import av

    with av.open(str(path), "w") as c:
        if video:  # a video stream that never receives a frame
            v = c.add_stream("libx264", rate=30)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate = 16000
        for p in a.encode(f):
            c.mux(p)
        for p in a.encode():
            c.mux(p)


def test_no_video_frames(tmp_path):
    _write_with_audio(tmp_path / "audio.mp4", video=False)
    with pytest.raises(DecodeError, match="audio.mp4: no video stream"):
        open_video(tmp_path / "audio.mp4")
    _write_with_audio(tmp_path / "zero.mkv", video=True)
    with pytest.raises(DecodeError, match="zero.mkv: the video has no decodable frames"):
        open_video(tmp_path / "zero.mkv")


def test_truncated_mkv_reports_missing_frames(videos, tmp_path):
    """A file cut in the middle (index at the front): frames past the cut raise, earlier ones decode."""
    paths, _ = videos
    data = paths["mkv"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    try:
        r = open_video(cut)
    except DecodeError:
        return  # also acceptable: refused at open
    assert 0 < r.num_frames < 20
    assert read_counter(r.get_frames([0])[0]) == 0
    with pytest.raises(DecodeError, match="cut.mkv"):
        r.get_frames([19])


def test_rawframe_decode_folder_and_video(videos):
    paths, frames = videos
    op = PIPELINES.build(dict(type="RawFrameDecode"))
    inds = np.array([1, 2, 2, 9])  # file numbers (start_index 1 already added by the sampler)
    res = op(dict(frame_dir=str(paths["folder"]), frame_inds=inds, modality="RGB",
                  filename_tmpl="img_{:05}.jpg"))
    assert [read_counter(f) for f in res["imgs"]] == [0, 1, 1, 8]
    assert res["img_shape"] == (H, W) and res["original_shape"] == (H, W)
    # a video file instead of a folder: img_{k} == video frame k-1; boxes scaled to pixels
    gt = np.array([[0.0, 0.5, 1.0, 1.0]])
    prop = np.array([[0.25, 0.25, 0.5, 0.5], [0.0, 0.0, 0.1, 0.2]])
    res = op(dict(frame_dir=str(paths["gop5"]), frame_inds=inds, gt_bboxes=gt, proposals=prop))
    assert [read_counter(f) for f in res["imgs"]] == [0, 1, 1, 8]
    np.testing.assert_array_equal(res["imgs"], sequential(paths["gop5"])[inds - 1])
    assert res["gt_bboxes"].dtype == np.float32 and res["proposals"].dtype == np.float32
    np.testing.assert_allclose(res["gt_bboxes"], [[0, 24, 64, 48]])
    np.testing.assert_allclose(res["proposals"], [[16, 12, 32, 24], [0, 0, 6.4, 9.6]], rtol=1e-6)
    # offset (with_offset annotations)
    res = op(dict(frame_dir=str(paths["folder"]), frame_inds=np.array([1, 2]), offset=3))
    assert [read_counter(f) for f in res["imgs"]] == [3, 4]
    with pytest.raises(DecodeError, match="img_00021.jpg"):
        op(dict(frame_dir=str(paths["folder"]), frame_inds=np.array([20, 21])))
    with pytest.raises(DecodeError, match="frame number 0"):
        op(dict(frame_dir=str(paths["gop5"]), frame_inds=np.array([0, 1])))
    with pytest.raises(ConfigError):
        PIPELINES.build(dict(type="RawFrameDecode", decoding_backend="nvjpeg"))
    assert PIPELINES.build(dict(type="RawFrameDecode", decoding_backend="turbojpeg"))(
        dict(frame_dir=str(paths["folder"]), frame_inds=np.array([5])))["imgs"].shape == (1, H, W, 3)


@pytest.mark.parametrize("init,dec", [("DecordInit", "DecordDecode"), ("PyAVInit", "PyAVDecode"),
                                      ("OpenCVInit", "OpenCVDecode"), ("VideoInit", "VideoDecode")])
def test_video_init_decode_ops(videos, init, dec):
    paths, _ = videos
    res = PIPELINES.build(dict(type=init))(dict(filename=str(paths["gop5"])))
    assert res["total_frames"] == 60
    res["frame_inds"] = np.array([[7, 0, 33, 33]])
    res = PIPELINES.build(dict(type=dec))(res)
    assert "video_reader" not in res
    assert [read_counter(f) for f in res["imgs"]] == [7, 0, 33, 33]
    assert res["img_shape"] == (H, W)


def test_index_cache_reused(videos):
    paths, _ = videos
    D.clear_index_cache()
    a = open_video(paths["gop250"])
    b = open_video(paths["gop250"])
    assert a._index is b._index
    a.close()
    b.close()
