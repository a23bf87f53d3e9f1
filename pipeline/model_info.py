"""An exported model as the pipeline sees it: :class:`ModelInfo`, read from the model card
(task, classes, input size, output kind, calibration temperature) and checked against the
artifact itself (the TFT vocabulary it was trained with, the units of its last layer), without
TensorFlow. ``default:<task>`` names a model shipped inside the package, resolved where it is
loaded (the launcher, or each worker in its own installation).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

DEFAULT_PREFIX = "default:"  # a shipped model, resolved where it is loaded (launcher or worker)


def resolve_model_path(path: str) -> str:
    """``default:<task>`` -> the shipped folder inside this installation; other paths unchanged."""
    if path.startswith(DEFAULT_PREFIX):
        from models.defaults import default_model_dir

        return str(default_model_dir(path[len(DEFAULT_PREFIX):]))
    return path


def _output_units(model_dir: str) -> int | None:
    """Units of the model's last Dense layer, read from the .keras archive (no TensorFlow)."""
    with FileSystems.open(FileSystems.join(model_dir, "model.keras"), compression_type="uncompressed") as fh:
        with zipfile.ZipFile(io.BytesIO(fh.read())) as archive:
            config = json.loads(archive.read("config.json"))
    dense = [layer for layer in config.get("config", {}).get("layers", []) if layer.get("class_name") == "Dense"]
    return dense[-1]["config"]["units"] if dense else None


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline needs to know about an exported model (from its model card)."""

    task: str
    path: str  # a folder (local or gs://), or default:<task> for a shipped model
    model_id: str
    classes: tuple[str, ...]
    image_size: int
    sigmoid: bool
    temperature: float = 1.0  # calibration (models.calibration), applied to every score

    @classmethod
    def read(cls, path: str) -> ModelInfo:
        folder = resolve_model_path(path)
        with FileSystems.open(FileSystems.join(folder, "model_card.json")) as fh:
            card = json.loads(fh.read())
        info = cls(task=card["task"], path=path, model_id=card["model_id"], classes=tuple(card["classes"]),
                   image_size=int(card["image_size"]), sigmoid=card["output"].startswith("sigmoid"),
                   temperature=float((card.get("calibration") or {}).get("temperature", 1.0)))
        vocabulary = transform_vocabulary(folder, info.task)
        if vocabulary is not None and tuple(vocabulary) != info.classes:
            raise ValueError(f"{path}: the card's classes differ from the {info.task!r} vocabulary of the "
                             f"transform output it was trained with (transform_fn/): {list(info.classes)[:5]}... "
                             f"vs {vocabulary[:5]}...")
        expected = 1 if info.sigmoid else len(info.classes)
        units = _output_units(folder)
        if units is not None and units != expected:
            raise ValueError(f"{path}: the model has {units} outputs but its card lists {expected}")
        return info


def transform_vocabulary(folder: str, task: str) -> list[str] | None:
    """The task's label vocabulary from the export's TFT transform output (score order), or None
    where the export has none for the task (the person task's two classes are fixed).

    Read from the transform output's own asset map and vocabulary file (one label per line) through
    Beam's FileSystems, so a gs:// model needs no copy and workers need no tensorflow-transform."""
    root = FileSystems.join(folder, "transform_fn")
    asset_map = FileSystems.join(root, "transformed_metadata", "asset_map")
    if not FileSystems.exists(asset_map):
        return None
    with FileSystems.open(asset_map) as fh:
        name = json.loads(fh.read()).get(task)
    if name is None:
        return None
    with FileSystems.open(FileSystems.join(root, "transform_fn", "assets", name)) as fh:
        return [line for line in fh.read().decode("utf-8").splitlines() if line]
