"""An exported model as the pipeline sees it: :class:`ModelInfo`, read from the model card
(task, classes, input size, output kind, calibration temperature, and the label quality learned
from its out-of-fold predictions where it carries one) and checked against the
artifact itself (the TFT vocabulary it was trained with, the units of its output layer), without
TensorFlow. A multi-task export (card ``task: multitask``, one ``heads`` entry per output) gives
one ModelInfo per head, all with the export's path and model id, each with its ``head`` (the
output key) and its own classes and temperature. ``default:<task>`` names the model shipped
for a task in the default profile, ``default:<profile>/<task>`` the one of another profile
(:mod:`pipeline.model_profiles`); both are resolved where the model is loaded (the launcher, or each
worker in its own installation).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from pipeline.label_quality import FILE as QUALITY_FILE
from pipeline.label_quality import HeadQuality, read_heads

DEFAULT_PREFIX = "default:"  # a shipped model, resolved where it is loaded (launcher or worker)


MULTITASK = "multitask"  # the card's task of a multi-task export


def resolve_model_path(path: str) -> str:
    """``default:<task>`` / ``default:<profile>/<task>`` -> the shipped folder inside this
    installation; other paths unchanged."""
    if path.startswith(DEFAULT_PREFIX):
        from pipeline.model_profiles import shipped_model_dir

        return str(shipped_model_dir(path[len(DEFAULT_PREFIX):]))
    return path


def _dense_units(model_dir: str) -> list[tuple[str, int]]:
    """(name, units) of the model's Dense layers in order, read from the .keras archive (no TensorFlow)."""
    with FileSystems.open(FileSystems.join(model_dir, "model.keras"), compression_type="uncompressed") as fh:
        with zipfile.ZipFile(io.BytesIO(fh.read())) as archive:
            config = json.loads(archive.read("config.json"))
    return [(layer["config"].get("name", ""), layer["config"]["units"])
            for layer in config.get("config", {}).get("layers", []) if layer.get("class_name") == "Dense"]


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline needs to know about an exported model (from its model card)."""

    task: str
    path: str  # a folder (local or gs://), or default:[<profile>/]<task> for a shipped model
    model_id: str
    classes: tuple[str, ...]
    image_size: int
    sigmoid: bool
    temperature: float = 1.0  # calibration (models.calibration), applied to every score
    head: str | None = None  # a multi-task export's output key for this task; None: a single-task model
    quality: HeadQuality | None = None  # the export's label_quality.json for this task (pipeline.label_quality)

    @classmethod
    def read_all(cls, path: str) -> tuple[ModelInfo, ...]:
        """Every model of an export: one for a single-task card, one per head for a multi-task one."""
        folder = resolve_model_path(path)
        with FileSystems.open(FileSystems.join(folder, "model_card.json")) as fh:
            card = json.loads(fh.read())
        dense = _dense_units(folder)
        quality = _qualities(folder)
        if card["task"] != MULTITASK:
            info = cls(task=card["task"], path=path, model_id=card["model_id"], classes=tuple(card["classes"]),
                       image_size=int(card["image_size"]), sigmoid=card["output"].startswith("sigmoid"),
                       temperature=_temperature(card), quality=quality.get(card["task"]))
            _check(info, folder, dense[-1][1] if dense else None)
            return (info,)
        if not card.get("heads"):
            raise ValueError(f"{path}: a multi-task card without heads")
        units = dict(dense)
        infos = []
        for head in card["heads"]:
            info = cls(task=head["task"], path=path, model_id=card["model_id"], classes=tuple(head["classes"]),
                       image_size=int(card["image_size"]), sigmoid=False, temperature=_temperature(head),
                       head=head["task"], quality=quality.get(head["task"]))
            if dense and info.head not in units:
                raise ValueError(f"{path}: the card's head {info.head!r} is not an output layer of the model "
                                 f"(Dense layers: {', '.join(units)})")
            _check(info, folder, units.get(info.head))
            infos.append(info)
        return tuple(infos)

    @classmethod
    def read(cls, path: str, head: str | None = None) -> ModelInfo:
        """The model of a single-task export, or the ``head`` of a multi-task one."""
        infos = cls.read_all(path)
        if head is None and infos[0].head is None:
            return infos[0]
        found = [i for i in infos if i.head is not None and i.head == head]
        if not found:
            heads = ", ".join(str(i.head) for i in infos)
            raise ValueError(f"{path}: no head {head!r} in this export (heads: {heads})")
        return found[0]


def _qualities(folder: str) -> dict[str, HeadQuality]:
    """task -> HeadQuality from the export's label_quality.json (none: the file is absent)."""
    path = FileSystems.join(folder, QUALITY_FILE)
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as fh:
        return read_heads(fh.read().decode("utf-8"))


def _temperature(card_or_head: dict) -> float:
    return float((card_or_head.get("calibration") or {}).get("temperature", 1.0))


def _check(info: ModelInfo, folder: str, units: int | None) -> None:
    """The card's classes against the transform vocabulary and the output layer's units."""
    where = info.path if info.head is None else f"{info.path} (head {info.head!r})"
    vocabulary = transform_vocabulary(folder, info.task)
    if vocabulary is not None and tuple(vocabulary) != info.classes:
        raise ValueError(f"{where}: the card's classes differ from the {info.task!r} vocabulary of the "
                         f"transform output it was trained with (transform_fn/): {list(info.classes)[:5]}... "
                         f"vs {vocabulary[:5]}...")
    expected = 1 if info.sigmoid else len(info.classes)
    if units is not None and units != expected:
        raise ValueError(f"{where}: the model has {units} outputs but its card lists {expected}")


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
