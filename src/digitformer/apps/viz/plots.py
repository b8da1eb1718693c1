"""Figure helpers shared by the pictures: fixed-size PNGs and heat-map overlays.

Figures are saved at a fixed DPI and never trimmed, so a picture's pixel size is its figure
size in inches times DPI: what the tests check and what a README layout can rely on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from digitformer.utils.fileio import atomic_path

DPI = 100
PANEL = 2.0  # inches per image panel


def figure(width: float, height: float) -> Figure:
    """A figure not tied to pyplot: no global state, no display backend needed."""
    return Figure(figsize=(width, height), dpi=DPI)


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def upsample(heat: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """(h, w) map -> (size, size) (or a (height, width) size), bilinear, as the original drew
    its attention maps."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    t = torch.as_tensor(heat, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay(ax, image: np.ndarray, heat: np.ndarray | None, title: str = "") -> None:
    """A grey image with a 'hot' heat map (any (h, w) grid) on top at half opacity."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    if heat is not None:
        ax.imshow(upsample(heat, image.shape), cmap="hot", alpha=0.5)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
