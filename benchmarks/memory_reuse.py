"""Paired on / off figures of the two memory reuses of the data path (BENCHMARKS.md, "Data pipeline").

* the collate's pool of reused shared-memory batch buffers (``actionkit.data.collate``): a ``DataLoader`` with one
  worker whose items are fresh copies of one uint8 clip, collated by ``collate_recognition``; "off" raises the
  pool's size threshold above every batch, so each batch gets fresh shared memory (torch's ``default_collate``);
  CPU time of the worker and the main process per batch;
* the reused output memory of the CPU ``BatchNormalize`` (``actionkit.data.preprocess.ReusedOutputs``); "off" raises
  its threshold, so each output is a fresh ``torch.empty``.

Rounds interleave on and off.  Prints a table.

    python benchmarks/memory_reuse.py [--rounds 3] [--batches 8]
"""
from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import torch

from actionkit.data import collate, preprocess
from actionkit.data.collate import collate_recognition
from actionkit.data.preprocess import BatchNormalize

CLIPS = {"test item (30 views, 189 MB uint8)": (30, 3, 32, 256, 256),
         "train clip (4.8 MB uint8)": (1, 3, 32, 224, 224)}


class Clips(torch.utils.data.Dataset):
    def __init__(self, shape: tuple[int, ...]):
        self.clip = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, i: int) -> dict:
        return {"imgs": torch.from_numpy(self.clip.copy()), "label": i % 3}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def collate_cpu_ms(shape: tuple[int, ...], batches: int, pool: bool) -> float:
    """CPU ms (worker + main process) per batch after 6 warm-up batches."""
    collate._SlotPool.MIN_BYTES = 1 << 20 if pool else 1 << 62
    loader = torch.utils.data.DataLoader(Clips(shape), batch_size=1, num_workers=1,
                                         collate_fn=collate_recognition, sampler=range(batches + 12))
    it = iter(loader)
    pid = it._workers[0].pid  # torch's worker process (a private attribute)
    for n, batch in enumerate(it, start=1):
        int(batch["imgs"].view(-1)[::4096].sum())  # the main process reads the batch
        del batch
        if n == 6:
            start = time.process_time() + _cpu_seconds(pid)
        elif n == 6 + batches:
            spent = time.process_time() + _cpu_seconds(pid) - start
            break
    del it
    return 1000 * spent / batches


def normalize_cpu_ms(shape: tuple[int, ...], repeat: int, reuse: bool) -> float:
    preprocess._CPU_OUTPUTS.min_bytes = 16 << 20 if reuse else 1 << 62
    step = BatchNormalize((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    clip = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1,) + shape, dtype=np.uint8))
    step.normalize(clip)
    start = time.process_time()
    for _ in range(repeat):
        out = step.normalize(clip)
        del out
    return 1000 * (time.process_time() - start) / repeat


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load = os.getloadavg()[0]
    figures: dict[tuple[str, str, bool], list[float]] = {}
    for _ in range(a.rounds):
        for name, shape in CLIPS.items():
            batches = a.batches if shape[0] > 1 else 5 * a.batches
            for on in (False, True):
                figures.setdefault(("collate pool", name, on), []).append(collate_cpu_ms(shape, batches, on))
                figures.setdefault(("CPU BatchNormalize output reuse", name, on), []).append(
                    normalize_cpu_ms(shape, 3, on))
    print(f"{os.cpu_count()} cores, load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
          f"CPU ms per batch, median of {a.rounds} interleaved rounds (min-max)\n")
    print("| reuse | batch | off | on |\n|---|---|---|---|")
    for what in ("collate pool", "CPU BatchNormalize output reuse"):
        for name in CLIPS:
            cells = []
            for on in (False, True):
                v = np.array(figures[(what, name, on)])
                cells.append(f"{np.median(v):.1f} ({v.min():.1f}-{v.max():.1f})")
            print(f"| {what} | {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
