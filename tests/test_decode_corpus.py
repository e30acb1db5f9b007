"""Video corpus: every reader returns exactly the frames of a sequential decode, for every index.

The corpus is written with the project's own encoder (PyAV): MPEG-4 Part 2 in AVI with B-frames (as
ffmpeg stores them, and DivX-style *packed* B-frames with N-VOP placeholders, the UCF101 / HMDB51 layout,
built here by packing the encoder's packets the way DivX does), an AVI with a dropped-frame N-VOP, an AVI
whose header lists the wrong frame count, MKV (H.264 with B-frames), WebM / VP9, a variable-frame-rate MP4,
and the packed stream remuxed into MKV (stored timestamps that contradict the decoded frames).
Frames carry their number as burnt-in blocks, so a wrong frame is caught even where pixels are close.
"""
from __future__ import annotations

import random
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from actionkit.data import decode as D
from actionkit.data.decode import DecodeError, open_video
from actionkit.synthetic.kinetics import write_video
from actionkit.registry import PIPELINES

H, W = 48, 64
N = 40  # frames per clip
FPS = 25
VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 VOP start code
DIVX_PACKED_USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p"  # the 'p' marks a packed bitstream


def numbered_frames(n: int = N) -> np.ndarray:
    """A moving gradient with the frame number as 6 black / white 8x8 blocks along the bottom."""
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        img = np.stack([(xx * 3 + i * 5) % 256, (yy * 4 + i * 3) % 256, np.full_like(xx, 128)], -1)
        frames[i] = img.astype(np.uint8)
        for b in range(6):
            frames[i, H - 8:, b * 8:(b + 1) * 8] = 255 if (i >> b) & 1 else 0
    return frames


def frame_number(img: np.ndarray) -> int:
    return sum(1 << b for b in range(6) if img[H - 6:H - 2, b * 8 + 2:b * 8 + 6].mean() > 128)


# ---- MPEG-4 Part 2 stream surgery ---------------------------------------------------------------
def vop_type(packet: bytes) -> str:
    i = packet.find(VOP)
    return "IPBS"[packet[i + 4] >> 6]


def encode_mpeg4(frames: np.ndarray, max_b_frames: int = 2, gop: int = 12) -> list[bytes]:
    """The mpeg4 encoder's packets in decode order (one VOP each)."""
    import av

    cc = av.CodecContext.create("mpeg4", "w")
    cc.width, cc.height, cc.pix_fmt = W, H, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, FPS), Fraction(FPS, 1)
    cc.gop_size, cc.max_b_frames = gop, max_b_frames
    packets: list[bytes] = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = i
        packets += [bytes(p) for p in cc.encode(frame)]
    packets += [bytes(p) for p in cc.encode(None)]
    return packets


def n_vop(anchor: bytes) -> bytes:
    """A not-coded P-VOP (N-VOP) with the time of ``anchor``'s VOP (5 time-increment bits at 25 fps)."""
    i = anchor.find(VOP) + 4
    bits = "".join(f"{b:08b}" for b in anchor[i:i + 8])
    j = 2
    while bits[j] == "1":  # modulo_time_base
        j += 1
    header = "01" + bits[2:j + 1] + bits[j + 1:j + 8] + "0"  # P, same time (marker, 5 bits, marker), not coded
    header += "0" + "1" * ((7 - len(header)) % 8)  # stuffing to the byte boundary
    return VOP + int(header, 2).to_bytes(len(header) // 8, "big")


def pack_b_frames(packets: list[bytes]) -> list[bytes]:
    """DivX packed bitstream: each anchor travels with its first B-frame, the other B-frames one chunk
    later, and an N-VOP fills the anchor's own display slot: one chunk per displayed frame."""
    marked = [p.replace(VOP, DIVX_PACKED_USER_DATA + VOP, 1) if vop_type(p) == "I" else p for p in packets]
    chunks, k = [marked[0]], 1
    while k < len(marked):
        anchor, k = marked[k], k + 1
        b_frames = []
        while k < len(marked) and vop_type(marked[k]) == "B":
            b_frames.append(marked[k])
            k += 1
        if b_frames:
            chunks += [anchor + b_frames[0]] + b_frames[1:] + [n_vop(anchor)]
        else:
            chunks.append(anchor)
    return chunks


def mux_chunks(path: Path, chunks: list[bytes]) -> None:
    """Store one MPEG-4 chunk per frame time (AVI: the chunk index is the only timestamp)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=FPS)
        s.width, s.height = W, H
        if path.suffix == ".avi":
            s.codec_tag = "DX50"
        for i, data in enumerate(chunks):
            p = av.Packet(data)
            p.pts = p.dts = i
            p.time_base = Fraction(1, FPS)
            p.is_keyframe = vop_type(data) == "I"
            p.stream = s
            c.mux(p)


def set_avi_frame_count(src: Path, dst: Path, count: int) -> None:
    """Copy an AVI with the frame count of its main and stream headers replaced."""
    data = bytearray(src.read_bytes())
    for tag, offset in ((b"avih", 16), (b"strh", 32)):
        i = data.find(tag)
        struct.pack_into("<I", data, i + 8 + offset, count)
    dst.write_bytes(bytes(data))


def write_vfr_mp4(path: Path, frames: np.ndarray) -> None:
    """H.264 with B-frames and irregular frame durations (1-3 ticks of 1/60 s)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = Fraction(1, 60)
        s.options = {"x264-params": "keyint=10:min-keyint=10:scenecut=0:bframes=2:threads=1"}
        t = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 60)
            t += 1 + (i * 7) % 3
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


CORPUS = ["avi_packed", "avi_bframes", "avi_nvop", "avi_header_count", "mkv_packed", "mkv_nvop", "mkv_h264",
          "webm_vp9", "mp4_vfr"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    frames = numbered_frames()
    packets = encode_mpeg4(frames)
    assert "B" in {vop_type(p) for p in packets}
    paths = {name: d / f"{name}.{name.split('_')[0]}" for name in CORPUS}
    mux_chunks(paths["avi_packed"], pack_b_frames(packets))
    mux_chunks(paths["mkv_packed"], pack_b_frames(packets))
    _write_mpeg4_avi_with_b_frames(paths["avi_bframes"], frames)
    plain = encode_mpeg4(frames[:30], max_b_frames=0)
    mux_chunks(paths["avi_nvop"], plain[:8] + [n_vop(plain[7])] + plain[8:])  # 31 chunks, 30 frames
    mux_chunks(paths["mkv_nvop"], plain[:20] + [n_vop(plain[19])] + plain[20:])  # stored timestamps, 30 frames
    set_avi_frame_count(paths["avi_bframes"], paths["avi_header_count"], 90)
    write_video(paths["mkv_h264"], frames, fps=FPS, gop=9)
    write_video(paths["webm_vp9"], frames[:24], fps=FPS, gop=7, codec="libvpx-vp9")
    write_vfr_mp4(paths["mp4_vfr"], frames)
    D.clear_index_cache()
    return paths


def _write_mpeg4_avi_with_b_frames(path: Path, frames: np.ndarray) -> None:
    """MPEG-4 with 2 B-frames muxed by ffmpeg's AVI muxer (unpacked, as ffmpeg writes it)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size, s.codec_context.max_b_frames = 12, 2
        for rgb in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def sequential(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# an N-VOP chunk shows no frame: 31 chunks, 30 frames
EXPECTED_NUMBERS = {"avi_nvop": list(range(30)), "mkv_nvop": list(range(30)), "webm_vp9": list(range(24))}


def test_corpus_is_what_it_claims(corpus):
    """The packed file really is packed (2, 1, 0 VOPs per chunk), every file decodes to its frames in order."""
    import av

    with av.open(str(corpus["avi_packed"])) as c:
        s = c.streams.video[0]
        sizes = [p.size for p in c.demux(s) if p.size]
    with av.open(str(corpus["avi_packed"])) as c:
        frame_pts = [f.pts for f in c.decode(video=0)]
    assert len(sizes) == N and min(sizes) < 10  # N-VOP chunks
    assert frame_pts != sorted(frame_pts)  # the timestamps the decoder attaches are out of order
    with av.open(str(corpus["avi_header_count"])) as c:
        assert c.streams.video[0].frames == 90
    for name in CORPUS:
        numbers = [frame_number(f) for f in sequential(corpus[name])]
        assert numbers == EXPECTED_NUMBERS.get(name, list(range(N))), name


@pytest.mark.parametrize("name", CORPUS)
def test_every_index_matches_sequential_decode(corpus, name):
    """A fresh reader per index (each read seeks), then one reader for shuffled, repeated and backward sets."""
    path = corpus[name]
    seq = sequential(path)
    D.clear_index_cache()
    with open_video(path) as r:
        assert r.num_frames == len(seq)
    for i in range(len(seq)):
        with open_video(path) as r:
            got = r.get_frames([i])
        assert np.array_equal(got[0], seq[i]), f"{name}: frame {i} is frame {frame_number(got[0])}"
    rng = np.random.default_rng(0)
    with open_video(path) as r:
        sets = [rng.integers(0, len(seq), size=int(rng.integers(1, 12))) for _ in range(12)]
        sets += [np.arange(len(seq))[::-1], np.array([len(seq) - 1, 0, len(seq) - 1, 3, 3])]
        for idx in sets:
            np.testing.assert_array_equal(r.get_frames(idx), seq[idx], err_msg=f"{name}: {idx}")
        with pytest.raises(DecodeError, match=f"{path.name}: frame {len(seq)} out of range"):
            r.get_frames([0, len(seq)])


@pytest.mark.parametrize("init,dec", [("DecordInit", "DecordDecode"), ("PyAVInit", "PyAVDecode")])
@pytest.mark.parametrize("name", ["avi_packed", "avi_header_count", "mkv_packed"])
def test_pipeline_ops_on_corpus(corpus, name, init, dec):
    seq = sequential(corpus[name])
    res = PIPELINES.build(dict(type=init))(dict(filename=str(corpus[name])))
    assert res["total_frames"] == len(seq)
    inds = np.array([[31, 2, 2, 17, 39, 0]])
    res["frame_inds"] = inds
    res = PIPELINES.build(dict(type=dec))(res)
    np.testing.assert_array_equal(res["imgs"], seq[inds[0]])


@pytest.mark.parametrize("name", CORPUS)
def test_opencv_reader_on_corpus(corpus, name):
    """OpenCV decodes sequentially (its own FFmpeg build: compared by frame number); a header that lists
    too many frames ends in a DecodeError naming the file."""
    seq = sequential(corpus[name])
    expected = [frame_number(f) for f in seq]
    with open_video(corpus[name], backend="opencv") as r:
        n = min(r.num_frames, len(seq))
        idx = [n - 1, 0, 5, 5, n // 2]
        assert [frame_number(f) for f in r.get_frames(idx)] == [expected[i] for i in idx]
        if r.num_frames > len(seq):
            with pytest.raises(DecodeError, match=f"{corpus[name].name}: frame {len(seq)} could not be decoded "
                                                  f".*header lists {r.num_frames} frames"):
                r.get_frames([len(seq)])


@pytest.mark.parametrize("max_b_frames,gop", [(1, 10), (1, 25), (3, 10), (3, 25)])
@pytest.mark.parametrize("threads", [1, 4])
def test_packed_avi_variants(tmp_path, max_b_frames, gop, threads):
    """Other B-frame runs and GOP lengths, 60 frames, single- and multi-threaded decoding."""
    frames = numbered_frames(60)
    path = tmp_path / "packed.avi"
    mux_chunks(path, pack_b_frames(encode_mpeg4(frames, max_b_frames=max_b_frames, gop=gop)))
    seq = sequential(path)
    assert [frame_number(f) for f in seq] == list(range(60))
    D.clear_index_cache()
    for i in range(len(seq)):
        with D.PyAVReader(path, num_threads=threads) as r:
            np.testing.assert_array_equal(r.get_frames([i])[0], seq[i], err_msg=f"frame {i}")
    rng = np.random.default_rng(1)
    with D.PyAVReader(path, num_threads=threads) as r:
        assert len(r._index.keyframes) > 1  # seeks are used
        for _ in range(20):
            idx = rng.integers(0, len(seq), size=8)
            np.testing.assert_array_equal(r.get_frames(idx), seq[idx])


def test_decode_order_seeks_to_verified_keyframes(corpus, monkeypatch):
    """Decode-order files still seek (to keyframes recognised by their pixels), not decode from the start."""
    D.clear_index_cache()
    r = open_video(corpus["avi_packed"])
    idx = r._index
    assert idx.decode_order and idx.keyframes == [0, 12, 24, 36]
    seeks = []
    orig = D.PyAVReader._seek_to_keyframe
    monkeypatch.setattr(D.PyAVReader, "_seek_to_keyframe", lambda self, k: (seeks.append(k), orig(self, k)))
    seq = sequential(corpus["avi_packed"])
    np.testing.assert_array_equal(r.get_frames([30, 31, 38]), seq[[30, 31, 38]])
    assert seeks == [24, 36]
    r.close()


def test_unverifiable_seek_falls_back_to_decoding_from_start(corpus, caplog):
    """A keyframe that does not come out after its seek: the file is decoded from the start (and cached so)."""
    D.clear_index_cache()
    path = corpus["avi_packed"]
    r = open_video(path)
    r._index.signatures[2] ^= 1  # keyframe 24 will not be recognised
    seq = sequential(path)
    with caplog.at_level("WARNING", logger="actionkit"):
        np.testing.assert_array_equal(r.get_frames([26, 13]), seq[[26, 13]])
    assert "could not be verified" in caplog.text and path.name in caplog.text
    assert r._index.keyframes == [0]
    with open_video(path) as again:
        assert again._index is r._index
    r.close()


def test_mpeg4_part2_is_numbered_in_decode_order(corpus):
    """MPEG-4 Part 2 in any container (N-VOPs decode to no frame) and every AVI are numbered by decoding."""
    D.clear_index_cache()
    for name in ("mkv_packed", "mkv_nvop", "avi_packed", "avi_bframes"):
        with open_video(corpus[name]) as r:
            assert r._index.decode_order, name
    for name in ("mkv_h264", "webm_vp9", "mp4_vfr"):
        with open_video(corpus[name]) as r:
            assert not r._index.decode_order, name


@pytest.mark.parametrize("checked", [8, 0])
def test_contradicting_timestamps_fall_back_to_decode_order(corpus, caplog, monkeypatch, checked):
    """Stored timestamps that the decoded frames contradict (the packed stream in MKV, indexed by timestamps
    here) are caught by the check of the first frames at indexing, or else by the order check while
    decoding (before a wrong frame is returned), and the file is renumbered in decode order."""
    monkeypatch.setattr(D, "_DECODE_ORDER_CODECS", frozenset())
    monkeypatch.setattr(D, "_CHECKED_FRAMES", checked)
    D.clear_index_cache()
    path = corpus["mkv_packed"]
    seq = sequential(path)
    with caplog.at_level("WARNING", logger="actionkit"):
        r = open_video(path)
        assert r._index.decode_order == (checked > 0)
        np.testing.assert_array_equal(r.get_frames([2, 3, 13, 10]), seq[[2, 3, 13, 10]])
        for i in (10, 22, 1):  # a fresh reader each: the first frame after a seek is verified too
            D.clear_index_cache()
            with open_video(path) as fresh:
                np.testing.assert_array_equal(fresh.get_frames([i]), seq[[i]])
    assert "disagree with the decoded stream" in caplog.text and path.name in caplog.text
    assert r._index.decode_order
    with open_video(path) as again:  # the cache keeps the renumbered index
        assert again._index.decode_order
    r.close()


def test_index_cache_follows_the_file(corpus, tmp_path):
    """The cache is keyed by path, size and mtime: a file replaced in place is indexed again."""
    import os

    path = tmp_path / "v.avi"
    path.write_bytes(corpus["avi_nvop"].read_bytes())
    D.clear_index_cache()
    with open_video(path) as r:
        assert r.num_frames == 30
    path.write_bytes(corpus["avi_packed"].read_bytes())
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with open_video(path) as r:
        assert r.num_frames == N
        np.testing.assert_array_equal(r.get_frames([9]), sequential(path)[[9]])
    key = D._file_key(str(path))
    assert D._INDEX_CACHE[key].num_frames == N
    D.clear_index_cache()
    assert key not in D._INDEX_CACHE


# ---- damaged and unusual image frames -------------------------------------------------------------
def _jpeg(rgb: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".jpg", rgb[:, :, ::-1])[1].tobytes()


BAD_FRAMES = {"empty": lambda good: b"", "truncated": lambda good: good[: len(good) // 2],
              "garbage": lambda good: bytes(range(256)) * 4}


@pytest.mark.parametrize("backend", ["cv2", "turbojpeg", "pillow"])
@pytest.mark.parametrize("damage", sorted(BAD_FRAMES))
def test_damaged_jpeg_frame_is_a_decode_error(tmp_path, backend, damage):
    """A zero-byte (cv2.error inside OpenCV), truncated or garbage JPEG, with every backend."""
    frames = numbered_frames(3)
    for i, rgb in enumerate(frames):
        (tmp_path / f"img_{i + 1:05}.jpg").write_bytes(_jpeg(rgb))
    bad = tmp_path / "img_00002.jpg"
    bad.write_bytes(BAD_FRAMES[damage](bad.read_bytes()))
    op = PIPELINES.build(dict(type="RawFrameDecode", decoding_backend=backend))
    with pytest.raises(DecodeError, match=r"img_00002\.jpg: frame 2") as e:
        op(dict(frame_dir=str(tmp_path), frame_inds=np.array([1, 2, 3])))
    assert e.value.path == str(bad) and e.value.frame == 2
    with pytest.raises(DecodeError, match=r"img_00002\.jpg"):
        D.decode_image(bad.read_bytes(), backend, str(bad))
    assert frame_number(op(dict(frame_dir=str(tmp_path), frame_inds=np.array([3])))["imgs"][0]) == 2


def test_empty_jpeg_is_a_counted_skip_in_training(tmp_path, caplog):
    """Kinetics training skips a sample with a zero-byte frame like any unreadable sample (max_skips)."""
    import logging

    from actionkit.data.kinetics import RawframeDataset

    frames = numbered_frames(8)
    for name in ("good", "bad"):
        for i, rgb in enumerate(frames):
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / f"img_{i + 1:05}.jpg").write_bytes(_jpeg(rgb))
    (tmp_path / "bad" / "img_00003.jpg").write_bytes(b"")
    ann = tmp_path / "train.txt"
    ann.write_text("good 8 0\nbad 8 1\n")
    pipeline = [dict(type="SampleFrames", clip_len=8, frame_interval=1, num_clips=1),
                dict(type="RawFrameDecode"), dict(type="Resize", scale=(-1, 32)),
                dict(type="Normalize", mean=[128.0] * 3, std=[64.0] * 3, to_bgr=False),
                dict(type="FormatShape", input_format="NCTHW"),
                dict(type="Collect", keys=["imgs", "label"], meta_keys=[]),
                dict(type="ToTensor", keys=["imgs", "label"])]
    ds = RawframeDataset(str(ann), pipeline, str(tmp_path), max_skips=1)
    with caplog.at_level(logging.WARNING, logger="actionkit"):
        item = ds[1]
    assert int(item["label"]) == 0
    assert list(ds.skipped) == [1] and "img_00003.jpg" in ds.skipped[1] and "empty" in ds.skipped[1]
    assert "1 skipped" in caplog.text
    strict = RawframeDataset(str(ann), pipeline, str(tmp_path), max_skips=0)
    with pytest.raises(DecodeError, match=r"max_skips=0.*img_00003\.jpg"):
        strict[1]


def test_sixteen_bit_images_match_opencv(tmp_path):
    """16-bit grey PNG / TIFF through Pillow: OpenCV's IMREAD_COLOR reduction (>> 8), not saturation."""
    import cv2

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    grey[0, :6] = [0, 255, 256, 32767, 32768, 65535]
    colour = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    for ext, img in ((".png", grey), (".tiff", grey), (".png", colour)):
        data = cv2.imencode(ext, img)[1].tobytes()
        pil = D.decode_image(data, "pillow", f"x{ext}")
        np.testing.assert_array_equal(pil, D.decode_image(data, "cv2", f"x{ext}"))
        expected = (img >> 8).astype(np.uint8)
        np.testing.assert_array_equal(pil, np.repeat(expected[:, :, None], 3, 2) if img.ndim == 2
                                      else expected[:, :, ::-1])
    assert list(D.decode_image(cv2.imencode(".png", grey)[1].tobytes(), "pillow")[0, :6, 0]) == [0, 0, 1, 127,
                                                                                                  128, 255]
    from PIL import Image

    buf = tmp_path / "f.tiff"
    Image.fromarray(rng.random((4, 4), dtype=np.float32), mode="F").save(buf)
    with pytest.raises(DecodeError, match=r"f\.tiff: floating-point images are not supported"):
        D.decode_image(buf.read_bytes(), "pillow", str(buf))


# ---- MMAction2's video pipeline order (Init -> SampleFrames -> Decode) --------------------------
VIDEO_CONFIGS = ["recognition/i3d/i3d_r50_video_32x2x1_100e_kinetics400_rgb.py",
                 "recognition/slowfast/slowfast_r50_video_4x16x1_256e_kinetics400_rgb.py"]


@pytest.mark.parametrize("config", VIDEO_CONFIGS)
def test_video_configs_follow_mmaction2_order(corpus, config):
    """The shipped video configs open the video first (MMAction2's files), and their train / val pipelines
    run, through Compose and step by step alike, on a results dict holding only ``filename``."""
    from actionkit import load_config
    from actionkit.data import pipeline as P

    from conftest import REPO

    cfg = load_config(REPO / "configs" / config)
    for split in ("train", "val", "test"):
        steps = cfg["data"][split]["pipeline"]
        assert [s["type"] for s in steps[:3]] == ["DecordInit", "SampleFrames", "DecordDecode"], split
    path = str(corpus["mkv_h264"])
    for split in ("train", "val"):
        steps = [s for s in cfg["data"][split]["pipeline"] if s["type"] not in ("Collect", "ToTensor")]
        fused = P.Compose(steps)
        random.seed(0), np.random.seed(0)
        out = fused({"filename": path})
        assert out["imgs"].shape == (1, 3, 32, 224, 224) and out["start_index"] == 0
        assert out["total_frames"] == N and out["frame_inds"].max() < N
        stepwise = {"filename": path}
        random.seed(0), np.random.seed(0)
        for t in fused.transforms:
            stepwise = t(stepwise)
        np.testing.assert_array_equal(out["imgs"], stepwise["imgs"])
        np.testing.assert_array_equal(out["frame_inds"], stepwise["frame_inds"])


def test_init_keeps_the_datasets_start_index(corpus):
    res = PIPELINES.build(dict(type="DecordInit"))(dict(filename=str(corpus["mkv_h264"]), start_index=1))
    assert res["start_index"] == 1 and res["total_frames"] == N
    res["video_reader"].close()


# ---- decode-order indexes kept on disk (actionkit/data/video_index_store.py)
@pytest.fixture
def index_store(tmp_path, monkeypatch):
    """The store on, in a fresh folder; counts the sequential decodes that index a file."""
    from actionkit.data import video_index_store as S

    folder = tmp_path / "video_index"
    monkeypatch.setenv(S.DIR_ENV, str(folder))
    builds = []
    orig = D.PyAVReader._build_decode_order_index
    monkeypatch.setattr(D.PyAVReader, "_build_decode_order_index",
                        lambda self, packets: (builds.append(self.path), orig(self, packets))[1])
    D.clear_index_cache()
    yield folder, builds
    D.clear_index_cache()


def _check_reads(path: Path, seq: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    with open_video(path) as r:
        for _ in range(6):
            idx = rng.integers(0, len(seq), size=5)
            np.testing.assert_array_equal(r.get_frames(idx), seq[idx])


def test_decode_order_index_is_stored_and_read_by_the_next_process(corpus, tmp_path, index_store):
    folder, builds = index_store
    path = tmp_path / "clip.avi"
    path.write_bytes(corpus["avi_packed"].read_bytes())
    seq = sequential(path)
    with open_video(path) as r:
        first = r._index
    assert builds == [str(path)] and len(list(folder.glob("*.npz"))) == 1
    D.clear_index_cache()  # as a new process (a DataLoader worker, the next run)
    with open_video(path) as r:
        again = r._index
        assert again is not first and again.decode_order
        assert (again.num_frames, again.keyframes, again.seek_ts, again.signatures) == \
               (first.num_frames, first.keyframes, first.seek_ts, first.signatures)
        assert (again.width, again.height, again.fps) == (first.width, first.height, first.fps)
    assert builds == [str(path)]  # no second counting decode
    _check_reads(path, seq)  # seeks to the stored keyframes give the frames of a sequential decode


def test_stored_index_of_a_changed_file_is_not_used(corpus, tmp_path, index_store):
    import os

    folder, builds = index_store
    path = tmp_path / "clip.avi"
    path.write_bytes(corpus["avi_nvop"].read_bytes())
    open_video(path).close()
    path.write_bytes(corpus["avi_packed"].read_bytes())  # replaced in place
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    D.clear_index_cache()
    _check_reads(path, sequential(path))
    assert builds == [str(path)] * 2
    D.clear_index_cache()
    _check_reads(path, sequential(path))  # the entry was rewritten for the new file
    assert len(builds) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_video", "bad_keyframes", "pickle"])
def test_damaged_or_foreign_stored_index_is_ignored_and_rewritten(corpus, tmp_path, index_store, damage):
    folder, builds = index_store
    path, other = tmp_path / "clip.avi", tmp_path / "other.avi"
    path.write_bytes(corpus["avi_packed"].read_bytes())
    other.write_bytes(corpus["avi_packed"].read_bytes())
    open_video(path).close()
    entry = next(folder.glob("*.npz"))
    if damage == "garbage":
        entry.write_bytes(b"not an npz file")
    elif damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "other_video":  # the entry of another file (same size and mtime) under this file's name
        import os
        import shutil

        st = os.stat(path)
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        before = set(folder.glob("*.npz"))
        D.clear_index_cache()
        open_video(other).close()
        shutil.copyfile(next(iter(set(folder.glob("*.npz")) - before)), entry)
    elif damage == "bad_keyframes":
        with np.load(entry) as z:
            fields = dict(z)
        fields["keyframes"] = fields["keyframes"][::-1].copy()
        np.savez(entry, **fields)
    else:  # an object array: never unpickled
        with np.load(entry) as z:
            fields = dict(z)
        fields["keyframes"] = np.array([0, {"x": 1}], dtype=object)
        np.savez(entry, **fields)
    D.clear_index_cache()
    n = len(builds)
    _check_reads(path, sequential(path))
    assert len(builds) == n + 1  # indexed again
    with np.load(entry, allow_pickle=False) as z:  # and the entry is whole again
        assert str(z["video"]) == str(path.resolve()) and list(z["keyframes"])[0] == 0


def test_only_decode_order_indexes_are_stored(corpus, index_store):
    folder, _ = index_store
    open_video(corpus["mkv_h264"]).close()  # indexed from its timestamps by a demux: nothing to keep
    assert not folder.exists() or not list(folder.glob("*.npz"))


def test_index_store_off_and_unwritable(corpus, tmp_path, index_store, monkeypatch, caplog):
    from actionkit.data import video_index_store as S

    folder, builds = index_store
    monkeypatch.setenv(S.DIR_ENV, "off")
    open_video(corpus["avi_packed"]).close()
    assert not folder.exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(S.DIR_ENV, str(blocker / "video_index"))
    monkeypatch.setattr(S, "_warned_dirs", set())
    with caplog.at_level("WARNING", logger="actionkit"):
        for _ in range(2):
            D.clear_index_cache()
            _check_reads(corpus["avi_packed"], sequential(corpus["avi_packed"]))
    warnings = [r for r in caplog.records if "cannot store video indexes" in r.getMessage()]
    assert len(warnings) == 1 and S.DIR_ENV in warnings[0].getMessage()


@pytest.mark.parametrize("checked", [8, 0])
def test_index_renumbered_in_decode_order_is_stored(corpus, tmp_path, index_store, monkeypatch, checked):
    """A timestamp index the decoded frames contradict (caught at indexing, or while reading) falls back to decode
    order, and that numbering is stored."""
    folder, builds = index_store
    monkeypatch.setattr(D, "_DECODE_ORDER_CODECS", frozenset())
    monkeypatch.setattr(D, "_CHECKED_FRAMES", checked)
    path = tmp_path / "packed.mkv"
    path.write_bytes(corpus["mkv_packed"].read_bytes())
    with open_video(path) as r:
        assert r._index.decode_order == (checked > 0)
        r.get_frames([2, 3, 13, 10])
        assert r._index.decode_order
    assert builds == [str(path)] and len(list(folder.glob("*.npz"))) == 1
    D.clear_index_cache()
    _check_reads(path, sequential(path))
    assert builds == [str(path)]
