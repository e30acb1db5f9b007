"""Model zoo: the table, names, configs, and checkpoint downloads served by a loopback HTTP server."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest
import torch

from actionkit import zoo
from actionkit.cli import main as cli_main
from actionkit.cli import models as models_cli
from actionkit.config import load_config
from actionkit.checkpoint import load_checkpoint, safe_load
from actionkit.models.builder import build_model_from_config

from conftest import GOLDEN_KEYS, REPO, SHARED_DATA, require_shared
from test_configs import DETECTION_COUNTS, RECOGNITION_KEYS, _lfb_options, _no_pretrained, _read_keys, _state_shapes

TINY_CONFIG = REPO / "configs" / "recognition" / "synthetic" / "i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb.py"


# ------------------------------------------------------------------------------------------------ the table
def test_all_38_entries_with_metrics_and_unique_names():
    entries = zoo.list_models()
    assert len(entries) == 38
    assert len(zoo.list_models("recognition")) == 21 and len(zoo.list_models("detection")) == 17
    names = [n for e in entries for n in (e.name, *e.aliases)]
    assert len(names) == len(set(names))
    for e in entries:
        assert e.url.startswith("https://download.openmmlab.com/") and zoo.hash_prefix(e.filename)
        if e.task == "recognition":
            assert set(e.metrics) == {"Top 1 Accuracy", "Top 5 Accuracy"}
        else:
            assert set(e.metrics) == {"mAP"}
        assert all(0 < v < 100 for v in e.metrics.values())
    with pytest.raises(ValueError, match="unknown task"):
        zoo.list_models("segmentation")


def test_packaged_table_matches_the_published_metafiles():
    path = require_shared(SHARED_DATA / "model_zoo" / "mmaction2_0x_metafiles.json")
    published = json.loads(path.read_text())
    by_url = {e.url: e for e in zoo.list_models()}
    assert sorted(by_url) == sorted(p["weights"] for p in published)
    for p in published:
        e = by_url[p["weights"]]
        assert (e.config, e.dataset, dict(e.metrics), e.resolution) == \
            (p["config"], p["dataset"], p["metrics"], p.get("resolution"))
        assert e.config_name == p["name"].removesuffix(".py")


def test_two_checkpoint_configs_have_a_name_per_resolution_and_the_plain_name_picks_one(caplog):
    i3d = "i3d_r50_32x2x1_100e_kinetics400_rgb"
    a = zoo.get_model_entry(f"{i3d}_340x256")
    b = zoo.get_model_entry(f"{i3d}_short_side_256")
    assert (a.resolution, a.metrics["Top 1 Accuracy"]) == ("340x256", 72.68)
    assert (b.resolution, b.metrics["Top 1 Accuracy"]) == ("short-side 256", 73.27)
    caplog.set_level("INFO", logger="actionkit")
    assert zoo.get_model_entry(i3d) == a  # the checkpoint published under the config's own name
    assert f"{i3d}_340x256" in caplog.text
    assert zoo.get_model_entry("i3d_r50_256p_32x2x1_100e_kinetics400_rgb") == b  # MMAction2's URL name
    sf = "slowfast_r50_4x16x1_256e_kinetics400_rgb"
    assert zoo.get_model_entry(sf).name == f"{sf}_short_side_320"
    assert zoo.get_model_entry(f"{sf}_short_side_256").metrics["Top 1 Accuracy"] == 74.75
    # every config with two checkpoints: two names, exactly one of them also answers to the plain name
    by_config: dict[str, list] = {}
    for e in zoo.list_models():
        by_config.setdefault(e.config, []).append(e)
    pairs = {c: es for c, es in by_config.items() if len(es) > 1}
    assert len(pairs) == 4
    for es in pairs.values():
        assert sum(e.config_name in e.aliases for e in es) == 1
        assert all(e.name != e.config_name for e in es)
    # a config path and the metafile's '.py' names find their entry
    lfb = "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb"
    assert zoo.get_model_entry(f"{lfb}.py").name == lfb
    assert zoo.get_model_entry(f"configs/detection/lfb/{lfb}.py").name == lfb


def test_unknown_name_lists_close_names():
    with pytest.raises(zoo.UnknownModelError) as ei:
        zoo.get_model_entry("i3d_r50_32x2x1_kinetics400_rgb")
    msg = str(ei.value)
    assert "i3d_r50_32x2x1_kinetics400_rgb" in msg and "close names: " in msg
    assert "i3d_r50_32x2x1_100e_kinetics400_rgb" in msg
    assert "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb" in zoo.close_model_names("slowonly_ava")
    assert isinstance(ei.value, ValueError) and len(ei.value.close) >= 1
    with pytest.raises(zoo.UnknownModelError, match="slowfast_r50_8x8x1_256e_kinetics400_rgb"):
        zoo.resolve_checkpoint("slowfast_r50_8x8_kinetics400")
    with pytest.raises(zoo.UnknownModelError, match="close names"):
        safe_load("slowfast_r50_8x8_kinetics400")  # every checkpoint argument goes through the zoo
    with pytest.raises(FileNotFoundError, match="nope.pth: checkpoint file not found"):
        zoo.resolve_checkpoint("some/dir/nope.pth")


def test_models_command_lists_every_entry_with_metrics(capsys):
    out = io.StringIO()
    assert models_cli.main([], out=out) == 0
    text = out.getvalue()
    for e in zoo.list_models():
        row = next(ln for ln in text.splitlines() if ln.startswith(e.name + " "))
        for value in e.metrics.values():
            assert f"{value:.2f}" in row
        assert e.dataset in row
    assert "i3d_r50_32x2x1_100e_kinetics400_rgb -> i3d_r50_32x2x1_100e_kinetics400_rgb_340x256" in text
    out = io.StringIO()
    models_cli.main(["--task", "detection", "--json"], out=out)
    rows = json.loads(out.getvalue())
    assert len(rows) == 17 and {r["task"] for r in rows} == {"detection"}
    assert rows[0]["metrics"] == dict(zoo.list_models("detection")[0].metrics)
    assert cli_main(["models", "not_a_model_name"]) == 1
    assert "unknown model zoo name 'not_a_model_name'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ configs
def _unique_configs() -> list[str]:
    return sorted({e.config for e in zoo.list_models()})


@pytest.mark.parametrize("config", _unique_configs(), ids=lambda c: Path(c).stem)
def test_every_listed_config_exists_and_builds_with_the_expected_keys(config, tmp_path):
    entries = [e for e in zoo.list_models() if e.config == config]
    path = zoo.config_path(entries[0])
    assert path == REPO / config
    cfg = load_config(path)
    opts = _no_pretrained(cfg)
    shared = cfg.model.get("roi_head", {}).get("shared_head") or {}
    if shared.get("type") in ("FBOHead", "LFBInferHead"):
        opts |= _lfb_options(cfg, tmp_path)
    with torch.device("meta"):  # shapes only: no memory, no init
        model = build_model_from_config(path, device="meta", cfg_options=opts, init_weights=False)
    shapes = _state_shapes(model)
    params = sum(p.numel() for p in model.parameters())
    stem = path.stem
    if entries[0].task == "recognition":
        golden = GOLDEN_KEYS / f"{RECOGNITION_KEYS[stem]}.keys.txt"
        if not golden.is_file():
            pytest.skip(f"{golden} not available (shared data is not beside this checkout)")
        assert shapes == _read_keys(golden)
        assert model.cls_head.num_classes == {"Kinetics-400": 400, "SthV1": 174}[entries[0].dataset]
    else:
        n_keys, n_params = DETECTION_COUNTS[stem]
        assert (len(shapes), params) == (n_keys, n_params)
        key_file = GOLDEN_KEYS / "detection" / f"{stem}.keys"
        if key_file.is_file():
            assert sorted(shapes) == sorted(_read_keys(key_file))
    for e in entries:
        if e.parameters is None:
            continue
        # MMAction2's published counts leave out the lateral connections' BN (lateral_norm=True configs)
        lateral_bn = sum(p.numel() for n, p in model.named_parameters() if "_lateral" in n and ".bn." in n)
        assert params - lateral_bn == e.parameters, e.name


def test_config_path_reports_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv(zoo.CONFIG_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*ACTIONKIT_CONFIG_DIR"):
        zoo.config_path("i3d_r50_video_32x2x1_100e_kinetics400_rgb")


# ------------------------------------------------------------------------------------------------ downloads
class _Server:
    """A loopback HTTP server for the test: files by path, optional Range support, a cut first response.

    Serves at most ``max_requests`` requests and shuts itself down after ``lifetime`` seconds."""

    def __init__(self, max_requests: int = 40, lifetime: float = 60.0):
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self.max_requests = max_requests
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                server.requests.append((self.path, self.headers.get("Range")))
                if len(server.requests) > server.max_requests:
                    self.send_error(503, "request limit of the test server reached")
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.cut_once:
                    server.cut_once.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(lifetime, self.httpd.shutdown)
        self.timer.daemon = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def add(self, name: str, data: bytes, good_hash: bool = True) -> str:
        digest = hashlib.sha256(data).hexdigest()[:8] if good_hash else "00000000"
        path = f"/ckpt/{name}-{digest}.pth"
        self.files[path] = data
        return path

    def __enter__(self) -> "_Server":
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[_Server]:
    with _Server() as s:
        yield s


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(zoo.HOME_ENV, str(tmp_path / "akhome"))
    return tmp_path / "akhome" / "checkpoints"


def _unreachable_url(name: str) -> str:
    with socket.socket() as s:  # a port that nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/ckpt/{name}"


def test_cache_dir_follows_actionkit_home(monkeypatch, tmp_path):
    monkeypatch.setenv(zoo.HOME_ENV, str(tmp_path))
    assert zoo.checkpoint_cache_dir() == tmp_path / "checkpoints"
    monkeypatch.delenv(zoo.HOME_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert zoo.checkpoint_cache_dir() == tmp_path / "user" / ".cache" / "actionkit" / "checkpoints"


def test_good_file_is_cached_and_then_used_without_network(server, home):
    data = bytes(range(256)) * 4000
    url = server.url(server.add("good", data))
    path = zoo.download_checkpoint(url, progress=False)
    assert path == home / Path(url).name and path.read_bytes() == data
    assert sorted(p.name for p in home.iterdir()) == [path.name, path.name + ".lock"]  # no .part left
    n = len(server.requests)
    assert zoo.resolve_checkpoint(url) == path
    assert len(server.requests) == n  # cached: no request


def test_wrong_hash_is_refused_and_not_cached(server, home):
    url = server.url(server.add("bad", b"x" * 50_000, good_hash=False))
    with pytest.raises(zoo.ChecksumError, match="00000000.*refused and deleted"):
        zoo.download_checkpoint(url, progress=False)
    assert not any(p.suffix in (".pth", ".part") for p in home.iterdir())
    assert not (home / Path(url).name).exists()


def test_cut_download_resumes_with_range(server, home):
    data = bytes(reversed(range(256))) * 3000
    path = server.add("cut", data)
    server.cut_once.add(path)
    with pytest.raises(zoo.DownloadError, match="cut at .*run again to resume"):
        zoo.download_checkpoint(server.url(path), progress=False, retries=0)
    part = home / (Path(path).name + ".part")
    assert 0 < part.stat().st_size < len(data)
    assert not (home / Path(path).name).exists()
    got = zoo.download_checkpoint(server.url(path), progress=False, retries=0)
    assert got.read_bytes() == data and not part.exists()
    assert server.requests[-1] == (path, f"bytes={len(data) // 2}-")


def test_cut_download_resumes_automatically_and_range_ignored_restarts(server, home):
    data = b"abcdefgh" * 40_000
    path = server.add("auto", data)
    server.cut_once.add(path)
    got = zoo.download_checkpoint(server.url(path), progress=False)  # retries=2 by default
    assert got.read_bytes() == data
    assert [r for _, r in server.requests] == [None, f"bytes={len(data) // 2}-"]
    # a server that ignores Range answers 200 with the whole file: the part is rewritten, not appended to
    path2 = server.add("norange", data[::-1])
    server.cut_once.add(path2)
    server.ignore_range = True
    got2 = zoo.download_checkpoint(server.url(path2), progress=False)
    assert got2.read_bytes() == data[::-1]


def test_unreachable_url_gives_one_line_with_the_url_and_the_manual_path(home):
    name = "hand-" + hashlib.sha256(b"by hand").hexdigest()[:8] + ".pth"
    url = _unreachable_url(name)
    with pytest.raises(zoo.DownloadError) as ei:
        zoo.download_checkpoint(url, progress=False, timeout=5)
    msg = str(ei.value)
    assert "\n" not in msg and url in msg and str(home / name) in msg
    # the file downloaded by hand and put at the printed path is used (no network: the URL is still dead)
    printed = Path(msg.rsplit("put it at ", 1)[1])
    printed.write_bytes(b"by hand")
    assert zoo.resolve_checkpoint(url) == printed


def test_http_error_and_mismatching_hand_placed_file(server, home):
    with pytest.raises(zoo.DownloadError, match=r"HTTP 404.*put it at "):
        zoo.download_checkpoint(server.url("/ckpt/missing-12345678.pth"), progress=False)
    url = server.url(server.add("placed", b"right bytes"))
    home.mkdir(parents=True, exist_ok=True)
    (home / Path(url).name).write_bytes(b"wrong bytes")
    with pytest.raises(zoo.ChecksumError, match="does not match"):
        zoo.resolve_checkpoint(url)
    assert not (home / Path(url).name).exists()
    assert zoo.resolve_checkpoint(url).read_bytes() == b"right bytes"


def test_download_command_prints_the_path(server, tmp_path, capsys):
    url = server.url(server.add("cli", b"0123456789" * 100))
    assert cli_main(["download", url, "--dir", str(tmp_path / "d"), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / Path(url).name)
    assert cli_main(["download", "i3d_r50_32x2x1_kinetics", "--dir", str(tmp_path / "d")]) == 1
    assert "close names" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ names everywhere
@contextlib.contextmanager
def _fake_zoo(monkeypatch, entries: list[zoo.ZooEntry]):
    """The zoo table replaced by ``entries`` (tests cannot reach download.openmmlab.com)."""
    table = tuple(entries)
    with monkeypatch.context() as m:
        m.setattr(zoo, "_load_table", lambda: table)
        m.setattr(zoo, "_name_index", lambda: {n: e for e in table for n in (e.name, *e.aliases)})
        yield


def _tiny_checkpoint(server: _Server) -> tuple[str, dict]:
    torch.manual_seed(0)
    model = build_model_from_config(TINY_CONFIG)
    buf = io.BytesIO()
    torch.save({"meta": {"note": "test"}, "state_dict": model.state_dict()}, buf)
    return server.url(server.add("tiny_i3d", buf.getvalue())), model.state_dict()


def test_build_model_pretrained_and_checkpoint_by_zoo_name_and_url(server, home, monkeypatch):
    import actionkit

    url, expected = _tiny_checkpoint(server)
    entry = zoo.ZooEntry(name="tiny_i3d_synthetic", config=str(TINY_CONFIG.relative_to(REPO)), url=url,
                         dataset="synthetic", task="recognition", metrics={"Top 1 Accuracy": 50.0})
    with _fake_zoo(monkeypatch, [entry]):
        model = actionkit.build_model("tiny_i3d_synthetic", pretrained=True)
        assert not model.training
        for k, v in model.state_dict().items():
            assert torch.equal(v, expected[k]), k
        by_url = actionkit.build_model(TINY_CONFIG, checkpoint=url)
        by_name = actionkit.build_model(str(TINY_CONFIG), checkpoint="tiny_i3d_synthetic")
        assert all(torch.equal(by_url.state_dict()[k], v) and torch.equal(by_name.state_dict()[k], v)
                   for k, v in expected.items())
        # a zoo config's file with pretrained=True finds the entry by its name
        same = build_model_from_config(load_config(TINY_CONFIG), pretrained=False)
        assert not torch.equal(same.state_dict()["cls_head.fc_cls.weight"], expected["cls_head.fc_cls.weight"])
        with pytest.raises(ValueError, match="either checkpoint"):
            actionkit.build_model("tiny_i3d_synthetic", checkpoint=url, pretrained=True)
        loaded = load_checkpoint(build_model_from_config(TINY_CONFIG), "tiny_i3d_synthetic")
        assert loaded["meta"]["note"] == "test"
    assert len([r for r in server.requests if r[0].startswith("/ckpt/tiny_i3d")]) == 1  # one download, then cache
    with pytest.raises(ValueError, match="not a model zoo config"):
        actionkit.build_model(TINY_CONFIG, pretrained=True)
    with pytest.raises(zoo.UnknownModelError, match="close names"):
        actionkit.build_model("slowfast_r50_4x16x1_kinetics400_rgb")


def test_test_command_and_load_from_accept_urls_and_zoo_names(server, home, monkeypatch, tmp_path):
    import numpy as np

    import test_engine  # registers the engine's tiny test model and dataset
    from actionkit.cli.test import main as test_main
    from actionkit.cli.train import main as train_main

    cfg_path = test_engine.write_config(tmp_path, epochs=1)
    torch.manual_seed(1)
    model = build_model_from_config(cfg_path)
    local = tmp_path / "local.pth"
    torch.save({"state_dict": model.state_dict()}, local)
    url = server.url(server.add("engine", local.read_bytes()))
    entry = zoo.ZooEntry(name="engine_test_model", config="configs/none.py", url=url, dataset="synthetic",
                         task="recognition", metrics={"Top 1 Accuracy": 1.0})
    outs = {}
    with _fake_zoo(monkeypatch, [entry]):
        for key, spec in (("path", str(local)), ("url", url), ("name", "engine_test_model")):
            outs[key] = tmp_path / f"{key}.json"
            assert test_main([str(cfg_path), spec, "--out", str(outs[key])]) == 0
        ref = json.loads(outs["path"].read_text())
        for key in ("url", "name"):
            np.testing.assert_array_equal(json.loads(outs[key].read_text()), ref)
        wd = tmp_path / "run"
        assert train_main([str(cfg_path), "--work-dir", str(wd), "--cfg-options", "load_from=engine_test_model"]) == 0
    assert "load checkpoint from engine_test_model" in next(wd.glob("*[0-9].log")).read_text()


def test_zoo_name_as_config_and_pretrained_skips_the_imagenet_init(server, home, monkeypatch):
    from actionkit.models.builder import resolve_config

    path, entry = resolve_config("slowfast_r50_4x16x1_256e_kinetics400_rgb")
    assert path == REPO / "configs/recognition/slowfast/slowfast_r50_4x16x1_256e_kinetics400_rgb.py"
    assert entry.name == "slowfast_r50_4x16x1_256e_kinetics400_rgb_short_side_320"
    # the I3D config asks for torchvision://resnet50 (not on this machine): with the zoo weights it is never read
    i3d = REPO / "configs/recognition/i3d/i3d_r50_video_32x2x1_100e_kinetics400_rgb.py"
    assert load_config(i3d).model.backbone.pretrained == "torchvision://resnet50"
    narrow = {"model.backbone.base_channels": 4, "model.cls_head.in_channels": 128}
    monkeypatch.setenv("ACTIONKIT_PRETRAINED_DIR", str(home.parent / "no_imagenet_here"))
    monkeypatch.setenv("TORCH_HOME", str(home.parent / "no_torch_home"))
    with pytest.raises(Exception, match="resnet50"):
        build_model_from_config(i3d, cfg_options=narrow)  # without weights it wants ImageNet's
    source = build_model_from_config(i3d, cfg_options={**narrow, "model.backbone.pretrained": None})
    buf = io.BytesIO()
    torch.save({"state_dict": source.state_dict()}, buf)
    url = server.url(server.add("narrow_i3d", buf.getvalue()))
    fake = zoo.ZooEntry(name="narrow_i3d", config=str(i3d.relative_to(REPO)), url=url, dataset="Kinetics-400",
                        task="recognition", metrics={"Top 1 Accuracy": 1.0})
    with _fake_zoo(monkeypatch, [fake]):
        import actionkit

        model = actionkit.build_model("narrow_i3d", pretrained=True, cfg_options=narrow)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())
