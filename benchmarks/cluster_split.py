"""Touching digits: split a cluster by the digit reader and let the two readers vote?

    python -m benchmarks.cluster_split [--seed 2] [--count 25] [--json OUT.json]

Reading in pieces (`digitformer.inference.pieces`) leaves each cluster of touching digits to
the numbers model. This measures a segmentation-recognition alternative on those clusters:

- cuts: the ink's column-sum minima and a grid every sixth of the ink's height; segments
  between any two cuts 0.15-1.3 heights apart, each read by the digit reader (unjudged);
- candidates: the numbers model's greedy reading s0 (length n), and for n-1, n, n+1 digits
  the best split's digits (dynamic programming over the cuts);
- each candidate scored by a product of experts: log P(string) under the numbers model
  (teacher forcing, the end token included) plus the best split's log-probability of those
  digits under the digit reader; with `--judge`, a split may use only segments the digit
  reader's novelty judge takes for a digit.

Clusters come from the independent suite's number sets (default seed 2, the development
seed); the truth of a cluster is the digits whose boxes' centres fall inside it. Only clusters
the numbers model reads as two digits or more count (the others are the digit reader's).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy import ndimage  # noqa: E402

from benchmarks.independent.evaluate import cpu_name, git_commit  # noqa: E402
from benchmarks.independent.numbers import NUMBER_SETS, Sources, build_suite  # noqa: E402


def clusters(suite) -> list[tuple[str, str, np.ndarray]]:
    """(set, true digits, piece image) for every piece wider than a digit."""
    from digitformer.inference.pieces import cut_at_gaps
    from digitformer.inference.reader import _pixels
    from digitformer.utils.errors import DigitformerError

    out = []
    for name, items in suite.items():
        for item in items:
            try:
                pieces = cut_at_gaps(_pixels(item.image, name))
            except DigitformerError:
                continue
            width = item.image.shape[1]
            centres = [(b[0] + b[2]) / 2 / width for b in item.boxes]
            for p in pieces:
                if not p.single:
                    inside = [j for j, c in enumerate(centres) if p.span[0] <= c < p.span[1]]
                    out.append((name, "".join(item.label[j] for j in inside), p.image))
    return out


def segments(piece: np.ndarray) -> tuple[list[int], list[tuple[int, int]], list[np.ndarray]]:
    """Cut positions, the (i, j) pairs of cuts that bound a segment, and each segment's crop."""
    rows = np.flatnonzero(piece.max(1) > 0.1)
    xs = np.flatnonzero(piece.max(0) > 0.1)
    height, x0, x1 = rows[-1] - rows[0] + 1, xs[0], xs[-1] + 1
    profile = ndimage.uniform_filter1d(piece.sum(0), 3)
    lo, hi = x0 + 0.2 * height, x1 - 0.2 * height
    minima = [
        x
        for x in range(x0 + 1, x1 - 1)
        if profile[x] <= min(profile[x - 1], profile[x + 1]) and lo < x < hi
    ]
    grid = range(int(lo), int(hi), max(2, round(height / 6)))
    cuts: list[int] = []
    for x in sorted({*minima, *grid}):
        if not cuts or x - cuts[-1] >= 2:
            cuts.append(x)
    X = [int(x0), *cuts, int(x1)]
    pairs = [
        (i, j)
        for i in range(len(X))
        for j in range(i + 1, len(X))
        if 0.15 * height <= X[j] - X[i] <= 1.3 * height
    ]
    return X, pairs, [np.pad(piece[:, X[i] : X[j]], 4) for i, j in pairs]


def best_split(X, pairs, logp, n, digits=None):
    """(score, digits) of the best split into n segments (each its most likely digit, or the
    given `digits`), or None."""
    best = {(0, 0): (0.0, [])}
    by_end: dict[int, list] = {}
    for s, (i, j) in enumerate(pairs):
        by_end.setdefault(j, []).append((i, s))
    for k in range(1, n + 1):
        for j in range(1, len(X)):
            options = []
            for i, s in by_end.get(j, []):
                if (i, k - 1) in best and logp[s] is not None:
                    d = digits[k - 1] if digits else int(logp[s].argmax())
                    prev = best[i, k - 1]
                    options.append((prev[0] + float(logp[s][d]), [*prev[1], d]))
            if options:
                best[j, k] = max(options)
    return best.get((len(X) - 1, n))


def number_logp(model, piece: np.ndarray, strings: list[str]) -> np.ndarray:
    """log P(each string, then the end token) under the numbers model, by teacher forcing."""
    from digitformer.inference.readers import READERS
    from digitformer.utils.tensors import to_float

    cfg = model.cfg
    x = READERS["number"].prepare(piece, model)
    targets = torch.full((len(strings), cfg.steps), -100)
    for k, s in enumerate(strings):
        seq = [int(ch) for ch in s][: cfg.steps - 1] + [cfg.end_token]
        targets[k, : len(seq)] = torch.tensor(seq)
    with torch.inference_mode():
        images = to_float(torch.from_numpy(np.repeat(x[None], len(strings), 0)))
        logp = F.log_softmax(model(images, targets).float(), -1)
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * (targets >= 0)
    return picked.sum(1).numpy()


def segment_logps(digit_model, crops, judge: bool) -> list[np.ndarray | None]:
    from digitformer.inference.novelty import features
    from digitformer.inference.predict import predict_pictures

    names = [str(i) for i in range(len(crops))]
    read = predict_pictures(
        digit_model,
        crops,
        names,
        True,
        512,
        "cpu",
        ["digit"] * len(crops),
        judge=False,
        apart=False,
    )
    by_name = {r.file: (r, x) for r, x in zip(read.results, read.inputs)}
    logps: list[np.ndarray | None] = [None] * len(crops)
    ok = [i for i in range(len(crops)) if names[i] in by_name and by_name[names[i]][0].digits]
    for i in ok:
        logps[i] = np.log(np.maximum(by_name[names[i]][0].probabilities[0], 1e-9))
    if judge and ok:
        far = digit_model.novelty.is_novel(
            features(digit_model, np.stack([by_name[names[i]][1] for i in ok]))
        )
        for i, f in zip(ok, far.tolist()):
            if f:
                logps[i] = None  # a segment like no digit cannot be one of the number's
    return logps


def vote(number_model, piece, s0, X, pairs, logp) -> str:
    candidates = {s0}
    for n in range(max(1, len(s0) - 1), len(s0) + 2):
        split = best_split(X, pairs, logp, n)
        if split:
            candidates.add("".join(map(str, split[1])))
    ordered = sorted(candidates)
    total = number_logp(number_model, piece, ordered)
    for k, s in enumerate(ordered):
        split = best_split(X, pairs, logp, len(s), [int(ch) for ch in s])
        total[k] += split[0] if split else -np.inf
    if not np.isfinite(total).any():
        return s0  # no split of digits only: the numbers model's reading stands
    return ordered[int(np.argmax(total))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--count", type=int, default=25)
    parser.add_argument("--judge", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import digitformer
    from digitformer.inference.predict import predict_pictures

    torch.set_num_threads(2)
    suite = build_suite(Sources(), count=args.count, seed=args.seed, sets=NUMBER_SETS)
    found = clusters(suite)
    number, digit = digitformer.load("number", pieces=False), digitformer.load("digit")
    names = [str(k) for k in range(len(found))]
    t = time.perf_counter()
    greedy = predict_pictures(
        number.model, [c[2] for c in found], names, True, 256, "cpu", ["number"] * len(found)
    )
    number_s = time.perf_counter() - t
    by_name = {r.file: r.digits for r in greedy.results}
    t = time.perf_counter()
    cut = [segments(piece) for _, _, piece in found]
    logps = segment_logps(digit.model, [c for _, _, crops in cut for c in crops], args.judge)
    counts, start = Counter(), 0
    for k, ((_, truth, piece), (X, pairs, crops)) in enumerate(zip(found, cut)):
        logp, start = logps[start : start + len(crops)], start + len(crops)
        s0 = by_name.get(names[k])
        if s0 is None or len(s0) < 2:
            continue
        picked = vote(number.model, piece, s0, X, pairs, logp)
        counts["clusters"] += 1
        counts["number right"] += s0 == truth
        counts["vote right"] += picked == truth
        counts["fixed"] += s0 != truth and picked == truth
        counts["broken"] += s0 == truth and picked != truth
    split_s = time.perf_counter() - t
    result = {
        "command": "python -m benchmarks.cluster_split "
        + " ".join(f"--{k} {v}" for k, v in (("seed", args.seed), ("count", args.count)))
        + (" --judge" if args.judge else ""),
        "counts": dict(counts),
        "segments": len(logps),
        "segments_per_cluster": round(len(logps) / max(1, len(found)), 1),
        "number_s": round(number_s, 1),
        "split_and_vote_s": round(split_s, 1),
        "machine": {"cpu": cpu_name(), "threads": 2, "torch": torch.__version__},
        "commit": git_commit(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
