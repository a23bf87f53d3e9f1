"""One fold of a multi-task cross-validation run as an export of its own (``export_fold``): the
benchmarks score each example with the model of the fold that held it out, as the shipped model
scores a catalog it never saw (benchmarks/bench_label_errors.py)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from models.export import CARD, serving_copy
from models.label_quality import from_out_of_fold
from models.multitask_fit import load_checkpoint
from pipeline.label_quality import FILE, write_heads
from schemas.taxonomy import load_taxonomy


def export_fold(run: str, fold: int, out: str) -> dict:
    """Fold ``fold`` of a multi-task cross-validation run (``fashion-enrich train`` output with its
    ``checkpoints/``) as an export of its own: that fold's model, with each head's temperature and
    label quality learned from the *other* folds' held-out predictions, so that it judges the
    examples it was never trained on as the shipped model judges a new catalog. Returns its card."""
    with open(os.path.join(run, CARD), encoding="utf-8") as fh:
        card = json.load(fh)
    if card.get("task") != "multitask":
        raise ValueError(f"{run}: not a multi-task export")
    oof = dict(np.load(os.path.join(run, "cv_report", "out_of_fold.npz")))
    classes = {h["task"]: tuple(h["classes"]) for h in card["heads"]}
    taxonomy = load_taxonomy(card.get("training_data", {}).get("taxonomy"))
    qualities, temperatures = from_out_of_fold(oof, classes, taxonomy, rows=oof["fold"] != fold,
                                               learned_from=f"out-of-fold predictions of the folds but {fold + 1}")
    os.makedirs(out, exist_ok=True)
    serving_copy(load_checkpoint(os.path.join(run, "checkpoints"), fold, compile=False)).save(
        os.path.join(out, "model.keras"))
    for name in ("labels.json", "transform_fn"):
        source = os.path.join(run, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(out, name), dirs_exist_ok=True)
        elif os.path.isfile(source):
            shutil.copy(source, out)
    card["model_id"] = f"{card['model_id']}-fold{fold + 1}"
    card["metrics"]["exported"] = f"fold {fold + 1}"
    for head in card["heads"]:
        if head["task"] in temperatures:
            head["calibration"] = {"method": "temperature", "temperature": temperatures[head["task"]],
                                   "fitted_on": f"out-of-fold predictions of the folds but {fold + 1}"}
    with open(os.path.join(out, CARD), "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)
    write_heads(qualities, os.path.join(out, FILE))
    return card
