"""The data-pipeline benchmark scripts run and print every row (their figures are in BENCHMARKS.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_benchmark_script, markdown_rows

REPO = Path(__file__).resolve().parents[1]


def table_rows(text: str) -> list[list[str]]:
    return markdown_rows(text, ("operation", "input"))


def test_frame_ops_rows_and_exactness_verdicts(tmp_path, capsys):
    assert load_benchmark_script("frame_ops").main(["--data-dir", str(tmp_path / "none"), "--repeat", "3"]) == 0
    rows = {name: (float(ms), note) for name, ms, note in table_rows(capsys.readouterr().out)}
    for side in (256, 204):
        assert rows[f"cv2.resize bilinear {side} -> 224 (the pipeline's)"][1] == "yes"
        assert rows[f"cvtColor to BGRA + cv2.resize {side} -> 224 (4 channels) + cv2.split"][1] == "yes"
        assert rows[f"cv2.resize INTER_LINEAR_EXACT {side} -> 224"][1].startswith(("yes", "no"))
    assert len(rows) == 17 and all(ms > 0 for ms, _ in rows.values())


@pytest.mark.slow
def test_data_pipeline_prints_every_stage(tmp_path, capsys):
    args = ["--data-dir", str(tmp_path), "--videos", "2", "--frames", "80", "--train-items", "2", "--test-items", "1",
            "--workers", "1", "--gops", "12", "--repeat", "1"]
    assert load_benchmark_script("data_pipeline").main(args) == 0
    rows = table_rows(capsys.readouterr().out)
    stages = {(r[0], r[1], r[2], r[3]) for r in rows}
    for source in ("mp4 gop12", "jpeg"):
        for mode in ("train", "test"):
            for stage in ("full pipeline, uint8 to the device (normalised there)",
                          "full pipeline, uint8, normalised in main", "full pipeline, normalised in worker"):
                assert (source, mode, stage, "1") in stages
    assert ("mp4 gop12", "train", "decode only (opencv)", "-") in stages
    assert all(float(r[4]) > 0 for r in rows)


def test_video_index_benchmark_rows(tmp_path, capsys, monkeypatch):
    from actionkit.data import video_index_store as S

    monkeypatch.setenv(S.DIR_ENV, "off")
    assert load_benchmark_script("video_index").main(["--workdir", str(tmp_path), "--repeat", "1",
                                                      "--scale", "0.1"]) == 0
    rows = markdown_rows(capsys.readouterr().out, ("video", "frames"))
    assert [r[0] for r in rows] == ["kinetics_340x256_1s", "ava_640x360_6s"]
    assert [int(r[1]) for r in rows] == [30, 180]
    assert all(float(r[3]) > 0 and float(r[4]) > 0 and r[5].endswith("x") for r in rows)
    import os

    assert os.environ[S.DIR_ENV] == "off"  # the benchmark puts the setting back
