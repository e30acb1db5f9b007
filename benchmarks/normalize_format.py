"""Normalize + FormatShape('NCTHW') in the pipeline vs the split the engine's loaders make (bit-identical output):
FormatShape of the uint8 clip (in the worker), then ``BatchNormalize`` of it (``actionkit.data.preprocess``,
which the engine runs after moving the batch to the device; here on the CPU).

    python benchmarks/normalize_format.py [--frames 32] [--size 224] [--views 1] [--repeat 10]
"""
from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import torch

from actionkit.data.pipeline import Compose
from actionkit.data.preprocess import split_normalize

NORM = dict(type="Normalize", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--views", type=int, default=1, help="clips x crops of one item (30 for the 30-view test)")
    p.add_argument("--repeat", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    pipe = Compose([NORM, dict(type="FormatShape", input_format="NCTHW"),
                    dict(type="Collect", keys=["imgs"], meta_keys=[])])
    imgs = np.random.default_rng(0).integers(0, 256, (a.views * a.frames, a.size, a.size, 3), dtype=np.uint8)

    def item():
        return dict(imgs=imgs, num_clips=a.views, clip_len=a.frames, modality="RGB")

    steps, step = split_normalize(pipe.transforms)
    uint8_pipe = Compose(steps)

    def in_pipeline():
        return pipe(item())["imgs"]

    def uint8_pipeline():
        return uint8_pipe(item())

    out = uint8_pipeline()

    def batch_normalize():
        return step.normalize(out["imgs"])

    assert np.array_equal(in_pipeline(), batch_normalize().numpy())
    rows = []
    for name, fn in (("Normalize, then FormatShape (in the pipeline)", in_pipeline),
                     ("split: FormatShape of the uint8 clip (in the worker)", uint8_pipeline),
                     ("split: BatchNormalize of the uint8 clip (main process, CPU)", batch_normalize)):
        fn()
        t0 = time.perf_counter()
        for _ in range(a.repeat):
            fn()
        rows.append((name, 1000 * (time.perf_counter() - t0) / a.repeat))
    print(f"clip {a.views}x{a.frames}x{a.size}x{a.size}x3 uint8 -> float32, 1 thread, load average "
          f"{os.getloadavg()[0]:.1f}; outputs bit-identical")
    print("| step | ms / item |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
