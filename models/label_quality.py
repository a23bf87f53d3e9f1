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
* **reliable categories** (the gender head, with category labels on the same examples): the
  category nodes, each pooled over its subtree, where the gender head's held-out accuracy on
  MALE and FEMALE products (the only labels it can dispute: UNISEX is compatible with both) is at
  least :data:`RELIABLE_ACCURACY` on :data:`RELIABLE_MIN` or more examples.
"""

from __future__ import annotations

import numpy as np

from models.calibration import apply_temperature, fit_temperature
from models.evaluation import confusion_matrix
from pipeline.label_quality import DEFAULT_THRESHOLD, HeadQuality
from schemas.taxonomy import Taxonomy

CONFUSABLE_SHARE = 0.10
CONFUSABLE_MIN = 5
MINORITY_SHARE = 0.25
RELIABLE_ACCURACY = 0.8
RELIABLE_MIN = 30


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
        heads[task] = HeadQuality(classes=names, thresholds=class_thresholds(probs, y, names),
                                  confusable=confusable_pairs(probs, y, names) if task == "category" else (),
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
