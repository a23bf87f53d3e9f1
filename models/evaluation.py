"""Evaluation maths of the study, in plain numpy (no Beam, no TensorFlow).

* grouped k-fold assignment: no product (or near-duplicate group) in two folds;
* the study's stratified product-level sub-sampling to a fraction with a per-class floor
  (its minimum class count is applied by the TFT vocabulary in :mod:`models.data`);
* per-product aggregation with the cumulative maximum over a product's image scores;
* metrics: accuracy, macro F1, per-class accuracy, hierarchy-aware accuracy (a prediction
  that is the true node's parent or child is counted apart from a plain miss), and the
  Table I summary over folds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from schemas.taxonomy import Relation, Taxonomy


# -- splits and sampling -------------------------------------------------------------------
def leakage_groups(groups: Sequence[str], hashes: Sequence[str], phashes: Sequence[str] | None = None) -> list[str]:
    """Merge groups that share an image (same content hash under different products or ids) and,
    given perceptual hashes, groups with near-duplicate images (``pipeline.grouping``), so that
    no image has a copy on the other side of a fold. Returns one label per sample."""
    from pipeline.grouping import UnionFind, near_duplicate_pairs

    sets = UnionFind()
    for group, digest in zip(groups, hashes):
        if digest:
            sets.union("g:" + group, "h:" + digest)
    for i, j in near_duplicate_pairs(phashes or []):
        sets.union("g:" + groups[i], "g:" + groups[j])
    return [sets.find("g:" + g) for g in groups]


def grouped_folds(groups: Sequence[str], k: int = 3, *, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per sample; every sample of a group lands in the same fold.

    Groups are shuffled, then placed largest first into the fold with the fewest samples,
    so folds stay balanced even when some products have many images.
    """
    if k < 2:
        raise ValueError("k must be at least 2")
    sizes = Counter(groups)
    if len(sizes) < k:
        raise ValueError(f"{len(sizes)} groups cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    order = list(sizes)
    rng.shuffle(order)
    order.sort(key=lambda g: -sizes[g])  # stable: shuffled within equal sizes
    load = [0] * k
    fold_of: dict[str, int] = {}
    for group in order:
        fold = min(range(k), key=lambda f: (load[f], f))
        fold_of[group] = fold
        load[fold] += sizes[group]
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def subsample_products(labels: Sequence[str], groups: Sequence[str], *, fraction: float, floor: int,
                       seed: int = 0) -> np.ndarray:
    """Indices kept by stratified product-level sub-sampling.

    Per class, ``fraction`` of its products are kept (at least ``floor`` products, or all of
    them if it has fewer); all images of a kept product are kept. A product's class is its
    first image's label.
    """
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    rng = np.random.default_rng(seed)
    products_by_class: dict[str, list[str]] = defaultdict(list)
    first_label: dict[str, str] = {}
    for label, group in zip(labels, groups):
        if group not in first_label:
            first_label[group] = label
            products_by_class[label].append(group)
    kept: set[str] = set()
    for label in sorted(products_by_class):
        products = products_by_class[label]
        n = min(len(products), max(floor, int(round(fraction * len(products)))))
        kept.update(rng.choice(products, size=n, replace=False).tolist())
    return np.array([i for i, g in enumerate(groups) if g in kept], dtype=np.int64)


# -- per-product aggregation -----------------------------------------------------------------
def cumulative_max(scores: np.ndarray, groups: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(product ids in first-seen order, element-wise max of their images' score vectors)."""
    index: dict[str, int] = {}
    for g in groups:
        index.setdefault(g, len(index))
    out = np.full((len(index), scores.shape[1]), -np.inf, dtype=np.float64)
    rows = np.fromiter((index[g] for g in groups), dtype=np.int64, count=len(groups))
    np.maximum.at(out, rows, scores)
    return list(index), out


# -- metrics ---------------------------------------------------------------------------------
def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over the classes present in y_true or y_pred."""
    f1s = []
    for c in range(num_classes):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """Recall per class: the share of each class's samples predicted correctly."""
    out: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        mask = y_true == c
        out[name] = float(np.mean(y_pred[mask] == c)) if mask.any() else None
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def hierarchy_accuracy(true_nodes: Sequence[str], pred_nodes: Sequence[str], taxonomy: Taxonomy) -> dict[str, float]:
    """Shares of exact hits; near misses where the prediction is the true node's ``parent`` (too
    coarse) or one of its ``child`` nodes (too specific), also summed as ``parent_or_child``; other
    ``same_branch`` predictions (further ancestors or descendants); and unrelated ``miss``es.
    exact + parent_or_child + same_branch + miss = 1."""
    counts = Counter()
    for truth, pred in zip(true_nodes, pred_nodes):
        relation = taxonomy.relation(truth, pred)
        if relation is Relation.SAME:
            counts["exact"] += 1
        elif relation is Relation.PARENT:
            counts["parent"] += 1
        elif relation is Relation.CHILD:
            counts["child"] += 1
        elif relation in (Relation.ANCESTOR, Relation.DESCENDANT):
            counts["same_branch"] += 1
        else:
            counts["miss"] += 1
    counts["parent_or_child"] = counts["parent"] + counts["child"]
    total = max(1, len(true_nodes))
    return {k: counts[k] / total for k in ("exact", "parent", "child", "parent_or_child", "same_branch", "miss")}


def class_scores(raw: np.ndarray, sigmoid: bool) -> np.ndarray:
    """Model outputs as one column per class: a sigmoid P(positive) becomes [1 - p, p]."""
    return np.concatenate([1 - raw, raw], axis=1) if sigmoid else raw


def fold_metrics(scores: np.ndarray, y_true: np.ndarray, groups: Sequence[str], classes: Sequence[str]) -> dict:
    """Per-image and per-product (cumulative max) accuracy, macro F1 and per-class accuracy."""
    y_pred = scores.argmax(axis=1)
    products, product_scores = cumulative_max(scores, groups)
    truth_of = dict(zip(groups, y_true))
    product_truth = np.array([truth_of[p] for p in products])
    return {
        "images": len(y_true),
        "products": len(products),
        "image_accuracy": float(np.mean(y_pred == y_true)),
        "product_accuracy": float(np.mean(product_scores.argmax(axis=1) == product_truth)),
        "macro_f1": macro_f1(y_true, y_pred, len(classes)),
        "per_class_accuracy": per_class_accuracy(y_true, y_pred, classes),
    }


def table_one(folds: list[dict]) -> dict[str, float]:
    """The study's Table I columns over k folds. "Best fold" is one fold, the one with the best
    per-product accuracy (the fold whose model is exported): both best-fold columns are that
    fold's, so they describe one model rather than the maxima of two different folds."""
    best = max(folds, key=lambda f: f["product_accuracy"])
    return {
        "best_fold_image_accuracy": best["image_accuracy"],
        "best_fold_product_accuracy": best["product_accuracy"],
        "mean_product_accuracy": float(np.mean([f["product_accuracy"] for f in folds])),
        "mean_image_accuracy": float(np.mean([f["image_accuracy"] for f in folds])),
        "mean_macro_f1": float(np.mean([f["macro_f1"] for f in folds])),
    }
