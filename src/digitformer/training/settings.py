"""Typed training settings, resolved as defaults < YAML profile < .env < CLI flags.

settings = resolve_settings("encoder-only", profile="default", overrides={"epochs": 3})
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from digitformer.utils.defaults import DATA_DIR, ENV_FILE, RUNS_DIR
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import read_yaml

PROFILE_DIR = Path(__file__).parents[1] / "profiles"


def flag(default: Any, explained: str) -> Any:
    """A setting that `train` also takes as a flag of its own (`--batch-size 64`)."""
    return field(default=default, metadata={"flag": explained})


@dataclass
class TrainSettings:
    task: str = "encoder-only"
    run: str = ""  # run folder name under out_dir; empty: <task>-<profile>
    profile: str = ""
    data_dir: str = flag(DATA_DIR, "the MNIST folder (default: .data)")
    out_dir: str = field(
        default=RUNS_DIR, metadata={"flag": "where runs go (default: .data/models)"}
    )
    epochs: int = flag(10, "passes over the training data")
    batch_size: int = field(
        default=128, metadata={"flag": "images per training step (all processes together)"}
    )
    lr: float = flag(1e-3, "peak learning rate")
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 200
    label_smoothing: float = 0.0
    optimizer: str = "adamw"  # "adamw", or "muon": Muon for the blocks' weight matrices
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0: none
    grad_clip: float | None = 1.0  # None: no clipping
    augment: bool = True
    aug_shift: float = 2.0  # pixels
    aug_rotate: float = 10.0  # degrees
    aug_scale: float = 0.1  # +- fraction
    aug_elastic: float = 0.0  # elastic distortion, deviation in pixels; 0: none
    aug_elastic_sigma: float = 4.0  # smoothness of the elastic field, pixels
    aug_shear: float = 0.0  # a slant of up to this many degrees either way; 0: none
    aug_aspect: float = 0.0  # the width times exp(+-this); 0: none
    aug_stroke: float = 0.0  # share of images drawn with a thicker or thinner pen
    aug_lowres: float = 0.0  # share of images seen at a lower resolution (9-16 px a frame)
    aug_blur: float = 0.0  # numbers: share of numbers out of focus
    aug_eights: float = 0.0  # numbers: share of 8s written as two loops (made from two 0s)
    aug_ones: float = 0.0  # share of 1s written with a flag (and some with a foot)
    train_size: int | None = None  # training digits to use (None: all but the validation split)
    val_size: int = 5000  # digits held out of the training set for validation
    train_grids: int = 60000  # encoder-decoder and numbers: fresh training images per epoch
    val_grids: int = 2000
    test_grids: int = 5000
    layout: str = "line"  # numbers: "line" (1 to max_digits digits) or "grid" (up to 3x3)
    test_seed: int = 0  # the fixed seed of the test grids
    init_encoder: str = ""  # encoder-decoder: start the encoder from this encoder-only run
    seed: int = field(
        default=0, metadata={"flag": "seed of the weights, the data order and augmentation"}
    )
    device: str = field(
        default="auto", metadata={"flag": "auto, cpu, cuda[:N] or mps (default: auto)"}
    )
    threads: int | None = None  # None: all cores
    eval_batch_size: int = 500
    display: bool = True  # Braille validation samples after each epoch
    wandb: bool = False
    wandb_project: str = "digitformer"
    compile: bool = False
    # the steps': auto is bf16 autocast where its products are fast (CUDA; a CPU with AMX), else
    # fp32 (validation reads as the readers do: DIGITFORMER_PRECISION, which sets this too)
    precision: str = "auto"
    model: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELD_TYPES = {f.name: f.type for f in fields(TrainSettings)}
# Keys of the original project's .env, mapped onto our settings (model keys onto model.*).
ENV_ALIASES = {
    "EPOCHS": "epochs",
    "NUM_EPOCHS": "epochs",
    "BATCH_SIZE": "batch_size",
    "LEARNING_RATE": "lr",
    "LR": "lr",
    "WEIGHT_DECAY": "weight_decay",
    "SEED": "seed",
    "TRAIN_SAMPLES": "train_grids",
    "TEST_SAMPLES": "test_grids",
    "WANDB_PROJECT": "wandb_project",
    "DROPOUT": "model.dropout",
    "D_MODEL": "model.dim",
    "N_HEADS": "model.heads",
    "NUM_HEADS": "model.heads",
    "PATCH_SIZE": "model.patch_size",
}
ENV_PREFIX = "DIGITFORMER_"
ENV_NOT_SETTINGS = ("CI", "DEBUG", "DIST_TIMEOUT")  # DIGITFORMER_* that are not settings


def _shown(raw: str) -> str:
    return raw if len(raw) <= 40 else raw[:20] + f"... ({len(raw)} characters)"


def parse_value(key: str, raw: Any) -> Any:
    """Coerce a string (from .env or a flag) to the field's type; YAML values pass as they are."""
    if not isinstance(raw, str):
        return raw
    kind = FIELD_TYPES.get(key, "Any")
    text = raw.strip()
    if text.lower() in ("none", "null") and "None" in str(kind):
        return None
    try:
        if "bool" in str(kind):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if "int" in str(kind):
            return int(text)
        if "float" in str(kind):
            return float(text)
    except ValueError:
        raise DigitformerError(f"setting {key}: {_shown(raw)!r} is not a valid {kind}") from None
    if key.startswith("model."):
        try:  # model fields: 128 -> int, 0.1 -> float, post -> str
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise DigitformerError(f"setting {key}: {_shown(raw)!r} is not a value") from None
    return text


def apply(values: dict[str, Any], updates: dict[str, Any], source: str) -> None:
    """Merge `updates` ({'epochs': 3, 'model.dim': 96, 'model': {...}}) into `values`."""
    for key, raw in updates.items():
        if key == "model":
            if not isinstance(raw, dict):
                raise DigitformerError(f"{source}: 'model' must be a mapping")
            values["model"].update(raw)
        elif key.startswith("model."):
            values["model"][key[len("model.") :]] = parse_value(key, raw)
        elif key in FIELD_TYPES:
            values[key] = parse_value(key, raw)
        else:
            near = nearest_setting(key)
            hint = f"; did you mean {near!r}?" if near else ""
            raise DigitformerError(f"{source}: unknown setting {key!r}{hint}")


def nearest_setting(key: str) -> str | None:
    """The setting a misspelled one most likely meant (None: none is close)."""
    from digitformer.models import Seq2SeqConfig, ViTConfig  # only on a mistake: torch loads

    model = {f.name for cls in (ViTConfig, Seq2SeqConfig) for f in fields(cls)}
    known = [*FIELD_TYPES, *(f"model.{name}" for name in sorted(model))]
    close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    return close[0] if close else None


def profile_path(profile: str, task: str) -> Path:
    """A profile is a YAML path, or a name: <task>-<name>.yaml among the packaged profiles."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DigitformerError(f"config file not found: {path}")
        return path
    packaged = PROFILE_DIR / f"{task}-{profile}.yaml"
    if not packaged.is_file():
        names = sorted(p.stem.removeprefix(f"{task}-") for p in PROFILE_DIR.glob(f"{task}-*.yaml"))
        if not names:
            raise DigitformerError(f"unknown task {task!r}: no profiles for it")
        raise DigitformerError(f"no profile {profile!r} for {task}; choose from {', '.join(names)}")
    return packaged


def read_profile(path: Path) -> dict[str, Any]:
    loaded = read_yaml(path, "profile") or {}
    if not isinstance(loaded, dict):
        raise DigitformerError(f"{path}: a profile must be a mapping of settings")
    return loaded


def env_settings(env_file: str | Path | None) -> dict[str, Any]:
    """Settings from .env (original keys and DIGITFORMER_*) and DIGITFORMER_* environment vars."""
    try:
        file_values = dotenv_values(env_file) if env_file and Path(env_file).is_file() else {}
    except UnicodeDecodeError as exc:
        message = f"{env_file}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        raise DigitformerError(message) from None
    updates: dict[str, Any] = {}
    for key, value in file_values.items():
        if key in ENV_ALIASES and value is not None:
            updates[ENV_ALIASES[key]] = value
    for key, value in {**file_values, **os.environ}.items():
        if key.startswith(ENV_PREFIX) and value is not None:
            name = key[len(ENV_PREFIX) :].lower()
            if name.startswith("model_"):
                name = "model." + name[len("model_") :]
            if name in FIELD_TYPES or name.startswith("model."):
                updates[name] = value
            elif name.upper() not in ENV_NOT_SETTINGS:
                near = nearest_setting(name)
                hint = (
                    f"; did you mean {ENV_PREFIX}{near.replace('.', '_').upper()}?" if near else ""
                )
                raise DigitformerError(
                    f"{key}: no such setting (DIGITFORMER_<SETTING>, e.g. DIGITFORMER_EPOCHS)"
                    + hint
                )
    return updates


def resolve_settings(
    task: str,
    profile: str = "default",
    overrides: dict[str, Any] | None = None,
    env_file: str | Path | None = ENV_FILE,
) -> TrainSettings:
    """defaults < profile < .env < overrides (CLI flags). A zero or False is a value."""
    values = TrainSettings().to_dict()
    path = profile_path(profile, task)
    apply(values, read_profile(path), str(path))
    apply(values, env_settings(env_file), ".env")
    apply(values, overrides or {}, "command line")
    values["task"] = task
    values["profile"] = profile
    if not values["run"]:
        values["run"] = f"{task}-{Path(profile).stem}"
    check_types(values)
    settings = TrainSettings(**values)
    validate(settings)
    return settings


def check_types(values: dict[str, Any]) -> None:
    """Each setting of its declared type: `epochs: 2.7` in a profile is an error, not a crash
    three minutes into training. Ints are accepted where floats are declared."""
    for name, kind in FIELD_TYPES.items():
        value, kind = values.get(name), str(kind)
        if value is None and "None" in kind:
            continue
        ok = {
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "str": isinstance(value, str),
            "dict": isinstance(value, dict),
        }
        base = kind.split("|")[0].split("[")[0].strip()
        if base in ok and not ok[base]:
            raise DigitformerError(f"setting {name} must be {base}, got {_shown(repr(value))}")
        if base == "float" and not math.isfinite(value):
            raise DigitformerError(f"setting {name} must be a finite number, got {value!r}")


def validate(s: TrainSettings) -> None:
    checks = [
        (s.epochs >= 1, "epochs must be at least 1"),
        (s.batch_size >= 1, "batch_size must be at least 1"),
        (s.lr > 0, "lr must be positive"),
        (0 <= s.min_lr <= s.lr, "min_lr must be in [0, lr]"),
        (s.weight_decay >= 0, "weight_decay must be >= 0"),
        (s.warmup_steps >= 0, "warmup_steps must be >= 0"),
        (s.aug_elastic >= 0, "aug_elastic must be >= 0"),
        (s.aug_elastic_sigma > 0, "aug_elastic_sigma must be positive"),
        (0 <= s.aug_stroke <= 1, "aug_stroke must be in [0, 1]"),
        (0 <= s.aug_blur <= 1, "aug_blur must be in [0, 1]"),
        (0 <= s.aug_lowres <= 1, "aug_lowres must be in [0, 1]"),
        (0 <= s.aug_eights <= 1, "aug_eights must be in [0, 1]"),
        (0 <= s.aug_ones <= 1, "aug_ones must be in [0, 1]"),
        (0 <= s.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        (s.optimizer in ("adamw", "muon"), "optimizer must be adamw or muon"),
        (0 <= s.ema < 1, "ema (the average's decay per step) must be in [0, 1)"),
        (s.grad_clip is None or s.grad_clip > 0, "grad_clip must be positive (or none)"),
        (s.val_size >= 1, "val_size must be at least 1"),
        (s.train_size is None or s.train_size >= 1, "train_size must be at least 1"),
        (min(s.train_grids, s.val_grids, s.test_grids) >= 1, "grid counts must be at least 1"),
        (s.threads is None or s.threads >= 1, "threads must be at least 1"),
        (s.layout in ("line", "grid"), "layout must be line or grid"),
        # runtime.PRECISIONS (not imported: settings load without torch, for the CLI's speed)
        (s.precision in ("auto", "fp32", "bf16"), "precision must be one of auto, fp32, bf16"),
        (
            not s.init_encoder or s.task in ("encoder-decoder", "numbers"),
            "init_encoder is for the encoder-decoder and numbers tasks",
        ),
        (
            s.device in ("auto", "cpu", "cuda", "mps") or s.device.startswith("cuda:"),
            "device must be auto, cpu, cuda[:N] or mps",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise DigitformerError(f"invalid settings: {message}")
