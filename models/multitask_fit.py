"""Fitting one multi-task network (:mod:`models.multitask`) for one fold: heads warmed on cached
frozen-backbone features, then the whole network fine-tuned, with a checkpoint after every epoch.

* :func:`frozen_features`: the pretrained backbone's pooled features of every prepared image and
  of its mirror image, computed once per prepared folder, backbone and size and cached in
  ``<data>/cache/`` (the same for every fold and every run: the backbone is not trained yet);
* :func:`warm_heads`: the heads alone, trained on those features for ``warmup_epochs`` (seconds an
  epoch instead of minutes), so fine-tuning starts from useful heads instead of random ones;
* :func:`fine_tune`: every layer, the study's augmentation, masked losses, a cosine-decayed
  learning rate; after each epoch the model (with its optimizer state) is saved to
  ``<checkpoints>/fold<k>.keras`` with ``fold<k>.json`` saying how many epochs it holds, so a
  run started again with ``--resume`` continues at the next epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable

import numpy as np

from models.architectures import ModelSpec
from models.config import TrainConfig
from models.data import Prepared
from models.multitask import MISSING, Head, build_multitask_model, compile_multitask


def _feature_model(model):
    import keras

    return keras.Model(model.inputs, model.get_layer("pool").output, name="frozen_features")


def frozen_features(data: Prepared, data_dir: str, spec: ModelSpec, model, log: Callable[[str], None]) -> np.ndarray:
    """float16 (n, 2, features): the untrained backbone's pooled features of each image and its
    mirror image, cached in ``<data_dir>/cache/`` under a key of the backbone, weights and data
    (not cached in ``clean`` mode: a random backbone is the run's own)."""
    key = hashlib.sha256(json.dumps([spec.arch, spec.weights, spec.image_size, len(data.sha256),
                                     list(data.sha256[:50]), list(data.sha256[-50:])]).encode()).hexdigest()[:16]
    path = os.path.join(data_dir, "cache", f"features-{spec.arch}-{key}.npy")
    if spec.mode != "clean" and os.path.isfile(path):
        log(f"frozen features: {path} (cached)")
        return np.load(path)
    started = time.time()
    extractor = _feature_model(model)
    views = [extractor.predict(data.images, batch_size=128, verbose=0),
             extractor.predict(data.images[:, :, ::-1], batch_size=128, verbose=0)]
    features = np.stack(views, axis=1).astype(np.float16)
    if spec.mode == "clean":
        return features
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path + ".tmp.npy", features)
    os.replace(path + ".tmp.npy", path)
    log(f"frozen features of {len(features)} images and their mirror images: {time.time() - started:.0f} s -> {path}")
    return features


def _targets(data: Prepared, heads: tuple[Head, ...], index: np.ndarray) -> dict[str, np.ndarray]:
    return {h.task: data.labels[h.task][index].astype("int32") for h in heads}


def warm_heads(model, heads: tuple[Head, ...], features: np.ndarray, data: Prepared, train_idx: np.ndarray,
               cfg: TrainConfig, log: Callable[[str], None]) -> None:
    """Train the heads of ``model`` alone on cached features (both views), in place."""
    import keras

    width = features.shape[-1]
    inputs = keras.Input((width,), name="features")
    shared = keras.layers.Dropout(0.5)(inputs)
    outputs = {h.task: keras.layers.Dense(len(h.classes), activation="softmax", dtype="float32", name=h.task)(shared)
               for h in heads}
    top = keras.Model(inputs, outputs, name="heads")
    spec = ModelSpec("custom_cnn")  # clean mode: the heads' own learning rate (1e-3)
    compile_multitask(top, spec, heads)
    x = features[train_idx].reshape(-1, width).astype("float32")
    targets = {t: np.repeat(y, 2) for t, y in _targets(data, heads, train_idx).items()}
    started = time.time()
    history = top.fit(x, targets, batch_size=256, epochs=cfg.warmup_epochs, verbose=0, shuffle=True)
    shown = ", ".join(f"{k} {v[-1]:.3f}" for k, v in history.history.items() if k.endswith("accuracy"))
    log(f"  heads warmed on frozen features: {cfg.warmup_epochs} epochs, {shown} ({time.time() - started:.0f} s)")
    for h in heads:
        model.get_layer(h.task).set_weights(top.get_layer(h.task).get_weights())


def _dataset(data: Prepared, heads: tuple[Head, ...], index: np.ndarray, cfg: TrainConfig):
    import tensorflow as tf

    from models.train import _augmenter

    ds = tf.data.Dataset.from_tensor_slices((data.images[index], _targets(data, heads, index)))
    ds = ds.shuffle(min(len(index), 10_000), seed=cfg.seed, reshuffle_each_iteration=True).batch(cfg.batch_size)
    if cfg.augment:
        augment = _augmenter(cfg.seed, cfg.augment_range)
        ds = ds.map(lambda x, y: (tf.cast(tf.clip_by_value(augment(tf.cast(x, tf.float32), training=True), 0, 255),
                                          tf.uint8), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def checkpoint_paths(folder: str, fold: int) -> tuple[str, str]:
    return os.path.join(folder, f"fold{fold}.keras"), os.path.join(folder, f"fold{fold}.json")


def saved_epochs(folder: str, fold: int) -> int:
    """Epochs of fine-tuning the fold's checkpoint holds (0: none)."""
    _, state = checkpoint_paths(folder, fold)
    if not os.path.isfile(state):
        return 0
    with open(state, encoding="utf-8") as fh:
        return int(json.load(fh)["epochs_done"])


def load_checkpoint(folder: str, fold: int, *, compile: bool = True):  # noqa: A002 - Keras' own name
    import keras

    import models.architectures  # noqa: F401 - registers the custom layers
    import models.multitask  # noqa: F401 - registers the masked loss and metric

    return keras.models.load_model(checkpoint_paths(folder, fold)[0], compile=compile)


def new_model(spec: ModelSpec, heads: tuple[Head, ...], cfg: TrainConfig, steps: int):
    import keras

    keras.utils.set_random_seed(cfg.seed)
    model = build_multitask_model(spec, heads)
    lr = cfg.learning_rate or 5e-4
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(steps, 1))
    return compile_multitask(model, spec, heads, schedule)


def fine_tune(model, heads: tuple[Head, ...], data: Prepared, train_idx: np.ndarray, cfg: TrainConfig, *,
              fold: int, folder: str, first_epoch: int, log: Callable[[str], None]):
    """Fine-tune from ``first_epoch`` to ``cfg.epochs``, saving a checkpoint after each epoch."""
    import keras

    os.makedirs(folder, exist_ok=True)
    model_path, state_path = checkpoint_paths(folder, fold)

    steps = -(-len(train_idx) // cfg.batch_size)

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = self.shown = time.time()
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            now = time.time()
            if now - self.shown >= cfg.progress_seconds and batch + 1 < steps:
                self.shown, done = now, (batch + 1) / steps
                log(f"  epoch {self.epoch + 1}/{cfg.epochs}: step {batch + 1}/{steps} ({now - self.started:.0f} s, "
                    f"~{(now - self.started) * (1 - done) / done:.0f} s to go)")

        def on_epoch_end(self, epoch, logs=None):
            shown = ", ".join(f"{k} {v:.3f}" for k, v in (logs or {}).items() if k.endswith("accuracy"))
            model.save(model_path + ".tmp.keras")
            os.replace(model_path + ".tmp.keras", model_path)
            with open(state_path, "w", encoding="utf-8") as fh:
                json.dump({"fold": fold, "epochs_done": epoch + 1, "epochs": cfg.epochs}, fh)
            log(f"  epoch {epoch + 1}/{cfg.epochs}: {shown} ({time.time() - self.started:.0f} s, checkpoint saved)")

    if first_epoch < cfg.epochs:
        model.fit(_dataset(data, heads, train_idx, cfg), epochs=cfg.epochs, initial_epoch=first_epoch, verbose=0,
                  shuffle=False,  # shuffled by tf.data
                  callbacks=[Checkpoint()])
    return model


def head_scores(model, heads: tuple[Head, ...], images: np.ndarray) -> dict[str, np.ndarray]:
    """{task: float32 (n, classes)} from one forward pass per batch."""
    out = model.predict(images, batch_size=128, verbose=0)
    return {h.task: np.asarray(out[h.task], dtype=np.float32) for h in heads}


def labelled(data: Prepared, task: str, index: np.ndarray) -> np.ndarray:
    """Positions within ``index`` whose example carries a label for ``task``."""
    return np.flatnonzero(data.labels[task][index] != MISSING)
