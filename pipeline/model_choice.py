"""Which models a run serves: a shipped profile, then a multi-task export, then single-task flags.

1. ``--models PROFILE`` (default :data:`pipeline.model_profiles.DEFAULT_PROFILE`): the profile's shipped
   models, one per task (``compact``: three single-task CNNs; ``multitask``: the heads of one
   export; ``none``: no shipped model). Named ``default:<task>`` when the profile is the
   default one, ``default:<profile>/<task>`` otherwise, so each worker resolves them inside its
   own installation.
2. ``--multitask-model DIR``: every head of that multi-task export replaces the profile's model
   for its task; tasks it has no head for keep the profile's.
3. ``--<task>-model DIR|default|none``: DIR (a single-task export of that task, or a multi-task
   export, whose ``<task>`` head is taken) replaces that task's model, ``none`` drops it,
   ``default`` keeps what 1 and 2 chose.

Heads of one export stay one artifact, loaded once and called once per batch
(:func:`pipeline.keras_handler.artifacts`), whichever tasks of it are kept.
"""

from __future__ import annotations

import dataclasses

from pipeline.model_info import DEFAULT_PREFIX, ModelInfo

MODEL_TASKS = ("person", "category", "gender", "age_group", "colour")  # the tasks served, in this order
NO_PROFILE = "none"  # --models none: no shipped model (only the exports named by the other flags)


def flag(task: str) -> str:
    """The single-task flag of ``task`` (``--age-group-model``)."""
    return f"--{task.replace('_', '-')}-model"


def _read_all(path: str, what: str) -> tuple[ModelInfo, ...]:
    try:
        infos = ModelInfo.read_all(path)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{what} {path}: not an exported model folder ({exc})") from exc
    unknown = [i.task for i in infos if i.task not in MODEL_TASKS]
    if unknown:
        raise ValueError(f"{what} {path}: the pipeline serves no {unknown[0]!r} task "
                         f"(tasks: {', '.join(MODEL_TASKS)})")
    return infos


def profile_infos(profile: str | None) -> dict[str, ModelInfo]:
    """task -> the model of a shipped profile (``None``: the default profile, whose missing models
    are left out; a profile named explicitly must be shipped)."""
    from pipeline.model_profiles import DEFAULT_PROFILE, profile_models

    if profile == NO_PROFILE:
        return {}
    name = profile or DEFAULT_PROFILE
    shipped = profile_models(name)  # ValueError: unknown profile
    if profile is not None and not shipped:
        raise ValueError(f"--models {profile}: this installation ships no model of that profile")
    prefix = DEFAULT_PREFIX if name == DEFAULT_PROFILE else f"{DEFAULT_PREFIX}{name}/"
    found: dict[str, ModelInfo] = {}
    read: dict[str, tuple[ModelInfo, ...]] = {}  # folder -> its models, each card read once
    for task, folder in shipped.items():
        if str(folder) not in read:
            read[str(folder)] = _read_all(prefix + task, f"--models {name}:")
        info = next(i for i in read[str(folder)] if i.task == task)
        found[task] = dataclasses.replace(info, path=prefix + task)
    return found


def choose_models(*, profile: str | None = None, multitask: str | None = None,
                  single: dict[str, str] | None = None) -> tuple[ModelInfo, ...]:
    """The run's models, in :data:`MODEL_TASKS` order; ValueError with a one-line message."""
    chosen = profile_infos(profile)
    if multitask:
        infos = _read_all(multitask, "--multitask-model")
        if infos[0].head is None:
            raise ValueError(f"--multitask-model {multitask} is a single-task {infos[0].task} export: "
                             f"use {flag(infos[0].task)}")
        chosen.update({i.task: i for i in infos})
    for task, choice in (single or {}).items():
        if task not in MODEL_TASKS:
            raise ValueError(f"no {task!r} task (tasks: {', '.join(MODEL_TASKS)})")
        if choice in (None, "default"):
            continue
        if choice == "none":
            chosen.pop(task, None)
            continue
        infos = _read_all(choice, flag(task))
        picked = [i for i in infos if i.task == task]
        if not picked:
            raise ValueError(f"{flag(task)} {choice} is a {infos[0].task} model" if infos[0].head is None else
                             f"{flag(task)} {choice}: a multi-task export without a {task} head "
                             f"(heads: {', '.join(i.task for i in infos)})")
        chosen[task] = picked[0]
    return tuple(chosen[task] for task in MODEL_TASKS if task in chosen)
