"""Checkpoints, work directories and training faults (issue 12 items 3, 4, 6, 8, 15, 16, 17, 19).

Damaged / non-finite / foreign checkpoints, two runs in one work directory, NaN losses and metrics, resuming with
another batch size, temporary files left by a kill, and write errors that must name their path.  The tiny model,
dataset and config come from ``tests/test_engine.py``.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import actionkit.utils as ak_utils
from actionkit.checkpoint import CheckpointError, load_checkpoint, safe_load, save_checkpoint
from actionkit.cli.test import main as run_test_main
from actionkit.cli.train import main as train_main
from actionkit.engine.trainer import NonFiniteTrainingError
from actionkit.registry import DATASETS, MODELS, ConfigError
from actionkit.utils import (WorkDirLock, WorkDirLockedError, atomic_save_text, ensure_directory,
                             remove_stale_temp_files)
from test_engine import EngineTestDataset, EngineTestRecognizer, _register, read_json_log, write_config


# ------------------------------------------------------------------------------------ test-only model and data
@_register(MODELS, "RobustnessTestRecognizer")
class RobustnessTestRecognizer(EngineTestRecognizer):
    """The engine test model with injected faults: the loss of the training calls listed in ``nan_calls``
    (0-based) is NaN, and from training call ``poison_call`` on the buffer ``poison`` holds a NaN."""

    def __init__(self, nan_calls=(), poison_call: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.nan_calls, self.poison_call, self.calls = set(nan_calls), poison_call, 0
        self.register_buffer("poison", torch.zeros(2))

    def forward(self, imgs, label=None, return_loss=True):
        out = super().forward(imgs, label, return_loss)
        if return_loss:
            if self.calls in self.nan_calls:
                out["loss_cls"] = out["loss_cls"] * float("nan")
            if self.calls == self.poison_call:
                self.poison.fill_(float("nan"))
            self.calls += 1
        return out


@_register(DATASETS, "RobustnessNaNEvalDataset")
class RobustnessNaNEvalDataset(EngineTestDataset):
    """Evaluates to NaN (a metric computed over nothing, e.g. a class without samples)."""

    def evaluate(self, results, metrics=("top_k_accuracy",), logger=None) -> dict:
        return {"top1_acc": float("nan")}


def _options(*items: str) -> list[str]:
    return ["--cfg-options", *items] if items else []


def _train(cfg: Path, wd: Path, *options: str, extra: tuple[str, ...] = ()) -> int:
    return train_main([str(cfg), "--work-dir", str(wd), "--seed", "0", *extra, *_options(*options)])


FAULTY_MODEL = "model.type=RobustnessTestRecognizer"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def actionkit_log():
    handler = _Records()
    logger = logging.getLogger("actionkit")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)


# ------------------------------------------------------------------------------------ 3. damaged checkpoints
def _record_payload_offset(path: Path, record: str) -> tuple[int, int]:
    """(offset of the first data byte, size) of a stored record of a zip checkpoint."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(record)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_bit_flip_inside_a_tensor_is_refused_naming_file_and_record(tmp_path):
    model = Tiny()
    path = tmp_path / "flipped.pth"
    save_checkpoint(path, model)
    with zipfile.ZipFile(path) as zf:
        data_records = [i for i in zf.infolist() if "/data/" in i.filename and not i.filename.endswith(".pkl")]
    record = max(data_records, key=lambda i: i.file_size).filename  # the conv weight
    offset, size = _record_payload_offset(path, record)
    blob = bytearray(path.read_bytes())
    blob[offset + size // 2] ^= 0x10  # one bit inside the tensor's bytes
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="CRC") as ei:
        load_checkpoint(Tiny(), path)
    assert str(path) in str(ei.value) and record in str(ei.value)
    # the undamaged file still loads, with the same weights
    good = tmp_path / "good.pth"
    save_checkpoint(good, model)
    loaded = Tiny()
    load_checkpoint(loaded, good, strict=True)
    assert torch.equal(loaded.conv.weight, model.conv.weight)


def test_checkpoint_written_without_crcs_still_loads(tmp_path):
    """torch can write records without CRC-32 (``compute_crc32=False``): those cannot be checked, not refused."""
    ser_config = pytest.importorskip("torch.utils.serialization").config
    path = tmp_path / "nocrc.pth"
    before = ser_config.save.compute_crc32
    ser_config.save.compute_crc32 = False
    try:
        torch.save({"state_dict": Tiny().state_dict()}, path)
    finally:
        ser_config.save.compute_crc32 = before
    with zipfile.ZipFile(path) as zf:
        assert all(i.CRC == 0 for i in zf.infolist())
    load_checkpoint(Tiny(), path, strict=True)


# ------------------------------------------------------------------------------------ 19. no weights_only=False advice
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_errors_never_advise_weights_only_false(tmp_path):
    plain = tmp_path / "plain_pickle.pth"
    plain.write_bytes(pickle.dumps({"state_dict": {"w": [1.0, 2.0]}, "extra": {1, 2}}, protocol=4))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02garbage" * 10)
    legacy_text = tmp_path / "text.pth"
    legacy_text.write_text("not a checkpoint")
    for path in (plain, garbage, legacy_text):
        with pytest.raises(CheckpointError) as ei:
            safe_load(path)
        message = str(ei.value)
        assert str(path) in message
        for advice in ("weights_only", "trusted source", "arbitrary code"):
            assert advice not in message, message


# ------------------------------------------------------------------------------------ 17c. non-finite weights
def test_nonfinite_weights_are_refused_naming_file_and_keys(tmp_path):
    model = Tiny()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
        model.bn.running_var[1] = float("inf")
    path = tmp_path / "diverged.pth"
    save_checkpoint(path, model)
    with pytest.raises(CheckpointError, match="NaN or Inf") as ei:
        load_checkpoint(Tiny(), path)
    assert str(path) in str(ei.value) and "fc.weight" in str(ei.value) and "bn.running_var" in str(ei.value)
    target = Tiny()
    load_checkpoint(target, path, allow_nonfinite=True)  # explicit opt-in (inspection)
    assert torch.isnan(target.fc.weight[0, 0])


def test_test_command_refuses_a_nonfinite_checkpoint(tmp_path):
    cfg = write_config(tmp_path, epochs=1)
    wd = tmp_path / "run"
    _train(cfg, wd)
    ck = safe_load(wd / "epoch_1.pth")
    ck["state_dict"]["fc_cls.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save(ck, bad)
    with pytest.raises(CheckpointError, match="fc_cls.weight") as ei:
        run_test_main([str(cfg), str(bad), "--eval", "top_k_accuracy"])
    assert str(bad) in str(ei.value)


# ------------------------------------------------------------------------------------ 4. work-directory lock
def _write_lock(wd: Path, pid: int, host: str | None = None) -> Path:
    wd.mkdir(parents=True, exist_ok=True)
    path = wd / WorkDirLock.FILENAME
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "proc_start": None,
                                "started": "2026-01-01 00:00:00", "command": "train.py other_cfg.py"}))
    return path


def test_a_second_run_in_a_held_work_dir_is_refused(tmp_path):
    cfg = write_config(tmp_path, epochs=1)
    wd = tmp_path / "run"
    lock = _write_lock(wd, os.getppid())  # a live process on this host holds the directory
    with pytest.raises(WorkDirLockedError) as ei:
        _train(cfg, wd)
    message = str(ei.value)
    assert str(wd) in message and str(os.getppid()) in message and "train.py other_cfg.py" in message
    assert not list(wd.glob("*.pth")) and lock.is_file()  # nothing written, the holder's lock kept
    _write_lock(wd, 12345, host="another-host.example")  # liveness cannot be checked: refused as well
    with pytest.raises(WorkDirLockedError, match="another-host.example"):
        _train(cfg, wd)


def test_a_stale_lock_is_taken_over_and_the_lock_released_at_exit(tmp_path, actionkit_log):
    cfg = write_config(tmp_path, epochs=1)
    wd = tmp_path / "run"
    dead = _dead_pid()
    _write_lock(wd, dead)
    assert _train(cfg, wd) == 0
    assert (wd / "epoch_1.pth").is_file()
    assert any("stale lock" in line and str(dead) in line for line in actionkit_log)
    assert not (wd / WorkDirLock.FILENAME).exists()
    # released also when training fails
    with pytest.raises(NonFiniteTrainingError):
        _train(cfg, wd, FAULTY_MODEL, "model.nan_calls=[0,1,2]")
    assert not (wd / WorkDirLock.FILENAME).exists()


def test_a_lock_whose_pid_was_recycled_is_stale(tmp_path, actionkit_log):
    """A live pid with another start time than the recorded one is another process (Linux /proc)."""
    live = os.getppid()
    start = ak_utils.process_start_ticks(live)
    if start is None:
        pytest.skip("no /proc start times on this system")
    path = _write_lock(tmp_path, live)
    record = json.loads(path.read_text())
    with pytest.raises(WorkDirLockedError):  # the recorded start time matches: the holder is alive
        WorkDirLock(tmp_path).acquire()
    path.write_text(json.dumps({**record, "proc_start": start}))
    with pytest.raises(WorkDirLockedError):
        WorkDirLock(tmp_path).acquire()
    path.write_text(json.dumps({**record, "proc_start": start + 1}))
    with WorkDirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert any("stale lock" in line for line in actionkit_log)


def test_work_dir_lock_is_exclusive_between_two_processes(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from actionkit.utils import WorkDirLock\n"
        f"lock = WorkDirLock({str(wd)!r}); lock.acquire(); print('held', flush=True); sys.stdin.readline()\n"
        "lock.release()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkDirLockedError, match=str(holder.pid)):
            WorkDirLock(wd).acquire()
    finally:
        holder.communicate("\n", timeout=30)
    with WorkDirLock(wd) as lock:  # released by the holder: free again
        assert lock.held and json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


# ------------------------------------------------------------------------------------ 6. non-finite losses and metrics
def test_repeated_nan_losses_stop_training_with_a_clear_error(tmp_path):
    cfg = write_config(tmp_path, epochs=3)
    wd = tmp_path / "run"
    # 6 iterations per epoch: the loss is NaN from the 2nd iteration of epoch 2 on
    with pytest.raises(NonFiniteTrainingError, match="max_nonfinite_losses=3") as ei:
        _train(cfg, wd, FAULTY_MODEL, f"model.nan_calls={list(range(7, 30))}")
    assert "epoch 2, iteration 4" in str(ei.value) and str(wd / "epoch_1.pth") in str(ei.value)
    assert sorted(p.name for p in wd.glob("*.pth")) == ["epoch_1.pth", "latest.pth"]
    with pytest.raises(NonFiniteTrainingError, match="5 consecutive"):
        _train(cfg, tmp_path / "run5", FAULTY_MODEL, f"model.nan_calls={list(range(7, 30))}",
               "max_nonfinite_losses=5")
    with pytest.raises(ConfigError, match="max_nonfinite_losses") as ei:
        _train(cfg, tmp_path / "bad", "max_nonfinite_losses=0")
    assert str(cfg) in str(ei.value)


def test_isolated_nan_losses_skip_the_update_and_training_goes_on(tmp_path):
    cfg = write_config(tmp_path, epochs=2)
    wd = tmp_path / "run"
    assert _train(cfg, wd, FAULTY_MODEL, "model.nan_calls=[2,3,8]") == 0
    weights = safe_load(wd / "epoch_2.pth")["state_dict"]
    assert all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())


def test_nonfinite_weights_are_never_saved(tmp_path):
    cfg = write_config(tmp_path, epochs=2)
    wd = tmp_path / "run"
    with pytest.raises(NonFiniteTrainingError, match="poison") as ei:
        _train(cfg, wd, FAULTY_MODEL, "model.poison_call=8")
    assert "epoch_2.pth was not written" in str(ei.value) and str(wd / "epoch_1.pth") in str(ei.value)
    assert not (wd / "epoch_2.pth").exists()
    assert safe_load(wd / "latest.pth")["meta"]["epoch"] == 1


def test_a_nan_metric_is_never_the_best(tmp_path):
    cfg = write_config(tmp_path, epochs=2)
    wd = tmp_path / "run"
    assert _train(cfg, wd, "data.val.type=RobustnessNaNEvalDataset", extra=("--validate",)) == 0
    assert not list(wd.glob("best_*.pth"))
    assert (wd / "epoch_2.pth").is_file()


# ------------------------------------------------------------------------------------ 8. strict resume, batch size
def test_resume_from_another_models_checkpoint_lists_the_keys(tmp_path):
    cfg = write_config(tmp_path, epochs=2)
    src = tmp_path / "src"
    _train(cfg, src, "total_epochs=1")
    with pytest.raises(CheckpointError, match="cannot resume") as ei:
        _train(cfg, tmp_path / "wider", "model.hidden=32", extra=("--resume-from", str(src / "epoch_1.pth")))
    message = str(ei.value)
    assert str(src / "epoch_1.pth") in message and "fc1.weight" in message and "[16, 8]" in message
    ck = safe_load(src / "epoch_1.pth")
    ck["state_dict"]["roi_head.extra.weight"] = torch.zeros(2)
    del ck["state_dict"]["bn.running_var"]
    other = tmp_path / "other.pth"
    torch.save(ck, other)
    with pytest.raises(CheckpointError) as ei:
        _train(cfg, tmp_path / "other", extra=("--resume-from", str(other)))
    assert "roi_head.extra.weight" in str(ei.value) and "bn.running_var" in str(ei.value)
    assert str(other) in str(ei.value)
    # matching weights but the optimizer state of other parameter groups
    ck = safe_load(src / "epoch_1.pth")
    ck["optimizer"]["param_groups"][0]["params"] = ck["optimizer"]["param_groups"][0]["params"][:2]
    foreign_opt = tmp_path / "foreign_optimizer.pth"
    torch.save(ck, foreign_opt)
    with pytest.raises(CheckpointError, match="optimizer state does not fit") as ei:
        _train(cfg, tmp_path / "opt", extra=("--resume-from", str(foreign_opt)))
    assert str(foreign_opt) in str(ei.value)


def test_resume_with_another_batch_size_keeps_epoch_accounting(tmp_path):
    """At an epoch end: the next epoch runs whole, with the lr and iteration count of a run with the new
    batch size.  In the middle of an epoch: refused with a clear error."""
    cfg = write_config(tmp_path, epochs=2, step=5)
    per_iter_lr = ("lr_config.by_epoch=False", "log_config.interval=1")
    src = tmp_path / "bs4"
    _train(cfg, src, "total_epochs=1", *per_iter_lr)  # 24 samples / 4 = 6 iterations
    resumed = tmp_path / "bs8_resumed"
    _train(cfg, resumed, "data.videos_per_gpu=8", *per_iter_lr,
           extra=("--resume-from", str(src / "epoch_1.pth")))
    reference = tmp_path / "bs8"
    _train(cfg, reference, "data.videos_per_gpu=8", *per_iter_lr)

    def epoch2(wd: Path) -> list[tuple[int, float]]:
        return [(r["iter"], r["lr"]) for r in read_json_log(wd) if r.get("mode") == "train" and r["epoch"] == 2]

    assert epoch2(resumed) == epoch2(reference) and len(epoch2(resumed)) == 3
    assert safe_load(resumed / "epoch_2.pth")["meta"]["iter"] == 6
    # a checkpoint from the middle of epoch 2 (what by_iter_interval writes): no equivalent position
    ck = safe_load(src / "epoch_1.pth")
    assert ck["meta"]["iters_per_epoch"] == 6
    ck["meta"].update(epoch=1, iter=10, inner_iter=4)
    partial = tmp_path / "partial.pth"
    torch.save(ck, partial)
    with pytest.raises(CheckpointError, match="middle of epoch 2") as ei:
        _train(cfg, tmp_path / "bs8_mid", "data.videos_per_gpu=8", extra=("--resume-from", str(partial)))
    assert str(partial) in str(ei.value) and "epoch_1.pth" in str(ei.value)
    # the same batch size resumes from it as before
    assert _train(cfg, tmp_path / "bs4_mid", extra=("--resume-from", str(partial))) == 0


# ------------------------------------------------------------------------------------ 15. stale temporary files
def test_stale_temp_files_of_a_killed_write_are_removed_on_start(tmp_path, actionkit_log):
    cfg = write_config(tmp_path, epochs=1)
    wd = tmp_path / "run"
    wd.mkdir()
    dead = _dead_pid()
    stale = wd / f".epoch_3.pth.tmp-{dead}"
    stale.write_bytes(b"half a checkpoint")
    live = wd / f".results.pkl.tmp-{os.getppid()}"  # another live process is writing it
    live.write_bytes(b"in progress")
    other = wd / "notes.tmp-1"
    other.write_text("not ours")
    assert _train(cfg, wd) == 0
    assert not stale.exists() and live.exists() and other.exists()
    assert any(str(stale) in line for line in actionkit_log)
    assert remove_stale_temp_files(wd) == []


# ------------------------------------------------------------------------------------ 16. write errors name the path
class _FullDisk(io.FileIO):
    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_during_a_checkpoint_write_names_the_path(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, epochs=1)
    wd = tmp_path / "run"
    real_open = open

    def open_on_a_full_disk(file, mode="r", *args, **kwargs):
        if "w" in mode and "epoch_1.pth" in str(file):
            return _FullDisk(file, "w")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(ak_utils, "open", open_on_a_full_disk, raising=False)
    with pytest.raises(OSError) as ei:
        _train(cfg, wd)
    assert ei.value.errno == errno.ENOSPC and str(wd / "epoch_1.pth") in str(ei.value)
    assert not list(wd.glob(".*tmp-*")) and not (wd / "epoch_1.pth").exists()
    assert not (wd / WorkDirLock.FILENAME).exists()


def test_unwritable_outputs_and_a_work_dir_that_is_a_file_name_the_path(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError) as ei:
        atomic_save_text(a_file / "metrics.json", "{}")  # e.g. --json results.txt/metrics.json
    assert str(a_file) in str(ei.value)
    with pytest.raises(NotADirectoryError, match="is a file") as ei:
        ensure_directory(a_file, "work dir")
    assert str(a_file) in str(ei.value)
    from actionkit.engine.train import train_model
    from actionkit.config import load_config

    cfg = load_config(str(write_config(tmp_path, epochs=1)))
    cfg.work_dir = str(a_file)
    with pytest.raises(NotADirectoryError, match="work dir is a file") as ei:
        train_model(EngineTestRecognizer(), [EngineTestDataset()], cfg)
    assert str(a_file) in str(ei.value)
    with pytest.raises(OSError) as ei:  # the command line (the message names the path)
        _train(write_config(tmp_path, epochs=1), a_file)
    assert str(a_file) in str(ei.value)
