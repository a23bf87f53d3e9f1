"""Plots shared by ``fashion-enrich evaluate`` and ``fashion-enrich report`` (matplotlib, Agg).

Every function draws one figure and returns it as PNG bytes; ``save`` writes them to a file,
``data_uri`` embeds them in a self-contained HTML page.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def save(png: bytes, path: str) -> None:
    with open(path, "wb") as fh:
        fh.write(png)


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def bars(values: dict[str, float | None], title: str, ylabel: str, *, ylim: tuple[float, float] | None = None,
         horizontal: bool = False) -> bytes:
    """One bar per key (None values skipped)."""
    plt = _pyplot()
    names = [n for n, v in values.items() if v is not None]
    heights = [values[n] for n in names]
    if horizontal:
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(names) + 1)))
        ax.barh(range(len(names)), heights, color="#4c72b0")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        if ylim:
            ax.set_xlim(*ylim)
    else:
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
        ax.bar(range(len(names)), heights, color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
    ax.set_title(title)
    return _png(fig)


def stacked_shares(counts: dict[str, dict[str, int]], title: str, top: int = 12) -> bytes:
    """Horizontal 100 % bars: one per group (retailer), segments = its most common values."""
    plt = _pyplot()
    totals: dict[str, int] = {}
    for per in counts.values():
        for key, n in per.items():
            totals[key] = totals.get(key, 0) + n
    keys = sorted(totals, key=lambda k: -totals[k])[:top]
    groups = list(counts)
    fig, ax = plt.subplots(figsize=(9, max(2.2, 0.6 * len(groups) + 1.4)))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    for g, group in enumerate(groups):
        total = sum(counts[group].values()) or 1
        left = 0.0
        for k, key in enumerate(keys + ["other"]):
            n = counts[group].get(key, 0) if key != "other" else total - sum(counts[group].get(x, 0) for x in keys)
            share = n / total
            ax.barh(g, share, left=left, color=colours[k % 20] if key != "other" else "#cccccc",
                    label=key if g == 0 else None)
            left += share
    ax.set_yticks(range(len(groups)), groups)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of products")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
    return _png(fig)


def confusion(matrix: np.ndarray, rows: list[str], columns: list[str] | None, title: str, *,
              xlabel: str = "predicted", ylabel: str = "true") -> bytes:
    """Row-normalised confusion matrix (rows: truth or retailer; columns: model)."""
    plt = _pyplot()
    columns = rows if columns is None else columns
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    fig, ax = plt.subplots(figsize=(max(5, 0.32 * len(columns) + 2), max(5, 0.32 * len(rows) + 2)))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=80, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the row")
    return _png(fig)


def distributions(samples: dict[str, np.ndarray], title: str, ylabel: str) -> bytes:
    """One box per key (e.g. the confidence of each predicted class)."""
    plt = _pyplot()
    names = [n for n, v in samples.items() if len(v)]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    ax.boxplot([samples[n] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=70, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _png(fig)


def reliability(before: list[dict], after: list[dict] | None, title: str) -> bytes:
    """Reliability diagram: accuracy against confidence per bin, before and after calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", label="perfect calibration")
    for bins, label, colour in ((before, "model", "#dd8452"), (after, "calibrated", "#4c72b0")):
        if not bins:
            continue
        points = [(b["confidence"], b["accuracy"]) for b in bins if b["count"]]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", color=colour, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class score)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)
