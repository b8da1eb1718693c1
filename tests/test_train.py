from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from digitformer.training.evaluate import evaluate_checkpoint
from digitformer.training.optim import Muon, lr_at, orthogonalized
from digitformer.training.settings import resolve_settings
from digitformer.training.tasks import build_task
from digitformer.training.train import train
from digitformer.utils.errors import DigitformerError
from helpers import data_of, settings_for


def test_vit_training_beats_chance_and_eval_agrees(mnist_dir, tmp_path):
    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=4)
    summary = train(s)
    assert summary["best"] > 0.5  # chance is 0.1
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4]
    result = evaluate_checkpoint(summary["run_dir"], "test", str(mnist_dir))
    assert result["count"] == 1000 and result["accuracy"] > 0.5
    assert np.asarray(result["confusion"]).sum() == 1000
    val = evaluate_checkpoint(summary["run_dir"], "val", str(mnist_dir))
    assert val["accuracy"] == pytest.approx(summary["best"])


def test_seq2seq_training_beats_chance(mnist_dir, tmp_path):
    s = settings_for("encoder-decoder", mnist_dir, tmp_path, epochs=2)
    summary = train(s)
    result = evaluate_checkpoint(summary["run_dir"], "test", str(mnist_dir))
    assert result["digit_accuracy"] > 0.35  # chance is 0.1
    assert result["sequence_accuracy"] > 0.02  # chance is 0.0001
    assert len(result["position_accuracy"]) == 4


class Interrupted(Exception):
    pass


def interrupt(epoch, val_metrics):
    raise Interrupted


@pytest.mark.parametrize(
    "task, recipe",
    [
        ("encoder-only", {}),
        ("encoder-decoder", {}),
        ("encoder-only", {"optimizer": "muon", "ema": 0.9}),  # two optimizers and an average
    ],
)
def test_resume_continues_the_same_run(mnist_dir, tmp_path, task, recipe):
    extra = {"train_size": 600, "train_grids": 300, **recipe}
    straight = train(settings_for(task, mnist_dir, tmp_path, epochs=2, run="straight", **extra))
    interrupted = settings_for(task, mnist_dir, tmp_path, epochs=2, run="split", **extra)
    with pytest.raises(Interrupted):  # the process dies after epoch 1 was saved
        train(interrupted, on_epoch=interrupt)
    resumed = train(interrupted, resume=True)
    a = load_file(f"{straight['run_dir']}/last.safetensors")
    b = load_file(f"{resumed['run_dir']}/last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_muon_and_the_weight_average_train_and_the_average_is_what_is_saved(mnist_dir, tmp_path):
    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=2, optimizer="muon", ema=0.99)
    summary = train(s)
    assert summary["best"] > 0.5  # chance is 0.1
    saved = load_file(f"{summary['run_dir']}/last.safetensors")
    state = load_file(f"{summary['run_dir']}/last.state.safetensors")
    raw = {k.removeprefix("model/"): v for k, v in state.items() if k.startswith("model/")}
    average = {
        k.removeprefix("ema/module."): v for k, v in state.items() if k.startswith("ema/module.")
    }
    assert saved.keys() == raw.keys() == average.keys()
    for key in saved:  # the checkpoint is the average, and the average is not the raw weights
        torch.testing.assert_close(saved[key], average[key], rtol=0, atol=0)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)
    assert int(state["ema/n_averaged"]) == summary["steps"]
    val = evaluate_checkpoint(summary["run_dir"], "val", str(mnist_dir))
    assert val["accuracy"] == pytest.approx(summary["history"][-1]["val_accuracy"])


def test_existing_run_is_never_overwritten(mnist_dir, tmp_path):
    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=1, train_size=300)
    train(s)
    before = (tmp_path / "runs" / s.run / "last.safetensors").read_bytes()
    with pytest.raises(DigitformerError, match="already holds a run"):
        train(s)
    assert (tmp_path / "runs" / s.run / "last.safetensors").read_bytes() == before


def test_a_second_training_into_a_run_in_progress_is_refused(mnist_dir, tmp_path):
    """While one training holds its run folder, another into the same run is one line and
    writes nothing; once the first ends (however it ends) the folder is free again."""
    from digitformer.training.train import _claim, run_folder

    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=1, train_size=300)
    holder = _claim(run_folder(s))  # what a training in progress holds
    with pytest.raises(DigitformerError, match="another training is running"):
        train(s)
    assert not (run_folder(s) / "last.safetensors").exists()
    holder.close()  # the first training ended
    assert train(s)["history"]


def test_resume_without_a_run_is_a_clear_error(mnist_dir, tmp_path):
    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=1)
    with pytest.raises(DigitformerError, match="no run in .*start it without --resume"):
        train(s, resume=True)


def test_encoder_decoder_can_start_from_an_encoder_only_run(mnist_dir, tmp_path):
    layout = {"model.heads": 2, "model.patch_size": 7}
    vit_run = train(
        settings_for(
            "encoder-only", mnist_dir, tmp_path, epochs=1, train_size=300, run="vit", **layout
        )
    )["run_dir"]
    # a learning rate so small that the weights after one epoch are still the ViT's
    s = settings_for(
        "encoder-decoder",
        mnist_dir,
        tmp_path,
        epochs=1,
        train_grids=64,
        lr=1e-12,
        min_lr=0,
        init_encoder=vit_run,
        run="s2s",
        **layout,
    )
    seq2seq = load_file(f"{train(s)['run_dir']}/last.safetensors")
    vit = load_file(f"{vit_run}/best.safetensors")
    for name in ("patch.proj.weight", "encoder.1.ff.net.0.weight", "enc_norm.weight"):
        source = name.replace("enc_norm", "norm")
        torch.testing.assert_close(seq2seq[name], vit[source])
    s2s_ckpt = settings_for(
        "encoder-decoder",
        mnist_dir,
        tmp_path,
        epochs=1,
        run="again",
        init_encoder=s.out_dir + "/s2s",
    )
    with pytest.raises(DigitformerError, match="not an encoder-only checkpoint"):
        train(s2s_ckpt)
    wide = settings_for(
        "encoder-decoder",
        mnist_dir,
        tmp_path,
        epochs=1,
        run="wide",
        init_encoder=vit_run,
        **{"model.dim": 96, **layout},
    )
    with pytest.raises(DigitformerError, match="cannot use .*differ in dim"):
        train(wide)
    missing = settings_for(
        "encoder-decoder", mnist_dir, tmp_path, epochs=1, run="x", init_encoder="no/such/run"
    )
    with pytest.raises(DigitformerError, match="init_encoder: no run at no/such/run; train that"):
        train(missing)
    with pytest.raises(DigitformerError, match="init_encoder is for the encoder-decoder"):
        settings_for("encoder-only", mnist_dir, tmp_path, init_encoder=vit_run)


@pytest.mark.parametrize("task", ["encoder-only", "encoder-decoder"])
def test_elastic_augmentation_reaches_the_training_batches(mnist_dir, tmp_path, task):
    def first_batch(**overrides):
        s = settings_for(task, mnist_dir, tmp_path, augment=True, **overrides)
        return next(iter(build_task(s, torch.device("cpu")).train_batches(0)))

    (affine, labels), (elastic, same_labels) = first_batch(), first_batch(aug_elastic=1.0)
    assert torch.equal(labels, same_labels) and not torch.allclose(affine, elastic)
    assert torch.equal(elastic, first_batch(aug_elastic=1.0)[0])  # seeded


def test_muon_steps_as_pytorchs_with_its_orthogonalization_in_float32_on_the_cpu():
    torch.manual_seed(0)
    tall = torch.randn(512, 128)
    x = orthogonalized(tall, (3.4445, -4.7750, 2.0315), 5, 1e-7)
    assert x.dtype == torch.float32 and x.shape == tall.shape
    singular = torch.linalg.svdvals(x)  # the quintic's band around 1, not exact orthogonality
    assert singular.min() > 0.5 and singular.max() < 1.5
    ours = torch.nn.Parameter(torch.randn(128, 512))
    theirs = torch.nn.Parameter(ours.detach().clone())
    options = {"lr": 1e-2, "weight_decay": 0.1, "adjust_lr_fn": "match_rms_adamw"}
    mine, reference = Muon([ours], **options), torch.optim.Muon([theirs], **options)
    start = ours.detach().clone()
    for _ in range(3):
        ours.grad, theirs.grad = (g := torch.randn(128, 512)), g.clone()
        mine.step()
        reference.step()
    moved = (theirs - start).abs().max()
    assert moved > 0.01  # three real steps, equal but for PyTorch's bfloat16 rounding
    assert (ours - theirs).abs().max() < 0.02 * moved
    assert mine.state_dict()["state"][0].keys() == reference.state_dict()["state"][0].keys()


def test_lr_schedule_warms_up_then_decays_to_min():
    s = resolve_settings(
        "encoder-only", "default", {"lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 10}, env_file=None
    )
    assert lr_at(0, 100, s) == pytest.approx(1e-4)
    assert lr_at(9, 100, s) == pytest.approx(1e-3)
    assert lr_at(100, 100, s) == pytest.approx(1e-5)
    assert lr_at(50, 100, s) < lr_at(20, 100, s)


def test_eval_with_beam_search(trained_runs, capsys):
    from digitformer.apps.cli import main

    grid_run = trained_runs["encoder-decoder"]
    greedy = evaluate_checkpoint(grid_run, "val", data_of(grid_run))
    beam = evaluate_checkpoint(grid_run, "val", data_of(grid_run), beam_size=4)
    assert beam["beam_size"] == 4 and beam["count"] == greedy["count"]
    assert abs(beam["digit_accuracy"] - greedy["digit_accuracy"]) < 0.1
    assert main(["eval", grid_run, "--beam", "3", "--data-dir", data_of(grid_run)]) == 0
    assert "beam search of 3" in capsys.readouterr().out.splitlines()[0]
    assert main(["eval", trained_runs["encoder-only"], "--beam", "3"]) == 1
    assert "--beam is for a single encoder-decoder" in capsys.readouterr().err


def test_autocast_follows_the_precision_setting():
    from digitformer.utils.runtime import autocast, fast_bf16

    cpu = torch.device("cpu")
    x = torch.randn(4, 8)
    with autocast(cpu, "fp32"):
        assert (x @ x.T).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (x @ x.T).dtype == torch.bfloat16
    with autocast(cpu, "auto"):  # bf16 only where the CPU multiplies it fast (AMX)
        assert (x @ x.T).dtype == (torch.bfloat16 if fast_bf16(cpu) else torch.float32)
    assert fast_bf16(torch.device("meta")) is False


@pytest.mark.parametrize(
    "flags, fast",
    [
        ({"amx_bf16": True}, True),
        ({"avx512_bf16": True}, True),
        ({"avx2": True}, False),
        ({}, False),
    ],
)
def test_bf16_is_fast_on_cpus_with_bf16_dot_products(monkeypatch, flags, fast):
    """AMX (Xeon) and AVX-512 BF16 (EPYC Zen 4) multiply bf16 faster than fp32; AVX2 does not."""
    from digitformer.utils.runtime import fast_bf16

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, **flags})
    assert fast_bf16(torch.device("cpu")) is fast


def test_bf16_training_on_the_cpu_learns_and_saves_fp32_weights(mnist_dir, tmp_path):
    s = settings_for("encoder-only", mnist_dir, tmp_path, epochs=4, precision="bf16")
    summary = train(s)
    assert summary["best"] > 0.5  # chance is 0.1
    weights = load_file(str(next(Path(summary["run_dir"]).glob("*.safetensors"))))
    assert {w.dtype for w in weights.values()} == {torch.float32}


def test_flagged_ones_reach_the_digit_training_batches_and_only_the_ones(mnist_dir, tmp_path):
    plain = dict(aug_shift=0.0, aug_rotate=0.0, aug_scale=0.0, aug_stroke=0.0, aug_lowres=0.0)

    def first_batch(**overrides):
        s = settings_for("encoder-only", mnist_dir, tmp_path, augment=True, **plain, **overrides)
        return next(iter(build_task(s, torch.device("cpu")).train_batches(0)))

    (images, labels), (flagged, same_labels) = first_batch(), first_batch(aug_ones=1.0)
    assert torch.equal(labels, same_labels)
    ones = labels == 1
    assert ones.any()
    changed = (images - flagged).abs().flatten(1).amax(1) > 0
    assert changed[ones].float().mean() > 0.5  # the 1s got a flag (a leaning 1 stays plain)
    assert not changed[~ones].any()  # every other digit is as it was
