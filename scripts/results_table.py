"""Print the models/RESULTS.md table rows from exported models' cards.

    python scripts/results_table.py MODEL_DIR [MODEL_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _parent_child(folder: str, folds: list[dict]) -> tuple[float, float] | None:
    """Mean shares of predictions that are the true node's parent / one of its children: from the
    folds (cards since the split was recorded) or recounted from the held-out confusion matrix."""
    if all("parent" in f["hierarchy"] for f in folds):
        return tuple(sum(f["hierarchy"][k] for f in folds) / len(folds) for k in ("parent", "child"))
    confusion = Path(folder) / "cv_report" / "confusion.json"
    if not confusion.is_file():
        return None
    import numpy as np

    from models.evaluation import hierarchy_accuracy
    from schemas.taxonomy import load_taxonomy

    matrix = json.loads(confusion.read_text())
    classes, counts = np.array(matrix["classes"]), np.array(matrix["counts"])
    truth, pred = np.nonzero(counts)  # one (truth, prediction) pair per cell, repeated by its count
    shares = hierarchy_accuracy(np.repeat(classes[truth], counts[truth, pred]),
                                np.repeat(classes[pred], counts[truth, pred]), load_taxonomy())
    return shares["parent"], shares["child"]


def row(folder: str) -> str:
    card = json.loads((Path(folder) / "model_card.json").read_text())
    cfg, t1 = card["train_config"], card["metrics"]["table_one"]
    folds = card["metrics"]["folds"]
    hierarchy = ""
    if card["task"] == "category" and all("hierarchy" in f for f in folds):
        near = sum(f["hierarchy"]["parent_or_child"] for f in folds) / len(folds)
        split = _parent_child(folder, folds)
        hierarchy = f"{near:.3f}" + (f" ({split[0]:.3f} / {split[1]:.3f})" if split else "")
    sub = f"{cfg['subsample_fraction']:.2f}" if cfg.get("subsample_fraction") else "-"
    images = sum(f["images"] for f in folds)
    augment = f"{cfg.get('augment_range', 0.25):g}" if cfg["augment"] else "no"  # shift/zoom range; flip always
    calibration = card.get("calibration") or {}
    ece = (f"{calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f} (T {calibration['temperature']:.2f})"
           if calibration.get("method") == "temperature" else "-")
    mode = card["mode"] + (" + flip TTA" if cfg.get("tta_flip") else "")
    mean_image = f"{t1['mean_image_accuracy']:.3f}"
    if "mean_image_accuracy_without_tta" in t1:  # what the mirror image added, on the same weights
        mean_image += f" ({t1['mean_image_accuracy_without_tta']:.3f} without TTA)"
    return (f"| {card['task']} | {card['architecture']} | {mode} | {augment} "
            f"| {card['image_size']} | {cfg['epochs']} | {sub} | {images} "
            f"| {t1['best_fold_image_accuracy']:.3f} | {mean_image} "
            f"| {t1['best_fold_product_accuracy']:.3f} | {t1['mean_product_accuracy']:.3f} | {t1['mean_macro_f1']:.3f} "
            f"| {hierarchy or '-'} | {ece} | {card['parameters']:,} | {card['wall_seconds'] / 60:.0f} min |")


HEADER = ("| task | architecture | mode | augment | px | epochs | subsample | images | best-fold image acc "
          "| mean image acc | best-fold product acc | mean product acc | mean macro F1 "
          "| parent/child share (parent / child) | ECE before -> after calibration | parameters "
          "| wall time |\n|" + "---|" * 17)

if __name__ == "__main__":
    print(HEADER)
    for folder in sys.argv[1:]:
        print(row(folder))
