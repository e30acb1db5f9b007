"""Shared test helpers: the golden-fixture loader and thread settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One thread by default: on 2-core machines with data-loader workers, more threads oversubscribe the cores
# (measured 20-50x slower training steps); set ACTIONKIT_TEST_THREADS to use more.
torch.set_num_threads(int(os.environ.get("ACTIONKIT_TEST_THREADS", "1")))

# ACTIONKIT_TEST_DEVICE=cuda (benchmarks/gpu_check.sh): golden fixtures load onto that device and new tensors and
# modules are created there, so the golden-equivalence tests run on it (TF32 off: the float32 tolerances hold).
TEST_DEVICE = torch.device(os.environ.get("ACTIONKIT_TEST_DEVICE", "cpu"))
if TEST_DEVICE.type != "cpu":
    torch.set_default_device(TEST_DEVICE)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

# No decode-order video indexes kept on disk between tests (or in ~/.cache): tests that re-index a file after
# clear_index_cache() must index it again. tests/test_video_index_store.py turns the store on in a tmp folder.
os.environ["ACTIONKIT_VIDEO_INDEX_DIR"] = "off"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ACTIONKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
GOLDEN = SHARED_DATA / "golden"
GOLDEN_KEYS = SHARED_DATA / "golden_keys"
AVA_SAMPLES = SHARED_DATA / "ava_format_samples"


def load_golden(name: str) -> dict:
    """Load ``shared/data/golden/<name>.pt`` (weights_only); skip when the shared data is absent."""
    path = GOLDEN / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"golden fixture {path} not available (shared data is not beside this checkout)")
    return torch.load(path, weights_only=True, map_location=TEST_DEVICE)


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (shared data is not beside this checkout)")
    return path


@pytest.fixture
def golden():
    return load_golden


@pytest.fixture(autouse=True)
def _isolate_actionkit_logger():
    """The engine's get_logger() stops propagation of the 'actionkit' logger (no duplicate CLI lines);
    restore it after each test so later tests' caplog still sees module log records."""
    import logging

    logger = logging.getLogger("actionkit")
    state = (logger.propagate, list(logger.handlers), logger.level)
    yield
    logger.propagate, logger.level = state[0], state[2]
    for h in list(logger.handlers):
        if h not in state[1]:
            logger.removeHandler(h)


def load_benchmark_script(name: str):
    """``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_rows(text: str, header_starts: tuple[str, ...]) -> list[list[str]]:
    """The cells of the markdown table rows a script printed, without the header rows (``| <header_starts>``)."""
    headers = tuple(f"| {h}" for h in header_starts)
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith(headers)]


def synthetic_ava_options(root: Path, info: dict, splits: dict[str, str], extra: dict | None = None) -> list[str]:
    """``--cfg-options`` pointing an AVA config's ``data.<key>`` (``splits``: config key -> generator split) at
    data written by ``actionkit.synthetic.ava.make_ava(root, ...)`` (``info`` is what it returned)."""
    opts: dict = dict(extra or {})
    for key, split in splits.items():
        s = info["splits"][split]
        opts.update({f"data.{key}.ann_file": str(root / s["ann_file"]),
                     f"data.{key}.exclude_file": str(root / s["exclude_file"]),
                     f"data.{key}.proposal_file": str(root / s["proposal_file_npz"]),
                     f"data.{key}.label_file": str(root / info["label_file"]),
                     f"data.{key}.data_prefix": str(root / info["rawframes_dir"])})
        for k in ("fps", "timestamp_start", "timestamp_end"):
            opts[f"data.{key}.{k}"] = info["dataset_args"][k]
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in opts.items()]


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine two OpenMP threads are many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

