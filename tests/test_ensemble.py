import pytest
import torch
import torch.nn.functional as F

from conftest import TINY
from digitformer.cli import main
from digitformer.models import build_model
from digitformer.models.ensemble import Ensemble
from digitformer.train import train
from test_train import settings_for


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
    assert main(["eval", "--ensemble", *runs, "--split", "val"]) == 0
    report = capsys.readouterr().out
    assert report.startswith("encoder-only ensemble of 2 checkpoints")
    assert main(["eval", "--ensemble", *runs, "--json"]) == 0
    assert '"models": 2' in capsys.readouterr().out
    s = settings_for("encoder-decoder", mnist_dir, tmp_path, epochs=1, run="grid", train_grids=64)
    grid_run = train(s)["run_dir"]
    capsys.readouterr()
    assert main(["eval", runs[0], "--ensemble", grid_run]) == 1
    assert "one model type" in capsys.readouterr().err
    assert main(["eval"]) == 1
