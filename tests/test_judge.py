"""A judge apart: a second digit ViT, with its own fitted judgement, that says "not a digit"
for a reader's whole pictures; the pieces of a number are judged by the reader's own."""

import shutil

import numpy as np
import pytest
import torch

from digitformer.data import load_split
from digitformer.inference import checkpoint
from digitformer.inference.novelty import Novelty, features
from digitformer.inference.predict import predict_pictures
from digitformer.inference.readers import judge_of, read_judged
from digitformer.utils.errors import DigitformerError
from helpers import SUBSET


@pytest.fixture
def judged_reader(tmp_path, monkeypatch, tiny_checkpoint):
    """A tiny reader bundled (in a stand-in package folder) with its own judgement and a judge
    apart: another tiny ViT with a fitted judgement of its own."""
    reader, path = tiny_checkpoint("encoder-only")
    torch.manual_seed(1)
    judge_path = tmp_path / "encoder-only.judge.safetensors"
    shutil.copyfile(path, judge_path)
    weights = checkpoint.read_checkpoint(judge_path)[0]
    judge = checkpoint.load_model(judge_path)[0]
    judge.load_state_dict({k: v + 0.05 * torch.randn_like(v) for k, v in weights.items()})
    meta = {"model_type": "encoder-only", "model_config": judge.cfg.to_dict()}
    checkpoint.save_checkpoint(judge_path, judge, meta)
    images = load_split(SUBSET, "test").images[:64]
    # each judges by the distance to the mean of its features: the judge refuses the farther
    # half; the reader the farthest 40% of a piece, and the farthest 20% of a whole picture
    for model, name, share, whole in ((judge, "judge.", 0.5, None), (reader, "", 0.6, 0.8)):
        feats = features(model, images)
        means = feats.mean(0).expand(10, -1).contiguous()
        distance = Novelty(means, torch.eye(feats.shape[1]), float("inf")).distance(feats)
        loose = None if whole is None else float(distance.quantile(whole))
        novelty = Novelty(means, torch.eye(feats.shape[1]), float(distance.quantile(share)))
        Novelty(novelty.means, novelty.precision, novelty.threshold, whole_threshold=loose).save(
            tmp_path / f"encoder-only.{name}novelty.safetensors"
        )
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tmp_path)
    return path, images


def test_a_judge_apart_judges_whole_pictures_and_the_reader_reads_them(judged_reader):
    path, images = judged_reader
    model = checkpoint.load_model(path)[0]
    assert model.judge_path.name == "encoder-only.judge.safetensors"
    assert getattr(model, "judge", None) is None  # loaded when first needed
    pieces = read_judged(model, images, views=True)  # a number's pieces: the reader's own judge
    own = features(model, images)
    np.testing.assert_array_equal(pieces.far, model.novelty.is_novel(own).numpy())
    assert getattr(model, "judge", None) is None
    # a whole picture: no digit where the judge apart says so, or the reader's own by its
    # looser distance
    whole = read_judged(model, images, views=True, apart=True)
    judge = judge_of(model)
    by_judge = judge.novelty.is_novel(features(judge, images)).numpy()
    by_reader = model.novelty.is_novel(own, whole=True).numpy()
    expected = by_judge | by_reader
    np.testing.assert_array_equal(whole.far, expected)
    assert by_reader.sum() < pieces.far.sum()  # the looser distance
    assert (by_reader & ~by_judge).any() and (by_judge & ~by_reader).any()  # each one counts
    assert 0 < whole.far.sum() < len(images)
    np.testing.assert_array_equal(whole.tokens, pieces.tokens)  # the judge reads nothing
    np.testing.assert_allclose(whole.probs, pieces.probs)
    # `predict` refuses exactly what the judge refuses, and reads the rest with the reader
    pictures, names = list(images / 255.0), [str(k) for k in range(len(images))]
    out = predict_pictures(model, pictures, names, preprocess=False)
    refused = [r.reason is not None for r in out.results]
    assert refused == expected.tolist() and out.unlike == {str(k) for k in np.flatnonzero(expected)}
    kept = [r for r, far in zip(out.results, expected) if not far]
    assert all(r.digits is not None for r in kept)
    # without judging, nothing is refused, and every picture is read
    out = predict_pictures(model, pictures, names, preprocess=False, judge=False)
    assert all(r.digits is not None for r in out.results)


def test_a_judge_apart_without_its_judgement_is_a_clear_error(judged_reader, tmp_path):
    path, images = judged_reader
    (tmp_path / "encoder-only.judge.novelty.safetensors").unlink()
    model = checkpoint.load_model(path)[0]
    with pytest.raises(DigitformerError, match="no fitted judgement"):
        read_judged(model, images, views=True, apart=True)


def test_a_judge_has_no_judge_and_a_run_outside_the_package_has_none(judged_reader, tmp_path):
    path, _ = judged_reader
    judge = checkpoint.load_model(tmp_path / "encoder-only.judge.safetensors")[0]
    assert getattr(judge, "judge_path", None) is None and judge.novelty is not None
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    copy = shutil.copyfile(path, elsewhere / path.name)
    assert getattr(checkpoint.load_model(copy)[0], "judge_path", None) is None


def test_the_bundled_digit_reader_has_a_taught_judge_that_numbers_in_pieces_never_ask():
    """pretrained:digit's judge apart was taught marks that are no digit (its judgement has
    the eleventh class's head); reading a number in pieces leaves it unloaded, and a whole
    picture loads it."""
    from digitformer.inference.pieces import read_in_pieces

    model = checkpoint.load_model("pretrained:digit")[0]
    assert model.judge_path.name == "digit.judge.safetensors"
    number = checkpoint.load_model("pretrained:number")[0]
    test = load_split(SUBSET, "test")
    line = np.pad(np.concatenate(list(test.images[:3]), 1), 8).astype(np.float32) / 255
    read = read_in_pieces(number, model, [line], ["line"])
    assert read.results[0].digits is not None and getattr(model, "judge", None) is None
    predict_pictures(model, [test.images[0] / 255.0], ["one"])
    assert judge_of(model) is model.judge and model.judge.novelty.other is not None
