"""Not a digit: marks far from every digit class of the ViT's features are refused."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

import digitformer
from digitformer.data import load_split
from digitformer.inference.checkpoint import load_model
from digitformer.inference.novelty import Novelty, features, fit
from helpers import SUBSET


def scribbles(count: int, seed: int = 0) -> list[np.ndarray]:
    """Zigzags and crossed hatchings, light on black, 28x28: ink that is no digit."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = Image.new("L", (28, 28))
        draw = ImageDraw.Draw(image)
        points = [(4 + 20 * k / 6, 6 + 16 * (k % 2) + rng.uniform(-2, 2)) for k in range(7)]
        draw.line(points, fill=255, width=2)
        if rng.random() < 0.5:  # hatched across too
            draw.line([(6, 24), (22, 4)], fill=255, width=2)
        out.append(np.asarray(image))
    return out


@pytest.fixture(scope="module")
def digit_model():
    return load_model("pretrained:digit")[0]


def test_fitted_on_digits_it_keeps_held_out_digits_and_refuses_scribbles(digit_model, tmp_path):
    train, test = load_split(SUBSET, "train"), load_split(SUBSET, "test")
    novelty = fit(
        digit_model, train.images, train.labels, test.images[:500], keep=0.99, whole_keep=0.999
    )
    kept = ~novelty.is_novel(features(digit_model, test.images[500:]))
    assert kept.float().mean() > 0.95  # digits it never saw stay digits
    refused = novelty.is_novel(features(digit_model, np.stack(scribbles(40))))
    # the bundled reader's own fit refuses 68% of 200 such scribbles (the reader before it: 67%);
    # this small fit, 70% (the reader before it: over 80%)
    assert refused.float().mean() > 0.6
    novelty.save(tmp_path / "n.safetensors")
    again = Novelty.load(tmp_path / "n.safetensors")
    assert again.threshold == novelty.threshold
    feats = features(digit_model, test.images[:50])
    assert np.allclose(again.distance(feats), novelty.distance(feats), atol=1e-4)
    # a whole picture's looser distance: refuses no more than a piece's, and is kept
    assert again.whole_threshold == novelty.whole_threshold > novelty.threshold


def test_the_bundled_digit_reader_says_not_a_digit_and_numbers_read_on(digit_model):
    assert isinstance(getattr(digit_model, "novelty", None), Novelty)
    reader = digitformer.load("digit")
    marks = scribbles(10, seed=1)
    refused = [r for r in reader.predict(marks) if r.digits is None]
    assert len(refused) >= 7 and all(r.reason.startswith("not a digit") for r in refused)
    test = load_split(SUBSET, "test")
    read = reader.predict(list(test.images[:100]))
    assert sum(r.digits is None for r in read) <= 3  # real digits are kept


def test_a_reading_and_its_judgement_come_from_one_pass_as_from_two(digit_model):
    """`read_judged` reads a digit ViT's inputs and judges them from the same CLS token: the
    same tokens, probabilities, refusals and pairs found as `read` and `features` taken
    apart."""
    from digitformer.inference.readers import read, read_judged

    test = load_split(SUBSET, "test")
    images = np.concatenate([test.images[:60], np.stack(scribbles(20))])
    tokens, probs, far, two = read_judged(digit_model, images, batch_size=32)
    apart_tokens, apart_probs = read(digit_model, images)
    np.testing.assert_array_equal(tokens, apart_tokens)
    np.testing.assert_allclose(probs, apart_probs, atol=1e-5)
    feats = features(digit_model, images)
    np.testing.assert_array_equal(far, digit_model.novelty.is_novel(feats).numpy())
    np.testing.assert_array_equal(two, digit_model.pairs.is_two(feats).numpy())
    assert far[60:].sum() >= 8 and far[:60].sum() <= 3  # scribbles refused, digits kept


def test_predict_names_the_files_like_no_digit(tmp_path):
    """`predict_paths` (the `predict` command) passes on which files the judge found like
    none of the ten digits: the scribbles it refused, not the digits it read."""
    from digitformer.inference.predict import predict_paths

    test = load_split(SUBSET, "test")
    for k, image in enumerate(list(test.images[:4]) + scribbles(4, seed=1)):
        Image.fromarray(255 - np.asarray(image)).resize((84, 84)).save(tmp_path / f"{k}.png")
    out = predict_paths([str(tmp_path)], device="cpu")
    refused = {r.file for r in out.results if (r.reason or "").startswith("not a digit")}
    assert refused and out.unlike == refused
    assert not out.unlike & {r.file for r in out.results[:4]}
