"""Learning an export's ``label_quality.json`` (:mod:`pipeline.label_quality`) from the
out-of-fold predictions of its cross-validation: what the pipeline needs to judge a retailer's
label with the model's calibrated probabilities.

Per head, from the held-out examples that carry its label (scores calibrated with the head's
temperature first, as the pipeline serves them):

* **thresholds**: each class's mean probability on its own held-out examples (confident
  learning's per-class threshold: a class the model finds hard gets a lower bar);
* **confusable** pairs (the category head: pairs in the hierarchy): two classes of which at
  least :data:`CONFUSABLE_SHARE` of either's held-out examples (and :data:`CONFUSABLE_MIN` or
  more) go to the other; the gender head's MALE/FEMALE errors are its reliability, below;
* **decision** (two-class heads with a minority class under :data:`MINORITY_SHARE`, e.g. KIDS):
  the minority class becomes the model's label from its share of the held-out examples instead
  of from 0.5: the class-balanced decision, as if the head had been trained with class weights
  (higher minority recall, lower minority precision);
* **error calibration** (:func:`error_calibration`): Platt scaling of the Bayes log-odds that a
  retailer's label is wrong, per label and overall, fitted on the held-out predictions with
  every incompatible label simulated as a wrong one: the model's small probabilities, which the
  estimate rests on, are not calibrated as its top ones are;
* **reliable categories** (the gender head, with category labels on the same examples): the
  category nodes, each pooled over its subtree, where the gender head's held-out accuracy on
  MALE and FEMALE products (the only labels it can dispute: UNISEX is compatible with both) is at
  least :data:`RELIABLE_ACCURACY` on :data:`RELIABLE_MIN` or more examples.
"""

from __future__ import annotations

import numpy as np

from models.calibration import fit_temperature
from models.evaluation import confusion_matrix
from pipeline.label_quality import DEFAULT_THRESHOLD, HeadQuality, Judge
from pipeline.temperature import apply_temperature
from schemas.taxonomy import Taxonomy

CONFUSABLE_SHARE = 0.10
CONFUSABLE_MIN = 5
MINORITY_SHARE = 0.25
RELIABLE_ACCURACY = 0.8
RELIABLE_MIN = 30
CALIBRATION_MIN = 30
PRIOR_STRENGTH = 10.0  # examples' worth of pull towards the overall recalibration (towards none for it)


def class_thresholds(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(round(float(probs[labels == i, i].mean()), 4) if (labels == i).any() else DEFAULT_THRESHOLD
                 for i in range(len(classes)))


def confusable_pairs(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    counts = confusion_matrix(labels, probs.argmax(axis=1), len(classes))
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    pairs = set()
    for a, b in zip(*np.nonzero((counts / totals >= CONFUSABLE_SHARE) & (counts >= CONFUSABLE_MIN))):
        if a != b:
            pairs.add(tuple(sorted((classes[a], classes[b]))))
    return tuple(sorted(pairs))


def minority_decision(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """(minority class, its share of the held-out examples) for a two-class head whose minority is
    under MINORITY_SHARE: the class-balanced decision (what class weights would do), which calls
    the minority from its prior instead of from 0.5."""
    if len(classes) != 2 or not len(labels):
        return ()
    minority = int(np.argmin(np.bincount(labels, minlength=2)))
    share = float((labels == minority).mean())
    return ((classes[minority], round(share, 4)),) if 0 < share < MINORITY_SHARE else ()


def error_calibration(probs: np.ndarray, labels: np.ndarray, judge: Judge) -> tuple[tuple[str, float, float], ...]:
    """(label, a, b) per label, and ("*", a, b) over all: Platt scaling of the Bayes log-odds that
    the label is wrong (:meth:`~pipeline.label_quality.Judge.error_log_odds`), fitted on held-out
    predictions: each example once with its own label (right) and once with every label
    incompatible with it (wrong, sharing one example's weight), right and wrong weighing the same
    (even prior odds; the run's error rate is added at serving time). A label gets its own pair
    where :data:`CALIBRATION_MIN` or more held-out examples carry it: the model's small
    probabilities are off by class (true KIDS products often get 0.01), not only overall."""
    names = judge.classes
    compatible = np.zeros((len(names), len(names)), bool)  # [label, class]: the label is right about the class
    for r, name in enumerate(names):
        compatible[r, judge.compatible(name)] = True
    mass = np.clip(probs.astype(np.float64) @ compatible.T, 1e-9, 1 - 1e-9)  # [example, label]
    x = np.log((1 - mass) / (mass * np.maximum((~compatible).sum(axis=1), 1)))
    wrong = ~compatible[:, labels].T  # [example, label]: the label is wrong for the example
    share = np.divide(1.0, wrong.sum(axis=1), out=np.zeros(len(labels)), where=wrong.any(axis=1))
    weight = wrong * share[:, None]  # each example's wrong labels share its weight
    found, overall = [], (0.0, 1.0)
    for r, name in [(None, "*"), *enumerate(names)]:
        right = np.ones(len(labels), bool) if r is None else labels == r
        wrong_w = weight if r is None else weight[:, [r]]
        if right.sum() < (1 if r is None else CALIBRATION_MIN) or not wrong_w.any():
            continue
        cols = slice(None) if r is None else [r]
        rows, which = np.nonzero(wrong_w)
        w = wrong_w[rows, which]
        own = x[np.nonzero(right)[0], labels[right]]
        features = np.r_[own, x[:, cols][rows, which]]
        fitted = _logistic(features, np.r_[np.zeros(len(own)), np.ones(len(rows))],
                           np.r_[np.ones(len(own)), w * len(own) / w.sum()], prior=overall)
        overall = fitted if r is None else overall
        found.append((name, *fitted))
    return tuple(sorted(found))  # "*" first, then the labels: the order label_quality.json reads back


def _logistic(x: np.ndarray, t: np.ndarray, w: np.ndarray, prior: tuple[float, float] = (0.0, 1.0),
              strength: float = PRIOR_STRENGTH) -> tuple[float, float]:
    """(a, b) minimising the weighted log-loss of sigmoid(a + b x) against ``t``, with a Gaussian
    prior pulling (a, b) towards ``prior`` (``strength`` examples' worth: it keeps separable data
    finite and a class with few examples near the overall fit); Newton's method."""
    design = np.c_[np.ones(len(x)), x]
    center = np.array(prior, dtype=float)

    def loss(beta):
        z = design @ beta
        return float(np.sum(w * (np.logaddexp(0.0, z) - t * z)) + strength / 2 * np.sum((beta - center) ** 2))

    beta = center.copy()
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        gradient = design.T @ (w * (p - t)) + strength * (beta - center)
        hessian = design.T @ (design * (w * p * (1 - p))[:, None]) + strength * np.eye(2)
        step, before = np.linalg.solve(hessian, gradient), loss(beta)
        while loss(beta - step) > before and np.abs(step).max() > 1e-12:  # damped: never uphill
            step = step / 2
        beta = beta - step
        if np.abs(step).max() < 1e-9:
            break
    return round(float(beta[0]), 4), round(float(beta[1]), 4)


def reliable_categories(gender_probs: np.ndarray, gender_labels: np.ndarray, categories: list[str | None],
                        taxonomy: Taxonomy) -> tuple[tuple[str, int, float], ...]:
    """(node, examples, accuracy) for each category node whose subtree's held-out gender accuracy
    reaches RELIABLE_ACCURACY on RELIABLE_MIN or more examples."""
    correct = gender_probs.argmax(axis=1) == gender_labels
    pooled: dict[str, list[bool]] = {}
    for node, hit in zip(categories, correct):
        if node in taxonomy:
            for member in (node, *taxonomy.ancestors(node)):
                pooled.setdefault(member, []).append(bool(hit))
    return tuple(sorted((node, len(hits), round(float(np.mean(hits)), 4)) for node, hits in pooled.items()
                        if len(hits) >= RELIABLE_MIN and np.mean(hits) >= RELIABLE_ACCURACY))


def learn(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray], classes: dict[str, tuple[str, ...]],
          temperatures: dict[str, float], *, taxonomy: Taxonomy, learned_from: str) -> dict[str, HeadQuality]:
    """task -> HeadQuality for the category, gender and age-group heads among ``scores``.

    ``scores[task]`` are the raw held-out softmax rows of every example, ``labels[task]`` their
    label ids (-1 where an example has none) and ``classes[task]`` the head's classes."""
    heads = {}
    for task in ("category", "gender", "age_group"):
        if task not in scores:
            continue
        known = labels[task] >= 0
        probs = apply_temperature(scores[task][known], temperatures.get(task, 1.0))
        y, names = labels[task][known], classes[task]
        reliable = None
        if task == "gender" and "category" in scores:
            disputable = labels[task] != (names.index("UNISEX") if "UNISEX" in names else -2)
            both = known & disputable & (labels["category"] >= 0)
            nodes = [classes["category"][i] for i in labels["category"][both]]
            reliable = reliable_categories(apply_temperature(scores[task][both], temperatures.get(task, 1.0)),
                                           labels[task][both], nodes, taxonomy)
        judge = Judge(names, taxonomy=taxonomy if task == "category" else None)
        heads[task] = HeadQuality(classes=names, thresholds=class_thresholds(probs, y, names),
                                  confusable=confusable_pairs(probs, y, names) if task == "category" else (),
                                  calibration=error_calibration(probs, y, judge),
                                  decision=minority_decision(probs, y, names),
                                  reliable_categories=reliable, learned_from=learned_from)
    return heads


def from_out_of_fold(oof: dict[str, np.ndarray], classes: dict[str, tuple[str, ...]], taxonomy: Taxonomy, *,
                     rows: np.ndarray | None = None,
                     learned_from: str) -> tuple[dict[str, HeadQuality], dict[str, float]]:
    """(task -> HeadQuality, task -> temperature) from the arrays of ``cv_report/out_of_fold.npz``
    (``<task>_scores``, ``<task>_label``), on ``rows`` (a boolean mask; default: all). Each head's
    temperature is fitted on the same rows first, as the export's own calibration is."""
    rows = np.ones(len(oof["fold"]), bool) if rows is None else rows
    tasks = [t for t in ("category", "gender", "age_group") if f"{t}_scores" in oof and t in classes]
    scores = {t: oof[f"{t}_scores"][rows] for t in tasks}
    labels = {t: oof[f"{t}_label"][rows] for t in tasks}
    temperatures = {t: fit_temperature(scores[t][labels[t] >= 0], labels[t][labels[t] >= 0]) for t in tasks}
    return learn(scores, labels, classes, temperatures, taxonomy=taxonomy, learned_from=learned_from), temperatures


def write_for_export(folder: str) -> dict[str, HeadQuality]:
    """(Re)write ``<folder>/label_quality.json`` of a multi-task export from its
    ``cv_report/out_of_fold.npz`` (every fold), as training writes it; returns it."""
    import json
    import os

    from pipeline.label_quality import FILE, write_heads
    from schemas.taxonomy import load_taxonomy

    with open(os.path.join(folder, "model_card.json"), encoding="utf-8") as fh:
        card = json.load(fh)
    oof = dict(np.load(os.path.join(folder, "cv_report", "out_of_fold.npz")))
    folds = len(set(oof["fold"].tolist()))
    qualities, _ = from_out_of_fold(oof, {h["task"]: tuple(h["classes"]) for h in card["heads"]},
                                    load_taxonomy(card.get("training_data", {}).get("taxonomy")),
                                    learned_from=f"out-of-fold predictions of {folds} folds")
    write_heads(qualities, os.path.join(folder, FILE))
    return qualities
