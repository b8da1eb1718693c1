"""A cluster of touching digits cut into digits by the digit reader."""

import numpy as np
import pytest

import digitformer
from digitformer.data import load_split
from digitformer.inference.cuts import best_path, candidate_cuts, candidate_digits, read_by_cuts
from helpers import SUBSET


@pytest.fixture(scope="module")
def digits():
    return load_split(SUBSET, "test")


def touching(a: np.ndarray, b: np.ndarray, overlap: int) -> np.ndarray:
    """Two 28x28 digits (light on black) side by side, `overlap` columns shared, on black."""
    canvas = np.zeros((28, 56 - overlap), np.float32)
    canvas[:, :28] = a / 255
    canvas[:, 28 - overlap :] = np.maximum(canvas[:, 28 - overlap :], b / 255)
    return np.pad(canvas, 6)


def test_the_best_row_of_runs_tiles_the_cluster_with_the_given_count():
    spans = [(0, 10), (10, 20), (0, 20), (20, 30), (10, 30)]
    scores = [-0.1, -0.1, -0.05, -0.2, -1.0]
    assert best_path(spans, scores, 30) == [2, 3]  # 2 runs: -0.25, better than 3 (-0.4)
    assert best_path(spans, scores, 30, count=3) == [0, 1, 3]
    assert best_path(spans, scores, 30, count=1) is None  # no one run spans 0-30
    assert best_path(spans, [-0.1, -np.inf, -0.05, -0.2, -1.0], 30, count=3) == [0, 1, 3]
    assert best_path([(0, 10)], [-0.1], 30) is None


def test_a_cut_is_offered_where_two_touching_digits_meet(digits):
    """Of pairs of real digits touching, a candidate cut lies within 4 columns of where the
    second digit's ink begins or the first one's ends, and the runs cover the cluster."""
    near = 0
    for i in range(0, 40, 2):
        a, b = digits.images[i], digits.images[i + 1]
        ink = touching(a, b, 12)[6:-6, 6:-6]
        cols_a, cols_b = np.flatnonzero(a.any(0)), np.flatnonzero(b.any(0)) + 16
        cuts = candidate_cuts(ink, 20)
        near += any(cols_b[0] - 4 <= c <= cols_a[-1] + 4 for c in cuts)
        spans, crops = candidate_digits(ink, 20)
        assert len(spans) == len(crops) and all(c.any() for c in crops)
        assert {a for a, _ in spans} >= {0} and max(b for _, b in spans) == ink.shape[1]
    assert near >= 18


def test_touching_pairs_read_as_their_two_digits_given_their_count(digits):
    """Pairs of real MNIST test digits touching or overlapping, read by cuts as two digits:
    most are read right, each digit's span in order inside the cluster."""
    digit = digitformer.load("digit")
    clusters, truth = [], []
    for i in range(0, 60, 2):
        clusters.append(touching(digits.images[i], digits.images[i + 1], 10))
        truth.append(f"{digits.labels[i]}{digits.labels[i + 1]}")
    read = read_by_cuts(digit.model, clusters, [2] * len(clusters))
    right = [r is not None and r.digits == t for r, t in zip(read, truth)]
    assert np.mean(right) >= 0.9  # 30 of 30 when written
    for r in read:
        if r is not None:
            assert len(r.digits) == 2 and len(r.spans) == 2 and len(r.confidence) == 2
            (a0, a1), (b0, b1) = r.spans
            assert 0 <= a0 < a1 == b0 < b1 <= 1
