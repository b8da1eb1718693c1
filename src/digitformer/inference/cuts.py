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

The numbers model, which counted the cluster's digits, also votes: the row of as many runs, the
row of one fewer and its own reading are scored by both readers' log-probabilities together
(`read_by_cuts(..., number=...)`). Not one more: the digit reader is sure of half a 0 or a 4's
stem, so a row of more runs costs it little, and on the development seed the rows of one more
fixed no number and broke five.
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
from digitformer.utils.runtime import reading
from digitformer.utils.tensors import to_float

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
    ink: np.ndarray, height: float, lengths: set[int] | None = None
) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    """Every run [a, b) between two cuts (the edges included) that may be one digit, and its
    picture: the run's columns, its ink's rows, on black with a margin; bits of a neighbour that
    the cut took (pieces touching the cut holding under a tenth of the run's ink) dropped.
    `lengths`: only the runs in some row of that many runs tiling the ink (`on_a_row`)."""
    edges = [0, *candidate_cuts(ink, height), ink.shape[1]]
    spans = [
        (a, b)
        for i, a in enumerate(edges)
        for b in edges[i + 1 :]
        if NARROWEST * height <= b - a <= WIDEST * height
    ]
    if lengths is not None:
        spans = [spans[k] for k in on_a_row(spans, ink.shape[1], lengths)]
    margin = max(2, round(MARGIN * height))
    kept, crops = [], []
    for a, b in spans:
        run = _without_slivers(ink[:, a:b])
        rows = np.flatnonzero(run.any(1))
        if len(rows) == 0:
            continue
        kept.append((a, b))
        crops.append(np.pad(run[rows[0] : rows[-1] + 1], margin))
    return kept, crops


def on_a_row(spans: list[tuple[int, int]], width: int, lengths: set[int]) -> list[int]:
    """The indices of the spans that lie in some row of spans tiling [0, width) edge to edge
    with one of `lengths` spans in all: the only ones `best_path` can choose for those counts
    (about a third of a cluster's runs: the others need not be read)."""
    longest = max(lengths, default=0)
    ahead: dict[int, set[int]] = {0: {0}}  # edge: the counts of rows that tile [0, edge)
    for a, b in sorted(spans):
        ahead.setdefault(b, set()).update(n + 1 for n in ahead.get(a, ()) if n < longest)
    behind: dict[int, set[int]] = {width: {0}}  # edge: the counts of rows tiling [edge, width)
    for a, b in sorted(spans, key=lambda s: -s[1]):
        behind.setdefault(a, set()).update(n + 1 for n in behind.get(b, ()) if n < longest)
    return [
        k
        for k, (a, b) in enumerate(spans)
        if any(i + 1 + j in lengths for i in ahead.get(a, ()) for j in behind.get(b, ()))
    ]


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
    spans: list[tuple[int, int]],
    scores,
    width: int,
    count: int | None = None,
    digits: str | None = None,
) -> tuple[float, list[int]] | None:
    """(total, indices) of the row of spans that tiles [0, width) edge to edge with the largest
    total score, `count` of them when given; None when no such row tiles it. `scores`: a
    log-probability per span, or (spans, 10) of each digit: a span then scores its most
    probable digit's, or with `digits` given (as many spans as it has), the digit its place
    in the row reads."""
    table = np.asarray(scores, np.float64)
    if digits is not None:
        count, wanted = len(digits), [int(d) for d in digits]
    by_start: dict[int, list[int]] = {}
    for k, (a, _) in enumerate(spans):
        by_start.setdefault(a, []).append(k)
    # best[(edge, n)]: the best row of n spans from 0 to edge, (total, path)
    best: dict[tuple[int, int], tuple[float, list[int]]] = {(0, 0): (0.0, [])}
    for a in sorted({a for a, _ in spans}):
        for n in range(len(spans) if count is None else count):
            if (a, n) not in best:
                continue
            total, path = best[a, n]
            for k in by_start[a]:
                if table.ndim == 1:
                    score = table[k]
                else:
                    score = table[k, wanted[n]] if digits is not None else table[k].max()
                key = (spans[k][1], n + 1)
                if key not in best or total + score > best[key][0]:
                    best[key] = (total + float(score), [*path, k])
    ends = [v for (b, n), v in best.items() if b == width and n > 0 and count in (None, n)]
    return max(ends, key=lambda v: v[0]) if ends else None


def sequence_logp(
    model: nn.Module, inputs: np.ndarray, strings: list[str], owners: list[int] | None = None
) -> np.ndarray:
    """log P(each string, then the end token) under a numbers model (teacher forcing), string k
    read from input `owners[k]` (default: its own, k) of `inputs` (uint8 (N, H, W), as the
    model's reader prepares them). Each input is encoded once, however many strings it reads."""
    cfg = model.cfg
    targets = torch.full((len(strings), cfg.steps), -100)
    for k, s in enumerate(strings):
        seq = [int(ch) for ch in s][: cfg.steps - 1] + [cfg.end_token]
        targets[k, : len(seq)] = torch.tensor(seq)
    device = next(model.parameters()).device
    with reading(model, len(strings)):
        memory = model.encode(to_float(torch.from_numpy(inputs).to(device)))
        if owners is not None:
            memory = memory[torch.as_tensor(owners, device=device)]
        logits = model.forward_from_memory(memory, targets.to(device))
    logp = torch.log_softmax(logits.float().cpu(), -1)
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * (targets >= 0)
    return picked.sum(1).numpy()


def read_by_cuts(
    digit_model: nn.Module,
    clusters: list[np.ndarray],
    counts: list[int | None],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    number: tuple[nn.Module, list, list] | None = None,
) -> list[Prediction | None]:
    """Clusters (light ink on black, with a margin, as `find_ink` gives them) -> each read as
    the most probable row of digits the digit reader finds in it, `counts[i]` of them where
    given (a Prediction named "", whose `spans` are shares of the cluster's ink width), or None
    where no row of runs that the reader's judge takes for digits spans it. The runs are ink
    already: each goes to the model as MNIST was made (`ink_to_mnist`), without looking for
    its ink again.

    `number`: (a numbers model, its input of each cluster, its reading of each; None where it
    has none). Each cluster's candidates are then the rows of one digit fewer and as many as it
    is counted to hold (two or more), and the numbers model's reading cut as it reads; the one
    kept is the most probable under both readers together (the sum of their log-probabilities,
    a product of experts: the numbers model knows how many digits a cluster's shape holds, the
    digit reader each digit's)."""
    found, inputs = [], []
    for i, (image, count) in enumerate(zip(clusters, counts)):
        ys, xs = np.nonzero(image)
        ink = image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(ys) else image
        # only the runs that a row weighed below can hold (540 of 1,481 on number_speed's lines)
        spans, crops = candidate_digits(ink, ink.shape[0], _row_lengths(count, number, i))
        found.append((ink.shape[1], spans, len(inputs)))
        inputs += [ink_to_mnist(Ink(crop, crop > 0)) for crop in crops]
    if not inputs:
        return [None] * len(clusters)
    judged = read_judged(digit_model, np.stack(inputs), batch_size, device)
    probs, far = judged.probs[:, 0, :10], judged.far
    table = np.log(np.maximum(probs, 1e-12))
    if far is not None:
        table[far] = -np.inf  # a run like none of the ten digits is no digit of the row
    options = [
        _candidates(spans, table[first : first + len(spans)], width, count, number, i)
        for i, ((width, spans, first), count) in enumerate(zip(found, counts))
    ]
    if number is not None:
        _add_sequence_logp(number, options, batch_size)
    out: list[Prediction | None] = []
    for (width, spans, first), choices in zip(found, options):
        if not choices:
            out.append(None)
            continue
        digits, (_, path) = max(choices.items(), key=lambda kv: kv[1][0])
        rows = [first + k for k in path]
        out.append(
            Prediction(
                "",
                digits,
                [float(probs[k, int(d)]) for k, d in zip(rows, digits)],
                [[float(x) for x in probs[k]] for k in rows],
                spans=[[spans[k][0] / width, spans[k][1] / width] for k in path],
            )
        )
    return out


def _lengths(count, number, i) -> tuple[list, str | None]:
    """How many runs the rows of cluster `i` that `_candidates` weighs have (`count`, None:
    any; with `number`, where it counts two digits or more, one fewer too), and the numbers
    model's reading weighed beside them (None where it is not voted on)."""
    voted = number is not None and (count or 0) >= 2 and number[1][i] is not None
    return ([count - 1, count] if voted else [count]), (number[2][i] if voted else None)


def _row_lengths(count, number, i) -> set[int] | None:
    """Every count of runs in a row `_candidates` may weigh for cluster `i` (None: any)."""
    lengths, said = _lengths(count, number, i)
    return None if count is None else {*lengths, *([len(said)] if said else [])}


def _candidates(spans, table, width, count, number, i) -> dict[str, tuple[float, list[int]]]:
    """{digits: (the digit reader's log P, the runs)} of one cluster's candidate rows: its
    best row of `count` runs; with `number`, where it counts two digits or more, of one fewer
    too, and the numbers model's reading (one digit against more is decided
    before: `pieces._choose`; the numbers model takes any wide piece for two digits). Only
    rows of runs the judge takes for digits."""
    lengths, said = _lengths(count, number, i)
    rows = {}
    for n in lengths:
        row = best_path(spans, table, width, n)
        if row is not None and np.isfinite(row[0]):
            rows["".join(str(int(table[k].argmax())) for k in row[1])] = row
    if said and said not in rows:
        row = best_path(spans, table, width, digits=said)
        if row is not None and np.isfinite(row[0]):
            rows[said] = row
    return rows


def _add_sequence_logp(number, options: list[dict], batch_size: int) -> None:
    """Each candidate's score plus its log P under the numbers model, read from its cluster's
    input to that model (encoded once for all its candidates)."""
    model, inputs, _ = number
    asked = [(i, s) for i, choices in enumerate(options) for s in choices if len(choices) > 1]
    for start in range(0, len(asked), batch_size):
        chunk = asked[start : start + batch_size]
        where = {i: k for k, i in enumerate(dict.fromkeys(i for i, _ in chunk))}
        x = np.stack([inputs[i] for i in where])
        owners = [where[i] for i, _ in chunk]
        logps = sequence_logp(model, x, [s for _, s in chunk], owners)
        for (i, s), logp in zip(chunk, logps):
            total, path = options[i][s]
            options[i][s] = (total + float(logp), path)
