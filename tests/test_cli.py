import json
import subprocess
import sys

import pytest

from digitformer.apps.cli import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "digitformer", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["data"],
        ["data", "fetch"],
        ["train"],
        ["eval"],
        ["predict"],
        ["export"],
        ["viz"],
        ["sweep"],
        ["sweep", "create"],
        ["sweep", "agent"],
        ["sweep", "run"],
        ["sweep", "best"],
        ["serve"],
    ],
)
def test_help_explains_each_command(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--help"])
    assert exc.value.code == 0
    assert "usage: digitformer" in capsys.readouterr().out


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
    assert out.returncode == 2 and "Traceback" not in out.stderr and "invalid int" in out.stderr


def test_train_without_data_says_how_to_fetch(tmp_path):
    out = run_cli("train", "encoder-only", "--data-dir", str(tmp_path), "--env-file", "none")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "digitformer data fetch" in out.stderr


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
    assert "┌" in out  # the Braille validation display
    assert main(["eval", str(runs / "r"), "--json", "--data-dir", str(mnist_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_type"] == "encoder-only" and result["count"] == 1000
    assert main(["eval", str(runs / "r"), "--data-dir", str(mnist_dir)]) == 0
    assert "confusion matrix" in capsys.readouterr().out
