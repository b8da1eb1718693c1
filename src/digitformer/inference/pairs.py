"""Two touching digits no wider than one: a small probe on the digit reader's final CLS
features that says when a narrow piece of a number holds two digits.

    pairs = fit(model, pieces, counts, held, held_counts)   # once: scripts/fit_pairs.py
    two = pairs.is_two(features(model, digits))              # (N,) bool

Reading in pieces (`digitformer.inference.pieces`) reads a piece no wider than it is tall as one
digit. Two slim digits that touch (14, 11, 00 squeezed together) make such a piece, and the digit
reader then reads one of them (`14` as 4), the largest kind of error left on the independent
suite's development seed. The judge (`novelty`) finds under half of them like no one digit. The
reader's CLS features do tell them apart: a one-hidden-layer MLP on them catches 84% of such
pairs where 0.5% of single digits are flagged (`benchmarks/pair_probe.py`, on pieces made of
MNIST's validation digits; the fit never sees a test digit or the independent suite). It judges
from the CLS token the reader reads by (`readers.read_judged`), so it costs no second pass.

The probe is fitted on narrow pieces of one or two MNIST training digits
(`digitformer.training.pairs`), and its threshold is the probability that a share `keep` of
held-out single pieces stays under: nothing here is tuned on the suite it is measured on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from digitformer.inference.novelty import KEEP, features
from digitformer.utils.fileio import atomic_path

HIDDEN = 128  # the probe's hidden units
STEPS = 300  # full-batch AdamW steps of its fit


@dataclass(frozen=True)
class Pairs:
    """The probe: hidden (H, D + 1) and out (H + 1,), biases last, over the digit reader's
    final CLS features (D), standardised into the first layer; a piece holds two digits where
    its probability is over `threshold`."""

    hidden: torch.Tensor
    out: torch.Tensor
    threshold: float

    def probability(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) probability that the piece holds two digits."""
        h = F.gelu(feats.float() @ self.hidden[:, :-1].T + self.hidden[:, -1])
        return torch.sigmoid(h @ self.out[:-1] + self.out[-1])

    def is_two(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) bool: the piece holds two digits."""
        return self.probability(feats) > self.threshold

    def save(self, path: str | Path) -> None:
        tensors = {"hidden": self.hidden.contiguous(), "out": self.out.contiguous()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"threshold": repr(self.threshold)})

    @classmethod
    def load(cls, path: str | Path) -> Pairs:
        with safe_open(str(path), "pt") as f:
            threshold = float(f.metadata()["threshold"])
        tensors = load_file(str(path))
        return cls(tensors["hidden"].float(), tensors["out"].float(), threshold)


def fit(
    model: nn.Module,
    pieces: np.ndarray,
    counts: np.ndarray,
    held: np.ndarray,
    held_counts: np.ndarray,
    keep: float = KEEP,
    seed: int = 0,
) -> Pairs:
    """The probe fitted on uint8 (N, 28, 28) `pieces` holding `counts` (1 or 2) digits each;
    its threshold the probability that a share `keep` of the single pieces of `held` (pieces
    the fit never saw) stays under."""
    x = features(model, pieces)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], HIDDEN), nn.GELU(), nn.Linear(HIDDEN, 1))
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-2)
    y = torch.as_tensor(np.asarray(counts) == 2, dtype=torch.float32)
    z = (x - mu) / sd
    for _ in range(STEPS):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(net(z)[:, 0], y).backward()
        opt.step()
    first, last = net[0], net[2]
    with torch.no_grad():  # the standardisation folded into the first layer
        weight = first.weight / sd
        hidden = torch.cat([weight, (first.bias - weight @ mu)[:, None]], 1)
        probe = Pairs(hidden, torch.cat([last.weight[0], last.bias]), float("inf"))
        p = probe.probability(features(model, held[np.asarray(held_counts) == 1]))
    return Pairs(probe.hidden, probe.out, float(np.quantile(p.numpy(), keep)))
