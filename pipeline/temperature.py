"""Applying a model's fitted temperature to its scores (:mod:`models.calibration` fits it).

The model card stores one temperature per head; the pipeline's handler applies it to every
score it writes: ``softmax(log(p) / T)`` for softmax rows, the same on the two columns
``[1 - p, p]`` of a sigmoid output. The argmax never changes.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Class scores (rows summing to 1) rescaled by ``temperature``: softmax(log(p) / T)."""
    if temperature == 1.0:
        return scores
    logits = np.log(np.clip(scores, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def apply_to_outputs(raw: np.ndarray, temperature: float, *, sigmoid: bool) -> np.ndarray:
    """The model's own output layout (softmax rows, or one sigmoid column), calibrated."""
    if temperature == 1.0:
        return raw
    if sigmoid:
        p = np.clip(raw, EPS, 1 - EPS)
        return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))
    return apply_temperature(raw, temperature)
