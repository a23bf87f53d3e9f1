"""Copy an exported model into models/default/<task>/ as served by `fashion-enrich run`.

The copy drops optimizer state (an uncompiled clone) and training-only files, keeping
model.keras, labels.json, model_card.json, transform_fn/ and cv_report/ (its plots).
    python scripts/ship_default_model.py EXPORT_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ship(source: str) -> Path:
    from models.export import load_exported, serving_copy

    model, card = load_exported(source)
    target = ROOT / "models" / "default" / card["task"]
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    serving_copy(model).save(target / "model.keras")
    for name in ("labels.json", "model_card.json"):
        shutil.copy(Path(source) / name, target / name)
    for folder in ("transform_fn", "cv_report"):
        if (Path(source) / folder).is_dir():  # out-of-fold scores stay with the export (MBs)
            shutil.copytree(Path(source) / folder, target / folder, ignore=shutil.ignore_patterns("*.npz"))
    card_path = target / "model_card.json"
    card = json.loads(card_path.read_text())
    card["shipped_from"] = str(source)
    if "command_explicit" not in card:  # cards written before it was recorded
        from models.config import explicit_command

        card["command_explicit"] = explicit_command(card["train_config"])
    card_path.write_text(json.dumps(card, indent=2))
    return target


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(f"shipped {ship(folder)}")
