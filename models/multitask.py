"""One backbone, several heads: the multi-task network and its masked loss (issue 17's model).

Every head reads the same image features (:func:`models.architectures.features`), so one
forward pass gives every head's class scores, as a dict keyed by task. Training data comes from
the union of labelled catalogs, where an image rarely has every label (Myntra has no kids flag
for adults' clothes, the Clothing photos have no colour): each task's labels are one integer
array with :data:`MISSING` where the image has no label for that head. Such an image adds
nothing to that head's loss, and nothing to its gradient; a head's loss is the mean over the
images of the batch that do carry its label, so a head with sparse labels is not diluted.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers, ops

from models.architectures import ModelSpec, default_learning_rate, features

MISSING = -1


@dataclass(frozen=True)
class Head:
    """A softmax head: its task name (the model's output key), classes and loss weight."""

    task: str
    classes: tuple[str, ...]
    weight: float = 1.0

    def __post_init__(self):
        if len(self.classes) < 2:
            raise ValueError(f"head {self.task!r} needs at least two classes")
        if self.weight <= 0:
            raise ValueError(f"head {self.task!r}: the loss weight must be > 0")


def masked_crossentropy(labels, scores):
    """Mean sparse cross-entropy over the rows whose label is not :data:`MISSING` (0 when a
    batch has none); ``scores`` are softmax probabilities."""
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    present = ops.cast(ops.not_equal(labels, MISSING), scores.dtype)
    safe = ops.where(ops.equal(labels, MISSING), ops.zeros_like(labels), labels)
    per_row = keras.losses.sparse_categorical_crossentropy(safe, scores)
    return ops.sum(per_row * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="fashion_enrich")
class MaskedCrossentropy(keras.losses.Loss):
    """:func:`masked_crossentropy` as a Keras loss (already reduced over the labelled rows)."""

    def __init__(self, name: str = "masked_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return masked_crossentropy(y_true, y_pred)


@keras.saving.register_keras_serializable(package="fashion_enrich")
class MaskedAccuracy(keras.metrics.Metric):
    """Top-1 accuracy over the labelled rows only."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.right = self.add_variable(shape=(), initializer="zeros", name="right")
        self.seen = self.add_variable(shape=(), initializer="zeros", name="seen")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        present = ops.cast(ops.not_equal(labels, MISSING), "float32")
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels), "float32")
        self.right.assign_add(ops.sum(hit * present))
        self.seen.assign_add(ops.sum(present))

    def result(self):
        return self.right / ops.maximum(self.seen, 1.0)

    def reset_state(self):
        self.right.assign(0.0)
        self.seen.assign(0.0)


def build_multitask_model(spec: ModelSpec, heads: tuple[Head, ...]) -> keras.Model:
    """uint8 (size, size, 3) in; ``{task: class scores}`` out, every head in one forward pass."""
    if not heads or len({h.task for h in heads}) != len(heads):
        raise ValueError("give at least one head, each task once")
    inputs = keras.Input((spec.image_size, spec.image_size, 3), dtype="uint8", name="image")
    shared = features(spec, inputs)
    shared = layers.Dropout(spec.dropout, name="dropout")(shared)
    # float32 heads even under a mixed-precision policy: softmax and the loss stay exact.
    outputs = {h.task: layers.Dense(len(h.classes), activation="softmax", dtype="float32", name=h.task)(shared)
               for h in heads}
    return keras.Model(inputs, outputs, name=f"{spec.arch}_{spec.mode}_multitask")


def compile_multitask(model: keras.Model, spec: ModelSpec, heads: tuple[Head, ...],
                      learning_rate: float | None = None) -> keras.Model:
    """Adam; the total loss is the weighted sum of the heads' masked losses."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate or default_learning_rate(spec)),
                  loss={h.task: MaskedCrossentropy() for h in heads},
                  loss_weights={h.task: h.weight for h in heads},
                  metrics={h.task: [MaskedAccuracy()] for h in heads})
    return model
