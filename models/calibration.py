"""Confidence calibration: temperature scaling (Guo et al., 2017) and expected calibration error.

A model's class scores are over-confident after training; dividing its log-scores by one
fitted temperature T (> 1 softens, < 1 sharpens) keeps the argmax, so accuracy is unchanged,
and makes "0.8" mean right about 80 % of the time. T is fitted by minimising the negative
log-likelihood on held-out predictions (out-of-fold scores at training time, or the exported
fold's held-out images with ``fashion-enrich calibrate``), stored in the model card, and
applied by the pipeline's model handler to every score it writes (:mod:`pipeline.temperature`).

Scores are handled as one column per class; a sigmoid output ``p`` is the two columns
``[1 - p, p]`` (``models.evaluation.class_scores``), where temperature scaling is Platt
scaling without a bias.
"""

from __future__ import annotations

import numpy as np

from pipeline.temperature import EPS, apply_temperature


def nll(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(scores[np.arange(len(labels)), labels], EPS, 1.0))))


def fit_temperature(scores: np.ndarray, labels: np.ndarray, *, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature minimising the NLL of ``labels`` (golden-section search on log T)."""
    if len(labels) == 0:
        return 1.0
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    loss = lambda t: nll(apply_temperature(scores, float(np.exp(t))), labels)  # noqa: E731
    fc, fd = loss(c), loss(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return round(float(np.exp((a + b) / 2)), 4)


def reliability(scores: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict]:
    """Per confidence bin (top-class score): count, mean confidence and accuracy."""
    confidence = scores.max(axis=1)
    correct = scores.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for i in range(bins):
        inside = (confidence > edges[i]) & (confidence <= edges[i + 1]) if i else confidence <= edges[1]
        n = int(inside.sum())
        out.append({"low": float(edges[i]), "high": float(edges[i + 1]), "count": n,
                    "confidence": float(confidence[inside].mean()) if n else None,
                    "accuracy": float(correct[inside].mean()) if n else None})
    return out


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: the count-weighted gap between confidence and accuracy over bins."""
    total = len(labels)
    if total == 0:
        return 0.0
    return float(sum(b["count"] / total * abs(b["confidence"] - b["accuracy"])
                     for b in reliability(scores, labels, bins) if b["count"]))


def calibrate(scores: np.ndarray, labels: np.ndarray, *, fitted_on: str) -> dict:
    """Fit the temperature and report what it changes (for the model card)."""
    temperature = fit_temperature(scores, labels)
    calibrated = apply_temperature(scores, temperature)
    return {"method": "temperature", "temperature": temperature, "fitted_on": fitted_on, "examples": int(len(labels)),
            "ece_before": round(expected_calibration_error(scores, labels), 4),
            "ece_after": round(expected_calibration_error(calibrated, labels), 4),
            "nll_before": round(nll(scores, labels), 4), "nll_after": round(nll(calibrated, labels), 4)}
