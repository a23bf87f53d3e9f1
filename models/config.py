"""The training configuration: :class:`TrainConfig` (validated), its round trip through a model
card (``config_from_card``), and the ``fashion-enrich train`` command that reproduces it with every
setting spelled out (``explicit_command``). Plain Python: the CLI, training, the evaluation
report and the model-shipping script share it without importing each other.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass

HEAD_TASKS = ("category", "gender", "person", "age_group", "colour")
MULTITASK = "multitask"  # one backbone, a head per task of ``tasks`` (models.train_multitask)
TASK_CHOICES = HEAD_TASKS + (MULTITASK,)
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one ``fashion-enrich train`` run, validated on creation."""

    task: str
    data: str
    out: str
    arch: str = "custom_cnn"
    mode: str = "clean"
    weights: str | None = None
    folds: int = 3
    epochs: int = 10
    batch_size: int = 64
    image_size: int | None = None  # must equal the prepared size (checked)
    augment: bool = True
    augment_range: float = 0.25  # the study's shift and zoom; 0 keeps the flip only
    learning_rate: float | None = None
    subsample_fraction: float | None = None
    subsample_floor: int = 100
    final_fit: bool = False
    seed: int = 0
    width: int = 32
    group_near_duplicates: bool = True  # folds also keep perceptual near-duplicates together
    tta_flip: bool = False  # score (and export) the mean over the image and its mirror image
    epoch_validation: bool = True  # score the held-out fold after every epoch (progress only)
    max_folds_run: int | None = None  # run only the first n folds (smoke tests)
    progress_seconds: float = 20.0  # a progress line within an epoch at most this often
    tasks: tuple[str, ...] = ()  # multitask: the heads (empty: all of HEAD_TASKS)
    warmup_epochs: int = 0  # multitask: epochs of the heads alone on cached frozen-backbone features
    precision: str = "float32"  # training arithmetic; "bfloat16" is mixed precision (exports are float32)

    def __post_init__(self):
        if self.task not in TASK_CHOICES:
            raise ValueError(f"task must be one of {TASK_CHOICES}")
        if self.folds < 2 or self.epochs < 0 or self.batch_size < 1:
            raise ValueError("folds >= 2, epochs >= 0 and batch_size >= 1 are required")
        if self.epochs == 0 and not (self.task == MULTITASK and self.warmup_epochs):
            raise ValueError("epochs >= 1 (0 only for a multitask run whose heads are warmed: --warmup-epochs)")
        if not 0 <= self.augment_range < 1:
            raise ValueError("augment_range must be in [0, 1)")
        if any(t not in HEAD_TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names from {HEAD_TASKS}")
        if self.task == MULTITASK and (self.tta_flip or self.subsample_fraction):
            raise ValueError("--tta-flip and --subsample-fraction are for single-task runs")
        if self.tasks and self.task != MULTITASK:
            raise ValueError("tasks are for --task multitask")
        if self.warmup_epochs < 0 or self.precision not in PRECISIONS:
            raise ValueError(f"warmup_epochs >= 0 and precision one of {PRECISIONS} are required")

    @property
    def head_tasks(self) -> tuple[str, ...]:
        """The tasks the model learns: the one task, or a multi-task model's heads."""
        return (self.tasks or HEAD_TASKS) if self.task == MULTITASK else (self.task,)


def config_from_card(train_config: dict, **overrides) -> TrainConfig:
    """A model card's ``train_config`` as a TrainConfig (``overrides`` on top, e.g. ``data``).
    Cards written before near-duplicate fold grouping existed were split without it."""
    merged = {"group_near_duplicates": False, **train_config, **overrides}
    merged["tasks"] = tuple(merged.get("tasks") or ())  # a list in JSON
    return TrainConfig(**merged)


def default_out(cfg_task: str, arch: str, mode: str) -> str:
    """Where ``fashion-enrich train`` exports when no ``--out`` is given."""
    return os.path.join("fashion-enrich-models", f"{cfg_task}-{arch}-{mode}")


def explicit_command(train_config: dict) -> str:
    """A card's ``train_config`` as a ``fashion-enrich train`` command with every setting spelled
    out, defaults included: it reproduces the folds and the model even after a default changed.
    Cards written before near-duplicate fold grouping existed trained without it."""
    c = asdict(config_from_card(train_config))
    argv = ["fashion-enrich", "train", "--task", c["task"], "--arch", c["arch"], "--mode", c["mode"],
            "--data", c["data"], "--folds", str(c["folds"]), "--epochs", str(c["epochs"]),
            "--batch-size", str(c["batch_size"]), "--width", str(c["width"]), "--seed", str(c["seed"])]
    if c.get("weights"):
        argv += ["--weights", c["weights"]]
    if c.get("image_size"):
        argv += ["--image-size", str(c["image_size"])]
    if c.get("learning_rate"):
        argv += ["--learning-rate", repr(c["learning_rate"])]
    argv += ["--augment-range", repr(c["augment_range"])] if c["augment"] else ["--no-augment"]
    if c.get("subsample_fraction"):
        argv += ["--subsample-fraction", repr(c["subsample_fraction"]), "--subsample-floor", str(c["subsample_floor"])]
    if c.get("final_fit"):
        argv.append("--final-fit")
    if not c["group_near_duplicates"]:
        argv.append("--no-near-duplicate-groups")
    if c["tta_flip"]:
        argv.append("--tta-flip")
    if not c["epoch_validation"]:
        argv.append("--no-epoch-validation")
    if c["tasks"]:
        argv += ["--tasks", ",".join(c["tasks"])]
    if c["warmup_epochs"]:
        argv += ["--warmup-epochs", str(c["warmup_epochs"])]
    if c["precision"] != "float32":
        argv += ["--precision", c["precision"]]
    return shlex.join(argv + ["--out", c["out"]])
