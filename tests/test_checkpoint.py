"""Safe checkpoint loading (allow-list, inert metadata, malicious and corrupt files) and atomic saving."""
from __future__ import annotations

import builtins
import collections
import logging
import random
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from actionkit.checkpoint import (CheckpointError, get_rng_state, load_checkpoint, safe_load,
                                         save_checkpoint, set_rng_state)
from actionkit.engine.schedule import LrScheduler


class Net(nn.Module):
    def __init__(self, k: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4))
        self.cls_head = nn.Linear(4, k)


def _mm_checkpoint(model: nn.Module) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.cls_head(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"meta": {"mmcv_version": "1.3.9", "time": "Wed Dec  2 10:00:00 2020", "epoch": 20, "iter": 4000,
                     "config": "model = dict(type='FastRCNN')\n",
                     "hook_msgs": {"last_ckpt": "work_dirs/x/epoch_20.pth", "best_score": np.float64(0.25),
                                   "best_shape": np.zeros((2,), dtype=np.float32)}},
            "state_dict": collections.OrderedDict(model.state_dict()), "optimizer": opt.state_dict()}


def test_save_load_roundtrip_weights_only(tmp_path):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.cls_head(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = LrScheduler(opt, policy="step", step=[2])
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    rng = get_rng_state()
    path = tmp_path / "sub" / "ckpt.pth"
    save_checkpoint(path, nn.DataParallel(model), opt, sched,
                    meta={"epoch": 2, "iter": 10, "config": "a = 1\n", "rng_states": [rng]})
    raw = torch.load(path, weights_only=True)  # no allow-list needed for our own files
    assert set(raw) == {"meta", "state_dict", "optimizer", "scheduler"}
    assert all(not k.startswith("module.") for k in raw["state_dict"])
    assert raw["meta"]["epoch"] == 2 and raw["scheduler"]["base_lrs"] == [0.1]
    assert not list(tmp_path.glob("sub/.*tmp*"))  # atomic write left no temp file
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.random(), np.random.rand(), torch.rand(3)
    set_rng_state(raw["meta"]["rng_states"][0])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    fresh = Net()
    ckpt = load_checkpoint(fresh, path, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    assert ckpt["_load_report"]["missing_keys"] == []
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ckpt["optimizer"])


def test_mmaction2_style_file_loads(tmp_path):
    model = Net()
    path = tmp_path / "mm.pth"
    torch.save(_mm_checkpoint(model), path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # numpy meta is not in torch's default allow-list
    fresh = Net()
    ckpt = load_checkpoint(fresh, path)
    assert ckpt["meta"]["hook_msgs"]["best_score"] == pytest.approx(0.25)
    assert ckpt["meta"]["hook_msgs"]["best_shape"].dtype == np.float32
    assert torch.equal(fresh.cls_head.weight, model.cls_head.weight)
    assert "momentum_buffer" in ckpt["optimizer"]["state"][next(iter(ckpt["optimizer"]["state"]))]


def test_legacy_non_zip_format_loads(tmp_path):
    model = Net()
    path = tmp_path / "legacy.pth"
    torch.save(_mm_checkpoint(model), path, _use_new_zipfile_serialization=False)
    fresh = Net()
    load_checkpoint(fresh, path, strict=True)
    assert torch.equal(fresh.backbone[0].weight, model.backbone[0].weight)


def test_foreign_meta_classes_become_inert_dicts(tmp_path, monkeypatch):
    # mmengine's HistoryBuffer / ConfigDict (1.x files) cannot be imported here
    mod = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:
        def __init__(self):
            self._log_history = np.array([1.0, 2.0])
            self.max_length = 1000000

    HistoryBuffer.__module__ = mod.__name__
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    mod.HistoryBuffer = HistoryBuffer
    for name in ("mmengine", "mmengine.logging"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    model = Net()
    ckpt = _mm_checkpoint(model)
    ckpt["message_hub"] = {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"epoch": 3}}
    path = tmp_path / "mm1x.pth"
    torch.save(ckpt, path)
    monkeypatch.delitem(sys.modules, mod.__name__)
    with pytest.warns(UserWarning, match="HistoryBuffer"):
        loaded = load_checkpoint(Net(), path)
    buf = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert buf["__unloaded_class__"] == "mmengine.logging.history_buffer.HistoryBuffer"
    assert buf["state"]["max_length"] == 1000000
    assert loaded["message_hub"]["runtime_info"]["epoch"] == 3

    # the same foreign class inside the weights is refused
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    torch.save({"state_dict": {"w": torch.zeros(1), "x": HistoryBuffer()}}, path)
    monkeypatch.delitem(sys.modules, mod.__name__)
    with pytest.raises(CheckpointError, match="HistoryBuffer"):
        safe_load(path)


class _Evil:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_checkpoint_executes_nothing(tmp_path, legacy):
    marker = tmp_path / "pwned"
    payloads = {
        "os.system": _Evil(__import__("os").system, (f"touch {marker}",)),
        "subprocess": _Evil(subprocess.check_call, (["touch", str(marker)],)),
        "exec": _Evil(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "eval": _Evil(builtins.eval, (f"open({str(marker)!r}, 'w')",)),
    }
    good = Net().state_dict()
    for name, evil in payloads.items():
        for layout in ("top", "meta", "weights"):
            if layout == "top":
                obj = evil
            elif layout == "meta":
                obj = {"meta": {"note": evil}, "state_dict": good}
            else:
                obj = {"meta": {}, "state_dict": {**good, "evil": evil}}
            path = tmp_path / f"{name}_{layout}.pth"
            torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
            if layout == "meta" and name in ("subprocess", "exec", "eval"):
                # payload dropped: kept as an inert record inside the metadata
                with pytest.warns(UserWarning):
                    ck = load_checkpoint(Net(), path)
                assert "__unloaded_class__" in ck["meta"]["note"]
            else:
                with pytest.raises(CheckpointError) as ei:
                    load_checkpoint(Net(), path)
                assert str(path) in str(ei.value)
            assert not marker.exists(), f"{name}/{layout} executed its payload"


def test_truncated_corrupt_missing_files(tmp_path):
    path = tmp_path / "good.pth"
    save_checkpoint(path, Net())
    data = path.read_bytes()
    for name, blob in {"trunc.pth": data[: len(data) // 2], "garbage.pth": b"not a checkpoint at all" * 10,
                       "empty.pth": b"", "head.pth": data[:100]}.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(CheckpointError) as ei:
            load_checkpoint(Net(), p)
        assert str(p) in str(ei.value)
    legacy = tmp_path / "legacy_trunc.pth"
    torch.save({"state_dict": Net().state_dict()}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="legacy_trunc.pth"):
        safe_load(legacy)
    with pytest.raises(CheckpointError, match="not found"):
        safe_load(tmp_path / "nope.pth")


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_missing_unexpected_mismatched_keys_by_name(tmp_path):
    src = Net(k=5)
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    sd["roi_head.extra.weight"] = torch.zeros(2)
    del sd["module.backbone.1.running_var"]
    path = tmp_path / "k.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    model = Net(k=3)
    before = model.cls_head.weight.clone()
    handler = _ListHandler()
    logger = logging.getLogger("actionkit.test_checkpoint")
    logger.addHandler(handler)
    ck = load_checkpoint(model, path, strict=False, logger=logger)
    rep = ck["_load_report"]
    assert rep["unexpected_keys"] == ["roi_head.extra.weight"]
    assert rep["missing_keys"] == ["backbone.1.running_var"]
    assert [m[0] for m in rep["mismatched_keys"]] == ["cls_head.weight", "cls_head.bias"]
    assert torch.equal(model.cls_head.weight, before)  # mismatched: skipped, stays initialised
    assert torch.equal(model.backbone[0].weight, src.backbone[0].weight)
    text = "\n".join(handler.lines)
    for key in ("roi_head.extra.weight", "backbone.1.running_var", "cls_head.weight"):
        assert key in text
    with pytest.raises(CheckpointError, match="cls_head.weight") as ei:
        load_checkpoint(Net(k=3), path, strict=True)
    assert "roi_head.extra.weight" in str(ei.value) and "backbone.1.running_var" in str(ei.value)
    # {'model': ...} (ours) and bare state dicts
    torch.save({"model": src.state_dict()}, path)
    m2 = Net(k=5)
    load_checkpoint(m2, path, strict=True)
    assert torch.equal(m2.cls_head.weight, src.cls_head.weight)
    torch.save(src.state_dict(), path)
    load_checkpoint(Net(k=5), path, strict=True)
