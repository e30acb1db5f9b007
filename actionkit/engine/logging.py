"""Training logs: human text on stdout + ``{work_dir}/{timestamp}.log`` and JSON lines in
``{timestamp}.log.json`` (mmcv ``TextLoggerHook`` layout), optional TensorBoard, tqdm progress bars."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .distributed import get_dist_info

LOGGER_NAME = "actionkit"


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time (survives stdout being swapped/captured)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def get_logger(log_file: str | os.PathLike | None = None, level: int = logging.INFO,
               name: str = LOGGER_NAME) -> logging.Logger:
    """The ``actionkit`` logger: stdout on rank 0 (ERROR only elsewhere) and ``log_file`` on rank 0."""
    logger = logging.getLogger(name)
    rank, _ = get_dist_info()
    fmt = logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    if not any(getattr(h, "_actionkit_stream", False) for h in logger.handlers):
        sh = _StdoutHandler()
        sh._actionkit_stream = True  # type: ignore[attr-defined]
        sh.setFormatter(fmt)
        logger.addHandler(sh)
    for h in list(logger.handlers):
        if getattr(h, "_actionkit_file", False):
            logger.removeHandler(h)
            h.close()
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(str(log_file), mode="a", encoding="utf-8")
        fh._actionkit_file = True  # type: ignore[attr-defined]
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.setLevel(level if rank == 0 else logging.ERROR)
    logger.propagate = False
    return logger


def memory_mb() -> int:
    """Peak memory in MB: CUDA max allocated when on GPU, else the process max RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated() / 1024 / 1024)
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss / 1024) if sys.platform != "darwin" else int(rss / 1024 / 1024)
    except Exception:  # pragma: no cover - non-posix
        return 0


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.5g}") if abs(v) < 1e-3 else round(v, 5)
    return v


class TrainLogger:
    """Text + JSON-lines logs for the training loop (rank 0 writes, other ranks are silent)."""

    def __init__(self, work_dir: str | os.PathLike, timestamp: str, logger: logging.Logger | None = None,
                 tensorboard: bool = False):
        self.rank, _ = get_dist_info()
        self.work_dir = Path(work_dir)
        self.json_path = self.work_dir / f"{timestamp}.log.json"
        self.logger = logger or get_logger(self.work_dir / f"{timestamp}.log")
        self.tb = None
        if tensorboard and self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.tb = SummaryWriter(str(self.work_dir / "tf_logs"))
            except Exception:
                self.logger.info("tensorboard is not installed; TensorBoard logging disabled")

    def dump_json(self, record: Mapping[str, Any]) -> None:
        if self.rank != 0:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.json_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: (v if k == "lr" else _round(v)) for k, v in record.items()}, default=str) + "\n")

    def log_train(self, epoch: int, inner_iter: int, iters_per_epoch: int, global_iter: int, lr: float,
                  log_vars: Mapping[str, float], time_s: float, data_time_s: float, eta_s: float | None = None) -> None:
        mem = memory_mb()
        record = {"mode": "train", "epoch": epoch, "iter": inner_iter, "lr": lr, "memory": mem,
                  "data_time": data_time_s, **dict(log_vars), "time": time_s}
        self.dump_json(record)
        eta = ""
        if eta_s is not None:
            h, rem = divmod(int(eta_s), 3600)
            eta = f"eta: {h}:{rem // 60:02d}:{rem % 60:02d}, "
        items = ", ".join(f"{k}: {v:.4f}" for k, v in log_vars.items())
        self.logger.info(f"Epoch [{epoch}][{inner_iter}/{iters_per_epoch}]\tlr: {lr:.3e}, {eta}time: {time_s:.3f}, "
                         f"data_time: {data_time_s:.3f}, memory: {mem}, {items}")
        if self.tb is not None:
            self.tb.add_scalar("train/lr", lr, global_iter)
            for k, v in log_vars.items():
                self.tb.add_scalar(f"train/{k}", v, global_iter)

    def log_val(self, epoch: int, global_iter: int, lr: float, metrics: Mapping[str, Any]) -> None:
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.dump_json({"mode": "val", "epoch": epoch, "iter": global_iter, "lr": lr, **scalars})
        self.logger.info(f"Epoch(val) [{epoch}][{global_iter}]\t"
                         + ", ".join(f"{k}: {v:.4f}" for k, v in scalars.items()))
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"val/{k}", v, epoch)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def progress(iterable: Iterable, total: int | None = None, desc: str = "", enabled: bool | None = None) -> Iterable:
    """A tqdm bar on rank 0 when stderr is a TTY; the plain iterable otherwise."""
    if enabled is None:
        enabled = get_dist_info()[0] == 0 and sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True)
