"""Narrow pieces of one or two MNIST digits: what the pair probe (`inference.pairs`) is fitted
on and measured with (`benchmarks/pair_probe.py`, `scripts/fit_pairs.py`).

    pieces, counts = narrow_pieces(train.images, np.random.default_rng(0), 12000)

One or two digits 60 pixels tall (each 0.8-1.15 of that), narrowed together by 0.55-1.0 (two)
or 0.55-1.7 (one), overlapping by 0-35% of the narrower, half of them photographed on paper
(`data.marks.photographed`); cut as a number is (`pieces.cut_at_gaps`), and kept where they give
one piece no wider than a digit, as the digit reader would read it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from digitformer.data.marks import photographed
from digitformer.inference.pieces import cut_at_gaps
from digitformer.inference.prepare import NoInk

HEIGHT = 60


def _inked(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32) / 255
    rows, cols = np.flatnonzero(f.max(1) > 0.2), np.flatnonzero(f.max(0) > 0.2)
    return f[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def compose(frames: np.ndarray, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list]:
    """n (1 or 2) digits side by side, overlapping by up to 35%: light ink on black, and the
    indices of the frames drawn."""
    low, high = (0.55, 1.0) if n == 2 else (0.55, 1.7)
    squeeze = np.exp(rng.uniform(np.log(low), np.log(high)))
    inks, drawn = [], []
    for _ in range(n):
        drawn.append(int(rng.integers(len(frames))))
        ink = _inked(frames[drawn[-1]])
        h = HEIGHT * rng.uniform(0.8, 1.15)
        w = ink.shape[1] * h / ink.shape[0] * squeeze * rng.uniform(0.9, 1.1)
        size = (max(1, round(w)), max(1, round(h)))
        inks.append(np.asarray(Image.fromarray(ink).resize(size, Image.BILINEAR)))
    out = np.zeros((int(HEIGHT * 1.4) + 20, sum(i.shape[1] for i in inks) + 40), np.float32)
    x = 10
    for k, ink in enumerate(inks):
        top = 10 + int(rng.integers(0, out.shape[0] - 20 - ink.shape[0] + 1))
        if k:
            x -= round(rng.uniform(0.0, 0.35) * min(ink.shape[1], inks[k - 1].shape[1]))
        region = out[top : top + ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink, out=region)
        x += ink.shape[1]
    return out, drawn


def narrow_pieces(
    frames: np.ndarray, rng: np.random.Generator, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, 28, 28) pieces as the digit reader gets them, (N,) digits in each)."""
    pieces, counts = [], []
    while len(pieces) < count:
        n = 1 + int(rng.random() < 0.5)
        picture, _ = compose(frames, rng, n)
        if rng.random() < 0.5:
            picture = photographed(picture, rng)
        try:
            cut = cut_at_gaps(picture)
        except NoInk:
            continue
        if len(cut) == 1 and cut[0].single:
            pieces.append(cut[0].digit)
            counts.append(n)
    return np.stack(pieces), np.array(counts)
