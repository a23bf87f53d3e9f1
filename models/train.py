"""Training with grouped k-fold cross-validation, augmentation, and export of one artifact.

``train(cfg)`` loads a prepared folder (:mod:`models.data`), keeps the examples labelled for
the task, optionally sub-samples products as the study did, and for each of k folds grouped
by product (and by the mapping's ``group`` column, e.g. the Clothing contributor, and by
identical image bytes) trains a fresh model and scores the held-out fold (per image, and per product with
the cumulative max). The model of the fold with the best per-product accuracy is exported
(``--final-fit`` trains one more on all the data instead). Augmentation follows the study:
horizontal flip, 25 % width/height shift, 25 % zoom, applied in the input pipeline only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from models.architectures import ModelSpec, build_model, compile_model, flip_averaged
from models.calibration import calibrate
from models.config import TrainConfig, explicit_command
from models.data import Prepared, load_prepared
from models.evaluation import class_scores, confusion_matrix, fold_metrics, hierarchy_accuracy, table_one
from models.export import export_model
from models.folds import split
from models.onnx_export import describe, write_onnx
from models.report import plot_confusion, plot_per_class_accuracy, plot_reliability
from pipeline.options import ConfigError
from pipeline.temperature import apply_temperature
from schemas.taxonomy import load_taxonomy

OUT_OF_FOLD = "out_of_fold.npz"  # in <out>/cv_report/: example index, fold, product, label, scores


def _augmenter(seed: int, extent: float = 0.25):
    import keras

    steps = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if extent > 0:
        steps += [keras.layers.RandomTranslation(extent, extent, fill_mode="constant", fill_value=255.0, seed=seed),
                  keras.layers.RandomZoom(extent, fill_mode="constant", fill_value=255.0, seed=seed)]
    return keras.Sequential(steps, name="augment")


def _dataset(images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, *, training: bool):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        ds = ds.shuffle(min(len(labels), 10_000), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size)
    if training and cfg.augment:
        augment = _augmenter(cfg.seed, cfg.augment_range)
        # The white fill matches the padding of the shared preprocessing; back to uint8 after.
        ds = ds.map(lambda x, y: (tf.cast(tf.clip_by_value(augment(tf.cast(x, tf.float32), training=True), 0, 255),
                                          tf.uint8), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _spec(cfg: TrainConfig, classes: list[str], size: int) -> ModelSpec:
    binary = cfg.task == "person"
    return ModelSpec(cfg.arch, mode=cfg.mode, image_size=size, num_outputs=1 if binary else len(classes),
                     multilabel=binary, weights=cfg.weights, width=cfg.width)


def _scores(model, images: np.ndarray, binary: bool) -> np.ndarray:
    return class_scores(model.predict(images, batch_size=256, verbose=0), binary)


def _fit(cfg: TrainConfig, spec: ModelSpec, data: Prepared, train_idx, val_idx, labels, log):
    import keras

    keras.utils.set_random_seed(cfg.seed)
    steps = cfg.epochs * -(-len(train_idx) // cfg.batch_size)
    model = compile_model(build_model(spec), spec, cfg.learning_rate, decay_steps=steps)
    target = labels.astype("float32") if spec.multilabel else labels
    val = None
    if val_idx is not None and cfg.epoch_validation:
        val = _dataset(data.images[val_idx], target[val_idx], cfg, training=False)

    steps_per_epoch = -(-len(train_idx) // cfg.batch_size)

    class EpochLog(keras.callbacks.Callback):
        """Per-epoch metrics, and within an epoch a progress line every ``progress_seconds``."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = self.shown = time.time()
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            now = time.time()
            if now - self.shown < cfg.progress_seconds or batch + 1 == steps_per_epoch:
                return
            self.shown = now
            done = (batch + 1) / steps_per_epoch
            shown = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
            log(f"  epoch {self.epoch + 1}/{cfg.epochs}: step {batch + 1}/{steps_per_epoch}, {shown} "
                f"({now - self.started:.0f} s, ~{(now - self.started) * (1 - done) / done:.0f} s to go)")

        def on_epoch_end(self, epoch, logs=None):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
            log(f"  epoch {epoch + 1}/{cfg.epochs}: {shown} ({time.time() - self.started:.0f} s)")

    model.fit(_dataset(data.images[train_idx], target[train_idx], cfg, training=True), validation_data=val,
              epochs=cfg.epochs, verbose=0, shuffle=False, callbacks=[EpochLog()])  # shuffled by tf.data
    return model


def train(cfg: TrainConfig, *, log: Callable[[str], None] = print, command: str = "") -> dict:
    """Cross-validate, export, and return the model card."""
    started = time.time()
    data = load_prepared(cfg.data)
    if cfg.image_size and cfg.image_size != data.image_size:
        raise ConfigError(f"--image-size {cfg.image_size} differs from the prepared data's {data.image_size}: "
                         "prepare the data at the size you train on (pixels must match serving)")
    index, classes, groups, folds = split(data, cfg)
    labels = data.labels[cfg.task]
    spec = _spec(cfg, classes, data.image_size)
    log(f"{cfg.task}: {len(index)} images, {len(set(data.product_keys[index]))} products in {len(set(groups))} "
        f"groups, {len(classes)} classes; "
        f"{cfg.arch}/{cfg.mode} at {data.image_size} px, {cfg.folds} folds x {cfg.epochs} epochs")
    results, models, held_out = [], [], []
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    taxonomy = load_taxonomy(data.taxonomy_path) if cfg.task == "category" else None
    for fold in range(min(cfg.folds, cfg.max_folds_run or cfg.folds)):
        train_idx, val_idx = index[folds != fold], index[folds == fold]
        log(f"fold {fold + 1}/{cfg.folds}: train {len(train_idx)}, test {len(val_idx)}")
        model = _fit(cfg, spec, data, train_idx, val_idx, labels, log)
        plain = None
        if cfg.tta_flip:  # what the mirror image adds, on the same trained weights
            plain = fold_metrics(_scores(model, data.images[val_idx], spec.multilabel), labels[val_idx],
                                 list(data.product_keys[val_idx]), classes)
            model = flip_averaged(model)
        scores = _scores(model, data.images[val_idx], spec.multilabel)
        metrics = fold_metrics(scores, labels[val_idx], list(data.product_keys[val_idx]), classes)
        if plain:
            metrics["without_tta"] = {k: plain[k] for k in ("image_accuracy", "product_accuracy", "macro_f1")}
        if cfg.task == "category":
            metrics["hierarchy"] = hierarchy_accuracy([classes[i] for i in labels[val_idx]],
                                                      [classes[i] for i in scores.argmax(axis=1)], taxonomy)
        confusion += confusion_matrix(labels[val_idx], scores.argmax(axis=1), len(classes))
        held_out.append((scores, labels[val_idx], val_idx, fold))
        log(f"fold {fold + 1}: image accuracy {metrics['image_accuracy']:.4f}, "
            f"product accuracy {metrics['product_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}"
            + (f" (without the mirror image: image accuracy {plain['image_accuracy']:.4f})" if plain else ""))
        results.append(metrics)
        models.append(model)
    best = max(range(len(results)), key=lambda i: results[i]["product_accuracy"])
    final = models[best]
    if cfg.final_fit:
        final = _fit(cfg, spec, data, index, None, labels, log)
        final = flip_averaged(final) if cfg.tta_flip else final
    summary = table_one(results)
    if cfg.tta_flip:
        summary["mean_image_accuracy_without_tta"] = float(np.mean([r["without_tta"]["image_accuracy"]
                                                                    for r in results]))
    oof_scores, oof_labels = np.concatenate([h[0] for h in held_out]), np.concatenate([h[1] for h in held_out])
    calibration = calibrate(oof_scores, oof_labels, fitted_on=f"out-of-fold predictions of {len(held_out)} folds")
    log(f"calibration: temperature {calibration['temperature']}, ECE {calibration['ece_before']} -> "
        f"{calibration['ece_after']}")
    card = export_model(final, out=cfg.out, spec=spec, task=cfg.task, classes=classes, data_dir=cfg.data,
                        calibration=calibration,
                        train_config=asdict(cfg), metrics={"table_one": summary, "folds": results,
                                                           "exported": "final_fit" if cfg.final_fit
                                                           else f"fold {best + 1}"},
                        wall_seconds=time.time() - started, command=command,
                        command_explicit=explicit_command(asdict(cfg)))
    _plot_cross_validation(cfg, classes, confusion, card["model_id"])
    log(describe(write_onnx(cfg.out)))  # model.onnx for ONNX Runtime, checked against the Keras model
    # Every held-out prediction, as scored in training: error analysis, recalibration, and the
    # check that the exported artifact reproduces its fold's scores after reloading.
    np.savez_compressed(os.path.join(cfg.out, "cv_report", OUT_OF_FOLD),
                        example=np.concatenate([h[2] for h in held_out]),
                        fold=np.concatenate([np.full(len(h[2]), h[3]) for h in held_out]),
                        product=np.concatenate([data.product_keys[h[2]] for h in held_out]).astype(str),
                        label=oof_labels, scores=oof_scores.astype(np.float32))
    plot_reliability(oof_scores, apply_temperature(oof_scores, calibration["temperature"]), oof_labels,
                     os.path.join(cfg.out, "cv_report", "reliability.png"), f"{card['model_id']}: held-out folds")
    log(f"exported {cfg.out}: " + json.dumps({k: round(v, 4) for k, v in summary.items()}))
    return card


def _plot_cross_validation(cfg: TrainConfig, classes: list[str], confusion: np.ndarray, model_id: str) -> None:
    """Per-class accuracy and confusion matrix over all held-out folds, in <out>/cv_report/."""
    folder = os.path.join(cfg.out, "cv_report")
    os.makedirs(folder, exist_ok=True)
    totals = confusion.sum(axis=1)
    per_class = {c: (float(confusion[i, i] / totals[i]) if totals[i] else None) for i, c in enumerate(classes)}
    plot_per_class_accuracy(per_class, os.path.join(folder, "per_class_accuracy.png"),
                            f"{model_id}: per-class accuracy, held-out folds")
    plot_confusion(confusion, classes, os.path.join(folder, "confusion_matrix.png"),
                   f"{model_id}: confusion over held-out folds")
    with open(os.path.join(folder, "confusion.json"), "w", encoding="utf-8") as fh:
        json.dump({"classes": classes, "counts": confusion.tolist(), "per_class_accuracy": per_class}, fh, indent=1)
