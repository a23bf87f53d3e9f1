"""``fashion-enrich train --task multitask``: one backbone, a softmax head per task, grouped k-fold.

Every example labelled for at least one head takes part; a head learns only from the examples
that carry its label (masked losses, :mod:`models.multitask`). Folds are grouped as for a single
task (:mod:`models.folds`), over the union of the labelled catalogs. Each fold warms the heads on
cached frozen-backbone features, then fine-tunes the whole network with a checkpoint per epoch
(:mod:`models.multitask_fit`); ``resume=True`` continues an interrupted run from its checkpoints
(and skips the folds already scored). Per head: Table I columns, accuracy per source (retailer),
a temperature fitted on the out-of-fold scores, per-class plots and the reliability diagram in
``<out>/cv_report/<task>/``; every held-out score in ``cv_report/out_of_fold.npz``, and what
they say of each head in ``label_quality.json`` (:mod:`models.label_quality`). The fold with the
best mean image accuracy over the heads is exported (:func:`models.export.export_multitask`), or,
with ``final_fit``, a model trained on all.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from models.architectures import ModelSpec
from models.calibration import calibrate
from models.config import TrainConfig, explicit_command
from models.data import Prepared, load_prepared
from models.evaluation import confusion_matrix, fold_metrics, hierarchy_accuracy, table_one
from models.folds import split
from models.label_quality import write_for_export
from models.multitask import Head
from models.multitask_fit import (
    checkpoint_paths,
    fine_tune,
    frozen_features,
    head_scores,
    labelled,
    load_checkpoint,
    new_model,
    saved_epochs,
    warm_heads,
)
from models.onnx_export import describe, write_onnx
from pipeline.options import ConfigError
from pipeline.temperature import apply_temperature


def heads_of(data: Prepared, cfg: TrainConfig) -> tuple[Head, ...]:
    heads = []
    for task in cfg.head_tasks:
        classes = data.classes(task)
        if len(classes) < 2 or not (data.labels[task] >= 0).any():
            raise ConfigError(f"head {task!r}: the prepared data has no labels with two or more classes for it")
        heads.append(Head(task, tuple(classes)))
    return tuple(heads)


def head_metrics(data: Prepared, head: Head, scores: np.ndarray, index: np.ndarray, taxonomy=None) -> dict | None:
    """One head's metrics on the examples of ``index`` that carry its label, and per source."""
    pos = labelled(data, head.task, index)
    if not len(pos):
        return None
    truth, chosen = data.labels[head.task][index[pos]], scores[pos]
    metrics = fold_metrics(chosen, truth, list(data.product_keys[index[pos]]), head.classes)
    hits = chosen.argmax(axis=1) == truth
    sources = data.retailers[index[pos]]
    metrics["per_source_accuracy"] = {str(s): float(hits[sources == s].mean()) for s in sorted(set(sources))}
    metrics["per_source_images"] = {str(s): int((sources == s).sum()) for s in sorted(set(sources))}
    if taxonomy is not None:
        metrics["hierarchy"] = hierarchy_accuracy([head.classes[i] for i in truth],
                                                  [head.classes[i] for i in chosen.argmax(axis=1)], taxonomy)
    return metrics


def _fold(cfg: TrainConfig, spec: ModelSpec, heads, data: Prepared, train_idx, fold: int, *, resume: bool, log):
    """The fold's trained model, from its checkpoint where ``resume`` finds one."""
    folder = os.path.join(cfg.out, "checkpoints")
    done = saved_epochs(folder, fold) if resume else 0
    if done:
        log(f"  resuming from {checkpoint_paths(folder, fold)[0]} after epoch {done}")
        model = load_checkpoint(folder, fold)
    else:
        model = new_model(spec, heads, cfg, steps=cfg.epochs * -(-len(train_idx) // cfg.batch_size))
        if cfg.warmup_epochs:
            features = frozen_features(data, cfg.data, spec, model, log)
            warm_heads(model, heads, features, data, train_idx, cfg, log)
    model = fine_tune(model, heads, data, train_idx, cfg, fold=fold, folder=folder, first_epoch=done, log=log)
    if cfg.epochs == 0:  # heads only: nothing was checkpointed by fine-tuning
        os.makedirs(folder, exist_ok=True)
        model.save(checkpoint_paths(folder, fold)[0])
    return model


def train_multitask(cfg: TrainConfig, *, log: Callable[[str], None] = print, command: str = "",
                    resume: bool = False) -> dict:
    """Cross-validate the multi-task network, export it, and return its model card."""
    from schemas.taxonomy import load_taxonomy

    started = time.time()
    data = load_prepared(cfg.data)
    if cfg.image_size and cfg.image_size != data.image_size:
        raise ConfigError(f"--image-size {cfg.image_size} differs from the prepared data's {data.image_size}")
    heads = heads_of(data, cfg)
    index, _, groups, folds = split(data, cfg)
    spec = ModelSpec(cfg.arch, mode=cfg.mode, image_size=data.image_size, num_outputs=2, weights=cfg.weights,
                     width=cfg.width)
    taxonomy = load_taxonomy(data.taxonomy_path) if "category" in cfg.head_tasks else None
    log(f"multitask ({', '.join(f'{h.task} {len(h.classes)}' for h in heads)}): {len(index)} images in "
        f"{len(set(groups))} groups; {cfg.arch}/{cfg.mode} at {data.image_size} px, {cfg.folds} folds x "
        f"{cfg.warmup_epochs} head epochs + {cfg.epochs} fine-tuning epochs ({cfg.precision})")
    if cfg.precision == "bfloat16":
        import keras

        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    results, held_out = [], []
    scored = os.path.join(cfg.out, "checkpoints")
    for fold in range(min(cfg.folds, cfg.max_folds_run or cfg.folds)):
        train_idx, val_idx = index[folds != fold], index[folds == fold]
        saved = os.path.join(scored, f"fold{fold}-scores.npz")
        if resume and os.path.isfile(saved):
            log(f"fold {fold + 1}/{cfg.folds}: scored in an earlier run ({saved})")
            scores = dict(np.load(saved))
        else:
            log(f"fold {fold + 1}/{cfg.folds}: train {len(train_idx)}, test {len(val_idx)}")
            model = _fold(cfg, spec, heads, data, train_idx, fold, resume=resume, log=log)
            scores = head_scores(model, heads, data.images[val_idx])
            np.savez(saved, **scores)
        metrics = {h.task: head_metrics(data, h, scores[h.task], val_idx, taxonomy if h.task == "category" else None)
                   for h in heads}
        log(f"fold {fold + 1}: " + ", ".join(f"{t} {m['image_accuracy']:.4f}" for t, m in metrics.items() if m))
        results.append(metrics)
        held_out.append((scores, val_idx, fold))
    best = max(range(len(results)), key=lambda i: np.mean([m["image_accuracy"] for m in results[i].values() if m]))
    if cfg.final_fit:
        model = _fold(cfg, spec, heads, data, index, cfg.folds, resume=resume, log=log)
    else:
        model = load_checkpoint(scored, best, compile=False)  # weights only: no optimizer state to restore
    report = _head_reports(cfg, data, heads, results, held_out)
    from models.export import export_multitask

    card = export_multitask(model, out=cfg.out, spec=spec, heads=heads, data_dir=cfg.data, report=report,
                            train_config=asdict(cfg), exported="final_fit" if cfg.final_fit else f"fold {best + 1}",
                            wall_seconds=time.time() - started, command=command,
                            command_explicit=explicit_command(asdict(cfg)))
    _write_out_of_fold(cfg, data, heads, held_out)
    write_for_export(cfg.out)  # label_quality.json, from the out-of-fold predictions just written
    log(describe(write_onnx(cfg.out)))  # model.onnx for ONNX Runtime, checked against the Keras model
    log(f"exported {cfg.out}: " + json.dumps({t: round(r["table_one"]["mean_image_accuracy"], 4)
                                              for t, r in report.items()}))
    return card


def _head_reports(cfg: TrainConfig, data: Prepared, heads, results, held_out) -> dict:
    """Per head: Table I, mean accuracy per source, calibration, folds; plots in cv_report/<task>/."""
    from models.report import plot_confusion, plot_per_class_accuracy, plot_reliability

    report = {}
    for h in heads:
        folds = [r[h.task] for r in results if r[h.task]]
        scores = np.concatenate([s[h.task][labelled(data, h.task, idx)] for s, idx, _ in held_out])
        truth = np.concatenate([data.labels[h.task][idx[labelled(data, h.task, idx)]] for _, idx, _ in held_out])
        calibration = calibrate(scores, truth, fitted_on=f"out-of-fold predictions of {len(held_out)} folds")
        sources = sorted({s for f in folds for s in f["per_source_accuracy"]})
        report[h.task] = {
            "table_one": table_one(folds),
            "mean_per_source_accuracy": {s: float(np.mean([f["per_source_accuracy"][s] for f in folds
                                                           if s in f["per_source_accuracy"]])) for s in sources},
            "calibration": calibration,
            "folds": folds,
        }
        folder = os.path.join(cfg.out, "cv_report", h.task)
        os.makedirs(folder, exist_ok=True)
        confusion = confusion_matrix(truth, scores.argmax(axis=1), len(h.classes))
        totals = confusion.sum(axis=1)
        per_class = {c: (float(confusion[i, i] / totals[i]) if totals[i] else None) for i, c in enumerate(h.classes)}
        plot_per_class_accuracy(per_class, os.path.join(folder, "per_class_accuracy.png"),
                                f"{h.task}: per-class accuracy, held-out folds")
        plot_confusion(confusion, list(h.classes), os.path.join(folder, "confusion_matrix.png"),
                       f"{h.task}: confusion over held-out folds")
        plot_reliability(scores, apply_temperature(scores, calibration["temperature"]), truth,
                         os.path.join(folder, "reliability.png"), f"{h.task}: held-out folds")
        with open(os.path.join(folder, "confusion.json"), "w", encoding="utf-8") as fh:
            json.dump({"classes": list(h.classes), "counts": confusion.tolist(), "per_class_accuracy": per_class},
                      fh, indent=1)
    return report


def _write_out_of_fold(cfg: TrainConfig, data: Prepared, heads, held_out) -> None:
    """Every held-out prediction of every head (labels -1 where an example has none)."""
    examples = np.concatenate([idx for _, idx, _ in held_out])
    arrays = {"example": examples, "fold": np.concatenate([np.full(len(idx), f) for _, idx, f in held_out]),
              "product": data.product_keys[examples].astype(str), "retailer": data.retailers[examples].astype(str)}
    for h in heads:
        arrays[f"{h.task}_label"] = data.labels[h.task][examples]
        arrays[f"{h.task}_scores"] = np.concatenate([s[h.task] for s, _, _ in held_out]).astype(np.float32)
    np.savez_compressed(os.path.join(cfg.out, "cv_report", "out_of_fold.npz"), **arrays)


def discard_checkpoints(out: str) -> None:
    """Remove ``<out>/checkpoints`` (after a successful export, when asked)."""
    shutil.rmtree(os.path.join(out, "checkpoints"), ignore_errors=True)
