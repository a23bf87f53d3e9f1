"""The TensorFlow engine: the exports' ``model.keras`` behind one compiled function.

GPU memory growth on, TF thread pools as the run configures them. :class:`Scorer` calls every
model on the same batch through one ``tf.function`` with a fixed input signature (not eagerly:
~1.7x faster on small CNNs); a model with a smaller input than the run's arrays scores a
:func:`downscale` copy. The engine of Dataflow and GPU workers, and of ``--engine tensorflow``;
:mod:`pipeline.onnx_engine` is the other. Nothing here imports TensorFlow before it is called.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from pipeline.inference_config import InferenceConfig

_LOG = logging.getLogger(__name__)


def configure_tensorflow(cfg: InferenceConfig) -> None:
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


def downscale(batch, size: int):
    """uint8 (n, s, s, 3) -> uint8 (n, size, size, 3) by area averaging (box filter: no aliasing),
    for a model whose input is smaller than the run's arrays. Rounded, as the decoder's output is."""
    import tensorflow as tf

    scaled = tf.image.resize(tf.cast(batch, tf.float32), (size, size), method="area")
    return tf.cast(tf.round(tf.clip_by_value(scaled, 0.0, 255.0)), tf.uint8)


class Scorer:
    """Loaded Keras models behind one compiled function: a uint8 batch -> one score array per pick.

    The batch is at ``image_size``, the run's array size; a model with a smaller input (its
    ``sizes`` entry) scores a :func:`downscale` copy, made once per size. Each model is called
    once; ``picks`` (default: each model's whole output, in order) say which scores come back:
    ``(model index, None)`` a single-task model's output, ``(model index, head)`` that entry of a
    multi-task model's output dict."""

    def __init__(self, models: list, image_size: int, sizes: list[int] | None = None,
                 picks: list[tuple[int, str | None]] | None = None):
        import tensorflow as tf

        self.models = models
        sizes = list(sizes or [image_size] * len(models))
        picks = list(picks or [(i, None) for i in range(len(models))])

        def score(batch):
            copies = {image_size: batch}
            for size in sizes:
                if size not in copies:
                    copies[size] = downscale(batch, size)
            outputs = [m(copies[size], training=False) for m, size in zip(models, sizes)]
            return tuple(outputs[i] if head is None else outputs[i][head] for i, head in picks)

        self._fn = tf.function(score, input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.uint8)],
                               autograph=False)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(out) for out in self._fn(batch)]


def load_scorer(folders: list[str], image_size: int, sizes: list[int], picks: list[tuple[int, str | None]],
                cfg: InferenceConfig) -> Scorer:
    """The exports in local ``folders`` loaded through Keras (TensorFlow configured first)."""
    configure_tensorflow(cfg)
    import keras

    import pipeline.model_layers  # noqa: F401 - registers the custom preprocessing layers

    loaded = [keras.models.load_model(os.path.join(f, "model.keras"), compile=False) for f in folders]
    return Scorer(loaded, image_size, sizes, picks)
