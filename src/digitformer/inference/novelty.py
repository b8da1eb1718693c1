"""Is it a digit at all? A class-conditional Gaussian over the digit ViT's features.

    novelty = fit(model, train_images, train_labels, held_out_images)   # once, when bundling
    far = novelty.is_novel(features(model, inputs))                      # (N,) bool

The digit ViT answers one of ten for anything it is shown; its probabilities say which digit a
mark is most like, not whether it is one (a zigzag reads 3 at 99.9%). Its features do: each
digit class is a cloud in the space of the final CLS token, and a mark far from all ten is
none of them. The score is the Mahalanobis distance to the nearest class mean under one shared
covariance (Lee et al., NeurIPS 2018, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks"), the threshold the distance that a share
`keep` of held-out digits (never used in the fit) stays within. Nothing here is tuned on
non-digits: how many of those it refuses is measured (`benchmarks/independent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from digitformer.utils.fileio import atomic_path
from digitformer.utils.tensors import to_float

KEEP = 0.995  # the share of held-out digits the threshold keeps


@dataclass(frozen=True)
class Novelty:
    """means (10, D), precision (D, D) of the features, and the largest distance a digit is
    allowed."""

    means: torch.Tensor
    precision: torch.Tensor
    threshold: float

    def distance(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) Mahalanobis distance to the nearest class mean."""
        diff = feats[:, None, :].double() - self.means[None].double()  # (N, 10, D)
        d2 = torch.einsum("ncd,de,nce->nc", diff, self.precision.double(), diff)
        return d2.min(1).values.clamp(min=0).sqrt().float()

    def is_novel(self, feats: torch.Tensor) -> torch.Tensor:
        return self.distance(feats) > self.threshold

    def save(self, path: str | Path) -> None:
        tensors = {
            "means": self.means.float().contiguous(),
            "precision": self.precision.float().contiguous(),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"threshold": repr(self.threshold)})

    @classmethod
    def load(cls, path: str | Path) -> Novelty:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            threshold = float(f.metadata()["threshold"])
        tensors = load_file(str(path))
        return cls(tensors["means"], tensors["precision"], threshold)


@torch.inference_mode()
def features(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """uint8 (N, 28, 28) digits -> (N, D) final CLS features of the digit ViT."""
    device = next(model.parameters()).device
    out = []
    for batch in torch.from_numpy(np.ascontiguousarray(images)).split(batch_size):
        tokens, _ = model.forward_features(to_float(batch.to(device)))
        out.append(tokens[:, 0].float().cpu())
    return torch.cat(out)


def fit(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    held_out: np.ndarray,
    keep: float = KEEP,
) -> Novelty:
    """Class means and shared covariance from (images, labels); the threshold from `held_out`
    digits (which the fit never saw): the distance that a share `keep` of them stays within."""
    feats = features(model, images).double()
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    means = torch.stack([feats[labels_t == c].mean(0) for c in range(10)])
    centred = feats - means[labels_t]
    cov = centred.T @ centred / len(feats)
    cov += 1e-6 * torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean()
    precision = torch.linalg.inv(cov)
    first = Novelty(means.float(), precision.float(), float("inf"))
    distances = first.distance(features(model, held_out)).numpy()
    return Novelty(first.means, first.precision, float(np.quantile(distances, keep)))
