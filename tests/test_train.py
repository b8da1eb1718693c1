import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from digitformer.errors import DigitformerError
from digitformer.evaluate import evaluate_checkpoint
from digitformer.settings import resolve_settings
from digitformer.train import lr_at, train

VIT = {
    "model.patch_size": 7,
    "model.dim": 32,
    "model.depth": 2,
    "model.heads": 4,
    "model.ff_dim": 64,
    "model.norm": "pre",
}
S2S = {
    "model.dim": 32,
    "model.enc_depth": 2,
    "model.dec_depth": 1,
    "model.heads": 4,
    "model.ff_dim": 64,
    "model.attention": "quadrant",
}


def settings_for(task, mnist_dir, tmp_path, **overrides):
    base = {
        "data_dir": str(mnist_dir),
        "out_dir": str(tmp_path / "runs"),
        "val_size": 500,
        "batch_size": 64,
        "lr": 3e-3,
        "warmup_steps": 10,
        "display": False,
        "val_grids": 200,
        "test_grids": 200,
        "train_grids": 1500,
    }
    base.update(VIT if task == "encoder-only" else S2S)
    base.update(overrides)
    return resolve_settings(task, "default", base, env_file=None)


def test_vit_training_beats_chance_and_eval_agrees(mnist_dir, tmp_path):
    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=2)
    summary = train(s)
    assert summary["best"] > 0.6  # chance is 0.1
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    result = evaluate_checkpoint(summary["run_dir"], "test")
    assert result["count"] == 1000 and result["accuracy"] > 0.6
    assert np.asarray(result["confusion"]).sum() == 1000
    val = evaluate_checkpoint(summary["run_dir"], "val")
    assert val["accuracy"] == pytest.approx(summary["best"])


def test_seq2seq_training_beats_chance(mnist_dir, tmp_path):
    s = settings_for("encoder-decoder", mnist_dir, tmp_path, epochs=3)
    summary = train(s)
    result = evaluate_checkpoint(summary["run_dir"], "test")
    assert result["digit_accuracy"] > 0.4  # chance is 0.1
    assert result["sequence_accuracy"] > 0.01  # chance is 0.0001
    assert len(result["position_accuracy"]) == 4


@pytest.mark.parametrize("task", ["encoder-only", "encoder-decoder"])
def test_resume_continues_the_same_run(mnist_dir, tmp_path, task):
    extra = {"train_size": 600, "train_grids": 300}
    straight = train(settings_for(task, mnist_dir, tmp_path, epochs=2, run="straight", **extra))
    train(settings_for(task, mnist_dir, tmp_path, epochs=1, run="split", **extra))
    resumed = train(
        settings_for(task, mnist_dir, tmp_path, epochs=2, run="split", **extra), resume=True
    )
    a = load_file(f"{straight['run_dir']}/last.safetensors")
    b = load_file(f"{resumed['run_dir']}/last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_existing_run_is_never_overwritten(mnist_dir, tmp_path):
    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=1, train_size=300)
    train(s)
    before = (tmp_path / "runs" / s.run / "last.safetensors").read_bytes()
    with pytest.raises(DigitformerError, match="already holds a run"):
        train(s)
    assert (tmp_path / "runs" / s.run / "last.safetensors").read_bytes() == before


def test_resume_without_a_run_is_a_clear_error(mnist_dir, tmp_path):
    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=1)
    with pytest.raises(DigitformerError, match="checkpoint not found"):
        train(s, resume=True)


def test_lr_schedule_warms_up_then_decays_to_min():
    s = resolve_settings(
        "encoder-only", "default", {"lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 10}, env_file=None
    )
    assert lr_at(0, 100, s) == pytest.approx(1e-4)
    assert lr_at(9, 100, s) == pytest.approx(1e-3)
    assert lr_at(100, 100, s) == pytest.approx(1e-5)
    assert lr_at(50, 100, s) < lr_at(20, 100, s)
