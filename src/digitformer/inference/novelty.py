"""Is it a digit at all? A class-conditional Gaussian over the digit ViT's features, and the
probability of an eleventh class, "not a digit", that the reader was taught.

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

A reader's features are made to tell digits apart, not digits from the rest, and the Gaussian
alone lets a quarter of the marks that are no digit through. A reader can also be taught them
(`digitformer.training.not_digit`: pictures of marks of `digitformer.data.marks`, prepared as
any picture is, as an eleventh class beside the ten): `other` is the head it was taught with,
(11, D + 1) with the bias last, and a mark is no digit too where the eleventh class's
probability is over `other_threshold`, set like the distance's by held-out digits. Taught so,
the reader read numbers in pieces worse; the bundle keeps such a reader apart, as a judge of
whole pictures only (`readers.judge_of`; docs/reading-pictures.md, "A taught judge beside the
readers").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from digitformer.utils.fileio import atomic_path
from digitformer.utils.runtime import reading
from digitformer.utils.tensors import to_float

KEEP = 0.995  # the share of held-out digits the threshold keeps


@dataclass(frozen=True)
class Novelty:
    """means (10, D), precision (D, D) of the features, and the largest distance a digit is
    allowed; optionally the taught head `other` (11, D + 1) and the largest probability of
    "not a digit" a digit is allowed; and `whole_threshold`, the largest distance a whole
    picture is allowed where a judge apart judges it too (`readers.judge_of`), looser than a
    piece's (measured, not bundled: docs/reading-pictures.md, "strict")."""

    means: torch.Tensor
    precision: torch.Tensor
    threshold: float
    other: torch.Tensor | None = None
    other_threshold: float = 1.0
    whole_threshold: float | None = None

    def distance(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) Mahalanobis distance to the nearest class mean."""
        diff = feats[:, None, :].double() - self.means[None].double()  # (N, 10, D)
        d2 = torch.einsum("ncd,de,nce->nc", diff, self.precision.double(), diff)
        return d2.min(1).values.clamp(min=0).sqrt().float()

    def not_digit(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) probability of the taught class "not a digit" (0 untaught)."""
        if self.other is None:
            return torch.zeros(len(feats))
        logits = feats.float() @ self.other[:, :-1].T.float() + self.other[:, -1].float()
        return logits.softmax(-1)[:, -1]

    def is_novel(self, feats: torch.Tensor, whole: bool = False) -> torch.Tensor:
        """(N, D) features -> (N,) bool, like none of the ten; `whole`: by `whole_threshold`
        where it has one."""
        loose = self.whole_threshold if whole and self.whole_threshold is not None else None
        far = self.distance(feats) > (self.threshold if loose is None else loose)
        return far | (self.not_digit(feats) > self.other_threshold)

    def save(self, path: str | Path) -> None:
        tensors = {
            "means": self.means.float().contiguous(),
            "precision": self.precision.float().contiguous(),
        }
        metadata = {"threshold": repr(self.threshold)}
        if self.whole_threshold is not None:
            metadata["whole_threshold"] = repr(self.whole_threshold)
        if self.other is not None:
            tensors["other"] = self.other.float().contiguous()
            metadata["other_threshold"] = repr(self.other_threshold)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> Novelty:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        tensors = load_file(str(path))
        return cls(
            tensors["means"],
            tensors["precision"],
            float(metadata["threshold"]),
            tensors.get("other"),
            float(metadata.get("other_threshold", 1.0)),
            float(metadata["whole_threshold"]) if "whole_threshold" in metadata else None,
        )


def features(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """uint8 (N, 28, 28) digits -> (N, D) final CLS features of the digit ViT."""
    device = next(model.parameters()).device
    out = []
    for batch in torch.from_numpy(np.ascontiguousarray(images)).split(batch_size):
        with reading(model, len(batch)):
            tokens, _ = model.forward_features(to_float(batch.to(device)))
        out.append(tokens[:, 0].float().cpu())
    return torch.cat(out)


def fit(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    held_out: np.ndarray,
    keep: float = KEEP,
    other: torch.Tensor | None = None,
    whole_keep: float | None = None,
) -> Novelty:
    """Class means and shared covariance from (images, labels); the threshold from `held_out`
    digits (which the fit never saw): the distance that a share `keep` of them stays within
    (`whole_keep`, also a whole picture's: `Novelty.whole_threshold`); and with a taught head
    `other`, the probability of "not a digit" that they stay within."""
    feats = features(model, images).double()
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    means = torch.stack([feats[labels_t == c].mean(0) for c in range(10)])
    centred = feats - means[labels_t]
    cov = centred.T @ centred / len(feats)
    cov += 1e-6 * torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean()
    precision = torch.linalg.inv(cov)
    first = Novelty(means.float(), precision.float(), float("inf"), other)
    held = features(model, held_out)
    distances = first.distance(held).numpy()
    threshold = float(np.quantile(distances, keep))
    whole = None if whole_keep is None else float(np.quantile(distances, whole_keep))
    taught = 1.0 if other is None else float(np.quantile(first.not_digit(held).numpy(), keep))
    return Novelty(first.means, first.precision, threshold, other, taught, whole)
