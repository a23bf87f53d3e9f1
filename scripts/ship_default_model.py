"""Copy an exported model into its shipped profile's folder (pipeline/model_profiles.py): a single-task
export into models/compact/<task>/, a multi-task export into models/default/multitask/.

The copy drops optimizer state (an uncompiled clone) and training-only files, keeping
model.keras, labels.json, model_card.json, label_quality.json, transform_fn/ and cv_report/ (its plots).
    python scripts/ship_default_model.py EXPORT_DIR [--float16 --data PREPARED_DIR]

``--float16`` stores the weights as float16 (half the size; they load into float32 variables)
and, with ``--data``, measures every head's accuracy on the exported fold's held-out images
with both copies; the figures go into the shipped card (``storage``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _held_out_accuracy(model_file: Path, source: str, card: dict, data_dir: str) -> dict[str, float]:
    """Accuracy per head (or of the one task) on the exported fold's held-out images."""
    import keras

    import models.architectures  # noqa: F401 - registers the custom layers
    from models.data import load_prepared

    oof = np.load(Path(source) / "cv_report" / "out_of_fold.npz")
    fold = int(card["metrics"]["exported"].split()[1]) - 1
    rows = oof["fold"] == fold
    data = load_prepared(data_dir)
    outputs = keras.models.load_model(model_file, compile=False).predict(data.images[oof["example"][rows]],
                                                                         batch_size=128, verbose=0)
    if not isinstance(outputs, dict):
        outputs, labels = {card["task"]: outputs}, {card["task"]: oof["label"][rows]}
    else:
        labels = {t: oof[f"{t}_label"][rows] for t in outputs}
    result = {}
    for task, scores in outputs.items():
        known = labels[task] >= 0
        result[task] = round(float((np.asarray(scores)[known].argmax(axis=1) == labels[task][known]).mean()), 4)
    return result


def ship(source: str, *, float16: bool = False, data: str | None = None) -> Path:
    from models.export import load_exported, serving_copy, store_float16

    model, card = load_exported(source)
    # Profiles (pipeline/model_profiles.py): single-task exports are the compact profile's.
    target = ROOT / "models" / ("default" if card["task"] == "multitask" else "compact") / card["task"]
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    serving_copy(model).save(target / "model.keras")
    storage = {"weights": "float32"}
    if float16:
        full = target / "model.float32.keras"
        (target / "model.keras").rename(full)
        store_float16(str(full), str(target / "model.keras"))
        storage = {"weights": "float16 (loaded into float32 variables)"}
        if data:
            storage["held_out_accuracy_float32"] = _held_out_accuracy(full, source, card, data)
            storage["held_out_accuracy_float16"] = _held_out_accuracy(target / "model.keras", source, card, data)
        full.unlink()
    for name in ("labels.json", "model_card.json", "label_quality.json"):
        if (Path(source) / name).is_file():  # label_quality.json: multi-task exports (models/label_quality.py)
            shutil.copy(Path(source) / name, target / name)
    for folder in ("transform_fn", "cv_report"):
        if (Path(source) / folder).is_dir():  # out-of-fold scores stay with the export (MBs)
            shutil.copytree(Path(source) / folder, target / folder, ignore=shutil.ignore_patterns("*.npz"))
    card_path = target / "model_card.json"
    card = json.loads(card_path.read_text())
    card["shipped_from"] = str(source)
    card["storage"] = storage
    if "command_explicit" not in card:  # cards written before it was recorded
        from models.config import explicit_command

        card["command_explicit"] = explicit_command(card["train_config"])
    card_path.write_text(json.dumps(card, indent=2))
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Ship exported models as the package's defaults.")
    parser.add_argument("exports", nargs="+")
    parser.add_argument("--float16", action="store_true", help="store the weights as float16")
    parser.add_argument("--data", default=None, help="the prepared folder: measure float32 vs float16 first")
    args = parser.parse_args()
    for folder in args.exports:
        shipped = ship(folder, float16=args.float16, data=args.data)
        print(f"shipped {shipped}: " + json.dumps(json.loads((shipped / 'model_card.json').read_text())['storage']))
