import pytest
import torch
import torch.nn.functional as F

from digitformer.apps.cli import main
from digitformer.inference.ensemble import Ensemble, tta_views
from digitformer.inference.readers import DIGIT_VIEWS as TTA_VIEWS
from digitformer.models import build_model
from digitformer.training.evaluate import evaluate_checkpoint
from digitformer.training.train import train
from helpers import TINY, data_of, settings_for


def models(task: str, n: int):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(build_model(task, TINY[task]).eval())
    return out


def test_vit_ensemble_averages_probabilities():
    a, b = models("encoder-only", 2)
    images = torch.rand(5, 1, 28, 28)
    expected = (F.softmax(a(images), -1) + F.softmax(b(images), -1)) / 2
    torch.testing.assert_close(Ensemble([a, b])(images).exp(), expected)
    torch.testing.assert_close(Ensemble([a])(images), F.log_softmax(a(images), -1))


def test_seq2seq_ensemble_of_one_is_the_model():
    (model,) = models("encoder-decoder", 1)
    grids = torch.rand(6, 1, 56, 56)
    digits, probs = model.generate(grids)
    e_digits, e_probs = Ensemble([model]).generate(grids)
    assert torch.equal(digits, e_digits)
    torch.testing.assert_close(probs, e_probs)


def test_seq2seq_ensemble_averages_each_step_on_a_shared_prefix():
    a, b = models("encoder-decoder", 2)
    grids = torch.rand(6, 1, 56, 56)
    ensemble = Ensemble([a, b])
    digits, probs = ensemble.generate(grids)
    uncached, uncached_probs = ensemble.generate(grids, use_cache=False)
    assert torch.equal(digits, uncached)
    torch.testing.assert_close(probs, uncached_probs)
    # every step's average comes from both models reading the ensemble's own prefix
    start = torch.full_like(digits[:, :1], 10)
    prefix = torch.cat([start, digits[:, :-1]], 1)
    step_probs = [F.softmax(m.decode(prefix, m.encode(grids))[0], -1) for m in (a, b)]
    torch.testing.assert_close(probs, (step_probs[0] + step_probs[1]) / 2)
    assert torch.equal(digits, probs.argmax(-1))


def test_an_ensemble_needs_one_model_type():
    with pytest.raises(ValueError, match="one type"):
        Ensemble([*models("encoder-only", 1), *models("encoder-decoder", 1)])


def test_eval_ensemble_cli(mnist_dir, tmp_path, capsys):
    runs = []
    for seed in (0, 1):
        s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=1, seed=seed, run=f"r{seed}")
        runs.append(train(s)["run_dir"])
    capsys.readouterr()
    data = ["--data-dir", str(mnist_dir)]
    assert main(["eval", "--ensemble", *runs, "--split", "val", *data]) == 0
    report = capsys.readouterr().out
    assert report.startswith("encoder-only ensemble of 2 checkpoints")
    assert main(["eval", "--ensemble", *runs, "--json", *data]) == 0
    assert '"models": 2' in capsys.readouterr().out
    s = settings_for("encoder-decoder", mnist_dir, tmp_path, epochs=1, run="grid", train_grids=64)
    grid_run = train(s)["run_dir"]
    capsys.readouterr()
    assert main(["eval", runs[0], "--ensemble", grid_run]) == 1
    assert "one model type" in capsys.readouterr().err
    assert main(["eval"]) == 1


def test_vit_tta_averages_the_tta_views():
    (a,) = models("encoder-only", 1)
    images = torch.rand(5, 1, 28, 28)
    views = tta_views(images)
    assert len(views) == 7 and torch.equal(views[0], images)
    expected = torch.stack([F.softmax(a(v), -1) for v in views]).mean(0)
    torch.testing.assert_close(Ensemble([a], tta=True)(images).exp(), expected)


def test_seq2seq_tta_averages_every_view_on_a_shared_prefix():
    (model,) = models("encoder-decoder", 1)
    grids = torch.rand(4, 1, 56, 56)
    digits, probs = Ensemble([model], tta=True).generate(grids)
    start = torch.full_like(digits[:, :1], 10)
    prefix = torch.cat([start, digits[:, :-1]], 1)
    views = tta_views(grids)
    step_probs = [F.softmax(model.decode(prefix, model.encode(v))[0], -1) for v in views]
    torch.testing.assert_close(probs, torch.stack(step_probs).mean(0))
    assert torch.equal(digits, probs.argmax(-1))


def test_eval_tta_cli(trained_runs, capsys):
    for task in ("encoder-only", "encoder-decoder"):
        data = data_of(trained_runs[task])
        plain = evaluate_checkpoint(trained_runs[task], "val", data)
        tta = evaluate_checkpoint(trained_runs[task], "val", data, tta=True)
        assert tta["tta"] and not plain["tta"] and tta["count"] == plain["count"]
        assert (tta["views"], plain["views"]) == (len(TTA_VIEWS), 1)
        metric = "accuracy" if task == "encoder-only" else "digit_accuracy"
        # the views are the same digits: reading them does not make the model worse
        assert tta[metric] >= plain[metric] - 0.05, (task, tta[metric], plain[metric])
    run = trained_runs["encoder-only"]
    assert main(["eval", run, "--tta", "--split", "val", "--data-dir", data_of(run)]) == 0
    assert f"{len(TTA_VIEWS)} test-time views averaged" in capsys.readouterr().out.splitlines()[0]
    assert main(["eval", trained_runs["encoder-decoder"], "--tta", "--beam", "3"]) == 1
    assert "no --tta" in capsys.readouterr().err


def test_a_digit_read_unsure_is_read_again_in_its_views(monkeypatch):
    """read_judged(views=True): a digit under UNSURE gets the mean of its views'
    probabilities (the test-time ensemble's), a sure one is read as it is."""
    from digitformer.inference import readers

    (model,) = models("encoder-only", 1)
    images = (torch.rand(8, 28, 28) * 255).to(torch.uint8)
    x = images[:, None].float() / 255
    alone = F.softmax(model(x), -1)
    viewed = Ensemble([model], tta=True)(x).exp()
    top = alone.max(-1).values
    monkeypatch.setattr(readers, "UNSURE", float(top.median()))
    unsure = top < readers.UNSURE
    assert 0 < unsure.sum() < len(images)
    probs = readers.read_judged(model, images.numpy(), views=True).probs
    expected = torch.where(unsure[:, None], viewed, alone)
    torch.testing.assert_close(torch.from_numpy(probs[:, 0]), expected)
    plain = readers.read_judged(model, images.numpy()).probs
    torch.testing.assert_close(torch.from_numpy(plain[:, 0]), alone)


def test_a_digit_reader_with_partners_reads_with_all(monkeypatch):
    """`model.partners`: read gives the mean of the three models' probabilities; read_judged
    with views asks the partners only of the digits the model is unsure of (their views
    averaged over all three), and reads a sure digit as the model alone does."""
    from digitformer.inference import readers

    a, b, c = models("encoder-only", 3)
    images = (torch.rand(8, 28, 28) * 255).to(torch.uint8)
    x = images[:, None].float() / 255
    everyone = Ensemble([a, b, c])(x).exp()
    alone = F.softmax(a(x), -1)
    a.partners = [b, c]
    _, probs = readers.read(a, images.numpy())
    torch.testing.assert_close(torch.from_numpy(probs[:, 0]), everyone)
    assert not torch.allclose(everyone, Ensemble([a, b])(x).exp())  # the third one counts
    monkeypatch.setattr(readers, "UNSURE", float(alone.max(-1).values.median()))
    unsure = alone.max(-1).values < readers.UNSURE
    assert 0 < unsure.sum() < len(images)
    tokens, judged, *_ = readers.read_judged(a, images.numpy(), views=True)
    expected = torch.where(unsure[:, None], Ensemble([a, b, c], tta=True)(x).exp(), alone)
    torch.testing.assert_close(torch.from_numpy(judged[:, 0]), expected)
    assert (tokens[:, 0] == expected.argmax(-1).numpy()).all()


def test_the_bundled_digit_reader_loads_its_partners_when_first_needed(mnist_dir):
    """The bundled reader has two partners (digit.partner, digit.partner2), loaded together
    the first time one is asked, each a model of its own; `eval` reads with all three."""
    from digitformer.inference.checkpoint import load_model
    from digitformer.inference.readers import partners_of, read_judged

    model, _ = load_model("pretrained:digit")
    assert getattr(model, "partners", None) is None  # not loaded yet
    assert [p.name for p in model.partner_paths] == [
        "digit.partner.safetensors",
        "digit.partner2.safetensors",
    ]
    blank = torch.zeros(1, 28, 28, dtype=torch.uint8).numpy()
    read_judged(model, blank, views=True)  # a blank frame: unsure, so the partners are asked
    first, second = model.partners
    assert len({id(model), id(first), id(second)}) == 3 and partners_of(model) == [first, second]
    assert not torch.equal(first.head.weight, second.head.weight)
    result = evaluate_checkpoint("pretrained:digit", "test", str(mnist_dir), device="cpu")
    assert result["models"] == 3


def test_partners_are_found_beside_a_bundled_model_in_their_numbers_order(
    tmp_path, monkeypatch, tiny_checkpoint
):
    """`checkpoint.partner_files`: NAME.partner, NAME.partner2, ... NAME.partner10, beside a
    model in the package only; nothing else of that name is taken for one, and a partner
    loaded on its own has none."""
    import shutil

    from digitformer.inference import checkpoint

    _, path = tiny_checkpoint("encoder-only")
    for suffix in ("partner", "partner10", "partner2", "partner.judge", "partnerx"):
        shutil.copyfile(path, tmp_path / f"encoder-only.{suffix}.safetensors")
    assert checkpoint.partner_files(path) == []  # a run's checkpoint: no partners
    assert getattr(checkpoint.load_model(path)[0], "partner_paths", None) is None
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tmp_path)
    found = checkpoint.partner_files(path)
    assert [p.name for p in found] == [
        "encoder-only.partner.safetensors",
        "encoder-only.partner2.safetensors",
        "encoder-only.partner10.safetensors",
    ]
    assert checkpoint.load_model(path)[0].partner_paths == found
    partner = checkpoint.load_model(found[0])[0]
    assert getattr(partner, "partner_paths", None) is None


def test_models_lists_the_bundled_digit_reader_as_it_reads():
    """`digitformer models` gives pretrained:digit's score with its partners (what `eval`
    and `predict` read), not its first reader's alone."""
    import json

    from digitformer.inference.checkpoint import PRETRAINED_DIR
    from digitformer.inference.reader import list_models

    test = json.loads((PRETRAINED_DIR / "report.json").read_text())["digit"]["test"]
    (row,) = [r for r in list_models("/nonexistent") if r["name"] == "pretrained:digit"]
    assert row["score"] == test["with its partners, once"]["accuracy"] != test["once"]["accuracy"]
