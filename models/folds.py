"""Which examples a training run uses and which fold each falls in: deterministic for a
:class:`~models.config.TrainConfig` and a prepared folder, so that training and the evaluation
of an export (:mod:`models.report`, which recomputes the exported model's held-out fold) agree.
Folds are grouped by product, by the mapping's ``group`` column, by identical image bytes and
(unless switched off) by perceptual near-duplicates, so no group straddles two folds.
"""

from __future__ import annotations

import numpy as np

from models.config import MULTITASK, TrainConfig
from models.data import Prepared
from models.evaluation import grouped_folds, leakage_groups, subsample_products
from pipeline.options import ConfigError


def select(data: Prepared, cfg: TrainConfig) -> tuple[np.ndarray, list[str]]:
    """Indices of the examples labelled for the task (after optional sub-sampling), and classes.
    A multi-task run keeps every example labelled for at least one of its heads (no classes)."""
    if cfg.task == MULTITASK:
        if cfg.subsample_fraction:
            raise ConfigError("--subsample-fraction is for single-task runs")
        labelled = np.any([data.labels[t] >= 0 for t in cfg.head_tasks], axis=0)
        return np.flatnonzero(labelled), []
    labels = data.labels[cfg.task]
    index = np.flatnonzero(labels >= 0)
    if cfg.subsample_fraction:
        kept = subsample_products([str(v) for v in labels[index]], list(data.product_keys[index]),
                                  fraction=cfg.subsample_fraction, floor=cfg.subsample_floor, seed=cfg.seed)
        index = index[kept]
    return index, data.classes(cfg.task)


def split(data: Prepared, cfg: TrainConfig) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(example indices, classes, leakage groups, fold per example): deterministic for a config
    and a prepared folder, so a model's held-out fold can be recomputed after training."""
    index, classes = select(data, cfg)
    if len(index) == 0:
        raise ConfigError(f"no examples are labelled for task {cfg.task!r} in {cfg.data}")
    phashes = None
    if cfg.group_near_duplicates:  # hashed from the prepared arrays: the pipeline's own features
        from pipeline.images.features import perceptual_hash

        phashes = [perceptual_hash(image) for image in data.images[index]]
    groups = np.array(leakage_groups(list(data.groups[index]), list(data.sha256[index]), phashes))
    try:
        folds = grouped_folds(list(groups), cfg.folds, seed=cfg.seed)
    except ValueError as exc:  # too few groups (products, contributors, near-duplicate clusters)
        raise ConfigError(f"{exc}: use fewer --folds, more data, or --no-near-duplicate-groups") from exc
    return index, classes, groups, folds
