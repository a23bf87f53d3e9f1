"""Model inference through Beam's ``RunInference`` with a Keras 3 ``ModelHandler``.

Keras 3 ``.keras`` artifacts are not callable by Beam's TensorFlow handlers, so
:class:`KerasModelHandler` loads them itself: once per worker process (``RunInference``
shares it across threads; ``model_copies`` / ``large_model`` are passed through), with GPU
memory growth on and TF thread pools configurable. Elements are keyed by their
:class:`~pipeline.records.ImageRecord` (``KeyedModelHandler``), so the record and its
array travel through each model step together; a failed batch leaves through the
dead-letter output with reason ``INFERENCE_ERROR``; when a batch raises, its elements are
scored one by one so that only the culprit is dead-lettered.

Each model keeps its own artifact, card and version. By default one RunInference step scores
every model of the run (``steps="combined"``): one batching pass, one compiled TensorFlow
function calling all models on the same batch; ``steps="per-model"`` runs one step per model
(measured against each other in benchmarks/README.md). Models are called through a
``tf.function`` with a fixed input signature, not eagerly: ~1.7x faster on small CNNs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from models.calibration import apply_to_outputs
from pipeline.records import DeadLetter, ImageRecord, Reason, Stage

_LOG = logging.getLogger(__name__)
METRICS_NAMESPACE = "fashion_enrich.inference"
DEAD_LETTER = "dead_letter"
TOP_K = 3


DEFAULT_PREFIX = "default:"  # a shipped model, resolved where it is loaded (launcher or worker)


def resolve_model_path(path: str) -> str:
    """``default:<task>`` -> the shipped folder inside this installation; other paths unchanged."""
    if path.startswith(DEFAULT_PREFIX):
        from models.defaults import default_model_dir

        return str(default_model_dir(path[len(DEFAULT_PREFIX):]))
    return path


def _output_units(model_dir: str) -> int | None:
    """Units of the model's last Dense layer, read from the .keras archive (no TensorFlow)."""
    with FileSystems.open(FileSystems.join(model_dir, "model.keras"), compression_type="uncompressed") as fh:
        with zipfile.ZipFile(io.BytesIO(fh.read())) as archive:
            config = json.loads(archive.read("config.json"))
    dense = [layer for layer in config.get("config", {}).get("layers", []) if layer.get("class_name") == "Dense"]
    return dense[-1]["config"]["units"] if dense else None


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline needs to know about an exported model (from its model card)."""

    task: str
    path: str  # a folder (local or gs://), or default:<task> for a shipped model
    model_id: str
    classes: tuple[str, ...]
    image_size: int
    sigmoid: bool
    temperature: float = 1.0  # calibration (models.calibration), applied to every score

    @classmethod
    def read(cls, path: str) -> ModelInfo:
        folder = resolve_model_path(path)
        with FileSystems.open(FileSystems.join(folder, "model_card.json")) as fh:
            card = json.loads(fh.read())
        info = cls(task=card["task"], path=path, model_id=card["model_id"], classes=tuple(card["classes"]),
                   image_size=int(card["image_size"]), sigmoid=card["output"].startswith("sigmoid"),
                   temperature=float((card.get("calibration") or {}).get("temperature", 1.0)))
        vocabulary = transform_vocabulary(folder, info.task)
        if vocabulary is not None and tuple(vocabulary) != info.classes:
            raise ValueError(f"{path}: the card's classes differ from the {info.task!r} vocabulary of the "
                             f"transform output it was trained with (transform_fn/): {list(info.classes)[:5]}... "
                             f"vs {vocabulary[:5]}...")
        expected = 1 if info.sigmoid else len(info.classes)
        units = _output_units(folder)
        if units is not None and units != expected:
            raise ValueError(f"{path}: the model has {units} outputs but its card lists {expected}")
        return info


def transform_vocabulary(folder: str, task: str) -> list[str] | None:
    """The task's label vocabulary from the export's TFT transform output (score order), or None
    where the export has none for the task (the person task's two classes are fixed).

    Read from the transform output's own asset map and vocabulary file (one label per line) through
    Beam's FileSystems, so a gs:// model needs no copy and workers need no tensorflow-transform."""
    root = FileSystems.join(folder, "transform_fn")
    asset_map = FileSystems.join(root, "transformed_metadata", "asset_map")
    if not FileSystems.exists(asset_map):
        return None
    with FileSystems.open(asset_map) as fh:
        name = json.loads(fh.read()).get(task)
    if name is None:
        return None
    with FileSystems.open(FileSystems.join(root, "transform_fn", "assets", name)) as fh:
        return [line for line in fh.read().decode("utf-8").splitlines() if line]


STEPS = ("combined", "per-model")


@dataclass(frozen=True)
class InferenceConfig:
    min_batch_size: int = 1
    max_batch_size: int = 64  # bounded: GPUs run out of memory on unbounded batches
    model_copies: int | None = None
    large_model: bool = False
    intra_op_threads: int = 0  # 0: TensorFlow's default
    inter_op_threads: int = 0
    steps: str = "combined"  # one RunInference for all models, or one per model

    def __post_init__(self):
        if not 1 <= self.min_batch_size <= self.max_batch_size <= 4096:
            raise ValueError("need 1 <= min_batch_size <= max_batch_size <= 4096")
        if self.steps not in STEPS:
            raise ValueError(f"inference steps must be one of {STEPS}")


def _configure_tensorflow(cfg: InferenceConfig) -> None:
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process: keep what it has
            pass
    try:
        if cfg.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.intra_op_threads)
        if cfg.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(cfg.inter_op_threads)
    except RuntimeError:
        _LOG.info("TensorFlow already initialised: thread settings left as they are")


def _local_copy(path: str) -> str:
    """Keras loads from local disk: copy an artifact on gs:// (or any remote FS) to a temp dir."""
    if "://" not in path:
        return path
    local = tempfile.mkdtemp(prefix="fashion-enrich-model-")
    for name in ("model.keras", "model_card.json", "labels.json"):
        with FileSystems.open(FileSystems.join(path, name)) as src, open(os.path.join(local, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return local


@dataclass(frozen=True)
class InferenceFailure:
    """Stands in for the scores of an element that made the model raise."""

    message: str


def downscale(batch, size: int):
    """uint8 (n, s, s, 3) -> uint8 (n, size, size, 3) by area averaging (box filter: no aliasing),
    for a model whose input is smaller than the run's arrays. Rounded, as the decoder's output is."""
    import tensorflow as tf

    scaled = tf.image.resize(tf.cast(batch, tf.float32), (size, size), method="area")
    return tf.cast(tf.round(tf.clip_by_value(scaled, 0.0, 255.0)), tf.uint8)


class Scorer:
    """Loaded Keras models behind one compiled function: a uint8 batch -> one score array per model.

    The batch is at ``image_size``, the run's array size; a model with a smaller input (its
    ``sizes`` entry) scores a :func:`downscale` copy, made once per size."""

    def __init__(self, models: list, image_size: int, sizes: list[int] | None = None):
        import tensorflow as tf

        self.models = models
        sizes = list(sizes or [image_size] * len(models))

        def score(batch):
            copies = {image_size: batch}
            for size in sizes:
                if size not in copies:
                    copies[size] = downscale(batch, size)
            return tuple(m(copies[size], training=False) for m, size in zip(models, sizes))

        self._fn = tf.function(score, input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.uint8)],
                               autograph=False)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(out) for out in self._fn(batch)]


class KerasModelHandler(ModelHandler[np.ndarray, PredictionResult, Scorer]):
    """Scores batches of uint8 (size, size, 3) arrays with one or several exported ``model.keras``.

    Each ``PredictionResult.inference`` is a tuple with one score vector per model (in the order
    given), or an :class:`InferenceFailure` when scoring that element raised."""

    def __init__(self, infos: ModelInfo | tuple[ModelInfo, ...], cfg: InferenceConfig = InferenceConfig(),
                 image_size: int | None = None):
        super().__init__(min_batch_size=cfg.min_batch_size, max_batch_size=cfg.max_batch_size,
                         large_model=cfg.large_model, model_copies=cfg.model_copies)
        self._infos = (infos,) if isinstance(infos, ModelInfo) else tuple(infos)
        self._image_size = check_sizes(self._infos, image_size)
        self._cfg = cfg
        self._model_id = ",".join(i.model_id for i in self._infos)

    def load_model(self) -> Scorer:
        from pipeline.memory import tune_malloc

        tune_malloc()
        _configure_tensorflow(self._cfg)
        import keras

        import models.architectures  # noqa: F401 - registers the custom preprocessing layer

        loaded = [keras.models.load_model(os.path.join(_local_copy(resolve_model_path(i.path)), "model.keras"),
                                          compile=False) for i in self._infos]
        return Scorer(loaded, self._image_size, [i.image_size for i in self._infos])

    def run_inference(self, batch, model: Scorer, inference_args=None):
        try:
            outputs = self._calibrated(model(np.stack(batch)))
            scores = [tuple(out[i] for out in outputs) for i in range(len(batch))]
        except Exception:  # noqa: BLE001 - isolate the culprit instead of failing the whole batch
            if len(batch) == 1:
                raise
            scores = [self._score_one(model, example) for example in batch]
        return [PredictionResult(example, score, model_id=self._model_id) for example, score in zip(batch, scores)]

    def _calibrated(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        return [apply_to_outputs(out, i.temperature, sigmoid=i.sigmoid) for out, i in zip(outputs, self._infos)]

    def _score_one(self, model: Scorer, example):
        try:
            return tuple(out[0] for out in self._calibrated(model(example[None])))
        except Exception as exc:  # noqa: BLE001 - this element alone goes to the dead-letter table
            return InferenceFailure(f"{type(exc).__name__}: {exc}"[:500])

    def get_num_bytes(self, batch) -> int:
        return sum(a.nbytes for a in batch)

    def get_metrics_namespace(self) -> str:
        return f"{METRICS_NAMESPACE}.{'+'.join(i.task for i in self._infos)}"


def apply_scores(record: ImageRecord, info: ModelInfo, scores: np.ndarray) -> ImageRecord:
    """The record with one model's outputs (pure: tests call it directly)."""
    if info.task == "person":
        return dataclasses.replace(record, person_score=float(scores[-1]), person_model=info.model_id)
    order = np.argsort(-scores, kind="stable")[:TOP_K]
    top = tuple(info.classes[i] for i in order)
    top_scores = tuple(round(float(scores[i]), 6) for i in order)
    vector = tuple(round(float(s), 6) for s in scores)
    if info.task == "category":
        return dataclasses.replace(record, predicted_category=top[0], category_top3=top,
                                   category_top3_scores=top_scores, category_scores=vector,
                                   category_model=info.model_id)
    if info.task == "gender":
        return dataclasses.replace(record, predicted_gender=top[0], gender_scores=vector, gender_model=info.model_id)
    raise ValueError(f"unsupported task {info.task!r}")


def _inference_dead_letter(record: ImageRecord, infos: tuple[ModelInfo, ...], message: str) -> DeadLetter:
    tasks = "+".join(i.task for i in infos)
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{tasks}").inc()
    models = ", ".join(f"{i.task} model {i.model_id}" for i in infos)
    return DeadLetter.make(retailer=record.retailer, stage=Stage.INFERENCE, reason=Reason.INFERENCE_ERROR,
                           message=f"{models}: {message}",
                           source_file=record.source_file, source_line=record.source_line,
                           product_id=record.product_id, image_uri=record.image_uri)


def describe_failure(error) -> str:
    """One line for Beam's exception-handling output: ``(exc_type, repr(exc), traceback lines)``
    (or an exception object), without the traceback."""
    if isinstance(error, tuple) and len(error) >= 2 and isinstance(error[0], type):
        return f"{error[0].__name__}: {error[1]}"[:1000]
    return f"{type(error).__name__}: {error}"[:1000]


def _failed_batch_to_dead_letters(element, infos: tuple[ModelInfo, ...]):
    batch, error = element
    for record, _array in batch:
        yield _inference_dead_letter(record, infos, describe_failure(error))


class _ApplyScores(beam.DoFn):
    def __init__(self, infos: tuple[ModelInfo, ...]):
        self._infos = infos

    def process(self, element):
        record, result = element
        if isinstance(result.inference, InferenceFailure):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, _inference_dead_letter(record, self._infos,
                                                                              result.inference.message))
            return
        for info, scores in zip(self._infos, result.inference):
            record = apply_scores(record, info, scores)
        yield record, result.example


def check_sizes(models, image_size: int | None) -> int:
    """The run's array size: ``image_size``, or the largest model input. Smaller models get a
    downscaled copy; a model larger than the arrays cannot be served (upscaling invents pixels)."""
    sizes = {m.image_size for m in models}
    size = image_size or max(sizes)
    if max(sizes) > size:
        raise ValueError(f"a model expects {max(sizes)} px but the images are decoded at {size} px: "
                         "decode at the largest model input size")
    return size


class ScoreImages(beam.PTransform):
    """(ImageRecord, array) -> the same with every model's scores; failures to ``dead_letter``.

    Returns ``{"images": PCollection[(ImageRecord, array)], "dead_letter": PCollection[DeadLetter]}``.
    """

    def __init__(self, models: tuple[ModelInfo, ...], cfg: InferenceConfig = InferenceConfig(),
                 image_size: int | None = None):
        super().__init__()
        self._image_size = check_sizes(models, image_size)
        self._models, self._cfg = tuple(models), cfg

    def expand(self, images):
        groups = [self._models] if self._cfg.steps == "combined" else [(m,) for m in self._models]
        dead = []
        for infos in groups:
            name = "+".join(i.task for i in infos)
            handler = KeyedModelHandler(KerasModelHandler(infos, self._cfg, self._image_size))
            main, failed = images | f"Infer[{name}]" >> RunInference(handler).with_exception_handling()
            dead.append(failed.failed_inferences
                        | f"Failed[{name}]" >> beam.FlatMap(_failed_batch_to_dead_letters, infos))
            applied = main | f"Apply[{name}]" >> beam.ParDo(_ApplyScores(infos)).with_outputs(
                DEAD_LETTER, main="images")
            dead.append(applied[DEAD_LETTER])
            images = applied.images
        dead_letter = dead | "InferenceDeadLetters" >> beam.Flatten() if dead else None
        return {"images": images, "dead_letter": dead_letter}
