"""Bad configs, bad feature banks and command-line errors (issue 12 items 6, 12, 17, 18, 20).

Every bad input gives a clear error that names the file and the key; the command lines print it without a
traceback (``--debug`` / ``ACTIONKIT_DEBUG=1`` show it).
"""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actionkit.cli import error_message, main as cli_main, run_command
from actionkit.config import load_config
from actionkit.checkpoint import CheckpointError
from actionkit.models.builder import build_model
from actionkit.cli import convert_lfb as CL
from actionkit.data import feature_bank as FB
from actionkit.data import feature_bank_writer as FBW
from actionkit.registry import ConfigError, Registry

from conftest import REPO

TINY_CONFIG = """
total_epochs = 3
model = dict(
    type='Recognizer3D',
    backbone=dict(type='ResNet3d', depth=18, base_channels=2, pretrained=None, pretrained2d=False),
    cls_head=dict(type='I3DHead', num_classes=4, in_channels=16))
data = dict(videos_per_gpu=2, workers_per_gpu=0,
            train_dataloader=dict(videos_per_gpu=2),
            train=dict(type='RawframeDataset', ann_file='missing_list.txt', data_prefix='', pipeline=[]))
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
"""


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_cfg.py"
    path.write_text(TINY_CONFIG)
    return path


def _assert_names(exc: ConfigError, path: Path, key: str) -> None:
    assert exc.filename == str(path) and exc.key == key
    assert str(path) in str(exc) and f"'{key}'" in str(exc)


# ------------------------------------------------------------------------------------------------ configs
def test_cfg_option_below_a_scalar_is_a_config_error(cfg_file):
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file, ["total_epochs.x=1"])
    _assert_names(info.value, cfg_file, "total_epochs.x")
    assert "holds 3 (int)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file, ["data..videos_per_gpu=1"])
    assert "empty part" in str(info.value) and str(cfg_file) in str(info.value)


@pytest.mark.parametrize("option, key", [
    ("total_epochs=abc", "total_epochs"),
    ("total_epochs=0", "total_epochs"),
    ("total_epochs=2.5", "total_epochs"),
    ("data.videos_per_gpu=0", "data.videos_per_gpu"),
    ("data.videos_per_gpu=-1", "data.videos_per_gpu"),
    ("data.train_dataloader.videos_per_gpu=two", "data.train_dataloader.videos_per_gpu"),
    ("data.workers_per_gpu=-2", "data.workers_per_gpu"),
    ("model.backbone.depth='18'", "model.backbone.depth"),
    ("model.cls_head.num_classes=0", "model.cls_head.num_classes"),
    ("optimizer.lr=fast", "optimizer.lr"),
    ("seed=abc", "seed"),
])
def test_bad_well_known_values_name_file_and_key(cfg_file, option, key):
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file, [option])
    _assert_names(info.value, cfg_file, key)
    assert "(set by --cfg-options)" in str(info.value)


def test_bad_value_inside_the_file_is_reported_without_the_cli_note(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(TINY_CONFIG.replace("total_epochs = 3", "total_epochs = '3'"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _assert_names(info.value, path, "total_epochs")
    assert "--cfg-options" not in str(info.value)


def test_good_values_and_none_pass(cfg_file):
    cfg = load_config(cfg_file, ["seed=None", "data.videos_per_gpu=1", "data.workers_per_gpu=0", "optimizer.lr=0"])
    assert cfg.data.videos_per_gpu == 1 and cfg.seed is None


def test_unknown_nested_type_names_the_file(cfg_file):
    cfg = load_config(cfg_file, ["model.cls_head.type=I3DHeadd"])
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    _assert_names(info.value, cfg_file, "model.cls_head.type")
    assert "unknown model type 'I3DHeadd'" in str(info.value)


def test_constructor_errors_name_file_and_key(cfg_file):
    cfg = load_config(cfg_file, ["model.backbone.depth=19"])
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    _assert_names(info.value, cfg_file, "model.backbone")
    assert "invalid depth 19" in str(info.value)
    causes, exc = [], info.value
    while exc is not None:                  # the original error stays in the chain (shown by --debug)
        causes.append(type(exc))
        exc = exc.__cause__
    assert causes[-1] is KeyError


def test_pipeline_errors_inside_a_dataset_name_the_full_key(tmp_path):
    from actionkit.registry import DATASETS

    ann = tmp_path / "list.txt"
    ann.write_text("vid 8 0\n")
    pipeline = [dict(type="SampleFrames", clip_len=4, frame_interval=1, num_clips=1),
                dict(type="SampleFrames", clip_len="four", frame_interval=1, num_clips=1)]
    with pytest.raises(ConfigError) as info:
        DATASETS.build(dict(type="RawframeDataset", ann_file=str(ann), data_prefix="", pipeline=pipeline),
                       key="data.train", filename="cfg.py")
    assert info.value.key == "data.train.pipeline[1]" and info.value.filename == "cfg.py"
    assert "clip_len must be a positive int, got 'four'" in str(info.value)


def test_registry_prefixes_keys_raised_by_constructors():
    reg = Registry("things")

    @reg.register()
    class Leaf:
        def __init__(self, mode: str = "a"):
            if mode != "a":
                raise ConfigError(f"mode must be 'a', got {mode!r}", "mode")

    @reg.register()
    class Parent:
        def __init__(self, child: dict):
            self.child = reg.build(child, key="top.child")

    with pytest.raises(ConfigError) as info:   # relative key of a constructor: joined to the built key
        reg.build({"type": "Parent", "child": {"type": "Leaf", "mode": "b"}}, key="top", filename="f.py")
    assert info.value.key == "top.child.mode" and info.value.filename == "f.py"
    with pytest.raises(ConfigError) as info:   # a nested build's own (full) key is kept
        reg.build({"type": "Parent", "child": {"type": "Nope"}}, key="top", filename="f.py")
    assert info.value.key == "top.child.type" and info.value.filename == "f.py"
    with pytest.raises(ConfigError) as info:   # a TypeError inside a constructor names the key
        reg.build({"type": "Parent", "child": {"type": "Leaf", "mode": None}}, key="top", filename="f.py")
    assert info.value.key == "top.child.mode"


def test_train_refuses_a_negative_batch_size(cfg_file, tmp_path, capsys):
    """Before: '-16 iters/epoch' and exit 0."""
    rc = cli_main(["train", str(cfg_file), "--work-dir", str(tmp_path / "wd"),
                   "--cfg-options", "data.videos_per_gpu=-1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(cfg_file) in err and "data.videos_per_gpu" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ feature banks
def _bank(value=None) -> dict:
    feats = {1: [torch.ones(4), torch.zeros(4)], 2: [torch.full((4,), 2.0)]}
    if value is not None:
        feats[2] = [torch.tensor([0.0, value, 1.0, 2.0])]
    return {"vid_a": {0: [torch.ones(4)]}, "vid_b": feats}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_convert_refuses_non_finite_features(tmp_path, value):
    pkl = tmp_path / "lfb_train.pkl"
    torch.save(_bank(value), pkl)
    with pytest.raises(FB.FeatureBankError, match=r"lfb_train\.pkl: video 'vid_b' second 2 feature \[0\]: NaN or Inf"):
        FBW.convert_lfb(pkl, tmp_path / "lfb_train")
    assert not (tmp_path / "lfb_train").exists()


def test_convert_refuses_float16_overflow(tmp_path):
    pkl = tmp_path / "lfb_val.pkl"
    torch.save(_bank(1e6), pkl)
    with pytest.raises(FB.FeatureBankError, match=r"lfb_val\.pkl: video 'vid_b' second 2 .*float16 range"):
        FBW.convert_lfb(pkl, tmp_path / "lfb_val", dtype="float16")
    FBW.convert_lfb(pkl, tmp_path / "lfb_val", dtype="float32")  # fits float32
    assert FB.FeatureBank.open(tmp_path / "lfb_val").features_at("vid_b", 2)[0, 1] == 1e6


def test_write_from_arrays_refuses_non_finite(tmp_path):
    feats = np.ones((3, 4), np.float32)
    feats[2, 3] = np.nan
    with pytest.raises(FB.FeatureBankError, match=r"row 2 \(video 'v1' second 7\)"):
        FBW.write_feature_bank_arrays(tmp_path / "b", feats, ["v0", "v1"], np.array([0, 1, 2]),
                                    np.array([5, 7]), np.array([0, 2, 3]), dtype="float32")
    assert not (tmp_path / "b").exists()


def test_open_scans_banks_without_the_finite_flag(tmp_path):
    bank = FBW.write_feature_bank(tmp_path / "lfb_train", _bank())
    meta = json.loads((bank / "meta.json").read_text())
    assert meta["all_finite"] is True
    feats = np.load(bank / "features.npy", mmap_mode="r+")
    feats[2, 1] = np.nan                                 # row 2 = vid_b second 1, second feature
    feats.flush()
    del feats
    del meta["all_finite"]                               # a bank written without the check
    (bank / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FB.FeatureBankError, match=r"features\.npy: feature row 2 \(video 'vid_b' second 1\)"):
        FB.FeatureBank.open(bank)


def test_open_scan_finds_the_first_bad_row_across_chunks(tmp_path):
    n, c = 5000, 8
    feats = np.ones((n, c), np.float16)
    bank = FBW.write_feature_bank_arrays(tmp_path / "b", feats, ["v"], np.array([0, n]), np.arange(n),
                                       np.arange(n + 1))
    part = FB._BankPart(bank)
    mm = np.load(bank / "features.npy", mmap_mode="r+")
    mm[4321, 5] = np.inf
    mm.flush()
    del mm
    with pytest.raises(FB.FeatureBankError, match=r"row 4321 \(video 'v' second 4321\)"):
        part._check_finite(chunk_bytes=1000)


@pytest.mark.parametrize("shape", [(2, 4), (4, 2, 1), (2, 2, 2)])
def test_convert_refuses_multi_dimensional_features(tmp_path, shape):
    pkl = tmp_path / "lfb_train.pkl"
    bank = _bank()
    bank["vid_b"][2] = [torch.ones(shape)]
    torch.save(bank, pkl)
    with pytest.raises(FB.FeatureBankError, match=r"lfb_train\.pkl: video 'vid_b' second 2\[0\]: feature of shape"):
        FBW.convert_lfb(pkl, tmp_path / "out")


def test_vector_shaped_features_are_accepted(tmp_path):
    bank = {"v": {1: [torch.ones(4, 1, 1, 1), torch.zeros(1, 4)], 2: np.ones((3, 4), np.float32)}}
    fb = FB.FeatureBank.open(FBW.write_feature_bank(tmp_path / "b", bank))
    assert fb.channels == 4 and fb.features_at("v", 1).shape == (2, 4) and fb.features_at("v", 2).shape == (3, 4)


def test_overwrite_replaces_only_a_bank(tmp_path, capsys):
    pkl = tmp_path / "lfb_train.pkl"
    torch.save(_bank(), pkl)
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "keep.txt").write_text("data")
    with pytest.raises(FileExistsError, match="results: exists and is not a feature bank"):
        FBW.convert_lfb(pkl, precious, overwrite=True)
    assert (precious / "keep.txt").read_text() == "data"
    with pytest.raises(SystemExit) as info:
        CL.main([str(pkl), "--out", str(precious), "--overwrite"])
    assert info.value.code == 2 and "is not a feature bank" in capsys.readouterr().err
    assert (precious / "keep.txt").read_text() == "data"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="a_file: exists and is not a feature bank"):
        FBW.convert_lfb(pkl, a_file, overwrite=True)
    assert a_file.read_text() == "x"
    # an existing bank and an empty directory are replaced
    assert CL.main([str(pkl), "--out", str(tmp_path / "bank")]) == 0
    assert CL.main([str(pkl), "--out", str(tmp_path / "bank"), "--overwrite"]) == 0
    (tmp_path / "empty").mkdir()
    assert CL.main([str(pkl), "--out", str(tmp_path / "empty"), "--overwrite"]) == 0
    assert len(FB.FeatureBank.open(tmp_path / "empty")) == len(FB.FeatureBank.open(tmp_path / "bank")) == 2
    # a damaged bank (unreadable meta.json, a leftover temporary file) holds only bank files: replaced
    damaged = tmp_path / "bank"
    (damaged / "meta.json").write_text("{trunc")
    (damaged / ".seconds.npy.tmp-123").write_bytes(b"")
    assert FBW.is_replaceable_bank_dir(damaged)
    FBW.convert_lfb(pkl, damaged, overwrite=True)
    assert len(FB.FeatureBank.open(damaged)) == 2
    (damaged / "notes.txt").write_text("mine")          # anything else beside a valid bank: refused
    with pytest.raises(FileExistsError, match="bank: exists and is not a feature bank"):
        FBW.convert_lfb(pkl, damaged, overwrite=True)
    assert (damaged / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ command line
def test_cli_prints_the_message_alone(tmp_path, capsys):
    missing = tmp_path / "missing_cfg.py"
    assert cli_main(["train", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("actionkit train: error: ConfigError: ") and str(missing) in err
    assert "Traceback" not in err


def test_cli_debug_shows_the_traceback(tmp_path, monkeypatch):
    missing = str(tmp_path / "missing_cfg.py")
    with pytest.raises(ConfigError, match="config file not found"):
        cli_main(["train", missing, "--debug"])
    with pytest.raises(ConfigError):
        cli_main(["--debug", "test", missing, "x.pth", "--eval", "mAP"])
    monkeypatch.setenv("ACTIONKIT_DEBUG", "1")
    with pytest.raises(ConfigError):
        cli_main(["train", missing])


def _raiser(exc: BaseException):
    def run(argv):
        raise exc
    return run


def test_run_command_exit_codes(capsys):
    assert run_command(_raiser(CheckpointError("w.pth", "damaged")), [], "test.py") == 1
    assert capsys.readouterr().err == "test.py: error: CheckpointError: w.pth: damaged\n"
    assert run_command(_raiser(FileNotFoundError("list.txt: not found")), [], "p") == 1
    assert run_command(_raiser(ValueError("list.txt:3: bad label")), [], "p") == 1
    assert run_command(_raiser(ConfigError("bad", "k", "c.py")), [], "p") == 2
    assert run_command(_raiser(KeyboardInterrupt()), [], "p") == 130
    seen = []
    assert run_command(lambda argv: seen.append(argv), ["a", "--debug", "b"], "p") == 0
    assert seen == [["a", "b"]]                          # --debug never reaches the command


def test_bugs_keep_their_traceback():
    with pytest.raises(AttributeError):
        run_command(_raiser(AttributeError("'NoneType' object has no attribute 'x'")), [], "p")
    with pytest.raises(IndexError):
        run_command(_raiser(IndexError("list index out of range")), [], "p")


def test_worker_errors_keep_only_the_worker_message():
    text = ("Caught DecodeError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 3, in f\n    raise DecodeError("v.mp4: truncated")\n'
            "actionkit.data.decode.DecodeError: v.mp4: truncated\n")
    assert error_message(RuntimeError(text)) == \
        "actionkit.data.decode.DecodeError: v.mp4: truncated (in DataLoader worker process 1)"


@pytest.mark.parametrize("tool", ["tools/train.py", "tools/test.py"])
def test_tools_print_the_message_alone(tool, tmp_path, monkeypatch, capsys):
    """The scripts run as ``python tools/X.py`` (run in this process: no second torch start-up)."""
    monkeypatch.delenv("ACTIONKIT_DEBUG", raising=False)
    extra = ["x.pth", "--eval", "top_k_accuracy"] if tool.endswith("test.py") else []
    missing = str(tmp_path / "missing_cfg.py")
    monkeypatch.setattr(sys, "argv", [str(REPO / tool), missing, *extra])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / tool), run_name="__main__")
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err == f"{Path(tool).name}: error: ConfigError: {missing}: config file not found\n"
    monkeypatch.setenv("ACTIONKIT_DEBUG", "1")
    with pytest.raises(ConfigError, match="config file not found"):
        runpy.run_path(str(REPO / tool), run_name="__main__")


def test_build_model_takes_the_config_or_its_model_dict(cfg_file):
    """MMAction2 users write ``build_model(cfg.model)``; the whole config works too, with the same model."""
    import torch

    cfg = load_config(cfg_file)
    torch.manual_seed(0)
    whole = build_model(cfg)
    torch.manual_seed(0)
    part = build_model(cfg.model)
    assert type(whole) is type(part)
    a, b = whole.state_dict(), part.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="model.*is required but missing"):
        build_model({"data": {}})
    bad = load_config(cfg_file, ["model.backbone.depth=19"])
    with pytest.raises(ConfigError, match="invalid depth 19"):
        build_model(bad.model)
    import actionkit

    import copy

    before = copy.deepcopy(cfg.model)
    torch.manual_seed(0)
    top = actionkit.build_model(cfg.model)  # the top-level API (configs, zoo names, checkpoints) as well
    assert type(top) is type(whole) and all(torch.equal(a[k], top.state_dict()[k]) for k in a)
    assert cfg.model == before  # the caller's dict is left as it was
