"""Model inference through Beam's ``RunInference``: :class:`ScoreImages` and its dead letters.

The models are scored by :class:`~pipeline.keras_handler.KerasModelHandler` (Keras 3
artifacts, loaded once per worker process); what each model is comes from its card
(:class:`~pipeline.model_info.ModelInfo`). Elements are keyed by their
:class:`~pipeline.records.ImageRecord` (``KeyedModelHandler``), so the record and its
array travel through each model step together; a failed batch leaves through the
dead-letter output with reason ``INFERENCE_ERROR``; when a batch raises, its elements are
scored one by one so that only the culprit is dead-lettered. Models that cannot be loaded (they
load on the first batch) fail the run instead.

Each model keeps its own artifact, card and version. By default one RunInference step scores
every model of the run (``steps="combined"``): one batching pass, one compiled TensorFlow
function calling all models on the same batch; ``steps="per-model"`` runs one step per
artifact (measured against each other in benchmarks/README.md). The heads of a multi-task
export are one artifact: one forward pass scores them all, in either mode.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from pipeline.inference_config import InferenceConfig
from pipeline.keras_handler import (
    METRICS_NAMESPACE,
    InferenceFailure,
    KerasModelHandler,
    ModelLoadError,
    artifacts,
    check_sizes,
)
from pipeline.model_info import ModelInfo
from pipeline.pickled import replaced
from pipeline.records import DeadLetter, ImageRecord, Reason, Stage

DEAD_LETTER = "dead_letter"
TOP_K = 3
LABEL_TASKS = ("gender", "age_group", "colour")  # ImageRecord.predicted_<task>, <task>_scores, <task>_model


def apply_scores(record: ImageRecord, info: ModelInfo, scores: np.ndarray) -> ImageRecord:
    """The record with one model's outputs (pure: tests call it directly)."""
    if info.task == "person":
        return replaced(record, person_score=float(scores[-1]), person_model=info.model_id)
    order = np.argsort(-scores, kind="stable")[:TOP_K]
    top = tuple(info.classes[i] for i in order)
    top_scores = tuple(round(float(scores[i]), 6) for i in order)
    vector = tuple(round(float(s), 6) for s in scores)
    if info.task == "category":
        return replaced(record, predicted_category=top[0], category_top3=top, category_top3_scores=top_scores,
                        category_scores=vector, category_model=info.model_id)
    if info.task in LABEL_TASKS:  # gender, age_group, colour: the label, the score vector, the model id
        return replaced(record, **{f"predicted_{info.task}": top[0], f"{info.task}_scores": vector,
                                   f"{info.task}_model": info.model_id})
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
    kind = error[0] if isinstance(error, tuple) and error else type(error)
    if isinstance(kind, type) and issubclass(kind, ModelLoadError):
        raise ModelLoadError(describe_failure(error))  # the run's models, not these images: fail the run
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
        if self._cfg.steps == "combined":
            groups = [self._models]
        else:  # one step per artifact: a multi-task export's heads stay in one forward pass
            first, picks = artifacts(self._models)
            groups = [tuple(m for m, (i, _) in zip(self._models, picks) if i == n) for n in range(len(first))]
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
