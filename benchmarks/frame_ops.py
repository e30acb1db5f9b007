"""Per-frame cost of the pixel operations of the i3d_r50_32x2x1 train pipeline, next to decoding the frame.

For one 340x256 JPEG frame of the synthetic benchmark data (written by ``benchmarks/data_pipeline.py``, or made
here): ``cv2.imdecode``; the ``Resize(224, 224)`` after ``MultiScaleCrop`` (crop 256 -> 224 and 204 -> 224) with
``cv2.resize`` bilinear, and the alternatives that were tried (``INTER_LINEAR_EXACT``; the three planes resized
one by one; torch's uint8 bilinear ``interpolate``; a 4-channel resize after ``cvtColor`` to BGRA, with the split;
with whether each gives the same pixels); ``cv2.split`` into
planes of a contiguous frame and of a crop view; a horizontal ``cv2.flip``.  One OpenCV thread.  Prints a table.

    python benchmarks/frame_ops.py [--data-dir DIR] [--repeat 300]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t) / repeat)
    return 1000 * best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "actionkit_bench_data"))
    p.add_argument("--repeat", type=int, default=300)
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    jpeg = Path(args.data_dir) / "rawframes" / "v000" / "img_00010.jpg"
    if jpeg.exists():
        data = np.fromfile(jpeg, np.uint8)
    else:  # a textured 340x256 frame, JPEG quality 90 like the synthetic writer
        from actionkit.synthetic.kinetics import render_clip

        frame = render_clip(np.random.default_rng(0), 0, 4, (340, 256), 1)[0]
        data = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    rows = [("cv2.imdecode 340x256", best_ms(lambda: cv2.imdecode(data, cv2.IMREAD_COLOR), args.repeat), "-")]
    for side in (256, 204):
        crop = bgr[:side, 68:68 + side]
        ref = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR)
        exact = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR_EXACT)
        planes = [np.ascontiguousarray(crop[..., c]) for c in range(3)]
        per_plane = np.stack([cv2.resize(pl, (224, 224), interpolation=cv2.INTER_LINEAR) for pl in planes], -1)
        t = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]
        tv = torch.nn.functional.interpolate(t, size=(224, 224), mode="bilinear", align_corners=False)
        tv = tv[0].permute(1, 2, 0).numpy()
        out3 = [np.empty((224, 224), np.uint8) for _ in range(4)]

        def resize_split(crop=crop, out3=out3):
            cv2.split(cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR), out3[:3])

        def bgra_resize_split(crop=crop, out3=out3):
            four = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2BGRA), (224, 224), interpolation=cv2.INTER_LINEAR)
            cv2.split(four, out3)

        bgra_resize_split()
        bgra_same = all(np.array_equal(out3[c], ref[..., c]) for c in range(3))
        rows += [
            (f"cv2.resize bilinear {side} -> 224 + cv2.split (the pipeline's)", best_ms(resize_split, args.repeat),
             "yes"),
            (f"cvtColor to BGRA + cv2.resize {side} -> 224 (4 channels) + cv2.split",
             best_ms(bgra_resize_split, args.repeat), "yes" if bgra_same else "no"),
            (f"cv2.resize bilinear {side} -> 224 (the pipeline's)",
             best_ms(lambda: cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR), args.repeat), "yes"),
            (f"cv2.resize INTER_LINEAR_EXACT {side} -> 224",
             best_ms(lambda: cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR_EXACT), args.repeat),
             "yes" if np.array_equal(exact, ref) else f"no (max diff {np.abs(exact.astype(int) - ref).max()})"),
            (f"cv2.resize per plane {side} -> 224",
             best_ms(lambda: [cv2.resize(pl, (224, 224), interpolation=cv2.INTER_LINEAR) for pl in planes],
                     args.repeat), "yes" if np.array_equal(per_plane, ref) else "no"),
            (f"torch interpolate uint8 bilinear {side} -> 224",
             best_ms(lambda: torch.nn.functional.interpolate(t, size=(224, 224), mode="bilinear",
                                                             align_corners=False), args.repeat),
             "yes" if np.array_equal(tv, ref) else f"no (max diff {np.abs(tv.astype(int) - ref).max()})"),
        ]
    out = np.empty((3, 256, 256), np.uint8)
    view = bgr[:, 42:298]
    contiguous = np.ascontiguousarray(view)
    rows += [
        ("cv2.split 256x256 contiguous", best_ms(lambda: cv2.split(contiguous, [out[0], out[1], out[2]]),
                                                 args.repeat), "-"),
    ]
    # the strided split's speed was seen to vary 20x between processes and frames: measure it on several
    view_ms = []
    for seed in range(6):
        frame = np.random.default_rng(seed).integers(0, 256, bgr.shape, dtype=np.uint8) if seed else bgr
        v = frame[:, 42:298]
        view_ms.append(best_ms(lambda: cv2.split(v, [out[0], out[1], out[2]]), args.repeat))
    rows += [
        ("cv2.split 256x256 crop view (6 frames: min / max)", min(view_ms), f"max {max(view_ms):.3f}"),
        ("copy crop view + cv2.split", best_ms(lambda: cv2.split(np.ascontiguousarray(view),
                                                                 [out[0], out[1], out[2]]), args.repeat), "-"),
        ("cv2.flip 224x224 horizontal", best_ms(lambda: cv2.flip(contiguous[:224, :224], 1), args.repeat), "-"),
    ]
    print(f"\nper-frame operations, OpenCV {cv2.__version__}, torch {torch.__version__}, one thread, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| operation | ms per frame | same pixels as the pipeline's / note |")
    print("|---|---|---|")
    for name, ms, same in rows:
        print(f"| {name} | {ms:.3f} | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
