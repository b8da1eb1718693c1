"""A cluster of touching digits cut into digits by the digit reader (segmentation by recognition).

    cuts = candidate_cuts(ink, height)        # columns where the cluster may be cut
    spans, crops = candidate_digits(ink, height)
    best = best_path(spans, scores, width)    # the cuts whose digits read best

Where two digits touch, the column of least ink between them is where a person would cut. Every
such column is a candidate; every run between two candidates that is about a digit wide is read
by the digit reader; the cluster is read as the row of runs, edge to edge, whose readings are
most probable together (a shortest path over the candidates, each run scored by the log of its
reading's probability). The digit reader's judge says whether each chosen run looks like one
digit; where one does not (half a digit, two digits), the cut is not trusted.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from digitformer.inference.ink import Ink
from digitformer.inference.predict import Prediction
from digitformer.inference.prepare import ink_to_mnist
from digitformer.inference.readers import read_judged

MAX_CANDIDATES = 12  # cut columns tried per cluster (the least inked local minima)
WIDEST = 1.3  # a run wider than this times the digits' height is not one digit
NARROWEST = 0.15  # nor one narrower than this (a 1 is about 0.15-0.3 of its height)
MARGIN = 0.3  # each run is read on black this share of the height around it


def candidate_cuts(ink: np.ndarray, height: float) -> list[int]:
    """Columns (0 < c < width) where the light-on-black ink (h, w) may be cut: the local minima
    of its column sums (smoothed over 3 columns), at most MAX_CANDIDATES of the least inked,
    none closer than a tenth of the height to another or to an edge."""
    profile = ndimage.uniform_filter1d(ink.sum(0).astype(np.float64), 3, mode="nearest")
    w = len(profile)
    minima = [
        c for c in range(1, w - 1) if profile[c] <= profile[c - 1] and profile[c] <= profile[c + 1]
    ]
    apart = max(2, round(0.1 * height))
    chosen: list[int] = []
    for c in sorted(minima, key=lambda c: profile[c]):
        if apart <= c <= w - apart and all(abs(c - k) >= apart for k in chosen):
            chosen.append(c)
        if len(chosen) == MAX_CANDIDATES:
            break
    return sorted(chosen)


def candidate_digits(
    ink: np.ndarray, height: float
) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    """Every run [a, b) between two cuts (the edges included) that may be one digit, and its
    picture: the run's columns, its ink's rows, on black with a margin; bits of a neighbour that
    the cut took (pieces touching the cut holding under a tenth of the run's ink) dropped."""
    edges = [0, *candidate_cuts(ink, height), ink.shape[1]]
    margin = max(2, round(MARGIN * height))
    spans, crops = [], []
    for i, a in enumerate(edges):
        for b in edges[i + 1 :]:
            if not NARROWEST * height <= b - a <= WIDEST * height:
                continue
            run = _without_slivers(ink[:, a:b])
            rows = np.flatnonzero(run.any(1))
            if len(rows) == 0:
                continue
            spans.append((a, b))
            crops.append(np.pad(run[rows[0] : rows[-1] + 1], margin))
    return spans, crops


def _without_slivers(run: np.ndarray) -> np.ndarray:
    """The run without the bits of a neighbour that its cut took: marks touching either cut
    holding under a tenth of its ink (and their faint rims)."""
    labels, n = ndimage.label(run > 0.5 * run.max(initial=0))
    if n <= 1:
        return run
    ids = np.arange(1, n + 1)
    mass = ndimage.sum(run, labels, ids)
    sliver = np.isin(ids, labels[:, [0, -1]]) & (mass < 0.1 * mass.sum())
    if not sliver.any():
        return run
    near = ndimage.binary_dilation(np.isin(labels, ids[~sliver]), iterations=2)
    return np.where(near, run, 0)


def best_path(
    spans: list[tuple[int, int]], scores: list[float], width: int, count: int | None = None
) -> list[int] | None:
    """The indices of the spans that tile [0, width) edge to edge with the largest total score
    (log-probabilities: the most probable reading), `count` of them when given; None when no
    such row of spans tiles it."""
    by_start: dict[int, list[int]] = {}
    for k, (a, _) in enumerate(spans):
        by_start.setdefault(a, []).append(k)
    # best[(edge, n)]: the best row of n spans from 0 to edge, (total, path)
    best: dict[tuple[int, int], tuple[float, list[int]]] = {(0, 0): (0.0, [])}
    for a in sorted({a for a, _ in spans}):
        for n in range(len(spans)):
            if (a, n) not in best:
                continue
            total, path = best[a, n]
            for k in by_start[a]:
                key = (spans[k][1], n + 1)
                if key not in best or total + scores[k] > best[key][0]:
                    best[key] = (total + scores[k], [*path, k])
    ends = [v for (b, n), v in best.items() if b == width and n > 0 and count in (None, n)]
    return max(ends, key=lambda v: v[0])[1] if ends else None


def read_by_cuts(
    digit_model: nn.Module,
    clusters: list[np.ndarray],
    counts: list[int | None],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> list[Prediction | None]:
    """Clusters (light ink on black, with a margin, as `find_ink` gives them) -> each read as
    the most probable row of digits the digit reader finds in it, `counts[i]` of them where
    given (a Prediction named "", whose `spans` are shares of the cluster's ink width), or None
    where no row of runs that the reader's judge takes for digits spans it. The runs are ink
    already: each goes to the model as MNIST was made (`ink_to_mnist`), without looking for
    its ink again."""
    found, inputs = [], []
    for image in clusters:
        ys, xs = np.nonzero(image)
        ink = image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(ys) else image
        spans, crops = candidate_digits(ink, ink.shape[0])
        found.append((ink.shape[1], spans, len(inputs)))
        inputs += [ink_to_mnist(Ink(crop, crop > 0)) for crop in crops]
    if not inputs:
        return [None] * len(clusters)
    tokens, probs, far = read_judged(digit_model, np.stack(inputs), batch_size, device)
    best = probs[:, 0, :10].max(-1)
    if far is None:
        far = np.zeros(len(inputs), bool)
    scores = np.where(far, -np.inf, np.log(np.maximum(best, 1e-12)))
    out: list[Prediction | None] = []
    for (width, spans, first), count in zip(found, counts):
        runs = range(first, first + len(spans))
        path = best_path(spans, [float(scores[k]) for k in runs], width, count)
        if path is None or any(far[first + k] for k in path):
            out.append(None)
            continue
        rows = [first + k for k in path]
        out.append(
            Prediction(
                "",
                "".join(str(int(tokens[k, 0])) for k in rows),
                [float(best[k]) for k in rows],
                [[float(x) for x in probs[k, 0, :10]] for k in rows],
                spans=[[spans[k][0] / width, spans[k][1] / width] for k in path],
            )
        )
    return out
