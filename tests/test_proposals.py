"""``actionkit proposals``: FAIR's layout, loads through AVADataset and convert-proposals unchanged, resumable."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from actionkit.cli.proposals import keyframe_seconds, run_proposals


def _video(path: Path, n: int, fps: int = 15, size=(64, 48)) -> Path:
    from actionkit.inference.video_writer import Mp4Writer

    with Mp4Writer(path, fps) as w:
        for i in range(n):
            w.write(np.full((size[1], size[0], 3), (i * 7) % 250, np.uint8))
    return path


class BrightnessDetector:
    """One box per frame whose size follows the frame's brightness (deterministic, frame-dependent)."""

    def __init__(self, fail_on: str | None = None):
        self.calls = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self.calls += 1
        m = float(frame.mean()) / 255.0
        return np.array([[0.1, 0.1, 0.2 + 0.7 * m, 0.9, 0.95]], np.float32)


@pytest.fixture
def videos(tmp_path):
    return [_video(tmp_path / "clip_a.mp4", 46), _video(tmp_path / "clip_b.mp4", 30)]


def test_keyframe_seconds():
    assert keyframe_seconds(46, 15, 900) == [(900, 1), (901, 16), (902, 31), (903, 46)]
    assert keyframe_seconds(45, 15, 0) == [(0, 1), (1, 16), (2, 31)]


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_layout_and_loaders(videos, tmp_path, suffix, capsys):
    from actionkit.data.ava import AVADataset
    from actionkit.data.ava_proposals import convert_proposals, load_proposals

    out = tmp_path / f"proposals{suffix}"
    stats = run_proposals(videos, out, BrightnessDetector(), fps=15, timestamp_start=900)
    assert stats == dict(done=2, skipped=0, keyframes=4 + 2)
    props = load_proposals(out)
    assert sorted(props) == ["clip_a,0900", "clip_a,0901", "clip_a,0902", "clip_a,0903", "clip_b,0900",
                             "clip_b,0901"]
    # frame 16 (1-based) of clip_a has brightness 15*7 = 105 (H.264 moves it by ~1; a frame off moves it by 7)
    np.testing.assert_allclose(props["clip_a,0901"], [[0.1, 0.1, 0.2 + 0.7 * 105 / 255, 0.9, 0.95]], atol=0.008)
    if suffix == ".pkl":
        with open(out, "rb") as f:
            raw = pickle.load(f)
        assert all(v.dtype == np.float32 and v.shape == (1, 5) for v in raw.values())
    # convert-proposals reads it unchanged
    npz = tmp_path / "converted.npz"
    assert convert_proposals(out, npz) == 6
    again = load_proposals(npz)
    assert sorted(again) == sorted(props)
    for k in props:
        np.testing.assert_array_equal(again[k], props[k].astype(np.float64))
    # AVADataset reads it as its proposal file (videos as frame sources)
    ann = tmp_path / "ann.csv"
    ann.write_text("clip_a,0901,0.1,0.1,0.5,0.9,1,0\nclip_b,0901,0.1,0.1,0.5,0.9,2,0\n")
    ds = AVADataset(str(ann), None, [], proposal_file=str(out), person_det_score_thr=0.9, fps=15,
                    timestamp_start=900, timestamp_end=904, data_prefix=str(tmp_path), video_suffix=".mp4",
                    num_classes=3, test_mode=True)
    raw0 = ds.get_raw(0)
    np.testing.assert_allclose(raw0["proposals"], props["clip_a,0901"][:, :4])
    assert raw0["scores"].tolist() == pytest.approx([0.95])


def test_rerun_skips_finished_videos(videos, tmp_path):
    from actionkit.data.ava_proposals import load_proposals

    out = tmp_path / "p.pkl"

    class Interrupted(Exception):
        pass

    class FailsOnSecondVideo(BrightnessDetector):
        def __call__(self, frame):
            if self.calls >= 4:      # clip_a has 4 keyframes; the first call for clip_b is interrupted
                raise Interrupted
            return super().__call__(frame)

    with pytest.raises(Interrupted):
        run_proposals(videos, out, FailsOnSecondVideo(), fps=15, timestamp_start=900)
    assert sorted(load_proposals(out)) == ["clip_a,0900", "clip_a,0901", "clip_a,0902", "clip_a,0903"]
    assert not list(tmp_path.glob(".p.pkl.tmp-*"))
    det = BrightnessDetector()
    stats = run_proposals(videos, out, det, fps=15, timestamp_start=900)
    assert stats == dict(done=1, skipped=1, keyframes=6)
    assert det.calls == 2                      # only clip_b's keyframes
    assert run_proposals(videos, out, det, fps=15, timestamp_start=900)["skipped"] == 2 and det.calls == 2


def test_bad_inputs(tmp_path, videos):
    from actionkit.cli import main
    from actionkit.data.decode import DecodeError
    from actionkit.inference.detection import DetectInputError

    with pytest.raises(DetectInputError, match="missing.mp4: video file not found"):
        run_proposals([tmp_path / "missing.mp4"], tmp_path / "p.npz", BrightnessDetector())
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(DecodeError, match=str(bad)):
        run_proposals([bad], tmp_path / "p.npz", BrightnessDetector())
    (tmp_path / "sub").mkdir()
    dup = _video(tmp_path / "sub" / "clip_a.mp4", 16)
    with pytest.raises(DetectInputError, match="same video id 'clip_a'"):
        run_proposals([videos[0], dup], tmp_path / "p.npz", BrightnessDetector())
    with pytest.raises(SystemExit):
        main(["proposals", str(videos[0]), "--out", str(tmp_path / "p.json")])


@pytest.mark.slow
def test_cli_with_torchvision_detector(tmp_path, videos, capsys):
    """The real torchvision code path (random weights made to call every proposal a person) via the CLI."""
    import torchvision_shim

    if not torchvision_shim.install():
        pytest.skip("torchvision is not installed")
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    from actionkit.cli import main
    from actionkit.data.ava_proposals import load_proposals

    torch.manual_seed(0)
    det = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        det.roi_heads.box_predictor.cls_score.weight.zero_()
        det.roi_heads.box_predictor.cls_score.bias.zero_()
        det.roi_heads.box_predictor.cls_score.bias[1] = 10.0
    torch.save(det.state_dict(), tmp_path / "det.pth")
    out = tmp_path / "p.pkl"
    assert main(["proposals", str(videos[1]), "--out", str(out), "--fps", "15", "--det-checkpoint",
                 str(tmp_path / "det.pth")]) == 0
    props = load_proposals(out)
    assert sorted(props) == ["clip_b,0900", "clip_b,0901"]
    for arr in props.values():
        assert arr.shape[1] == 5 and len(arr) > 0
        assert (arr[:, :4] >= 0).all() and (arr[:, :4] <= 1).all() and (arr[:, 4] >= 0.5).all()
        assert np.all(np.diff(arr[:, 4]) <= 0)
    assert "2 keyframes; 1 videos done" in capsys.readouterr().out
