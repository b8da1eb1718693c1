"""Two touching digits no wider than one: the pair probe finds them, and reading in pieces
then reads them as two."""

import numpy as np
import pytest

import digitformer
from digitformer.data import load_split
from digitformer.inference.novelty import features
from digitformer.inference.pairs import Pairs, fit
from digitformer.inference.pieces import cut_at_gaps, read_in_pieces
from digitformer.training.pairs import compose, narrow_pieces
from helpers import SUBSET


@pytest.fixture(scope="module")
def digit_model():
    return digitformer.load("digit").model


def test_a_probe_fitted_on_narrow_pieces_tells_pairs_from_single_digits(digit_model, tmp_path):
    train, test = load_split(SUBSET, "train"), load_split(SUBSET, "test")
    pieces, counts = narrow_pieces(train.images, np.random.default_rng(0), 800)
    held, held_counts = narrow_pieces(test.images[:500], np.random.default_rng(1), 300)
    probe = fit(digit_model, pieces, counts, held, held_counts, keep=0.98)
    new, new_counts = narrow_pieces(test.images[500:], np.random.default_rng(2), 300)
    feats = features(digit_model, new)
    two = probe.is_two(feats).numpy()
    # pieces of digits neither the fit nor the threshold saw
    assert two[new_counts == 1].mean() < 0.06 and two[new_counts == 2].mean() > 0.55
    probe.save(tmp_path / "p.safetensors")
    again = Pairs.load(tmp_path / "p.safetensors")
    assert again.threshold == probe.threshold
    np.testing.assert_array_equal(again.is_two(feats), probe.is_two(feats))
    np.testing.assert_allclose(again.probability(feats), probe.probability(feats), atol=1e-6)


def _pictures(frames, labels, n: int, count: int, seed: int):
    """`count` pictures of n digits that cut into one narrow piece, dark ink on white, with
    the digits they hold."""
    rng = np.random.default_rng(seed)
    pictures, truth = [], []
    while len(pictures) < count:
        picture, drawn = compose(frames, rng, n)
        (*rest, piece) = cut_at_gaps(picture)
        if not rest and piece.single:
            pictures.append(1 - picture)
            truth.append("".join(str(labels[k]) for k in drawn))
    return pictures, truth


def test_reading_in_pieces_reads_two_where_the_bundled_probe_finds_two(digit_model):
    """Narrow touching pairs read right more often with the bundled probe than without it,
    and single digits as often (the probe sends a piece it finds two to the numbers model, and
    its cuts are asked for two digits)."""
    assert isinstance(getattr(digit_model, "pairs", None), Pairs)
    test = load_split(SUBSET, "test")
    number = digitformer.load("number", pieces=False).model
    pairs, pair_truth = _pictures(test.images, test.labels, 2, 40, seed=3)
    singles, single_truth = _pictures(test.images, test.labels, 1, 40, seed=4)
    pictures, truth = pairs + singles, pair_truth + single_truth
    names = [str(i) for i in range(len(pictures))]
    probe = digit_model.pairs
    try:
        with_probe = read_in_pieces(number, digit_model, pictures, names).results
        del digit_model.pairs
        without = read_in_pieces(number, digit_model, pictures, names).results
    finally:
        digit_model.pairs = probe
    right = np.array([r.digits == t for r, t in zip(with_probe, truth)])
    right_without = np.array([r.digits == t for r, t in zip(without, truth)])
    assert right[:40].sum() >= right_without[:40].sum() + 6
    assert right[40:].sum() >= right_without[40:].sum() - 2
