"""The models shipped inside the package, in named profiles.

* ``compact``: three 64 px CNNs, one export folder per task (``models/compact/person``,
  ``category``, ``gender``): cheap enough for CPU-bound nightly runs;
* ``multitask``: one multi-task export (``models/default/multitask/``), every head (category,
  gender, person, age group, colour) in one forward pass.

:data:`DEFAULT_PROFILE` is what ``fashion-enrich run`` serves without ``--models``. Each folder
is an export (see :mod:`models.export`) trained on ``../shared/data``; its ``model_card.json``
records the exact training command. Which tasks a folder serves comes from its card (a
multi-task card's heads). A shipped model is named ``default:<task>`` (the default profile's
model for that task: what cards, manifests and Dataflow command lines have always said) or
``default:<profile>/<task>`` (another profile's), and resolved by :func:`shipped_model_dir`
inside the installation that loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

PROFILES: dict[str, tuple[str, ...]] = {  # profile -> its export folders, relative to models/
    "compact": ("compact/person", "compact/category", "compact/gender"),
    "multitask": ("default/multitask",),
}
DEFAULT_PROFILE = "multitask"
MODELS_ROOT = Path(__file__).resolve().parents[1] / "models"  # the models/ folder, installed beside pipeline/
DEFAULT_TASKS = ("category", "gender", "person")  # the tasks of the compact profile, one folder each


def card_tasks(folder: Path) -> tuple[str, ...]:
    """The tasks an export folder serves: its card's task, or a multi-task card's heads."""
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    return tuple(h["task"] for h in card["heads"]) if card["task"] == "multitask" else (card["task"],)


def profile_models(profile: str) -> dict[str, Path]:
    """task -> the shipped folder serving it in ``profile`` (only folders shipped in this installation)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown model profile {profile!r}; profiles: {', '.join(PROFILES)}")
    root = MODELS_ROOT
    found: dict[str, Path] = {}
    for relative in PROFILES[profile]:
        folder = root / relative
        if (folder / "model_card.json").is_file():
            for task in card_tasks(folder):
                found.setdefault(task, folder)
    return found


def shipped_model_dir(ref: str) -> Path:
    """``<task>`` (the default profile's) or ``<profile>/<task>`` -> the shipped export folder;
    FileNotFoundError if that profile ships none for the task."""
    profile, _, task = ref.rpartition("/")
    profile = profile or DEFAULT_PROFILE
    found = profile_models(profile)
    if task not in found:
        raise FileNotFoundError(f"no shipped {task} model in the {profile!r} profile "
                                f"(shipped: {', '.join(found) or 'none'})")
    return found[task]


def default_model_dir(task: str) -> Path:
    """The default profile's shipped export folder for ``task``; FileNotFoundError if none is shipped."""
    return shipped_model_dir(task)
