"""The path from ``dataset[i]`` to the model input is explicit (issue 14): datasets built from the shipped configs
give the same uint8 clip with or without a DataLoader (2 workers), and the engine-side ``BatchNormalize`` gives
exactly the float32 batches of the pipeline with its ``Normalize`` (recognition train / test, AVA train / val)."""
from __future__ import annotations

import contextvars
import logging

import pytest
import torch

from actionkit.config import load_config
from actionkit.data import collate as collate_module
from actionkit.data import pipeline as pipeline_module
from actionkit.data import preprocess as preprocess_module
from actionkit.data.preprocess import BATCH_NORMALIZE_KEY, BatchNormalize
from actionkit.data.transforms import Normalize
from actionkit.engine.distributed import SeededDataset
from actionkit.engine.loaders import build_test_loader, build_train_loader, loader_data
from actionkit.engine.test import prepare_batch
from actionkit.registry import DATASETS
from actionkit.synthetic.ava import make_ava
from actionkit.synthetic.kinetics import make_kinetics

from conftest import REPO, synthetic_ava_options

RECOGNITION_CFG = REPO / "configs/recognition/synthetic/i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb.py"
DETECTION_CFG = REPO / "configs/detection/synthetic/slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def kinetics_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_path_kinetics")
    make_kinetics(root, seed=2, num_videos=6, num_val_videos=3, num_frames=32, size=(40, 48), write_videos=False)
    opts = [f"data.{split}.ann_file={root / f'kinetics_{name}_list_rawframes.txt'}"
            for split, name in (("train", "train"), ("val", "val"), ("test", "val"))]
    opts += [f"data.{split}.data_prefix={root / 'rawframes'}" for split in ("train", "val", "test")]
    # random augmentation, so that seeding per sample is part of what is compared
    opts += ["data.train.pipeline.2.scale=(36,36)", "data.train.pipeline.3.flip_ratio=0.5",
             "data.videos_per_gpu=2", "data.workers_per_gpu=0"]
    return load_config(RECOGNITION_CFG, opts)


@pytest.fixture(scope="module")
def ava_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("data_path_ava")
    info = make_ava(root, seed=4, num_train=1, num_val=1, num_keyframes=5, margin_s=1, actors=(2, 3),
                    write_videos=False)
    return load_config(DETECTION_CFG, synthetic_ava_options(root, info, {"train": "train", "val": "val"}, {"data.workers_per_gpu": 0, "data.videos_per_gpu": 2, "data.val_dataloader.videos_per_gpu": 2}))


def build(cfg, split):
    return DATASETS.build(cfg.data[split], key=f"data.{split}", filename=cfg.filename)


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype == torch.float32 and a.shape == b.shape and torch.equal(a.view(torch.int32),
                                                                                       b.view(torch.int32))


def clips(batch, key):
    value = batch[key]
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------------------------------ no hidden state
def test_no_context_variables_or_rewritten_pipelines():
    """What a dataset returns depends on its pipeline only: no ContextVar in the data modules, and Compose runs
    the configured transforms as they are (the split is a new Compose of the same objects)."""
    for module in (pipeline_module, collate_module, preprocess_module):
        assert not [n for n, v in vars(module).items() if isinstance(v, contextvars.ContextVar)], module.__name__
    compose = pipeline_module.Compose([dict(type="Normalize", mean=[1, 2, 3], std=[1, 1, 1]),
                                       dict(type="FormatShape", input_format="NCTHW"),
                                       dict(type="Collect", keys=["imgs"], meta_keys=[])])
    steps, step = preprocess_module.split_normalize(compose.transforms)
    assert steps == [compose.transforms[1], compose.transforms[2]] and len(compose.transforms) == 3
    assert step == BatchNormalize((1.0, 2.0, 3.0), (1.0, 1.0, 1.0), False, "imgs")


def test_split_only_before_formatshape_and_key_moving_ops():
    norm = dict(type="Normalize", mean=[1, 2, 3], std=[1, 1, 1])
    fmt = dict(type="FormatShape", input_format="NCTHW")
    cases = {
        "no Collect (img_norm_cfg would be missing)": [norm, fmt],
        "collects img_norm_cfg": [norm, fmt, dict(type="Collect", keys=["imgs"], meta_keys=["img_norm_cfg"])],
        "NCHW": [norm, dict(type="FormatShape", input_format="NCHW"), dict(type="Collect", keys=["imgs"],
                                                                          meta_keys=[])],
        "a step between": [norm, dict(type="Flip", flip_ratio=0.0), fmt, dict(type="Collect", keys=["imgs"],
                                                                              meta_keys=[])],
        "clip not collected": [norm, fmt, dict(type="Collect", keys=["label"], meta_keys=[])],
    }
    for name, steps in cases.items():
        built = pipeline_module.Compose(steps).transforms
        assert preprocess_module.split_normalize(built) == (built, None), name
    renamed = pipeline_module.Compose([norm, fmt, dict(type="Rename", mapping=dict(imgs="img")),
                                       dict(type="ToTensor", keys=["img"]),
                                       dict(type="Collect", keys=["img"], meta_keys=[], nested=True)]).transforms
    steps, step = preprocess_module.split_normalize(renamed)
    assert step.key == "img" and not any(isinstance(t, Normalize) for t in steps) and len(steps) == 4


# ------------------------------------------------------------------------------------------------ recognition
@pytest.mark.parametrize("split", ["train", "test"])
def test_same_uint8_clip_directly_and_through_a_two_worker_loader(kinetics_cfg, split):
    dataset = build(kinetics_cfg, split)
    data = loader_data(dataset, seed=11, defer_normalize=True)
    assert isinstance(data.batch_normalize, BatchNormalize) and data.batch_normalize.key == "imgs"
    assert not any(isinstance(t, Normalize) for t in data.dataset.dataset.pipeline.transforms)
    assert any(isinstance(t, Normalize) for t in dataset.pipeline.transforms)  # the dataset itself is unchanged
    keys = [(3, i) for i in range(len(dataset))]  # (epoch, index): what the engine's batch sampler yields
    direct = [data.dataset[k] for k in keys]
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=1, sampler=keys, num_workers=2,
                                         collate_fn=data.collate_fn)
    with_normalize = SeededDataset(dataset, seed=11)  # the configured pipeline, Normalize included
    for key, item, batch in zip(keys, direct, loader, strict=True):
        assert item["imgs"].dtype == torch.uint8 and BATCH_NORMALIZE_KEY not in item
        assert batch[BATCH_NORMALIZE_KEY] == data.batch_normalize
        assert torch.equal(batch["imgs"][0], item["imgs"]) and int(batch["label"][0]) == int(item["label"])
        assert bitwise_equal(data.batch_normalize(item)["imgs"], with_normalize[key]["imgs"])


@pytest.mark.parametrize("split", ["train", "test"])
def test_recognition_batches_normalised_by_the_engine_equal_the_pipeline(kinetics_cfg, split):
    dataset = build(kinetics_cfg, split)
    if split == "train":
        loaders = [build_train_loader(dataset, kinetics_cfg, seed=7, defer_normalize=d)[0] for d in (True, False)]
    else:
        loaders = [build_test_loader(dataset, kinetics_cfg, "test", distributed=False, defer_normalize=d)
                   for d in (True, False)]
    n = 0
    for deferred, normal in zip(*loaders, strict=True):
        assert deferred["imgs"].dtype == torch.uint8 and normal["imgs"].dtype == torch.float32
        assert BATCH_NORMALIZE_KEY not in normal
        a, b = prepare_batch(deferred, CPU), prepare_batch(normal, CPU)
        assert BATCH_NORMALIZE_KEY not in a and set(a) == set(b)
        assert bitwise_equal(a["imgs"], b["imgs"])
        n += 1
    assert n == len(loaders[0])


def test_dataset_item_equals_engine_step_of_the_uint8_item(kinetics_cfg):
    """Outside the engine ``dataset[i]`` is float32: the step applied to the loader dataset's item equals it."""
    dataset = build(kinetics_cfg, "test")
    data = loader_data(dataset, seed=0, defer_normalize=True)
    for i in range(len(dataset)):
        uint8_item = data.dataset.dataset[i]
        assert bitwise_equal(data.batch_normalize(uint8_item)["imgs"], dataset[i]["imgs"])


def test_the_moved_step_is_logged_once(kinetics_cfg, caplog, monkeypatch):
    from actionkit.engine import loaders

    monkeypatch.setattr(loaders, "_LOGGED_STEPS", set())  # as in a fresh process
    dataset = build(kinetics_cfg, "val")
    with caplog.at_level(logging.INFO, logger="actionkit"):
        for _ in range(2):
            build_test_loader(dataset, kinetics_cfg, "val", distributed=False)
    lines = [r.getMessage() for r in caplog.records if "runs after the device copy" in r.getMessage()]
    assert len(lines) == 1 and "Normalize(mean=[123.675" in lines[0] and "'imgs'" in lines[0]
    off = {"data": {"workers_per_gpu": 0, "val_dataloader": {"defer_normalize": False}}}
    assert BATCH_NORMALIZE_KEY not in next(iter(build_test_loader(dataset, off, "val", distributed=False)))


# ------------------------------------------------------------------------------------------------ AVA
@pytest.mark.parametrize("split", ["train", "val"])
def test_ava_batches_normalised_by_the_engine_equal_the_pipeline(ava_cfg, split):
    dataset = build(ava_cfg, split)
    if split == "train":
        loaders = [build_train_loader(dataset, ava_cfg, seed=3, defer_normalize=d)[0] for d in (True, False)]
    else:
        loaders = [build_test_loader(dataset, ava_cfg, "val", distributed=False, defer_normalize=d)
                   for d in (True, False)]
    assert loaders[0].collate_fn.step.key == "img"
    n = 0
    for deferred, normal in zip(*loaders, strict=True):
        assert all(c.dtype == torch.uint8 for c in clips(deferred, "img"))
        a, b = prepare_batch(deferred, CPU), prepare_batch(normal, CPU)
        assert set(a) == set(b)
        for x, y in zip(clips(a, "img"), clips(b, "img"), strict=True):
            assert bitwise_equal(x, y)
        for x, y in zip(a["proposals"], b["proposals"], strict=True):
            assert torch.equal(torch.as_tensor(x[0] if isinstance(x, list) else x),
                               torch.as_tensor(y[0] if isinstance(y, list) else y))
        n += 1
    assert n == len(loaders[0]) > 0


def test_ava_same_uint8_clip_directly_and_through_a_two_worker_loader(ava_cfg):
    dataset = build(ava_cfg, "train")
    data = loader_data(dataset, seed=5, defer_normalize=True)
    keys = [(1, i) for i in range(len(dataset))]
    direct = [data.dataset[k] for k in keys]
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=1, sampler=keys, num_workers=2,
                                         collate_fn=data.collate_fn)
    for item, batch in zip(direct, loader, strict=True):
        assert item["img"].dtype == torch.uint8
        assert torch.equal(batch["img"][0], item["img"]) and torch.equal(batch["gt_bboxes"][0], item["gt_bboxes"])


def test_defer_normalize_must_be_a_bool_at_both_levels():
    from actionkit.registry import ConfigError

    for key in ("data.defer_normalize", "data.test_dataloader.defer_normalize"):
        with pytest.raises(ConfigError) as info:
            load_config(RECOGNITION_CFG, [f"{key}='yes'"])
        assert key in str(info.value) and "i3d_r18_tiny" in str(info.value)
    assert load_config(RECOGNITION_CFG, ["data.test_dataloader.defer_normalize=False"]) \
        .data.test_dataloader.defer_normalize is False
