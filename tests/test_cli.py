import argparse
import json
import subprocess
import sys

import pytest

from digitformer.apps.cli import COMMANDS, build_parser, main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "digitformer", *args], capture_output=True, text=True
    )


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every command and sub-command the parser knows, as argument lists: read from the
    parser itself, so a command added to COMMANDS is checked without being listed here."""
    yield list(path)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from command_paths(child, (*path, name))


COMMAND_PATHS = list(command_paths(build_parser()))


def test_the_walk_finds_every_registered_command():
    names = {tuple(p) for p in COMMAND_PATHS}
    assert {("models",), ("data", "numbers"), ("sweep", "best"), ("serve",)} <= names
    assert len({p[0] for p in COMMAND_PATHS if p}) == len(COMMANDS)


@pytest.mark.parametrize("args", COMMAND_PATHS, ids=lambda p: " ".join(p) or "digitformer")
def test_help_explains_each_command(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['digitformer', *args])}")


@pytest.mark.parametrize(
    "module, args, line",
    [
        (
            "optuna",
            ["sweep", "best", "s"],
            "sweeps need the sweep extra: pip install 'digitformer[sweep]'",
        ),
        ("optuna", ["sweep", "create", "--model", "encoder-only"], "sweeps need the sweep extra"),
        ("optuna", ["sweep", "agent", "s", "--count", "1"], "sweeps need the sweep extra"),
        ("matplotlib", ["viz", "x"], "pictures need the viz extra: pip install 'digitformer[viz]'"),
        ("sklearn", ["viz", "x"], "pictures need the viz extra: pip install 'digitformer[viz]'"),
        ("uvicorn", ["serve"], "serving needs the serve extra: pip install 'digitformer[serve]'"),
    ],
)
def test_a_command_names_the_extra_it_is_missing(module, args, line, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in list(sys.modules):  # a module already imported would not be imported again
        if name == module or name.startswith(f"{module}."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    for name in ("digitformer.apps.viz.run", "digitformer.apps.serve.app"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"digitformer: error: {line}")
    assert len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_serve_defaults_to_the_bundled_models_and_refuses_bad_input(tmp_path, monkeypatch, capsys):
    import digitformer.apps.serve.app as app

    monkeypatch.chdir(tmp_path)
    assert app.default_checkpoints() == ["pretrained:digit", "pretrained:grid", "pretrained:number"]
    # a trimmed installation without them: the default runs, else what the folder holds
    monkeypatch.setattr(app, "PRETRAINED_DIR", tmp_path / "nothing")
    (tmp_path / ".data" / "models" / "my-run").mkdir(parents=True)
    assert main(["serve"]) == 1
    assert "none in .data/models (it holds my-run: name one)" in capsys.readouterr().err
    assert main(["serve", "missing"]) == 1
    assert "checkpoint not found: missing" in capsys.readouterr().err
    assert main(["serve", "x", "--port", "70000"]) == 1
    assert "--port must be 1-65535" in capsys.readouterr().err


def test_python_dash_m_works():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("digitformer ")


def test_missing_checkpoint_is_one_line_and_nonzero():
    out = run_cli("eval", "/nonexistent/ckpt.safetensors")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "digitformer: error: checkpoint not found: /nonexistent/ckpt.safetensors"
    ]


def test_bad_flag_exits_2_without_traceback():
    out = run_cli("train", "encoder-only", "--epochs", "many")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not a whole number: 'many'" in out.stderr


def test_train_without_data_says_how_to_fetch(tmp_path):
    out = run_cli("train", "encoder-only", "--data-dir", str(tmp_path), "--env-file", "none")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "digitformer data fetch" in out.stderr


def test_train_verbose_prints_every_setting(tmp_path, monkeypatch, capsys):
    """--verbose shows what the task does not use too; the run stops at its data here."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "encoder-only", "--data-dir", str(tmp_path / "none"), "--env-file", "none"]
    for extra in ([], ["--verbose"]):
        main([*args, *extra])
        out = capsys.readouterr().out
        assert "settings:" in out and "lr:" in out
        assert ("train_grids" in out) == bool(extra)


def test_train_warns_of_a_setting_the_task_does_not_read(tmp_path, monkeypatch, capsys):
    """A setting given on the command line or in .env that the task ignores is named in a
    warning (it was silently dropped from the settings shown); one the task reads is not."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DIGITFORMER_AUG_BLUR=0.5\n")
    args = ["train", "encoder-only", "--data-dir", str(tmp_path / "none")]
    main([*args, "--set", "train_grids=10", "--set", "lr=0.001"])
    err = capsys.readouterr().err
    assert "warning: the encoder-only task does not read aug_blur, train_grids: no effect" in err
    main(["train", "numbers", "--data-dir", str(tmp_path / "none"), "--set", "lr=0.001"])
    assert "warning" not in capsys.readouterr().err


def test_bad_set_is_a_clear_error(tmp_path):
    out = run_cli("train", "encoder-only", "--set", "epochs", "--data-dir", str(tmp_path))
    assert out.returncode == 1 and "settings are KEY=VALUE, got 'epochs'" in out.stderr
    out = run_cli("train", "encoder-only", "epochs=x", "--data-dir", str(tmp_path))
    assert out.returncode == 1 and "epochs: 'x' is not a valid int" in out.stderr


def test_fetch_from_folder_then_train_and_eval(mnist_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(
        [
            "train",
            "encoder-only",
            "--data-dir",
            str(mnist_dir),
            "--out-dir",
            str(runs),
            "--epochs",
            "1",
            "--env-file",
            "none",
            "--run",
            "r",
            "--set",
            "val_size=500",
            "--set",
            "model.dim=32",
            "--set",
            "model.depth=1",
            "--set",
            "model.ff_dim=64",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "settings:" in out and "epoch 1/1" in out
    assert "train_grids" not in out and "aug_eights" not in out  # not a ViT's settings
    assert "┌" in out  # the Braille validation display
    assert main(["eval", str(runs / "r"), "--json", "--data-dir", str(mnist_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_type"] == "encoder-only" and result["count"] == 1000
    assert main(["eval", str(runs / "r"), "--data-dir", str(mnist_dir)]) == 0
    assert "confusion matrix" in capsys.readouterr().out


def test_train_says_what_is_wrong_before_printing_its_settings(tmp_path, capsys, monkeypatch):
    """A run folder already in use, or a model too large to build, is one line on standard
    error, and nothing of the settings is printed first (or any data read)."""
    from digitformer.apps.cli import main

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.safetensors").write_bytes(b"")
    args = ["train", "encoder-only", "--name", "r", "--out-dir", str(tmp_path)]
    assert main([*args, "--env-file", "none"]) == 1
    out, err = capsys.readouterr()
    assert "already holds a run" in err and "settings:" not in out
    monkeypatch.setenv("DIGITFORMER_MODEL_DEPTH", "100000000")
    assert main(["train", "encoder-only", "--name", "s", "--out-dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "depth must be at most 64" in err and "settings:" not in out


def test_the_cli_offers_exactly_the_registered_tasks_without_importing_torch():
    """The parser takes the task names from the packaged profiles, so that `--help` and a
    mistyped flag answer before torch loads; they must be the training registry's."""
    import subprocess
    import sys

    from digitformer.apps.cli.common import tasks
    from digitformer.training.tasks import TASKS

    assert sorted(tasks()) == sorted(TASKS)
    probe = "import sys; from digitformer.apps.cli import build_parser; build_parser(); "
    probe += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
