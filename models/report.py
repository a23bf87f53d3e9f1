"""``fashion-enrich evaluate``: metrics and plots of an exported model on a prepared folder.

Writes ``<report>/metrics.json`` (accuracy per image and per product with the cumulative max,
macro F1, per-class accuracy, confusion matrix, hierarchy-aware accuracy for categories) and
PNG plots (per-class accuracy bars, confusion matrix). Evaluate on data the model was not
trained on (another retailer, a held-out catalog): the cross-validation figures in the
model card are the unbiased ones for the training data.
"""

from __future__ import annotations

import json
import os

import numpy as np

from models.calibration import expected_calibration_error, reliability
from models.config import config_from_card
from models.data import load_prepared
from models.evaluation import class_scores, confusion_matrix, fold_metrics, hierarchy_accuracy
from models.export import load_exported
from models.folds import split
from pipeline import plots
from pipeline.options import ConfigError
from pipeline.temperature import apply_temperature
from schemas.taxonomy import load_taxonomy


def plot_per_class_accuracy(per_class: dict[str, float | None], path: str, title: str) -> None:
    plots.save(plots.bars(per_class, title, "accuracy (recall)", ylim=(0, 1)), path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: str, title: str) -> None:
    plots.save(plots.confusion(matrix, classes, None, title), path)


def plot_reliability(scores: np.ndarray, calibrated: np.ndarray, labels: np.ndarray, path: str, title: str) -> None:
    """Reliability diagram of the scores before and after calibration."""
    plots.save(plots.reliability(reliability(scores, labels), reliability(calibrated, labels), title), path)


def _recomputed_folds(card: dict, data, data_dir: str):
    """(training config, example indices, classes, fold per example, the exported fold) of an
    exported model: its folds recomputed from its card on the prepared folder it was trained on."""
    cfg = config_from_card(card["train_config"], data=data_dir)
    index, classes, _, folds = split(data, cfg)
    return cfg, index, classes, folds, int(card["metrics"]["exported"].split()[1]) - 1


def evaluate(model_dir: str, data_dir: str, report_dir: str) -> dict:
    """Metrics of an export on a prepared folder; a multi-task export is measured head by head
    (``{"model", "data", "heads": {task: metrics}}``, plots in ``<report>/<task>/``)."""
    model, card = load_exported(model_dir)
    data = load_prepared(data_dir)
    if data.image_size != card["image_size"]:
        raise ConfigError(f"model expects {card['image_size']} px, the data was prepared at {data.image_size} px")
    if card["task"] != "multitask":
        head = {"task": card["task"], "classes": card["classes"], "calibration": card.get("calibration", {})}
        index, truth = _labelled(data, head, data_dir)
        raw = class_scores(model.predict(data.images[index], batch_size=256, verbose=0),
                           card["output"].startswith("sigmoid"))
        return _head_report(raw, truth, index, data, head, card["model_id"], data_dir, report_dir)
    # One forward pass over every image labelled for any head, then each head on its own images.
    heads = [h for h in card["heads"] if (data.labels.get(h["task"], np.zeros(0)) >= 0).any()]
    if not heads:
        raise ConfigError(f"no examples in {data_dir} carry a label for any head of {model_dir}")
    chosen = {h["task"]: _labelled(data, h, data_dir, strict=False) for h in heads}
    union = np.unique(np.concatenate([c[0] for c in chosen.values()]))
    outputs = model.predict(data.images[union], batch_size=256, verbose=0)
    result = {"model": card["model_id"], "data": data_dir, "heads": {}}
    for h in heads:
        index, truth = chosen[h["task"]]
        if not len(index):
            continue
        raw = np.asarray(outputs[h["task"]])[np.searchsorted(union, index)]
        result["heads"][h["task"]] = _head_report(raw, truth, index, data, h, f"{card['model_id']} {h['task']}",
                                                  data_dir, os.path.join(report_dir, h["task"]))
    with open(os.path.join(report_dir, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    return result


def _labelled(data, head: dict, data_dir: str, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(example indices, labels as the head's class ids) of the examples carrying one of its classes."""
    task, classes = head["task"], head["classes"]
    # Map the data's label ids onto the model's classes (vocabularies may differ across data sets).
    remap = np.array([classes.index(c) if c in classes else -1 for c in data.classes(task)] or [-1])
    ids = data.labels[task]
    index = np.flatnonzero(ids >= 0)
    truth = remap[ids[index]]
    index, truth = index[truth >= 0], truth[truth >= 0]
    if strict and len(index) == 0:
        raise ConfigError(f"no examples in {data_dir} carry one of the model's {task} classes")
    return index, truth


def _head_report(scores, truth, index, data, head: dict, title: str, data_dir: str, report_dir: str) -> dict:
    task, classes = head["task"], head["classes"]
    temperature = float((head.get("calibration") or {}).get("temperature", 1.0))
    calibrated = apply_temperature(scores, temperature)
    metrics = fold_metrics(calibrated, truth, list(data.product_keys[index]), classes)
    metrics["calibration"] = {"temperature": temperature,
                              "ece_before": round(expected_calibration_error(scores, truth), 4),
                              "ece_after": round(expected_calibration_error(calibrated, truth), 4)}
    predicted = scores.argmax(axis=1)
    hits = predicted == truth
    sources = data.retailers[index]
    metrics["per_source_accuracy"] = {str(r): float(hits[sources == r].mean()) for r in sorted(set(sources))}
    matrix = confusion_matrix(truth, predicted, len(classes))
    metrics["confusion_matrix"] = {"classes": classes, "counts": matrix.tolist()}
    if task == "category":
        metrics["hierarchy"] = hierarchy_accuracy([classes[t] for t in truth], [classes[p] for p in predicted],
                                                  load_taxonomy(data.taxonomy_path))
    metrics.update(model=title, data=data_dir)
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2)
    plot_per_class_accuracy(metrics["per_class_accuracy"], os.path.join(report_dir, "per_class_accuracy.png"),
                            f"{title}: per-class accuracy")
    plot_confusion(matrix, classes, os.path.join(report_dir, "confusion_matrix.png"), f"{title}: confusion matrix")
    plot_reliability(scores, calibrated, truth, os.path.join(report_dir, "reliability.png"),
                     f"{title}: reliability (T = {temperature})")
    return metrics


def calibrate_export(model_dir: str, data_dir: str) -> dict:
    """Fit the temperature of an exported model on its own held-out fold and store it in its card.

    The folds are recomputed from the card's training config on the same prepared folder, so
    only images the exported fold's model never trained on are used. Models trained before
    calibration existed get it this way; new trainings calibrate on out-of-fold predictions."""
    from models.calibration import calibrate
    from models.export import CARD

    model, card = load_exported(model_dir)
    if card["task"] == "multitask":
        raise ConfigError(f"{model_dir} is a multi-task export: train calibrated each head on its out-of-fold "
                          "scores (model_card.json heads[].calibration)")
    exported = card["metrics"].get("exported", "")
    if not exported.startswith("fold "):
        raise ConfigError(f"{model_dir} was trained on all the data ({exported}): no held-out fold to calibrate on")
    data = load_prepared(data_dir)
    trained_on = card.get("training_data", {}).get("examples")
    if trained_on is not None and trained_on != len(data.images):
        raise ConfigError(f"{data_dir} has {len(data.images)} examples, the model was trained on {trained_on}: "
                          "calibrate on the prepared folder it was trained on")
    cfg, index, classes, folds, fold = _recomputed_folds(card, data, data_dir)
    if classes != card["classes"]:
        raise ConfigError("the prepared folder's classes differ from the model's")
    held = index[folds == fold]
    scores = class_scores(model.predict(data.images[held], batch_size=256, verbose=0),
                          card["output"].startswith("sigmoid"))
    labels = data.labels[cfg.task][held]
    calibration = calibrate(scores, labels, fitted_on=f"held-out {exported} of the exported model")
    card["calibration"] = calibration
    with open(os.path.join(model_dir, CARD), "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)
    folder = os.path.join(model_dir, "cv_report")
    os.makedirs(folder, exist_ok=True)
    plot_reliability(scores, apply_temperature(scores, calibration["temperature"]), labels,
                     os.path.join(folder, "reliability.png"), f"{card['model_id']}: held-out {exported}")
    return calibration


def near_duplicate_leakage(model_dir: str, data_dir: str) -> dict:
    """How much near-duplicates between training and held-out folds inflate an exported model's
    held-out accuracy: its fold is recomputed as it was trained, and the held-out images are split
    into those with a perceptual near-duplicate in the training folds and the rest."""
    from pipeline.grouping import near_duplicate_pairs
    from pipeline.images.features import perceptual_hash

    model, card = load_exported(model_dir)
    exported = card["metrics"].get("exported", "")
    if not exported.startswith("fold "):
        raise ConfigError(f"{model_dir} has no held-out fold ({exported})")
    data = load_prepared(data_dir)
    cfg, index, _, folds, fold = _recomputed_folds(card, data, data_dir)
    phashes = [perceptual_hash(image) for image in data.images[index]]
    leaked = np.zeros(len(index), dtype=bool)
    for i, j in near_duplicate_pairs(phashes):
        if (folds[i] == fold) != (folds[j] == fold):  # one held out, the other trained on
            leaked[i if folds[i] == fold else j] = True
    held = np.flatnonzero(folds == fold)
    scores = model.predict(data.images[index[held]], batch_size=256, verbose=0)
    correct = scores.argmax(axis=1) == data.labels[cfg.task][index[held]]
    if scores.shape[1] == 1:  # sigmoid
        correct = (scores[:, 0] >= 0.5).astype(int) == data.labels[cfg.task][index[held]]
    mask = leaked[held]
    return {"model": card["model_id"], "held_out": int(len(held)), "with_train_near_duplicate": int(mask.sum()),
            "accuracy_all": round(float(correct.mean()), 4),
            "accuracy_without_near_duplicates": round(float(correct[~mask].mean()), 4) if (~mask).any() else None,
            "accuracy_on_near_duplicates": round(float(correct[mask].mean()), 4) if mask.any() else None}
