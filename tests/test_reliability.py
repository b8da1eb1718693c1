"""Runs survive crashes, and user mistakes are one line: kills during saves, a full disk,
diverging training, changed settings on resume, damaged caches, special files."""

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from digitformer.apps.cli import main
from digitformer.training.settings import resolve_settings
from digitformer.training.train import train
from digitformer.utils.errors import DigitformerError
from helpers import settings_for

TINY_RUN = {"train_size": 300, "epochs": 2, "model.dim": 32, "model.depth": 1}


def quick(mnist_dir, tmp_path, run: str, **extra):
    return settings_for("encoder-only", mnist_dir, tmp_path, run=run, **{**TINY_RUN, **extra})


def weights_of(run_dir) -> dict:
    return load_file(str(Path(run_dir) / "last.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run: what every interrupted run must end as, bit for bit."""
    import shutil

    from helpers import SUBSET

    root = tmp_path_factory.mktemp("reference")
    shutil.copytree(SUBSET, root / "data")
    settings = quick(root / "data", root, "straight")
    return root / "data", weights_of(train(settings)["run_dir"])


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from helpers import settings_for
    from digitformer.training.train import train

    call, when = int(sys.argv[1]), sys.argv[2]
    real, count = os.replace, 0

    def replace(src, dst):  # every publication of a file goes through os.replace
        global count
        count += 1
        if count == call and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
        if count == call and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    extra = {extra!r}
    train(settings_for("encoder-only", {data!r}, Path({root!r}), run="killed", **extra))
    """
)


# Each epoch publishes: the training state (its commit point), last.safetensors, last.json,
# then best.safetensors and best.json. Kill the process at each step of the first epoch's
# saves and the second's, before and after the rename.
@pytest.mark.parametrize(
    "call, when",
    [(1, "before"), (1, "after"), (3, "after"), (5, "before"), (6, "before"), (7, "after")],
)
def test_a_kill_during_any_save_leaves_a_run_that_resumes_to_the_same_weights(
    reference, tmp_path, call, when
):
    data, expected = reference
    script = KILLER.format(
        tests=str(Path(__file__).parent), data=str(data), root=str(tmp_path), extra=TINY_RUN
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(call), when], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -9, result.stderr[-2000:]  # really killed, mid-save
    run_dir = tmp_path / "runs" / "killed"
    resumed = train(quick(data, tmp_path, "killed"), resume=True)
    assert_same_weights(weights_of(resumed["run_dir"]), expected)
    assert not list(run_dir.glob(".*.tmp"))  # what the kill left half-written is gone
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def full_disk_at(monkeypatch, nth: int) -> list:
    """safetensors' writes fail from the nth on, as on a full disk, after half a file."""
    import digitformer.inference.checkpoint as checkpoint

    real, calls = checkpoint.save_file, []

    def save_file(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) >= nth:
            with open(path, "wb") as fh:
                fh.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    return calls


def test_a_full_disk_loses_nothing_and_the_run_resumes(reference, tmp_path, monkeypatch):
    data, expected = reference
    full_disk_at(monkeypatch, 3)  # the second epoch's training state
    settings = quick(data, tmp_path, "full")
    with pytest.raises(OSError, match="No space left"):
        train(settings)
    run_dir = tmp_path / "runs" / "full"
    assert not list(run_dir.glob(".*.tmp"))
    epoch_one = load_file(str(run_dir / "last.safetensors"))  # the first epoch, intact
    assert epoch_one.keys() == expected.keys()
    monkeypatch.undo()  # space freed
    assert_same_weights(weights_of(train(settings, resume=True)["run_dir"]), expected)


def test_a_full_disk_is_one_line_from_the_command_line(mnist_dir, tmp_path, monkeypatch, capsys):
    full_disk_at(monkeypatch, 1)
    args = ["train", "encoder-only", "--env-file", "none", "--data-dir", str(mnist_dir)]
    args += ["--out-dir", str(tmp_path / "runs"), "--no-display", "--epochs", "1"]
    args += ["--set", "train_size=200", "--set", "val_size=100", "--set", "model.depth=1"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err


def test_diverging_training_stops_and_saves_nothing_of_it(mnist_dir, tmp_path, monkeypatch):
    from digitformer.training.tasks import DigitTask

    real, steps = DigitTask.loss, []

    def loss(self, model, inputs, targets):
        value, right, n = real(self, model, inputs, targets)
        steps.append(1)
        return (value * float("nan") if len(steps) > 3 else value), right, n

    monkeypatch.setattr(DigitTask, "loss", loss)
    settings = quick(mnist_dir, tmp_path, "nan", epochs=1)
    with pytest.raises(DigitformerError, match="diverged"):
        train(settings)
    assert not (tmp_path / "runs" / "nan" / "last.safetensors").exists()
    for bad in ("inf", "nan"):
        with pytest.raises(DigitformerError, match="lr must be a finite number"):
            resolve_settings("encoder-only", "default", {"lr": bad}, env_file=None)


def test_resume_with_settings_that_change_the_run_needs_force(mnist_dir, tmp_path, capsys):
    settings = quick(mnist_dir, tmp_path, "r", epochs=1)
    train(settings)
    changed = quick(mnist_dir, tmp_path, "r", epochs=2, lr=1e-2)
    with pytest.raises(DigitformerError, match=r"other settings \(epochs 1 -> 2, lr"):
        train(changed, resume=True)
    summary = train(changed, resume=True, force=True)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]


@pytest.mark.parametrize("saved, now", [("muon", "adamw"), ("adamw", "muon")])
def test_resuming_with_another_optimizer_is_a_clear_error(mnist_dir, tmp_path, saved, now):
    train(quick(mnist_dir, tmp_path, "r", epochs=1, optimizer=saved))
    before = (tmp_path / "runs" / "r" / "last.state.safetensors").read_bytes()
    with pytest.raises(DigitformerError, match="other settings .*optimizer"):
        train(quick(mnist_dir, tmp_path, "r", epochs=2, optimizer=now), resume=True)
    with pytest.raises(DigitformerError, match="does not fit"):  # forced: the state cannot load
        train(quick(mnist_dir, tmp_path, "r", epochs=2, optimizer=now), resume=True, force=True)
    assert (tmp_path / "runs" / "r" / "last.state.safetensors").read_bytes() == before


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", ".hidden", ".."])
def test_run_names_stay_inside_the_output_folder(mnist_dir, tmp_path, name):
    with pytest.raises(DigitformerError, match="plain folder name"):
        train(quick(mnist_dir, tmp_path, name))
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "epochs=2.7"], "epochs: '2.7' is not a valid int"),
        (["--set", "model.dim=abc"], "dim must be int"),
        (["--config", "{yaml}"], "setting epochs must be int, got 2.7"),
        (["--env-file", "missing.env"], "--env-file missing.env: no such file"),
        (["--run", "../x"], "plain folder name"),
    ],
)
def test_setting_mistakes_are_one_line_before_any_data_is_read(
    tmp_path, capsys, args, message, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("epochs: 2.7\n")
    argv = [a.replace("{yaml}", str(tmp_path / "bad.yaml")) for a in args]
    code = main(["train", "encoder-only", "--data-dir", str(tmp_path / "no-data"), *argv])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_a_typo_in_an_environment_setting_is_reported(monkeypatch):
    monkeypatch.setenv("DIGITFORMER_EPOCS", "3")
    with pytest.raises(DigitformerError, match="DIGITFORMER_EPOCS: no such setting"):
        resolve_settings("encoder-only", "default", {}, env_file=None)
    monkeypatch.delenv("DIGITFORMER_EPOCS")
    monkeypatch.setenv("DIGITFORMER_EPOCHS", "3")
    assert resolve_settings("encoder-only", "default", {}, env_file=None).epochs == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong shape"])
def test_a_damaged_data_cache_is_rebuilt(mnist_dir, capsys, damage):
    from digitformer.data import load_split

    first = load_split(mnist_dir, "test")
    (cache,) = (mnist_dir / "cache").glob("mnist-test-*.npz")
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "garbage":
        cache.write_bytes(os.urandom(4096))
    else:
        np.savez(cache, images=np.zeros((3, 5, 5), np.uint8), labels=np.zeros(3, np.uint8))
    capsys.readouterr()
    again = load_split(mnist_dir, "test")
    assert np.array_equal(again.images, first.images)
    assert "unreadable" in capsys.readouterr().err
    assert np.array_equal(load_split(mnist_dir, "test").labels, first.labels)  # rebuilt, valid


def test_special_files_and_wrong_output_paths_are_one_line(tmp_path, capsys, tiny_checkpoint):
    _, ckpt = tiny_checkpoint("encoder-only")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert main(["predict", str(ckpt), str(fifo)]) == 1  # never blocks on the pipe
    assert "not a regular file" in capsys.readouterr().err
    folder = tmp_path / "out.onnx"
    folder.mkdir()
    assert main(["export", str(ckpt), str(folder)]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", str(ckpt), str(tmp_path / "model.bin")]) == 1
    assert "--format" in capsys.readouterr().err


def test_files_are_written_with_the_users_umask(tmp_path):
    from digitformer.utils.fileio import UMASK, write_text_atomic

    write_text_atomic(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~UMASK


def _small_disk(limit: int):
    """A child process whose files cannot grow past `limit` bytes (ulimit -f): a full disk as
    a writer meets it (EFBIG; Python ignores SIGXFSZ)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("fmt", ["torchscript"])
def test_an_export_to_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, fmt):
    out = tmp_path / "model.pt"
    result = subprocess.run(
        [sys.executable, "-m", "digitformer", "export", "pretrained:digit", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_small_disk(100_000),
    )
    assert result.returncode == 1, result.stderr  # not 134 (an abort with a native stack)
    assert result.stderr.count("\n") == 1 and "File too large" in result.stderr
    assert str(out) in result.stderr and ".tmp" not in result.stderr  # the user's path
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_saved_to_a_full_disk_names_it_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "last.safetensors"
    target.write_bytes(b"the previous checkpoint")
    code = (
        "import torch, sys\n"
        "from digitformer.inference.checkpoint import save_checkpoint\n"
        "try:\n"
        f"    save_checkpoint({str(target)!r}, torch.nn.Linear(500, 500), {{}})\n"
        "except OSError as exc:\n"
        "    print(exc.filename, exc.strerror or exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_small_disk(100_000),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(target))
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]


def test_error_lines_are_short_and_keep_no_password(capsys, monkeypatch):
    from digitformer.apps import cli

    def fail(_args):
        raise DigitformerError(
            "cannot open postgresql://sweeper:hunter2@db:5432/studies: " + "key, " * 2000
        )

    monkeypatch.setattr(cli.models, "cmd_models", fail)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400
    assert "hunter2" not in err and "sweeper:***@db" in err and "more characters" in err


def test_ink_only_in_the_alpha_channel_is_read(tmp_path):
    """White strokes on a clear background: every pixel white, only the opacity draws."""
    from PIL import Image

    from digitformer.data import load_split
    from digitformer.inference.pictures import read_gray
    from helpers import SUBSET

    digit = load_split(SUBSET, "test").images[0]
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = digit
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    pixels = read_gray(tmp_path / "alpha.png")
    np.testing.assert_allclose(pixels, 1 - digit / 255, atol=1 / 255)  # dark ink on paper
    rgba[..., :3] = 0  # black ink in the alpha: composited on white, as before
    Image.fromarray(rgba, "RGBA").save(tmp_path / "black.png")
    np.testing.assert_allclose(read_gray(tmp_path / "black.png"), 1 - digit / 255, atol=2 / 255)


def test_one_channel_arrays_and_names_that_are_not_utf8(tmp_path, capsys):
    import json

    import digitformer
    from digitformer.data import load_split
    from helpers import SUBSET

    digit = load_split(SUBSET, "test").images[0]
    reader = digitformer.load("digit")
    assert reader.predict(digit[..., None])[0].digits == reader.predict(digit)[0].digits
    with pytest.raises(DigitformerError, match=r"\(H, W, 1\)"):
        reader.predict(np.zeros((28, 28, 2), np.uint8))
    from PIL import Image

    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: a lone surrogate in Python
    Image.fromarray(digit).save(tmp_path / name)
    assert main(["predict", str(tmp_path / name), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["file"].endswith("caf\\xe9.png")
    row["file"].encode("utf-8")  # valid text: no lone surrogate
    assert main(["predict", str(tmp_path / name)]) == 0  # the table prints it too
    assert "caf\\xe9.png" in capsys.readouterr().out


def test_a_photo_taken_in_a_dim_room_is_read_and_dim_blank_paper_is_not():
    """Paper at 40 and ink at 15 of 255 (a tenth of the range): brightened as a camera would,
    the digits read; the same dim paper with nothing on it is still blank."""
    import digitformer
    from digitformer.data import load_split
    from helpers import SUBSET

    digits = load_split(SUBSET, "test")
    reader = digitformer.load("digit")
    rng = np.random.default_rng(0)
    dim, blank = [], []
    for image in digits.images[:8]:
        photo = np.full((144, 144), 40.0)
        photo[16:128, 16:128] -= 25 * np.kron(image, np.ones((4, 4))) / 255
        dim.append(np.clip(photo + rng.normal(0, 1, photo.shape), 0, 255).round().astype(np.uint8))
        blank.append(np.clip(40 + rng.normal(0, 1.5, photo.shape), 0, 255).round().astype(np.uint8))
    read = [r.digits for r in reader.predict(dim)]
    assert read == [str(label) for label in digits.labels[:8]]
    assert all(r.digits is None for r in reader.predict(blank))
    # a frame nearly black (paper 3 of 255) with JPEG-like noise: never brightened into ink
    for seed in range(4):
        noise = np.random.default_rng(seed).normal(3, 1, (144, 144))
        frame = np.clip(noise, 0, 255).round().astype(np.uint8)
        assert reader.predict(frame)[0].digits is None
