"""``actionkit.engine.run.train`` / ``test`` called with plain arguments, and the command lines that parse for them
(``actionkit train|test``, ``tools/train.py``, ``tools/test.py``) keeping MMAction2's options, help and exit codes.

Uses the tiny test-only model and dataset of ``test_engine.py``.
"""
from __future__ import annotations

import ast
import copy
import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actionkit.cli import main as cli_main
from actionkit.cli import test as cli_test
from actionkit.cli import train as cli_train
from actionkit.config import load_config, to_plain
from actionkit.engine import run
from test_engine import assert_same_weights, weights, write_config  # also registers the test-only classes

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "actionkit"
IGNORED = "(ignored: one process per device; use torchrun)"
ACCEPTED = "(accepted; results are gathered with all_gather_object)"

# The options of MMAction2's tools/train.py and tools/test.py as this project has always offered them:
# (option strings, dest, default, type, choices, nargs, help, metavar, action class).
TRAIN_OPTIONS = [
    ((), "config", None, None, None, None, "train config file path", None, "_StoreAction"),
    (("--work-dir",), "work_dir", None, None, None, None, "the dir to save logs and models", None, "_StoreAction"),
    (("--resume-from",), "resume_from", None, None, None, None, "the checkpoint file to resume from", None,
     "_StoreAction"),
    (("--validate",), "validate", False, None, None, 0, "whether to evaluate the checkpoint during training", None,
     "_StoreTrueAction"),
    (("--test-last",), "test_last", False, None, None, 0, "test the final checkpoint after training", None,
     "_StoreTrueAction"),
    (("--test-best",), "test_best", False, None, None, 0, "test the best checkpoint (evaluation.save_best)", None,
     "_StoreTrueAction"),
    (("--gpus",), "gpus", None, int, None, None, IGNORED, None, "_StoreAction"),
    (("--gpu-ids",), "gpu_ids", None, int, None, "+", IGNORED, None, "_StoreAction"),
    (("--seed",), "seed", None, int, None, None, "random seed", None, "_StoreAction"),
    (("--deterministic",), "deterministic", False, None, None, 0, "deterministic algorithms / cudnn", None,
     "_StoreTrueAction"),
    (("--cfg-options",), "cfg_options", None, None, None, "+", "override config entries, e.g. data.videos_per_gpu=4",
     "KEY=VALUE", "_StoreAction"),
    (("--launcher",), "launcher", "none", None, ["none", "pytorch"], None, "job launcher", None, "_StoreAction"),
    (("--local_rank", "--local-rank"), "local_rank", 0, int, None, None, None, None, "_StoreAction"),
    (("--auto-scale-lr",), "auto_scale_lr", False, None, None, 0, "scale lr by total batch / base batch", None,
     "_StoreTrueAction"),
    (("--amp",), "amp", False, None, None, 0, "mixed precision (bf16 on CPU, fp16 on CUDA)", None,
     "_StoreTrueAction"),
    (("--channels-last",), "channels_last", False, None, None, 0,
     "channels_last_3d weights (config: channels_last=True); on CPU use it with --amp", None, "_StoreTrueAction"),
]
TEST_OPTIONS = [
    ((), "config", None, None, None, None, "test config file path", None, "_StoreAction"),
    ((), "checkpoint", None, None, None, None, "checkpoint file", None, "_StoreAction"),
    (("--out",), "out", None, None, None, None, "output result file (format chosen by the dataset)", None,
     "_StoreAction"),
    (("--fuse-conv-bn",), "fuse_conv_bn", False, None, None, 0, "fuse conv and bn (slightly faster)", None,
     "_StoreTrueAction"),
    (("--eval",), "eval", None, str, None, "+", "evaluation metrics, e.g. top_k_accuracy mean_class_accuracy mAP",
     None, "_StoreAction"),
    (("--gpu-collect",), "gpu_collect", False, None, None, 0, ACCEPTED, None, "_StoreTrueAction"),
    (("--tmpdir",), "tmpdir", None, None, None, None, ACCEPTED, None, "_StoreAction"),
    (("--cfg-options",), "cfg_options", None, None, None, "+", "override config entries", "KEY=VALUE",
     "_StoreAction"),
    (("--average-clips",), "average_clips", None, None, ["score", "prob", None], None,
     "average type when averaging test clips", None, "_StoreAction"),
    (("--launcher",), "launcher", "none", None, ["none", "pytorch"], None, "job launcher", None, "_StoreAction"),
    (("--local_rank", "--local-rank"), "local_rank", 0, int, None, None, None, None, "_StoreAction"),
    (("--amp",), "amp", False, None, None, 0, "mixed precision inference (autocast)", None, "_StoreTrueAction"),
    (("--fast",), "fast", False, None, None, 0,
     "inference fast path: folded BN, bf16 where native, channels_last_3d, torch.compile (also config: inference "
     "= dict(fast=True); see actionkit/engine/fast.py)", None, "_StoreTrueAction"),
]
EXCLUSIVE = {"train": [["--gpus", "--gpu-ids"]], "test": [["--amp", "--fast"]]}


def _options(parser) -> list[tuple]:
    return [(tuple(a.option_strings), a.dest, a.default, a.type, a.choices, a.nargs, a.help, a.metavar,
             type(a).__name__) for a in parser._actions if a.dest != "help"]


def _option_names(expected: list[tuple]) -> set[str]:
    return {"-h", "--help"} | {s for opts, *_ in expected for s in opts}


def _listed_options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z_-]*)", help_text))



# ------------------------------------------------------------------------------------------------ parsers
@pytest.mark.parametrize("name, module, expected", [("train", cli_train, TRAIN_OPTIONS),
                                                    ("test", cli_test, TEST_OPTIONS)])
def test_parsers_keep_every_option(name, module, expected):
    p = module.parser()
    assert p.prog == f"{name}.py"
    assert _options(p) == expected
    assert [[a.option_strings[0] for a in g._group_actions] for g in p._mutually_exclusive_groups] == EXCLUSIVE[name]


@pytest.mark.parametrize("name, expected", [("train", TRAIN_OPTIONS), ("test", TEST_OPTIONS)])
def test_help_of_console_command_and_tools_script_lists_the_same_options(name, expected, monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main([name, "--help"])
    assert info.value.code == 0
    console = capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [str(REPO / "tools" / f"{name}.py"), "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "tools" / f"{name}.py"), run_name="__main__")
    assert info.value.code == 0
    script = capsys.readouterr().out
    assert console == script
    assert console.startswith(f"usage: {name}.py ")
    assert _listed_options(console) == _option_names(expected)


def test_test_command_needs_out_or_eval(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["test", str(tmp_path / "cfg.py"), str(tmp_path / "x.pth")])
    assert info.value.code == 2
    assert 'Please specify at least one operation (save or eval the results) with the argument "--out" or ' \
           '"--eval"' in capsys.readouterr().err


def test_demo_command_passes_plain_arguments(monkeypatch):
    import actionkit.demo as demo
    from actionkit.cli import demo as cli_demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    assert cli_demo.main(["--out", "o", "--epochs", "3", "--threads", "1", "--cfg-options", "a=1"]) == 0
    assert calls == [1, (("o",), dict(seed=0, epochs=3, num_train=demo.DEMO_DATA["num_train"],
                                      cfg_options=["a=1"], precision="fp32"))]
    calls.clear()
    assert cli_demo.main(["--threads", "1", "--precision", "bf16"]) == 0
    assert calls[1][1]["precision"] == "bf16"


def test_demo_precision_choices():
    import actionkit.demo as demo

    assert demo.training_precision() == (False, "float32")
    assert demo.training_precision("bf16") == (True, "bf16 autocast + channels-last")
    with pytest.raises(ValueError, match="precision must be one of"):
        demo.training_precision("auto")


def _actionkit_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = list(path.relative_to(REPO).with_suffix("").parts)[:-node.level]
                base = ".".join(package + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_command_line_code_lives_in_cli():
    """argparse only in ``actionkit/cli``; below it, nothing imports the CLI (``python -m actionkit`` aside)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[1] == "cli" or rel == Path("actionkit/__main__.py"):
            continue
        names = _actionkit_imports(path)
        if "argparse" in names or any(n == "actionkit.cli" or n.startswith("actionkit.cli.") for n in names):
            offenders.append(str(rel))
    assert not offenders


# ------------------------------------------------------------------------------------------------ train()
def test_train_with_plain_arguments(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write_config(tmp_path, epochs=2))
    before = to_plain(copy.deepcopy(dict(cfg)))
    summary = run.train(cfg, validate=True, seed=0, gpus=2)
    assert to_plain(dict(cfg)) == before                       # the caller's config is not modified
    wd = Path("work_dirs/tiny_cfg")                            # no work_dir anywhere: ./work_dirs/<config stem>
    assert summary["epoch"] == 2
    assert (wd / "epoch_2.pth").is_file()
    dumped = load_config(wd / "tiny_cfg.py")
    assert dumped.seed == 0 and dumped.work_dir == str(wd)
    assert "--gpus/--gpu-ids are ignored" in next(wd.glob("*[0-9].log")).read_text()
    assert summary["eval_results"]                             # validate=True evaluated


def test_train_work_dir_priority_and_config_name(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, epochs=1)
    cfg = load_config(path, ["work_dir=from_config"])
    run.train(cfg, seed=0, config_name="renamed.py")
    assert (tmp_path / "from_config" / "renamed.py").is_file()
    assert (tmp_path / "from_config" / "epoch_1.pth").is_file()
    run.train(cfg, seed=0, work_dir=tmp_path / "from_argument")
    assert (tmp_path / "from_argument" / "tiny_cfg.py").is_file()
    assert not Path("work_dirs").exists()
    with pytest.raises(ValueError, match="launcher must be one of 'none', 'pytorch'"):
        run.train(cfg, launcher="slurm")


def test_train_function_and_command_line_give_the_same_weights(tmp_path, one_thread):
    path = write_config(tmp_path, epochs=2)
    assert cli_train.main([str(path), "--work-dir", str(tmp_path / "cli"), "--seed", "3", "--deterministic",
                           "--cfg-options", "optimizer.lr=0.05"]) == 0
    run.train(load_config(path, ["optimizer.lr=0.05"]), work_dir=tmp_path / "lib", seed=3, deterministic=True)
    assert_same_weights(weights(tmp_path / "cli" / "epoch_2.pth"), weights(tmp_path / "lib" / "epoch_2.pth"))
    # resuming through the function continues exactly where the command line's run stopped
    run.train(load_config(path, ["optimizer.lr=0.05", "total_epochs=3"]), work_dir=tmp_path / "cli", seed=3,
              deterministic=True, resume_from=tmp_path / "cli" / "epoch_2.pth")
    assert (tmp_path / "cli" / "epoch_3.pth").is_file()


# ------------------------------------------------------------------------------------------------ test()
@pytest.fixture
def trained(tmp_path, one_thread):
    path = write_config(tmp_path, epochs=1)
    run.train(load_config(path), work_dir=tmp_path / "wd", seed=0)
    return load_config(path), tmp_path / "wd" / "epoch_1.pth"


def test_test_with_plain_arguments(trained, tmp_path, capsys):
    cfg, ckpt = trained
    before = to_plain(copy.deepcopy(dict(cfg)))
    capsys.readouterr()
    result = run.test(cfg, ckpt, metrics=["top_k_accuracy"], out=tmp_path / "res.json")
    assert "top1_acc" not in capsys.readouterr().out           # the library prints no metrics; the CLI does
    assert to_plain(dict(cfg)) == before and "test_mode" not in cfg.data.test
    assert len(result.outputs) == 11 and set(result.metrics) == {"top1_acc"} and result.banks == []
    np.testing.assert_allclose(json.loads((tmp_path / "res.json").read_text()), np.stack(result.outputs), rtol=1e-6)
    np.testing.assert_allclose(np.sum(result.outputs, 1), 1.0, rtol=1e-5)      # the config's 'prob'
    scores = run.test(cfg, ckpt, average_clips="score")                        # no --out / --eval needed here
    assert scores.metrics == {} and not np.allclose(np.sum(scores.outputs, 1), 1.0)
    plain = run.test(to_plain(dict(cfg)), ckpt)                                # a plain dict config works too
    np.testing.assert_allclose(np.stack(plain.outputs), np.stack(result.outputs), rtol=1e-6)
    # the command line prints what the function returns
    assert cli_test.main([cfg.filename, str(ckpt), "--eval", "top_k_accuracy"]) == 0
    assert capsys.readouterr().out.splitlines()[-1:] == run.metric_lines(result.metrics)
    assert run.metric_lines({"top1_acc": 0.5, "n": 3}) == ["top1_acc: 0.5000", "n: 3"]


def test_test_rejects_bad_arguments(trained):
    cfg, ckpt = trained
    with pytest.raises(ValueError, match="average_clips must be one of 'score', 'prob', got 'None'"):
        run.test(cfg, ckpt, average_clips="None")
    with pytest.raises(ValueError, match="amp and fast are exclusive"):
        run.test(cfg, ckpt, amp=True, fast=True)
    with pytest.raises(ValueError, match="launcher must be one of"):
        run.test(cfg, ckpt, launcher="mpi")
    bad = copy.deepcopy(cfg)
    del bad.data["test"]
    with pytest.raises(Exception, match="data.test"):
        run.test(bad, ckpt, metrics=["top_k_accuracy"])
