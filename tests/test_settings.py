from pathlib import Path

import pytest

from digitformer.training.settings import PROFILE_DIR, resolve_settings
from digitformer.utils.errors import DigitformerError


def test_precedence_defaults_profile_env_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("DIGITFORMER_LR", raising=False)
    profile = tmp_path / "p.yaml"
    profile.write_text("epochs: 5\nbatch_size: 64\nlr: 0.002\nmodel:\n  dim: 64\n  heads: 4\n")
    env = tmp_path / ".env"
    env.write_text("BATCH_SIZE=32\nD_MODEL=96\nDIGITFORMER_SEED=7\n")
    s = resolve_settings("encoder-only", str(profile), {"lr": 0.0005}, env_file=env)
    assert s.epochs == 5  # profile over default
    assert s.batch_size == 32  # .env (the original's key) over profile
    assert s.model == {"dim": 96, "heads": 4}  # .env model key over profile
    assert s.seed == 7
    assert s.lr == 0.0005  # flag over everything
    assert s.weight_decay == 0.05  # default


def test_zero_and_false_are_values(tmp_path):
    s = resolve_settings(
        "encoder-only",
        "default",
        {
            "weight_decay": "0",
            "warmup_steps": 0,
            "augment": "false",
            "label_smoothing": 0.0,
            "grad_clip": "none",
        },
        env_file=None,
    )
    assert s.weight_decay == 0.0 and s.warmup_steps == 0 and s.augment is False
    assert s.grad_clip is None


def test_environment_variables_with_prefix(monkeypatch):
    monkeypatch.setenv("DIGITFORMER_EPOCHS", "3")
    monkeypatch.setenv("DIGITFORMER_MODEL_DEPTH", "2")
    s = resolve_settings("encoder-only", "default", {}, env_file=None)
    assert s.epochs == 3 and s.model["depth"] == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": "three"}, "not a valid"),
        ({"bogus": 1}, "unknown setting 'bogus'"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr": -1}, "lr must be positive"),
        ({"device": "tpu"}, "device must be"),
        ({"aug_elastic": -1}, "aug_elastic must be >= 0"),
        ({"aug_elastic_sigma": 0}, "aug_elastic_sigma must be positive"),
        ({"aug_ones": 1.5}, r"aug_ones must be in \[0, 1\]"),
        ({"optimizer": "sgd"}, "optimizer must be adamw or muon"),
        ({"ema": 1}, r"ema .* must be in \[0, 1\)"),
        ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16"),
    ],
)
def test_bad_settings_are_clear_errors(overrides, message):
    with pytest.raises(DigitformerError, match=message):
        resolve_settings("encoder-only", "default", overrides, env_file=None)


def test_unknown_profile_lists_the_choices():
    with pytest.raises(DigitformerError, match="choose from .*default.*original"):
        resolve_settings("encoder-decoder", "nope", {}, env_file=None)


def test_missing_or_bad_yaml(tmp_path):
    with pytest.raises(DigitformerError, match="config file not found"):
        resolve_settings("encoder-only", str(tmp_path / "x.yaml"), {}, env_file=None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(DigitformerError, match="not valid YAML"):
        resolve_settings("encoder-only", str(bad), {}, env_file=None)


PACKAGED = sorted(PROFILE_DIR.glob("*.yaml"))


def test_every_task_has_the_three_main_profiles():
    names = {p.stem for p in PACKAGED}
    for task in ("encoder-only", "encoder-decoder"):
        assert {f"{task}-{name}" for name in ("default", "original", "best")} <= names


def task_of(path: Path) -> str:
    """The task a packaged profile's file name names: numbers-grid.yaml -> numbers."""
    from digitformer.training.tasks import TASKS

    (task,) = [t for t in TASKS if path.stem.startswith(f"{t}-")]
    return task


def test_every_packaged_profile_names_a_task():
    from digitformer.training.tasks import TASKS

    assert {task_of(p) for p in PACKAGED} == set(TASKS)


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.stem)
def test_packaged_profiles_build_valid_models(path, mnist_dir):
    """Each profile resolved as the task its file name names, by name as `train TASK --config
    NAME` does, then that task built on it: the task's own checks of its settings and model
    (the numbers task's end token, layout and grid size) run on every profile."""
    import torch

    from digitformer.inference.readers import input_shape
    from digitformer.models import build_model
    from digitformer.training.tasks import TASKS, build_task

    task = task_of(path)
    name = path.stem.removeprefix(f"{task}-")
    s = resolve_settings(task, name, {}, env_file=None)
    assert (s.task, s.profile) == (task, name)
    model = build_model(TASKS[task].kind.model_type, s.model)
    # The task's data as small as it goes: its checks, not its size, are under test here.
    small = {"data_dir": str(mnist_dir), "val_size": 20, "val_grids": 4, "test_grids": 4}
    built = build_task(resolve_settings(task, name, small, env_file=None), torch.device("cpu"))
    assert built.model_type == TASKS[task].kind.model_type
    assert tuple(built.eval_sets["val"].images.shape[1:]) == input_shape(model)


@pytest.mark.parametrize(
    "reader, recipe",
    [("fine", "best"), ("best", "from-vit")],
    ids=["best-from-fine", "from-vit-from-best"],
)
def test_two_stage_recipes_name_a_reader_of_their_layout(reader, recipe):
    """The encoder-decoder recipe's init_encoder is the encoder-only profile's run, and the
    two layouts match, so the second stage can start from the first."""
    from digitformer.models import build_model

    vit_settings = resolve_settings("encoder-only", reader, {}, env_file=None)
    s2s_settings = resolve_settings("encoder-decoder", recipe, {}, env_file=None)
    assert Path(s2s_settings.init_encoder) == Path(vit_settings.out_dir) / vit_settings.run
    vit = build_model("encoder-only", vit_settings.model)
    build_model("encoder-decoder", s2s_settings.model).init_encoder_from(vit)


@pytest.mark.parametrize(
    "content, message",
    [
        (b'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n', "aliases"),  # a billion laughs
        (b"epochs: 3  # caf\xe9\n", "not UTF-8"),  # latin-1
        ("epochs: 3\n".encode("utf-16"), "not UTF-8"),
        (b"model: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    ],
)
def test_a_hostile_or_foreign_profile_is_one_line(tmp_path, content, message):
    profile = tmp_path / "p.yaml"
    profile.write_bytes(content)
    with pytest.raises(DigitformerError, match=message):
        resolve_settings("encoder-only", str(profile), env_file=None)


def test_a_dotenv_in_latin1_and_a_5000_digit_value_are_one_short_line(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_bytes(b"EPOCHS=3 # caf\xe9\n")
    with pytest.raises(DigitformerError, match="not UTF-8 text"):
        resolve_settings("encoder-only", "default", env_file=env)
    with pytest.raises(DigitformerError, match=r"\(5000 characters\)") as caught:
        resolve_settings("encoder-only", "default", {"epochs": "9" * 5000}, env_file=None)
    assert len(str(caught.value)) < 120
    env.write_text("DIGITFORMER_MODEL_DIM=&\n")  # not YAML: was a yaml ScannerError traceback
    with pytest.raises(DigitformerError, match="setting model.dim: '&' is not a value"):
        resolve_settings("encoder-only", "default", env_file=env)
    with pytest.raises(DigitformerError, match=r"must be int, got \[1, 1, .*characters\)$"):
        resolve_settings("encoder-only", "default", {"epochs": [1] * 1000}, env_file=None)


def test_a_misspelled_setting_gets_the_nearest_name(monkeypatch):
    with pytest.raises(DigitformerError, match="did you mean 'model.dim'"):
        resolve_settings("encoder-only", "default", {"modle.dim": "64"}, env_file=None)
    monkeypatch.setenv("DIGITFORMER_EPOCS", "3")
    with pytest.raises(DigitformerError, match="did you mean DIGITFORMER_EPOCHS"):
        resolve_settings("encoder-only", "default", env_file=None)
