"""A cluster of touching digits cut into digits by the digit reader."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import digitformer
from digitformer.data import load_split
from digitformer.inference.cuts import (
    best_path,
    candidate_cuts,
    candidate_digits,
    on_a_row,
    read_by_cuts,
)
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
    assert best_path(spans, scores, 30) == (pytest.approx(-0.25), [2, 3])  # better than 3 runs
    assert best_path(spans, scores, 30, count=3)[1] == [0, 1, 3]
    assert best_path(spans, scores, 30, count=1) is None  # no one run spans 0-30
    assert best_path(spans, [-0.1, -np.inf, -0.05, -0.2, -1.0], 30, count=3)[1] == [0, 1, 3]
    assert best_path([(0, 10)], [-0.1], 30) is None


def test_the_best_row_of_given_digits_scores_each_run_by_its_place():
    """With each run's ten log-probabilities, a row scores its runs' best digits, or the given
    digits in order (as many runs as digits)."""
    spans = [(0, 10), (10, 20), (0, 20), (20, 30)]
    table = np.full((4, 10), np.log(0.01))
    table[0, 1], table[1, 7], table[2, 4], table[3, 3] = np.log([0.9, 0.5, 0.5, 0.8])
    assert best_path(spans, table, 30)[1] == [2, 3]  # "43": 0.5 x 0.8 beats 0.9 x 0.5 x 0.8
    total, path = best_path(spans, table, 30, digits="173")
    assert path == [0, 1, 3] and total == pytest.approx(np.log(0.9 * 0.5 * 0.8))
    total, path = best_path(spans, table, 30, digits="13")
    assert path == [2, 3] and total == pytest.approx(np.log(0.01 * 0.8))


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.sets(st.integers(1, 59), max_size=8),
    widths=st.tuples(st.integers(1, 30), st.integers(1, 60)),
    seed=st.integers(0, 2**16),
    count=st.integers(1, 6),
)
def test_the_runs_on_no_row_of_the_counts_weighed_change_no_best_row(cuts, widths, seed, count):
    """Keeping only the runs `on_a_row` finds for some counts, the best row of each of those
    counts (by scores, or by given digits) is the one found among all the runs."""
    rng = np.random.default_rng(seed)
    edges = [0, *sorted(cuts), 60]
    spans = [(a, b) for i, a in enumerate(edges) for b in edges[i + 1 :] if widths[0] <= b - a]
    spans = [(a, b) for a, b in spans if b - a <= max(widths)]
    table = np.log(rng.dirichlet(np.ones(10), len(spans))) if spans else np.zeros((0, 10))
    table[rng.random(len(spans)) < 0.1] = -np.inf  # runs the judge takes for no digit
    lengths = {count, max(1, count - 1)}
    kept = on_a_row(spans, 60, lengths)
    for n in lengths:
        full = best_path(spans, table, 60, n)
        some = best_path([spans[k] for k in kept], table[kept], 60, n)
        assert (full is None) == (some is None)
        if full is not None:
            assert some[0] == full[0]
            assert not np.isfinite(full[0]) or [kept[k] for k in some[1]] == full[1]
        digits = "".join(map(str, rng.integers(0, 10, n)))
        full = best_path(spans, table, 60, digits=digits)
        some = best_path([spans[k] for k in kept], table[kept], 60, digits=digits)
        assert (full is None) == (some is None)
        if full is not None:
            assert some[0] == full[0]
    # and a run is kept just where some row of those counts holds it (one that scores it
    # high, and every other run low, holds it when any does)
    for k in range(len(spans)):
        bonus = np.where(np.arange(len(spans)) == k, 100.0, -1.0)
        rows = [best_path(spans, bonus, 60, n) for n in lengths]
        assert (k in kept) == any(row is not None and k in row[1] for row in rows)


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


def test_a_numbers_models_log_probability_of_its_own_reading_is_its_steps(digits):
    """Teacher forcing gives the greedy reading the log of its steps' probabilities (the end
    token's included), and a reading one digit longer less; the same from one encoding of
    the input as from one each."""
    from digitformer.inference.cuts import sequence_logp
    from digitformer.inference.readers import READERS, read

    number = digitformer.load("number", pieces=False).model
    lines = [touching(digits.images[i], digits.images[i + 1], 6) for i in range(0, 16, 2)]
    inputs = np.stack([READERS["number"].prepare(line, number) for line in lines])
    tokens, probs = read(number, inputs)
    end = number.cfg.end_token
    saids, owns = [], []
    for x, t, p in zip(inputs, tokens, probs):
        n = list(t).index(end)
        said = "".join(str(int(d)) for d in t[:n])
        steps = np.log(p[np.arange(n + 1), t[: n + 1]]).sum()
        own, longer = sequence_logp(number, np.stack([x, x]), [said, said + said[-1]])
        assert own == pytest.approx(steps, abs=1e-3) and longer < own
        saids.append(said)
        owns.append(own)
    back = list(range(len(inputs)))[::-1]  # each input encoded once, read in another order
    strings = [saids[k] + saids[k] for k in back] + [saids[k] for k in back]
    once = sequence_logp(number, inputs, strings, owners=back * 2)
    twice = [sequence_logp(number, inputs[[k]], [saids[k] + saids[k]])[0] for k in back]
    assert once == pytest.approx(twice + owns[::-1], abs=1e-4)


def test_a_cluster_counted_one_digit_too_many_is_read_by_both_readers_together(digits):
    """Touching pairs of real MNIST test digits counted as three: cut into three runs, the
    digit reader alone must read three digits; with the numbers model's vote (the row of one
    fewer is a candidate too, scored by both readers) most are read as their two."""
    from digitformer.inference.readers import READERS

    digit = digitformer.load("digit").model
    number = digitformer.load("number", pieces=False).model
    clusters = [touching(digits.images[i], digits.images[i + 1], 10) for i in range(0, 60, 2)]
    truth = [f"{digits.labels[i]}{digits.labels[i + 1]}" for i in range(0, 60, 2)]
    inputs = [READERS["number"].prepare(c, number) for c in clusters]
    said = ["1" + t for t in truth]  # a reading one digit too long
    alone = read_by_cuts(digit, clusters, [3] * len(clusters))
    voted = read_by_cuts(digit, clusters, [3] * len(clusters), number=(number, inputs, said))
    assert all(r is None or len(r.digits) == 3 for r in alone)
    right = np.mean([r is not None and r.digits == t for r, t in zip(voted, truth)])
    assert right >= 0.8  # 30 of 30 when written
