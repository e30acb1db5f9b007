"""Action recognition on users' videos: ``init_recognizer`` / ``inference_recognizer`` (MMAction2 0.x names).

``inference_recognizer(model, video)`` runs the config's ``data.test.pipeline`` through the engine's own test
path (:func:`~actionkit.engine.loaders.build_test_loader`: per-sample seeding, the pipeline's ``Normalize`` applied
after the device copy by :func:`~actionkit.engine.test.prepare_batch`, the recognition collate, ``split_result``),
so a video gives
exactly the scores that ``tools/test.py`` gives for it.  ``video`` may be

* a video file: a video config (``*Init`` / ``*Decode``) runs unchanged; a frame-folder config reads the video
  frames through its reader (video frame ``k`` is what the frame file ``k + start_index`` would hold);
* a frame folder: frames are the files matching ``data.test.filename_tmpl`` (default ``img_{:05}.jpg``),
  numbered from ``data.test.start_index`` (default 1); a frame-folder config runs unchanged, a video config
  reads the folder through a frame reader;
* a ``T x H x W x 3`` uint8 RGB array: the decode op reads the array (frame ``k`` = ``array[k]``);
* a pipeline results dict (e.g. ``{'filename': 'a.mp4'}``): the test pipeline runs on it unchanged, with the
  keys the test dataset would add (``label``, ``start_index``, ``modality``, ``filename_tmpl``) as defaults.

Readers seek and decode only the sampled frames (``actionkit.data.decode``): memory does not grow with the
length of a video.  :class:`RecognitionInputs` is the dataset behind both the API and ``actionkit recognize``.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config, apply_cfg_options, load_config
from ..data.decode import DecodeError, FrameFolderReader, _unique_positions, check_frame_range, open_video
from ..data.pipeline import Compose
from ..data.preprocess import BatchNormalize, split_normalize

__all__ = ["init_recognizer", "inference_recognizer", "recognition_scores", "top_k_predictions",
           "RecognitionInputs", "RecognitionItem", "ArrayReader", "InputError", "count_frames",
           "build_recognition_loader", "forward_batch", "class_names_of", "load_recognizer_checkpoint"]

_INIT_OPS = ("DecordInit", "PyAVInit", "OpenCVInit", "VideoInit")
_DECODE_OPS = ("RawFrameDecode", "DecordDecode", "PyAVDecode", "OpenCVDecode", "VideoDecode")
_VIDEO_DATASET_TYPES = ("VideoDataset",)


class InputError(ValueError):
    """An input that cannot be recognised (missing file, empty folder, bad array); the message names it."""


# --------------------------------------------------------------------------------------------- model
def _checkpoint_path(checkpoint: str | os.PathLike) -> Path:
    """A local file for a path, an http(s) URL or a model-zoo name (``actionkit.zoo``)."""
    from ..zoo import resolve_checkpoint

    return Path(resolve_checkpoint(str(checkpoint)))


def _resolve_config(config: str | os.PathLike | Mapping | Config | None,
                    checkpoint: str | os.PathLike | None) -> Config:
    """The config object: a path, a dict / Config, a zoo name, or (None) the zoo entry of ``checkpoint``."""
    if isinstance(config, (Config, Mapping)):
        return load_config(config)
    from ..zoo import config_path, get_model_entry, is_url, looks_like_path

    if config is None:
        if checkpoint is None or os.path.exists(str(checkpoint)) or is_url(str(checkpoint)):
            raise InputError("a config is needed unless the checkpoint is a model-zoo name "
                             "(see 'actionkit models')")
        return load_config(config_path(get_model_entry(str(checkpoint))))
    if os.path.isfile(str(config)):
        return load_config(config)
    if looks_like_path(str(config)):
        raise FileNotFoundError(f"{config}: config file not found")
    return load_config(config_path(get_model_entry(str(config))))


def _num_classes_of(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> tuple[int, int] | None:
    """``(checkpoint classes, model classes)`` when the classifier weights of both differ in their first dim."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if key.endswith("fc_cls.weight") and key in own and value.dim() >= 1 \
                and value.shape[0] != own[key].shape[0]:
            return int(value.shape[0]), int(own[key].shape[0])
    return None


def load_recognizer_checkpoint(model: nn.Module, filename: str | os.PathLike,
                               config_name: str | None = None) -> dict:
    """Load ``filename`` strictly (safe loader); a checkpoint of another number of classes is named as such."""
    from ..checkpoint import CheckpointError, extract_state_dict, load_state_dict, safe_load

    ckpt = safe_load(filename, map_location="cpu")
    state_dict = {re.sub(r"^module\.", "", k): v for k, v in extract_state_dict(ckpt, filename).items()}
    classes = _num_classes_of(state_dict, model)
    if classes is not None:
        where = f" ({config_name})" if config_name else ""
        raise CheckpointError(filename, f"the checkpoint classifies {classes[0]} classes but the config{where} "
                                        f"builds a model with {classes[1]} (cls_head.num_classes); use the "
                                        "config the checkpoint was trained with")
    load_state_dict(model, state_dict, strict=True, filename=str(filename))
    return ckpt if isinstance(ckpt, dict) else {"state_dict": state_dict}


def init_recognizer(config: str | os.PathLike | Mapping | Config | None,
                    checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                    cfg_options: Mapping[str, Any] | Sequence[str] | None = None) -> nn.Module:
    """Build the recognizer of ``config`` for inference, as ``tools/test.py`` does.

    ``config``: a config file, a dict / :class:`~actionkit.config.Config`, a model-zoo name, or None when
    ``checkpoint`` is a zoo name.  ``checkpoint``: a file, an http(s) URL or a zoo name (None: random weights
    from ``init_weights``).  The backbone's ``pretrained`` is cleared (a full checkpoint replaces every weight),
    the model is built with the config's ``test_cfg``, the checkpoint is loaded strictly (a checkpoint for
    another number of classes raises an error naming the file), ``model.cfg`` is the config and the model is
    in eval mode on ``device``.
    """
    from ..models.builder import build_model, clear_pretrained

    cfg = _resolve_config(config, checkpoint)
    if cfg_options:
        apply_cfg_options(cfg, cfg_options, cfg.filename)
    if "model" not in cfg:
        raise cfg.error("is required but missing", "model")
    clear_pretrained(cfg.model)
    if cfg.model.get("test_cfg") is None and cfg.get("test_cfg") is not None:
        cfg.model["test_cfg"] = copy.deepcopy(cfg.test_cfg)
    model = build_model(cfg, init_weights=checkpoint is None)
    if checkpoint is not None:
        load_recognizer_checkpoint(model, _checkpoint_path(checkpoint), cfg.filename)
    model.cfg = cfg  # type: ignore[attr-defined]
    model.to(device)
    model.eval()
    return model


# --------------------------------------------------------------------------------------------- inputs
class ArrayReader:
    """The reader interface of ``actionkit.data.decode`` over a ``[T, H, W, 3]`` uint8 RGB array."""

    def __init__(self, frames: np.ndarray, fps: float = 30.0, name: str = "<array>"):
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
                or frames.shape[-1] != 3:
            desc = f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, np.ndarray) \
                else type(frames).__name__
            raise InputError(f"{name}: a video array must be uint8 RGB [T, H, W, 3], got {desc}")
        if frames.shape[0] == 0:
            raise InputError(f"{name}: the video array has no frames")
        self.frames = frames
        self.fps = float(fps)
        self.path = name

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    def close(self) -> None:
        pass

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        inds = np.asarray(indices, dtype=np.int64).reshape(-1)
        check_frame_range(self.path, inds, self.num_frames)
        return self.frames[inds]

    def iter_frames(self, indices: Sequence[int] | np.ndarray) -> Iterator[tuple[list[int], np.ndarray, bool]]:
        inds = np.asarray(indices, dtype=np.int64).reshape(-1)
        check_frame_range(self.path, inds, self.num_frames)
        uniq, positions = _unique_positions(inds)
        for index, pos in zip(uniq, positions):
            yield pos, self.frames[index], False


def _template_pattern(filename_tmpl: str) -> re.Pattern:
    """``img_{:05}.jpg`` -> ``^img_\\d+\\.jpg$`` (each ``{...}`` field matches a number)."""
    parts = re.split(r"\{[^{}]*\}", filename_tmpl)
    return re.compile("^" + r"\d+".join(re.escape(p) for p in parts) + "$")


def count_frames(frame_dir: str | os.PathLike, filename_tmpl: str) -> int:
    """Number of files in ``frame_dir`` whose names match ``filename_tmpl``; an empty folder is an error."""
    pattern = _template_pattern(filename_tmpl)
    try:
        names = os.listdir(frame_dir)
    except OSError as e:
        raise InputError(f"{frame_dir}: cannot list the frame folder ({e})") from e
    count = sum(1 for name in names if pattern.match(name))
    if count == 0:
        raise InputError(f"{frame_dir}: no frames named like '{filename_tmpl}' in this folder")
    return count


@dataclass(frozen=True)
class _DatasetDefaults:
    """What the config's test dataset adds to every sample's results (``BaseRecognitionDataset._results``)."""

    video_config: bool
    start_index: int  # the dataset's (0 for VideoDataset, 1 for RawframeDataset unless the config says)
    frame_start_index: int  # number of the first file of a frame folder (the config's start_index, else 1)
    filename_tmpl: str
    modality: str


def _dataset_defaults(cfg: Mapping) -> _DatasetDefaults:
    test = dict((cfg.get("data") or {}).get("test") or {})
    pipeline = test.get("pipeline")
    if not isinstance(pipeline, (list, tuple)) or not pipeline:
        raise cfg.error("must be a non-empty list of transforms", "data.test.pipeline") \
            if isinstance(cfg, Config) else InputError("the config has no data.test.pipeline")
    types = [str(t.get("type", "")) for t in pipeline if isinstance(t, Mapping)]
    if any(t in _INIT_OPS for t in types):
        video = True
    elif "RawFrameDecode" in types:
        video = False
    else:
        video = test.get("type") in _VIDEO_DATASET_TYPES
    return _DatasetDefaults(video_config=video,
                            start_index=int(test.get("start_index", 0 if video else 1)),
                            frame_start_index=int(test.get("start_index", 1)),
                            filename_tmpl=str(test.get("filename_tmpl", "img_{:05}.jpg")),
                            modality=str(test.get("modality", "RGB")))


def _reader_pipeline(pipeline: Sequence[Mapping]) -> list[dict]:
    """The test pipeline with its ``*Init`` op dropped and its decode op reading ``results['video_reader']``."""
    out = []
    for step in pipeline:
        kind = str(step.get("type", ""))
        if kind in _INIT_OPS:
            continue
        out.append(dict(type="VideoDecode") if kind in _DECODE_OPS else copy.deepcopy(dict(step)))
    return out


@dataclass
class RecognitionItem:
    """What :class:`RecognitionInputs` gives for input ``index``: the pipeline output, or why there is none."""

    index: int
    data: dict | None = None
    error: str | None = None


class RecognitionInputs(torch.utils.data.Dataset):
    """Videos, frame folders, arrays or results dicts run through a config's test pipeline.

    ``self[i]`` is a :class:`RecognitionItem`; with ``catch_errors`` an input that cannot be read (missing,
    undecodable, empty folder: :class:`DecodeError`, ``OSError``, :class:`InputError`) gives an item with the
    error message instead of raising, so that a loader goes on with the other inputs.  ``collate_fn`` (used by
    the engine's loaders) collates the readable items of a batch with the engine's collate (see there).
    """

    def __init__(self, inputs: Sequence[Any], cfg: Mapping, catch_errors: bool = False):
        self.inputs = list(inputs)
        self.defaults = _dataset_defaults(cfg)
        self.pipeline_cfg = [copy.deepcopy(dict(t)) for t in cfg["data"]["test"]["pipeline"]]
        self.filename = getattr(cfg, "filename", None)
        self.catch_errors = bool(catch_errors)
        self._native: Compose | None = None
        self._reader: Compose | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    @staticmethod
    def name_of(video: Any) -> str:
        if isinstance(video, np.ndarray):
            return f"<array {tuple(video.shape)}>"
        if isinstance(video, Mapping):
            return str(video.get("filename", video.get("frame_dir", "<results dict>")))
        return str(video)

    def _pipelines(self) -> tuple[Compose, Compose]:
        if self._native is None:
            self._native = Compose(self.pipeline_cfg, filename=self.filename)
            self._reader = Compose(_reader_pipeline(self.pipeline_cfg), filename=self.filename)
        return self._native, self._reader  # type: ignore[return-value]

    def split_normalize(self) -> tuple[RecognitionInputs, BatchNormalize | None]:
        """``(a copy whose pipelines end with the uint8 clip, the Normalize they leave out)``, or ``(self, None)``
        where the test pipeline keeps its ``Normalize`` (``actionkit.data.preprocess.split_normalize``; the
        engine's loaders call this and attach the step to the batches, see ``engine.loaders``)."""
        native, reader = self._pipelines()
        native_steps, step = split_normalize(native.transforms)
        reader_steps, reader_step = split_normalize(reader.transforms)
        if step is None or reader_step != step:
            return self, None
        uint8_inputs = copy.copy(self)
        uint8_inputs._native, uint8_inputs._reader = Compose(native_steps), Compose(reader_steps)
        return uint8_inputs, step

    def _base(self) -> dict:
        d = self.defaults
        return {"label": -1, "start_index": d.start_index, "modality": d.modality,
                "filename_tmpl": d.filename_tmpl}

    def results_for(self, video: Any) -> tuple[dict, bool]:
        """``(results, native)``: the results dict to run and whether the config's own pipeline runs on it
        (else the reader pipeline: ``results['video_reader']`` is open)."""
        d = self.defaults
        if isinstance(video, Mapping):
            results = {**self._base(), **dict(video)}
            return results, True
        if isinstance(video, np.ndarray):
            reader = ArrayReader(video)
            return self._reader_results(reader), False
        path = str(video)
        if not os.path.exists(path):
            raise InputError(f"{path}: no such video file or frame folder")
        if os.path.isdir(path):
            total = count_frames(path, d.filename_tmpl)
            if not d.video_config:
                return {**self._base(), "frame_dir": path, "total_frames": total}, True
            reader = FrameFolderReader(path, d.filename_tmpl, start_index=d.frame_start_index, num_frames=total)
            return self._reader_results(reader), False
        if d.video_config:
            return {**self._base(), "filename": path}, True
        return self._reader_results(open_video(path)), False

    def _reader_results(self, reader: Any) -> dict:
        return {**self._base(), "start_index": 0, "video_reader": reader, "total_frames": reader.num_frames,
                "avg_fps": getattr(reader, "fps", 30.0)}

    def run(self, video: Any) -> dict:
        """The test pipeline's output for one input (raises on unreadable input)."""
        native, reader_pipeline = self._pipelines()
        results, is_native = self.results_for(video)
        try:
            out = (native if is_native else reader_pipeline)(results)
        finally:
            reader = results.get("video_reader")
            if reader is not None:
                reader.close()
        if out is None:
            raise InputError(f"{self.name_of(video)}: the test pipeline dropped the sample")
        return out

    def __getitem__(self, index: int) -> RecognitionItem:
        video = self.inputs[index]
        if not self.catch_errors:
            return RecognitionItem(index, self.run(video))
        try:
            return RecognitionItem(index, self.run(video))
        except (DecodeError, OSError, InputError) as e:
            message = str(e)
            name = self.name_of(video)
            if name not in message:
                message = f"{name}: {message}"
            return RecognitionItem(index, error=message)

    @staticmethod
    def collate_fn(items: Sequence[RecognitionItem]) -> tuple[list[RecognitionItem], list[tuple[list[int], Any]]]:
        """``(items without their data, [(input indices, collated batch), ...])``: the readable items collated
        with the engine's collate, one batch per clip shape (inputs of another size or length than the rest of
        the batch get their own), in input order."""
        from ..engine.loaders import auto_collate

        groups: dict[Any, list[RecognitionItem]] = {}
        for it in items:
            if it.data is not None:
                groups.setdefault(_clip_shape(it.data), []).append(it)
        batches = [([it.index for it in group], auto_collate([it.data for it in group]))
                   for group in groups.values()]
        # the batches hold the pixels now: hand back only which inputs there were and why some are missing
        return [RecognitionItem(it.index, None, it.error) for it in items], batches


def _clip_shape(data: Mapping[str, Any]) -> tuple:
    """The shapes of an item's arrays (what must agree for the items to stack into one batch)."""
    return tuple(sorted((k, tuple(v.shape)) for k, v in data.items() if hasattr(v, "shape")))


def build_recognition_loader(inputs: RecognitionInputs, cfg: Mapping, batch_size: int = 1,
                             num_workers: int = 0) -> torch.utils.data.DataLoader:
    """The engine's test loader (``build_test_loader``) over ``inputs`` with the given batch and workers."""
    from ..engine.loaders import build_test_loader

    loader_cfg = copy.deepcopy(dict(cfg))
    data = dict(loader_cfg.get("data") or {})
    test_loader = dict(data.get("test_dataloader") or {})
    test_loader.update(videos_per_gpu=int(batch_size), workers_per_gpu=int(num_workers))
    data["test_dataloader"] = test_loader
    loader_cfg["data"] = data
    return build_test_loader(inputs, loader_cfg, "test", distributed=False, seed=int(cfg.get("seed") or 0))


def forward_batch(model: nn.Module, batch: Any) -> list[np.ndarray]:
    """One averaged score vector ``[K]`` per video of a collated batch (what ``tools/test.py`` writes)."""
    from ..engine.test import batch_size_of, model_device, prepare_batch, split_result

    data = prepare_batch(batch, model_device(model))
    with torch.no_grad():
        result = model(return_loss=False, **data)
    scores = split_result(result, batch_size_of(data))
    for s in scores:
        if np.asarray(s).ndim != 1:
            raise ValueError("the model returns per-view scores (test_cfg.average_clips=None); set "
                             "average_clips to 'prob' or 'score'")
    return [np.asarray(s, dtype=np.float32) for s in scores]


# --------------------------------------------------------------------------------------------- inference
def class_names_of(model: nn.Module, num_classes: int,
                   label_map: str | os.PathLike | Sequence[str] | None = None) -> list[str]:
    """One name per output column: ``actionkit.labels.class_names_for_config`` of ``model.cfg`` (``label_map``
    overrides it), else ``class_<k>``."""
    from ..labels import class_names_for_config, generic_names

    cfg = getattr(model, "cfg", None)
    names = list(class_names_for_config(cfg, label_map)) if cfg is not None else []
    return names if len(names) == num_classes else generic_names(num_classes)


def top_k_predictions(scores: np.ndarray, names: Sequence[str], top_k: int = 5) -> list[tuple[int, str, float]]:
    """``(class index, class name, score)`` of the ``top_k`` highest scores, highest first (ties: lower index)."""
    scores = np.asarray(scores).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:max(0, int(top_k))]
    return [(int(k), str(names[k]), float(scores[k])) for k in order]


def recognition_scores(model: nn.Module, video: Any) -> np.ndarray:
    """The averaged score vector ``[K]`` of one input (see the module doc for the input kinds)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ValueError("the model has no 'cfg': build it with init_recognizer(config, checkpoint)")
    inputs = RecognitionInputs([video], cfg, catch_errors=False)
    loader = build_recognition_loader(inputs, cfg, batch_size=1, num_workers=0)
    was_training = model.training
    model.eval()
    try:
        (_, [(_, batch)]), = list(loader)
        return forward_batch(model, batch)[0]
    finally:
        model.train(was_training)


def _named_modules(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        known = ", ".join(n for n in modules if n and n.count(".") <= 1)
        raise KeyError(f"no module named {missing} in the model; top-level modules: {known}")
    return {n: modules[n] for n in names}


def inference_recognizer(model: nn.Module, video: Any, top_k: int = 5,
                         outputs: Sequence[str] | str | None = None,
                         label_map: str | os.PathLike | Sequence[str] | None = None):
    """Recognise the actions in ``video`` with a model from :func:`init_recognizer`.

    Returns the ``top_k`` ``(class index, class name, score)`` tuples, highest score first, where the scores
    are the model's averaged output (``test_cfg.average_clips``), equal to what ``tools/test.py --out`` writes
    for the same input, and the names come from the config's dataset (or ``label_map``: a shipped map's name,
    a file or a list of names).  With ``outputs`` (module names, e.g. ``'backbone'``) returns
    ``(predictions, {name: output})`` with those modules' forward outputs (moved to the CPU).
    The full score vector is :func:`recognition_scores`.
    """
    if isinstance(outputs, str):
        outputs = [outputs]
    captured: dict[str, Any] = {}
    handles = []
    if outputs:
        for name, module in _named_modules(model, list(outputs)).items():
            def hook(_m, _inp, out, name=name):
                captured[name] = _to_cpu(out)
            handles.append(module.register_forward_hook(hook))
    try:
        scores = recognition_scores(model, video)
    finally:
        for h in handles:
            h.remove()
    predictions = top_k_predictions(scores, class_names_of(model, scores.shape[0], label_map), top_k)
    if outputs:
        return predictions, captured
    return predictions


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    return x
