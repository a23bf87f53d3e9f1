"""One serving artifact per model: the Keras model, its labels, input size and a model card.

    <out>/model.keras         uint8 (size, size, 3) in, class scores out (input scaling inside)
    <out>/labels.json         class names in score order
    <out>/model_card.json     task, architecture, mode, image size, classes, parameters, training
                              data (with the prepare command), metrics, date, code version,
                              the command that trained it, as typed and with every setting explicit
    <out>/transform_fn/       the TFT transform output of the training data: the vocabularies the
                              class list comes from (serving checks the card's classes against
                              it: ``pipeline.model_info.transform_vocabulary``)

The inference stage loads ``model.keras`` and preprocesses images with the same function and
the card's ``image_size``, so training and serving see identical pixels.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess

from models.architectures import ModelSpec
from pipeline.versions import package_version

CARD = "model_card.json"


def code_version() -> str:
    """Package version, plus the git commit when run from a checkout."""
    version = package_version()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=os.path.dirname(os.path.abspath(__file__)))
        if commit.returncode == 0 and commit.stdout.strip():
            version += f"+git.{commit.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def serving_copy(model):
    """An uncompiled copy with the same weights: no optimizer state in the artifact (a third of
    the size). Built from the config: ``clone_model`` of a compiled model keeps the optimizer."""
    import keras

    serving = keras.Model.from_config(model.get_config())
    serving.set_weights(model.get_weights())
    return serving


def export_model(model, *, out: str, spec: ModelSpec, task: str, classes: list[str], data_dir: str,
                 train_config: dict, metrics: dict, wall_seconds: float, command: str = "",
                 command_explicit: str = "", calibration: dict | None = None) -> dict:
    os.makedirs(out, exist_ok=True)
    serving_copy(model).save(os.path.join(out, "model.keras"))
    with open(os.path.join(out, "labels.json"), "w", encoding="utf-8") as fh:
        json.dump(classes, fh, indent=1)
    transform = os.path.join(data_dir, "transform_fn")
    if os.path.isdir(transform):
        shutil.copytree(transform, os.path.join(out, "transform_fn"), dirs_exist_ok=True)
    prepared = {}
    if os.path.isfile(os.path.join(data_dir, "prepared.json")):
        with open(os.path.join(data_dir, "prepared.json"), encoding="utf-8") as fh:
            prepared = {k: v for k, v in json.load(fh).items() if k != "vocabularies"}
    trained_at = dt.datetime.now(dt.UTC)
    card = {
        "model_id": f"{task}-{spec.arch}-{spec.mode}-{trained_at:%Y%m%dT%H%M%S}",
        "task": task,
        "architecture": spec.arch,
        "mode": spec.mode,
        "pretrained_weights": spec.weights,
        "image_size": spec.image_size,
        "input": "uint8 RGB; longer side resized to image_size, white-padded square (pipeline.images.decode)",
        "output": "sigmoid P(person)" if spec.multilabel else "softmax over classes",
        "test_time_augmentation": ("horizontal flip: the mean of the scores of the image and its mirror image"
                                   if train_config.get("tta_flip") else None),
        "classes": classes,
        "parameters": int(model.count_params()),
        "training_data": {"folder": data_dir, **prepared},
        "train_config": train_config,
        "metrics": metrics,
        # Temperature scaling applied by the pipeline to every score (models.calibration).
        "calibration": calibration or {"method": "none", "temperature": 1.0},
        "trained_at": trained_at.isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 1),
        "code_version": code_version(),
        "command": command,  # as typed
        "command_explicit": command_explicit,  # every setting spelled out (models.config.explicit_command)
    }
    with open(os.path.join(out, CARD), "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)
    return card


def export_multitask(model, *, out: str, spec: ModelSpec, heads, data_dir: str, report: dict, train_config: dict,
                     exported: str, wall_seconds: float, command: str = "", command_explicit: str = "") -> dict:
    """A multi-task export: one ``model.keras`` whose output is ``{task: softmax scores}``, and a card
    with ``task: multitask`` and one ``heads`` entry per output (classes, calibration, metrics)."""
    import keras

    from models.multitask import build_multitask_model

    os.makedirs(out, exist_ok=True)
    if keras.mixed_precision.global_policy().name != "float32":  # trained in mixed precision: serve float32
        keras.mixed_precision.set_global_policy("float32")
        serving = build_multitask_model(ModelSpec(spec.arch, image_size=spec.image_size, width=spec.width), heads)
        serving.set_weights(model.get_weights())
    else:
        serving = serving_copy(model)
    serving.save(os.path.join(out, "model.keras"))
    with open(os.path.join(out, "labels.json"), "w", encoding="utf-8") as fh:
        json.dump({h.task: list(h.classes) for h in heads}, fh, indent=1)
    transform = os.path.join(data_dir, "transform_fn")
    if os.path.isdir(transform):
        shutil.copytree(transform, os.path.join(out, "transform_fn"), dirs_exist_ok=True)
    prepared = {}
    if os.path.isfile(os.path.join(data_dir, "prepared.json")):
        with open(os.path.join(data_dir, "prepared.json"), encoding="utf-8") as fh:
            prepared = {k: v for k, v in json.load(fh).items() if k != "vocabularies"}
    trained_at = dt.datetime.now(dt.UTC)
    card = {
        "model_id": f"multitask-{spec.arch}-{spec.mode}-{trained_at:%Y%m%dT%H%M%S}",
        "task": "multitask",
        "tasks": [h.task for h in heads],
        "architecture": spec.arch,
        "mode": spec.mode,
        "pretrained_weights": spec.weights,
        "image_size": spec.image_size,
        "input": "uint8 RGB; longer side resized to image_size, white-padded square (pipeline.images.decode)",
        "output": "a dict of softmax scores, one entry per head",
        "heads": [{"task": h.task, "classes": list(h.classes), "output": "softmax", "loss_weight": h.weight,
                   "calibration": report[h.task]["calibration"],
                   "metrics": {k: v for k, v in report[h.task].items() if k != "calibration"}} for h in heads],
        "parameters": int(serving.count_params()),
        "training_data": {"folder": data_dir, **prepared},
        "train_config": train_config,
        "metrics": {"exported": exported,
                    "table_one": {h.task: report[h.task]["table_one"] for h in heads}},
        "trained_at": trained_at.isoformat(timespec="seconds"),
        "wall_seconds": round(wall_seconds, 1),
        "code_version": code_version(),
        "command": command,
        "command_explicit": command_explicit,
    }
    with open(os.path.join(out, CARD), "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)
    return card


def store_float16(src: str, dst: str) -> None:
    """A copy of the ``.keras`` archive ``src`` whose float32 weights are stored as float16 (half the
    size, deflated). Keras casts them back to the float32 variables on load, so the model computes
    in float32 as before; only the weights are rounded (measure the accuracy before shipping)."""
    import io
    import zipfile

    import h5py
    import numpy as np

    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    halved = io.BytesIO()
    with h5py.File(io.BytesIO(members["model.weights.h5"]), "r") as old, h5py.File(halved, "w") as new:
        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                data = item[()]
                new.create_dataset(name, data=data.astype(np.float16) if data.dtype == np.float32 else data)
            else:
                new.require_group(name)
            new[name].attrs.update(dict(item.attrs))

        old.visititems(copy)
        new.attrs.update(dict(old.attrs))
    members["model.weights.h5"] = halved.getvalue()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def load_exported(folder: str):
    """(keras model, model card) of an exported artifact."""
    import keras

    import models.architectures  # noqa: F401 - registers CaffePreprocess for deserialisation

    with open(os.path.join(folder, CARD), encoding="utf-8") as fh:
        card = json.load(fh)
    return keras.models.load_model(os.path.join(folder, "model.keras")), card

