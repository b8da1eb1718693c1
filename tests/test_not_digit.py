"""Not a digit, taught: the digit reader fine-tuned with an eleventh class on pictures of marks
that are no digit (`digitformer.data.marks`), and its judge (`inference.novelty`) using it."""

import copy

import numpy as np
import pytest
import torch

from digitformer.data import load_split
from digitformer.data.marks import not_digits, on_paper
from digitformer.inference.checkpoint import load_model
from digitformer.inference.novelty import Novelty, features, fit
from digitformer.training.not_digit import as_read, teach
from helpers import SUBSET


@pytest.fixture(scope="module")
def taught():
    """The bundled reader taught for 60 steps on the small MNIST subset and 300 marks."""
    base, meta = load_model("pretrained:digit")
    model = copy.deepcopy(base).float()
    train = load_split(SUBSET, "train")
    marks = as_read(not_digits(np.random.default_rng(0), 300, train.images, train.labels))
    torch.manual_seed(0)
    other = teach(
        model,
        train.images,
        train.labels,
        marks,
        meta["settings"],
        60,
        2e-4,
        batch_size=32,
        marks_per_batch=8,
    )
    return base, model, other, train


def test_marks_are_drawn_in_every_kind_and_most_have_ink_to_read():
    train = load_split(SUBSET, "train")
    pictures = not_digits(np.random.default_rng(1), 80, train.images, train.labels)
    assert len(pictures) == 80 and all(p.dtype == np.float32 for p in pictures)
    assert all(p.min() >= 0 and p.max() <= 1 for p in pictures)
    assert len({p.shape for p in pictures}) > 10  # pictures of many sizes
    read = as_read(pictures)
    assert read.dtype == np.uint8 and read.shape[1:] == (28, 28)
    assert 0.6 * 80 <= len(read) < 80  # a shadow alone on paper is mostly refused before
    digits = as_read(on_paper(train.images[:40], np.random.default_rng(2)))
    assert len(digits) == 40  # every digit drawn the same way has ink


def test_a_taught_judge_refuses_marks_it_never_saw_and_keeps_digits(taught, tmp_path):
    base, model, other, train = taught
    assert other.shape == (11, model.head.in_features + 1)
    # the ten rows of the taught head are the model's own head: its readings are its own
    torch.testing.assert_close(other[:10, :-1], model.head.weight.detach())
    test = load_split(SUBSET, "test")
    novelty = fit(model, train.images, train.labels, test.images[:300], 0.99, other)
    assert novelty.other_threshold < 1.0
    unseen = as_read(not_digits(np.random.default_rng(7), 120, train.images, train.labels))
    taught_refuses = novelty.is_novel(features(model, unseen)).float().mean()
    untaught = fit(base, train.images, train.labels, test.images[:300], 0.99)
    untaught_refuses = untaught.is_novel(features(base, unseen)).float().mean()
    assert taught_refuses > untaught_refuses + 0.05
    kept = ~novelty.is_novel(features(model, test.images[300:]))
    assert kept.float().mean() > 0.95
    with torch.inference_mode():
        logits = model(torch.from_numpy(test.images).float()[:, None] / 255)
    assert (logits.argmax(1).numpy() == test.labels).mean() > 0.95  # it still reads digits
    novelty.save(tmp_path / "n.safetensors")
    again = Novelty.load(tmp_path / "n.safetensors")
    assert again.other_threshold == novelty.other_threshold
    feats = features(model, unseen[:20])
    torch.testing.assert_close(again.not_digit(feats), novelty.not_digit(feats))


def test_taught_in_its_last_blocks_only_the_rest_of_the_reader_is_as_it_was():
    base, meta = load_model("pretrained:digit")
    model = copy.deepcopy(base).float()
    train = load_split(SUBSET, "train")
    marks = as_read(not_digits(np.random.default_rng(3), 40, train.images, train.labels))
    teach(
        model,
        train.images,
        train.labels,
        marks,
        meta["settings"],
        5,
        1e-3,
        batch_size=16,
        marks_per_batch=4,
        blocks=1,
    )
    before, after = base.state_dict(), model.state_dict()
    moved = {k for k in before if not torch.equal(before[k].float(), after[k])}
    assert moved and all(k.startswith(("encoder.5.", "norm.", "head.")) for k in moved)
    assert any(k.startswith("encoder.5.") for k in moved)


def test_a_zigzag_is_one_stroke_across_its_canvas():
    """`marks._zigzag`: a sawtooth drawn as one line (a stroke across it on some), reaching
    over most of its picture and covering little of it: a mark, not a blot."""
    from scipy import ndimage

    from digitformer.data.marks import _zigzag

    rng = np.random.default_rng(0)
    for _ in range(20):
        ink = _zigzag(rng) > 0.5
        parts = ndimage.label(ink)[1]
        ys, xs = np.nonzero(ink)
        reach = max(np.ptp(ys), np.ptp(xs)) / ink.shape[0]
        assert 1 <= parts <= 2 and reach > 0.35 and ink.mean() < 0.6
