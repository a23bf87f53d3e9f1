"""The ``ModelHandler`` for Beam's ``RunInference`` that serves the project's exports.

Keras 3 ``.keras`` artifacts are not callable by Beam's TensorFlow handlers, so
:class:`KerasModelHandler` loads them itself: once per worker process (``RunInference``
shares it across threads; ``model_copies`` / ``large_model`` are passed through), through the
run's engine: TensorFlow (:mod:`pipeline.tf_engine`) or ONNX Runtime (:mod:`pipeline.onnx_engine`),
each a scorer that calls every model on the same batch (a model with a smaller input than the
run's arrays scores a downscaled copy). Models load on the first batch
(:class:`DeferredScorer`), not when the worker sets the step up. The heads of a multi-task export
(one :class:`~pipeline.model_info.ModelInfo` each, sharing the export's path) come from one
artifact, loaded once and called once per batch: each head's scores are its entry of the output dict.
When a batch raises, its elements are scored one by one and only the culprit comes back as an
:class:`InferenceFailure`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipeline.inference_config import InferenceConfig
from pipeline.model_info import ModelInfo, resolve_model_path
from pipeline.onnx_engine import ONNX_FILE
from pipeline.temperature import apply_to_outputs

METRICS_NAMESPACE = "fashion_enrich.inference"
LOADED_KEPT = 2  # loaded model sets a process keeps for its next pipeline (a sharded run's in-process passes)
Scorer = Callable[[np.ndarray], list[np.ndarray]]  # a loaded engine: tf_engine.Scorer or onnx_engine.OnnxScorer
_LOADED: OrderedDict[tuple, Scorer] = OrderedDict()
_LOADED_LOCK = threading.Lock()


def check_sizes(models, image_size: int | None) -> int:
    """The run's array size: ``image_size``, or the largest model input. Smaller models get a
    downscaled copy; a model larger than the arrays cannot be served (upscaling invents pixels)."""
    sizes = {m.image_size for m in models}
    size = image_size or max(sizes)
    if max(sizes) > size:
        raise ValueError(f"a model expects {max(sizes)} px but the images are decoded at {size} px: "
                         "decode at the largest model input size")
    return size


def _local_copy(path: str) -> str:
    """Keras loads from local disk: copy an artifact on gs:// (or any remote FS) to a temp dir."""
    if "://" not in path:
        return path
    local = tempfile.mkdtemp(prefix="fashion-enrich-model-")
    optional = (ONNX_FILE,)  # exports written before ONNX Runtime served them have none
    for name in ("model.keras", "model_card.json", "labels.json", *optional):
        if name in optional and not FileSystems.exists(FileSystems.join(path, name)):
            continue
        with FileSystems.open(FileSystems.join(path, name)) as src, open(os.path.join(local, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return local


def forget_loaded_models() -> None:
    """Empty this process's cache of loaded models."""
    with _LOADED_LOCK:
        _LOADED.clear()


def _stamp(path: str) -> tuple:
    """What identifies an artifact's loaded model: its resolved path, and for a local file its
    size and mtime (a file replaced in place is loaded again)."""
    resolved = resolve_model_path(path)
    try:
        stat = os.stat(os.path.join(resolved, "model.keras")) if "://" not in resolved else None
    except OSError:
        stat = None
    return (resolved,) if stat is None else (resolved, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class InferenceFailure:
    """Stands in for the scores of an element that made the model raise."""

    message: str


def artifacts(infos: tuple[ModelInfo, ...]) -> tuple[list[ModelInfo], list[tuple[int, str | None]]]:
    """(one info per distinct artifact, in first-seen order; per info, (its artifact's index, its
    head)). Heads of one export share an artifact, also when named by different paths of the same
    folder (``default:category`` and ``default:gender`` of a multi-task profile)."""
    index: dict[str, int] = {}
    first: list[ModelInfo] = []
    picks = []
    for info in infos:
        key = resolve_model_path(info.path) if info.head is not None else f"{info.path}\0{info.task}"
        if key not in index:
            index[key] = len(first)
            first.append(info)
        picks.append((index[key], info.head))
    return first, picks


class ModelLoadError(RuntimeError):
    """The run's models cannot be loaded: the run fails (:mod:`pipeline.inference` re-raises it
    instead of dead-lettering the batch, as it would an image that makes a model raise)."""


class DeferredScorer:
    """A :class:`Scorer` built by ``load`` on first use (thread-safe: ``RunInference`` shares one
    per worker process across threads)."""

    def __init__(self, load: Callable[[], Scorer]):
        self._load, self._scorer, self._lock = load, None, threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._scorer is not None

    def scorer(self) -> Scorer:
        """The loaded models; :class:`ModelLoadError` when they cannot be loaded."""
        if self._scorer is None:
            with self._lock:
                if self._scorer is None:
                    try:
                        self._scorer = self._load()
                    except Exception as exc:  # noqa: BLE001 - re-raised as what it means for the run
                        raise ModelLoadError(f"the models could not be loaded: {type(exc).__name__}: {exc}"[:2000]) \
                            from exc
        return self._scorer

    @property
    def models(self) -> list:
        return self.scorer().models

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.scorer()(batch)


class KerasModelHandler(ModelHandler[np.ndarray, PredictionResult, DeferredScorer]):
    """Scores batches of uint8 (size, size, 3) arrays with one or several exported ``model.keras``.

    Each ``PredictionResult.inference`` is a tuple with one score vector per info (in the order
    given), or an :class:`InferenceFailure` when scoring that element raised. Each artifact is
    loaded once and called once per batch, however many of its heads are served."""

    def __init__(self, infos: ModelInfo | tuple[ModelInfo, ...], cfg: InferenceConfig = InferenceConfig(),
                 image_size: int | None = None):
        super().__init__(min_batch_size=cfg.min_batch_size, max_batch_size=cfg.max_batch_size,
                         large_model=cfg.large_model, model_copies=cfg.model_copies)
        self._infos = (infos,) if isinstance(infos, ModelInfo) else tuple(infos)
        self._image_size = check_sizes(self._infos, image_size)
        self._cfg = cfg
        self._artifacts, self._picks = artifacts(self._infos)
        self._model_id = ",".join(i.model_id for i in self._artifacts)

    def load_model(self) -> DeferredScorer:
        """The models, loaded on the first batch (:class:`DeferredScorer`): a worker that is never
        sent an image to score (an incremental run's shard where every image is reused) neither
        imports TensorFlow nor loads a model."""
        return DeferredScorer(self._load_now)

    def _load_now(self) -> Scorer:
        """The loaded models, from this process's cache when the same files were loaded for an
        earlier pipeline (the passes of a sharded run that run in the launcher load them once)."""
        key = (tuple(_stamp(i.path) + (i.image_size,) for i in self._artifacts), self._image_size,
               tuple(self._picks), self._cfg)
        with _LOADED_LOCK:
            if key in _LOADED:
                _LOADED.move_to_end(key)
                return _LOADED[key]
        scorer = self._load_files()
        with _LOADED_LOCK:
            _LOADED[key] = scorer
            while len(_LOADED) > LOADED_KEPT:
                _LOADED.popitem(last=False)
        return scorer

    def _load_files(self) -> Scorer:
        from pipeline.memory import tune_malloc

        tune_malloc()
        folders = [_local_copy(resolve_model_path(i.path)) for i in self._artifacts]
        sizes = [i.image_size for i in self._artifacts]
        if self._cfg.engine == "onnxruntime":  # no TensorFlow in this process (pipeline.onnx_engine)
            from pipeline.onnx_engine import OnnxScorer

            return OnnxScorer(folders, self._image_size, sizes, self._picks, self._cfg.intra_op_threads)
        from pipeline.tf_engine import load_scorer

        return load_scorer(folders, self._image_size, sizes, self._picks, self._cfg)

    def run_inference(self, batch, model: DeferredScorer, inference_args=None):
        try:
            outputs = self._calibrated(model(np.stack(batch)))
            scores = [tuple(out[i] for out in outputs) for i in range(len(batch))]
        except ModelLoadError:
            raise  # the models, not the batch: nothing to isolate
        except Exception:  # noqa: BLE001 - isolate the culprit instead of failing the whole batch
            if len(batch) == 1:
                raise
            scores = [self._score_one(model, example) for example in batch]
        return [PredictionResult(example, score, model_id=self._model_id) for example, score in zip(batch, scores)]

    def _calibrated(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        return [apply_to_outputs(out, i.temperature, sigmoid=i.sigmoid) for out, i in zip(outputs, self._infos)]

    def _score_one(self, model: DeferredScorer, example):
        try:
            return tuple(out[0] for out in self._calibrated(model(example[None])))
        except Exception as exc:  # noqa: BLE001 - this element alone goes to the dead-letter table
            return InferenceFailure(f"{type(exc).__name__}: {exc}"[:500])

    def get_num_bytes(self, batch) -> int:
        return sum(a.nbytes for a in batch)

    def get_metrics_namespace(self) -> str:
        return f"{METRICS_NAMESPACE}.{'+'.join(i.task for i in self._infos)}"
