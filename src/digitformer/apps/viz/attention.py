"""Attention maps from the models' own attention modules (their `need_weights` path).

The encoder-only model: where the CLS token looks, and the mean attention each patch receives.
The encoder-decoder: the attention each patch receives in the encoder, and for each generated
digit the decoder's cross-attention over the memory (which quadrant, or which patches, it reads).
Maps are averaged over heads unless per-head maps are asked for; `rollout` multiplies the
head-averaged maps of every layer, with the residual path as identity (Abnar & Zuidema, 2020).
"""

from __future__ import annotations

import numpy as np

from digitformer.apps.viz.plots import PANEL, figure, overlay, save
from digitformer.inference.readers import token_strings

QUADRANT_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right")


def plot_numbers(images: np.ndarray, expected: list[str], maps, layer: int, path) -> None:
    """One column per number: the number, then the decoder's cross-attention for each digit
    it read, top to bottom: the reading moving along the number."""
    read = token_strings(maps["tokens"])
    steps = max(1, max(len(r) for r in read))
    n = len(images)
    h, w = images.shape[1:]
    panel_w = min(6.0, PANEL * w / h / 2)
    fig = figure(n * panel_w, (steps + 1) * (panel_w * h / w + 0.35))
    axes = fig.subplots(steps + 1, n, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.5 / (steps + 1), hspace=0.5)
    cross = maps["cross"].mean(1)  # (B, S, rows, cols)
    for i in range(n):
        overlay(axes[0, i], images[i], None, f"true {expected[i]}, read {read[i]}")
        for k in range(steps):
            if k < len(read[i]):
                overlay(axes[k + 1, i], images[i], cross[i, k], f"digit {k + 1}: '{read[i][k]}'")
            else:
                axes[k + 1, i].axis("off")
    fig.suptitle(
        f"numbers: decoder block {layer} cross-attention for each digit read, mean of heads",
        fontsize=10,
    )
    save(fig, path)


def plot_vit(images: np.ndarray, labels: np.ndarray, maps, layer: int, with_rollout: bool, path):
    rows = [
        ("CLS attention", maps["cls"].mean(1)),
        ("attention received", maps["received"].mean(1)),
    ]
    if with_rollout:
        rows.append(("rollout (CLS)", maps["rollout"]))
    fig = _grid(len(rows) + 1, len(images))
    axes = fig.axes
    n = len(images)
    for i in range(n):
        overlay(axes[i], images[i], None, f"digit {labels[i]}")
        for r, (name, heat) in enumerate(rows, 1):
            overlay(axes[r * n + i], images[i], heat[i], name)
    fig.suptitle(f"encoder-only: block {layer} attention, mean of heads", fontsize=10)
    save(fig, path)


def plot_seq2seq(
    images: np.ndarray, labels: np.ndarray, maps, layer: int, with_rollout: bool, path
):
    n = len(images)
    extra = 1 if with_rollout else 0
    fig = _grid(2 + extra + 4, n)
    axes = fig.axes
    cross = maps["cross"].mean(1)  # (B, 4, m, m)
    for i in range(n):
        truth = "".join(map(str, labels[i]))
        read = "".join(map(str, maps["digits"][i]))
        overlay(axes[i], images[i], None, f"true {truth}, read {read}")
        overlay(axes[n + i], images[i], maps["received"][i].mean(0), "encoder: received")
        if with_rollout:
            overlay(axes[2 * n + i], images[i], maps["rollout"][i], "encoder rollout")
        for k in range(4):
            quadrant = QUADRANT_NAMES[int(_quadrant_of(cross[i, k]))]
            overlay(
                axes[(2 + extra + k) * n + i],
                images[i],
                cross[i, k],
                f"digit {k + 1} '{read[k]}': {quadrant}",
            )
    fig.suptitle(
        f"encoder-decoder: encoder block {layer} attention, decoder cross-attention per "
        "generated digit; mean of heads",
        fontsize=10,
    )
    save(fig, path)


def _quadrant_of(cross_map: np.ndarray) -> int:
    """The quadrant a cross-attention map (m, m) puts most weight on."""
    half = cross_map.shape[0] // 2
    sums = [
        cross_map[r * half : (r + 1) * half, c * half : (c + 1) * half].sum()
        for r in (0, 1)
        for c in (0, 1)
    ]
    return int(np.argmax(sums))


def plot_heads(images: np.ndarray, heads: np.ndarray, title: str, path) -> None:
    """One row per head: per-head maps (B, h, s, s) over the images."""
    n, h = heads.shape[:2]
    fig = _grid(h, n)
    for head in range(h):
        for i in range(n):
            overlay(fig.axes[head * n + i], images[i], heads[i, head], f"head {head + 1}")
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def _grid(rows: int, cols: int):
    fig = figure(cols * PANEL, rows * PANEL)
    fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.35 / rows, hspace=0.3)
    return fig
