"""Float32 eager vs the inference fast path (``actionkit.engine.fast``), per clip, in one run.

For each model (default: I3D R50, SlowFast R50 4x16 and the SlowOnly R50 4x16 AVA detector, full width):
random weights made realistic (BatchNorm affine parameters drawn at random, seeded, and running statistics
taken from one random clip, so that every residual branch contributes), one clip of the model's test size
(recognizers: 1 view of clip_len x crop size; the detector: one keyframe clip at short side 256, 16:9, with
``--proposals`` boxes and ``action_thr=-1`` so that both paths return every score), ``--threads`` torch threads.

The fast path's first call (compilation) is timed apart. Then ``--rounds`` rounds each time eager and fast
back to back (alternating which goes first), and the table gives the medians, the speed-up ``N.NNx`` and the
largest difference between the two outputs over all rounds (recognizers: the class scores, i.e.
``average_clips='score'``; detector: the per-class scores of every box).

    python benchmarks/inference_speed.py                 # the three full-width models, CPU, 2 threads
    python benchmarks/inference_speed.py --rounds 3 --no-compile \
        configs/recognition/synthetic/i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb.py
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = (
    "configs/recognition/i3d/i3d_r50_32x2x1_100e_kinetics400_rgb.py",
    "configs/recognition/slowfast/slowfast_r50_4x16x1_256e_kinetics400_rgb.py",
    "configs/detection/ava/slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb.py",
)


def randomize_batchnorm(module: nn.Module, calibration_input: torch.Tensor, seed: int = 0) -> None:
    """Seeded random BN weight (U(0.5, 1.5)) and bias (N(0, 0.1)), then running statistics from one
    train-mode forward of ``calibration_input`` through ``module`` (momentum 1: that batch's statistics)."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = []
    with torch.no_grad():
        for bn in bns:
            if bn.weight is not None:
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
            momenta.append(bn.momentum)
            bn.momentum = 1.0
        was_training = module.training
        module.train()
        module(calibration_input)
        module.train(was_training)
    for bn, m in zip(bns, momenta):
        bn.momentum = m


def build(config: str, proposals: int, seed: int) -> tuple[nn.Module, Callable[[nn.Module], Any], str]:
    """The model (eval mode, random weights), a function that runs one clip through a model-like callable,
    and the input's description."""
    from actionkit.benchmark import _pipeline_step, recognizer_test_views
    from actionkit.config import load_config
    from actionkit.models.builder import clear_pretrained, build_model_from_config

    path = Path(config) if Path(config).exists() else REPO / config
    cfg = load_config(str(path))
    clear_pretrained(cfg.model)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    if cfg.model.get("type") == "FastRCNN":
        cfg.model.setdefault("test_cfg", {}).setdefault("rcnn", {})["action_thr"] = -1.0
        model = build_model_from_config(cfg, device="cpu")
        sampler = _pipeline_step(cfg.data.test.pipeline, "SampleAVAFrames")
        t, h = int(sampler["clip_len"]), 256
        w = int(round(h * 16 / 9))
        img = torch.randn(1, 3, t, h, w, generator=g)
        xy = torch.rand(proposals, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(proposals, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
        boxes = torch.cat([xy, xy + wh], 1)
        metas = [dict(img_shape=(h, w), img_key="bench,0902", scores=torch.ones(proposals))]
        randomize_batchnorm(model.backbone, torch.randn(1, 3, t, h, w, generator=g), seed)
        model.eval()

        def run(net: Callable) -> np.ndarray:
            with torch.no_grad():
                out = net(img=img, proposals=[boxes], img_metas=metas, return_loss=False)
            return np.concatenate([cls[:, 4] for cls in out[0]])

        return model, run, f"1x3x{t}x{h}x{w}, {proposals} RoIs"
    model = build_model_from_config(cfg, device="cpu")
    _, t, h, w = recognizer_test_views(cfg)
    imgs = torch.randn(1, 1, 3, t, h, w, generator=g)
    randomize_batchnorm(model.backbone, torch.randn(1, 3, t, h, w, generator=g), seed)
    model.eval()
    model.average_clips = "score"

    def run(net: Callable) -> np.ndarray:
        with torch.no_grad():
            out = net(imgs, return_loss=False)
        if out.dtype != torch.float32:
            raise TypeError(f"the model returned {out.dtype}, expected float32")
        return out.numpy()

    return model, run, f"1x1x3x{t}x{h}x{w}"


def _timed(run: Callable[[Any], np.ndarray], net: Any) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = run(net)
    return time.perf_counter() - t0, out


def measure(config: str, rounds: int, proposals: int, compile_: bool | None, seed: int = 0) -> dict[str, Any]:
    """One model: eager vs fast, ``rounds`` interleaved pairs after one warm-up call of each."""
    from actionkit.engine.fast import FastPathOptions, optimize_for_inference

    model, run, shape = build(config, proposals, seed)
    _, ref = _timed(run, model)  # eager warm-up
    fast, description = optimize_for_inference(model, "cpu", FastPathOptions(compile=compile_))
    first, _ = _timed(run, fast)
    eager_s, fast_s = [], []
    max_abs = 0.0
    scale = float(np.abs(ref).max()) or 1.0
    for r in range(rounds):
        order = ("eager", "fast") if r % 2 == 0 else ("fast", "eager")
        outs = {}
        for which in order:
            seconds, outs[which] = _timed(run, model if which == "eager" else fast)
            (eager_s if which == "eager" else fast_s).append(seconds)
        if outs["eager"].shape != outs["fast"].shape:
            raise RuntimeError(f"{config}: outputs differ in shape: {outs['eager'].shape} vs {outs['fast'].shape}")
        max_abs = max(max_abs, float(np.abs(outs["eager"] - outs["fast"]).max()))
    eager_med, fast_med = statistics.median(eager_s), statistics.median(fast_s)
    row = dict(model=Path(config).stem, input=shape, eager_s=eager_med, fast_s=fast_med,
               speedup=eager_med / fast_med, first_call_s=first, max_abs_diff=max_abs,
               max_rel_diff=max_abs / scale, description=description)
    del model, fast, run
    gc.collect()
    return row


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    head = ["model", "input", "eager fp32 s/clip", "fast s/clip", "speed-up", "fast first call s",
            "max abs diff", "max diff / max abs output"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['eager_s']:.3f} | {r['fast_s']:.3f} | "
                     f"{r['speedup']:.2f}x | {r['first_call_s']:.1f} | {r['max_abs_diff']:.2e} | "
                     f"{r['max_rel_diff']:.2e} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="*", default=list(DEFAULT_CONFIGS), help="model configs (default: the three)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved eager/fast pairs per model (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--proposals", type=int, default=8, help="boxes per keyframe for detectors (default 8)")
    p.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                   help="fast path without torch.compile (bf16 + channels_last + folded BN only)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    torch.set_num_threads(a.threads)
    rows = []
    for config in a.configs:
        row = measure(config, a.rounds, a.proposals, a.compile, a.seed)
        print(f"{row['model']}: {row['speedup']:.2f}x ({row['description']})", file=sys.stderr, flush=True)
        rows.append(row)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, rounds {a.rounds} (medians)")
    for desc in dict.fromkeys(r["description"] for r in rows):
        print(desc)
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
