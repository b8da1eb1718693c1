"""The 4-digit dataset: 56x56 images of four digits in a 2x2 grid, labels in reading order.

grids = make_grids(test.images, test.labels, n=5000, seed=0)   # test grids: test digits only
grids.images.shape == (5000, 56, 56); grids.labels.shape == (5000, 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grids:
    """images uint8 (N, 56, 56); labels uint8 (N, 4) in reading order (TL, TR, BL, BR)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def tile_2x2(quads):
    """(N, 4, h, w) digits in reading order -> (N, 2h, 2w) grids (NumPy arrays or torch tensors)."""
    n, _, h, w = quads.shape
    # (N, row, col, h, w) -> (N, row, h, col, w): each grid row is two digits side by side
    return quads.reshape(n, 2, 2, h, w).swapaxes(2, 3).reshape(n, 2 * h, 2 * w)


def draw_picks(n_digits: int, n: int, seed: int) -> np.ndarray:
    """(n, 4) indices of the digits that make each grid, uniform with replacement."""
    return np.random.default_rng(seed).integers(0, n_digits, size=(n, 4))


def make_grids(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> Grids:
    """n grids of four digits drawn from the given digits; deterministic for a seed.

    Use a new seed per epoch for fresh training grids; test grids from test digits only.
    """
    if len(images) == 0:
        raise ValueError("make_grids needs at least one digit")
    picks = draw_picks(len(images), n, seed)
    return Grids(tile_2x2(images[picks]), labels[picks])
