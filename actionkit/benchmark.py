"""``actionkit benchmark CONFIG``: model speed measured the way MMAction2's benchmark.py measures it.

Recognizers: random weights (no checkpoint), batch 1 video made of the full test views
(e.g. 10 clips x 3 crops = 30 views of 3x32x256x256 for I3D/SlowFast K400), model time only
(forward of all views + clip averaging, data loading excluded), the first ``--warmup`` iterations
discarded, videos/s = timed iterations / summed time.  ``--train-step`` instead times
forward + backward + SGD step on training clips (clips/s).  ``--fast`` times the inference fast path
(:mod:`actionkit.engine.fast`); its first call (the compilation) is reported as ``first_call_s``.
Detectors: one test clip with ``--proposals`` boxes per keyframe (keyframes/s).  Peak memory: CUDA max
allocated, or the process's peak RSS on CPU.
"""
from __future__ import annotations

import contextlib
import platform
import sys
import time
from typing import Any, Sequence

import torch
from tqdm import tqdm

from .config import load_config


def _pipeline_step(pipeline: list, name: str) -> dict | None:
    for step in pipeline:
        if step.get("type") == name:
            return step
    return None


def recognizer_test_views(cfg) -> tuple[int, int, int, int]:
    """(views, clip_len, height, width) of one test video from the config's test pipeline."""
    pipe = cfg.data.test.pipeline
    sampler = _pipeline_step(pipe, "SampleFrames") or _pipeline_step(pipe, "DenseSampleFrames")
    if sampler is None:
        raise cfg.error("no SampleFrames / DenseSampleFrames step", "data.test.pipeline")
    clip_len = int(sampler.get("clip_len", 1))
    num_clips = int(sampler.get("num_clips", 1))
    if sampler["type"] == "DenseSampleFrames" and sampler.get("test_mode"):
        num_clips = int(sampler.get("num_sample_positions", 10)) * num_clips
    crops, size = 1, 224
    for step in pipe:
        if step.get("type") == "ThreeCrop":
            crops, size = 3, int(step.get("crop_size", 256))
        elif step.get("type") == "TenCrop":
            crops, size = 10, int(step.get("crop_size", 224))
        elif step.get("type") == "CenterCrop":
            size = int(step.get("crop_size", 224))
    return num_clips * crops, clip_len, size, size


def _peak_rss_mb() -> float:
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_benchmark(config: str, device: str = "cpu", amp: bool = False, channels_last: bool = False,
                  train_step: bool = False, views: int | None = None, clip_len: int | None = None,
                  size: int | None = None, batch_size: int | None = None, iters: int = 20, warmup: int = 5,
                  proposals: int = 8, cfg_options: Sequence[str] | None = None, threads: int | None = None,
                  fast: bool = False) -> dict[str, Any]:
    from .models.builder import build_model_from_config

    if fast and (train_step or amp or channels_last):
        raise ValueError("--fast is an inference path of its own: not with --train-step, --amp or --channels-last")
    if fast and warmup < 1:
        raise ValueError("--fast needs --warmup >= 1 (the first call compiles)")

    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(config, cfg_options)
    dev = torch.device(device)
    # random weights: speed does not depend on them, and nothing is downloaded
    from .models.builder import clear_pretrained

    clear_pretrained(cfg.model)
    model = build_model_from_config(cfg, device="cpu")
    model.to(dev)
    is_detector = cfg.model.get("type") == "FastRCNN"
    mem_fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    autocast = (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp else contextlib.nullcontext
    runner = model
    fast_description = ""
    if fast:
        from .engine.fast import optimize_for_inference

        runner, fast_description = optimize_for_inference(model, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    if is_detector:
        pipe = cfg.data.test.pipeline
        sampler = _pipeline_step(pipe, "SampleAVAFrames")
        t = clip_len or int(sampler["clip_len"])
        h = size or 256
        w = int(round(h * 16 / 9))
        img = torch.randn(1, 3, t, h, w, device=dev).contiguous(memory_format=mem_fmt)
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(proposals, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(proposals, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
        boxes = torch.cat([xy, xy + wh], 1).to(dev)
        metas = [dict(img_shape=(h, w), img_key="bench,0902", scores=torch.ones(proposals))]
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                return runner(img=img, proposals=[boxes], img_metas=metas, return_loss=False)

        unit, shape = "keyframes/s", f"1x3x{t}x{h}x{w}, {proposals} RoIs"
    elif train_step:
        v, t, hh, ww = recognizer_test_views(cfg)
        t = clip_len or t
        s = size or 224
        b = batch_size or int(cfg.data.get("videos_per_gpu", 8))
        imgs = torch.randn(b, 1, 3, t, s, s, device=dev)
        labels = torch.randint(0, cfg.model.cls_head.num_classes, (b,), device=dev)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                losses = model(imgs.contiguous(), labels, return_loss=True)
                loss = sum(v for k, v in losses.items() if "loss" in k)
            loss.backward()
            opt.step()

        unit, shape = "clips/s", f"{b}x3x{t}x{s}x{s}"
    else:
        v, t, hh, ww = recognizer_test_views(cfg)
        v, t = views or v, clip_len or t
        hh = ww = size or hh
        imgs = torch.randn(1, v, 3, t, hh, ww, device=dev)
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                out = runner(imgs, return_loss=False)
            return out.float().cpu()

        unit, shape = "videos/s", f"1x{v}x3x{t}x{hh}x{ww}"

    times = []
    first_call_s = None
    total = warmup + iters
    it = tqdm(range(total), desc="benchmark", disable=not sys.stderr.isatty())
    for i in it:
        _sync(dev)
        t0 = time.perf_counter()
        step()
        _sync(dev)
        if i == 0:
            first_call_s = time.perf_counter() - t0
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    items = (batch_size or int(cfg.data.get("videos_per_gpu", 8))) if train_step else 1
    per_sec = len(times) * items / sum(times)
    peak = (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else _peak_rss_mb()
    return dict(config=config, mode="train-step" if train_step else "test", device=str(dev),
                device_name=(torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"),
                threads=torch.get_num_threads(), amp=amp, channels_last=channels_last, fast=fast,
                fast_description=fast_description, first_call_s=first_call_s, input=shape,
                throughput=per_sec, unit=unit, mean_ms=1000 * sum(times) / len(times),
                peak_memory_mb=peak, peak_memory_kind="cuda max allocated" if dev.type == "cuda" else "peak RSS",
                iters=len(times), warmup=warmup)


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ["config", "mode", "device", "amp", "ch-last", "fast", "input", "throughput", "ms/iter", "peak MB",
            "first call s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = r["config"].rsplit("/", 1)[-1].removesuffix(".py")
        lines.append(f"| {name} | {r['mode']} | {r['device']} | {r['amp']} | {r['channels_last']} | "
                     f"{r.get('fast', False)} | {r['input']} | "
                     f"{r['throughput']:.3f} {r['unit']} | {r['mean_ms']:.1f} | {r['peak_memory_mb']:.0f} | "
                     f"{r.get('first_call_s') or 0:.1f} |")
    return "\n".join(lines)
