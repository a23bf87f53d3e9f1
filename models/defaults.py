"""The default models shipped inside the package (``models/default/<task>/``).

Each is an export folder (see :mod:`models.export`) small enough to live in the repository,
trained on ``../shared/data``; its ``model_card.json`` records the exact training command.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_TASKS = ("category", "gender", "person")


def default_model_dir(task: str) -> Path:
    """The shipped export folder for ``task``; FileNotFoundError if none is shipped."""
    if task not in DEFAULT_TASKS:
        raise ValueError(f"no default model for task {task!r}; tasks: {', '.join(DEFAULT_TASKS)}")
    folder = Path(str(resources.files("models").joinpath("default", task)))
    if not (folder / "model_card.json").is_file():
        raise FileNotFoundError(f"no default {task} model shipped in {folder}")
    return folder
