"""The MMAction2 0.x ``tools/train.py`` and ``tools/test.py`` command lines."""
from __future__ import annotations

import argparse
import os
import pprint
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..version import __version__
from ..config import Config, load_config, to_plain
from ..utils import atomic_save_text
from ..checkpoint import load_checkpoint
from .distributed import barrier, get_dist_info, init_dist, launched_by_torchrun, sync_random_seed
from .logging import get_logger
from ..models.builder import build_model, clear_pretrained


# --------------------------------------------------------------------------------------------- shared
def config_to_python(cfg: Mapping) -> str:
    """The resolved config as a Python file (``key = value`` per top-level entry) that loads back."""
    lines = [f"# resolved by actionkit {__version__}"]
    for k, v in to_plain(dict(cfg)).items():
        lines.append(f"{k} = {pprint.pformat(v, sort_dicts=False, width=110)}")
    return "\n".join(lines) + "\n"


def _use_distributed(launcher: str) -> bool:
    return launcher == "pytorch" or launched_by_torchrun()


def _set_local_rank(local_rank: int | None) -> None:
    if "LOCAL_RANK" not in os.environ and local_rank is not None:
        os.environ["LOCAL_RANK"] = str(local_rank)



# --------------------------------------------------------------------------------------------- train
def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train a recognizer / detector")
    p.add_argument("config", help="train config file path")
    p.add_argument("--work-dir", help="the dir to save logs and models")
    p.add_argument("--resume-from", help="the checkpoint file to resume from")
    p.add_argument("--validate", action="store_true", help="whether to evaluate the checkpoint during training")
    p.add_argument("--test-last", action="store_true", help="test the final checkpoint after training")
    p.add_argument("--test-best", action="store_true", help="test the best checkpoint (evaluation.save_best)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpus", type=int, help="(ignored: one process per device; use torchrun)")
    g.add_argument("--gpu-ids", type=int, nargs="+", help="(ignored: one process per device; use torchrun)")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms / cudnn")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override config entries, e.g. data.videos_per_gpu=4")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=0)
    p.add_argument("--auto-scale-lr", action="store_true", help="scale lr by total batch / base batch")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last_3d weights (config: channels_last=True); on CPU use it with --amp")
    return p


def train_main(argv: Sequence[str] | None = None) -> int:
    args = train_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    _set_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    # work_dir priority: CLI > config > ./work_dirs/<config stem>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif not cfg.get("work_dir"):
        cfg.work_dir = str(Path("./work_dirs") / Path(args.config).stem)
    if args.resume_from is not None:
        cfg.resume_from = args.resume_from
    if args.channels_last:
        cfg.channels_last = True
    distributed = _use_distributed(args.launcher)
    if distributed:
        init_dist(backend=(cfg.get("dist_params") or {}).get("backend") if torch.cuda.is_available() else "gloo")
    rank, world = get_dist_info()

    work_dir = Path(cfg.work_dir)
    if rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    timestamp = _broadcast_str(timestamp)
    logger = get_logger(work_dir / f"{timestamp}.log")
    if args.gpus is not None or args.gpu_ids is not None:
        logger.info("--gpus/--gpu-ids are ignored: launch one process per device with torchrun "
                    "(--launcher pytorch); this run uses %d process(es)", world)
    if args.auto_scale_lr:
        from .optim import auto_scale_lr

        auto_scale_lr(cfg, world, logger)
    if (args.amp or cfg.get("fp16")) and not torch.cuda.is_available():
        from .fast import native_bf16

        native, why = native_bf16(torch.device("cpu"))
        if not native:
            logger.warning("--amp on this CPU (%s): bfloat16 is emulated there and slower than float32", why)
    if cfg.get("cudnn_benchmark", False):
        torch.backends.cudnn.benchmark = True

    seed = sync_random_seed(args.seed if args.seed is not None else cfg.get("seed"))
    from .train import set_random_seed, train_model

    set_random_seed(seed, deterministic=args.deterministic)
    cfg.seed = seed
    if rank == 0:
        atomic_save_text(work_dir / Path(args.config).name, config_to_python(cfg))
    logger.info("Distributed training: %s (world size %d)", distributed, world)
    logger.info("Config:\n%s", cfg.pretty_text())
    logger.info("Set random seed to %d, deterministic: %s", seed, args.deterministic)
    meta = {"seed": seed, "config_name": Path(args.config).name, "work_dir": str(work_dir),
            "actionkit_version": __version__, "env_info": f"torch {torch.__version__}"}

    model = build_model(cfg, init_weights=True)
    if "data" not in cfg or "train" not in cfg.data:
        raise cfg.error("is required but missing", "data.train")
    from .train import build_dataset

    datasets = [build_dataset(cfg, "train")]
    train_model(model, datasets, cfg, distributed=distributed, validate=args.validate, timestamp=timestamp,
                meta=meta, amp=True if args.amp else None, deterministic=args.deterministic,
                test={"test_last": args.test_last, "test_best": args.test_best}, logger=logger)
    _finish_distributed(distributed)
    return 0


def _finish_distributed(distributed: bool) -> None:
    """All ranks meet, then leave the process group (no rank exits while another still talks to it)."""
    if distributed:
        import torch.distributed as dist

        barrier()
        if dist.is_initialized():
            dist.destroy_process_group()


def _broadcast_str(s: str) -> str:
    from .distributed import broadcast_object

    return broadcast_object(s)


# --------------------------------------------------------------------------------------------- test
def test_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="test.py", description="Test (and eval) a model")
    p.add_argument("config", help="test config file path")
    p.add_argument("checkpoint", help="checkpoint file")
    p.add_argument("--out", default=None, help="output result file (format chosen by the dataset)")
    p.add_argument("--fuse-conv-bn", action="store_true", help="fuse conv and bn (slightly faster)")
    p.add_argument("--eval", type=str, nargs="+", help="evaluation metrics, e.g. top_k_accuracy mean_class_accuracy mAP")
    p.add_argument("--gpu-collect", action="store_true", help="(accepted; results are gathered with all_gather_object)")
    p.add_argument("--tmpdir", help="(accepted; results are gathered with all_gather_object)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE", help="override config entries")
    p.add_argument("--average-clips", choices=["score", "prob", None], default=None,
                   help="average type when averaging test clips")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=0)
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--amp", action="store_true", help="mixed precision inference (autocast)")
    speed.add_argument("--fast", action="store_true",
                       help="inference fast path: folded BN, bf16 where native, channels_last_3d, torch.compile "
                            "(also config: inference = dict(fast=True); see actionkit/engine/fast.py)")
    return p


def _set_average_clips(cfg: Config, value: str) -> None:
    model_cfg = cfg.model
    if model_cfg.get("test_cfg") is None and cfg.get("test_cfg") is None:
        model_cfg["test_cfg"] = {"average_clips": value}
    elif model_cfg.get("test_cfg") is not None:
        model_cfg["test_cfg"]["average_clips"] = value
    else:
        cfg.test_cfg["average_clips"] = value


def test_main(argv: Sequence[str] | None = None) -> int:
    parser = test_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.out and not args.eval:
        parser.error('Please specify at least one operation (save or eval the results) with the argument '
                     '"--out" or "--eval"')
    _set_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    if args.average_clips is not None:
        _set_average_clips(cfg, args.average_clips)
    distributed = _use_distributed(args.launcher)
    if distributed:
        init_dist(backend=(cfg.get("dist_params") or {}).get("backend") if torch.cuda.is_available() else "gloo")
    rank, _ = get_dist_info()
    logger = get_logger(None)
    from .test import multi_gpu_test, single_gpu_test
    from .loaders import build_test_loader
    from .train import build_dataset, evaluate_dataset

    if "data" not in cfg or "test" not in cfg.data:
        raise cfg.error("is required but missing", "data.test")
    cfg.data.test["test_mode"] = True
    dataset = build_dataset(cfg, "test")
    loader = build_test_loader(dataset, cfg, "test", distributed, seed=int(cfg.get("seed") or 0))

    clear_pretrained(cfg.model)
    model = build_model(cfg, init_weights=False)
    load_checkpoint(model, args.checkpoint, map_location="cpu", strict=True, logger=logger)
    if args.average_clips is not None and hasattr(model, "average_clips"):
        model.average_clips = args.average_clips
    if args.fuse_conv_bn:
        from .fuse import fuse_conv_bn

        model = fuse_conv_bn(model)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
                          if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    from .fast import FastPathOptions, optimize_for_inference, options_from_config

    fast_options = FastPathOptions() if args.fast else options_from_config(cfg, cfg.filename)
    if fast_options is not None:
        model, description = optimize_for_inference(model, device, fast_options)
        logger.info(description)
    if distributed:
        outputs = multi_gpu_test(model, loader, args.tmpdir, args.gpu_collect, amp=args.amp)
    else:
        outputs = single_gpu_test(model, loader, amp=args.amp)
    # Feature-bank inference (LFBInferHead): every rank writes its shard, the writer merges them atomically.
    inner = model.module if hasattr(model, "module") else model
    for module in inner.modules():
        if callable(getattr(module, "write_bank", None)):
            bank_path = module.write_bank()
            if rank == 0:
                logger.info("feature bank written to %s", bank_path)
    if rank == 0:
        if args.out:
            logger.info("writing results to %s", args.out)
            dataset.dump_results(outputs, args.out)
        if args.eval:
            eval_cfg = dict(cfg.get("eval_config") or {})
            eval_cfg["metrics"] = args.eval
            eval_res = evaluate_dataset(dataset, outputs, eval_cfg, logger)
            for name, val in eval_res.items():
                line = f"{name}: {val:.04f}" if isinstance(val, float) else f"{name}: {val}"
                print(line, flush=True)
    _finish_distributed(distributed)
    return 0


# ``test_main`` is a tools entry point, not a pytest test: keep pytest from collecting it where imported.
test_main.__test__ = False  # type: ignore[attr-defined]
