"""Hyperparameter sweeps: W&B-format search spaces, run by Optuna (TPE + median pruning).

    digitformer sweep run --model encoder-only --count 20          # embedded SQLite study
    digitformer sweep create --model encoder-decoder --storage postgresql://...   # many agents
    digitformer sweep agent encoder-decoder-20261127-101500 --count 5 --storage ...
    digitformer sweep best encoder-only-20261127-101500 --out best.yaml

A study carries everything its agents need (space, base profile, fixed settings) in its own
storage, so an agent on any machine that reaches the storage needs only the study's name.
Trials train on the training split and are scored on the fixed validation split held out of it
(the same digits for every trial); the test set is never used for selection.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from digitformer.models import MODEL_TYPES
from digitformer.training.settings import profile_path, read_profile, resolve_settings
from digitformer.training.tasks import TASKS
from digitformer.utils.defaults import SWEEP_DIR, SWEEP_STORAGE
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import plain_name, read_yaml, write_text_atomic

SPACE_DIR = Path(__file__).parents[1] / "sweeps"  # package data: an installed wheel has them
DEFAULT_STORAGE = SWEEP_STORAGE
# Every trial of a study validates on the same data (and never sees the test set): these
# may be fixed for a study, never swept. Where trials write is the agent's business.
NOT_SWEPT = ("val_size", "val_grids", "test_grids", "test_seed", "data_dir", "out_dir", "run")
AGENT_OWNED = ("out_dir", "run")


# ---- the search space -------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str  # a settings key: "lr", "model.dim", ...
    kind: str  # "values", "float", "log", "int"
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0


@dataclass(frozen=True)
class Space:
    method: str
    metric: str
    goal: str  # "maximize" or "minimize"
    params: tuple[Param, ...]
    fixed: dict[str, Any]  # `value:` parameters: the same for every trial


def space_path(name: str, task: str) -> Path:
    """A YAML path, or a packaged space's name: "default" is sweeps/<task>.yaml (the
    original's ranges, where valid), any other name sweeps/<task>-<name>.yaml."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DigitformerError(f"sweep space not found: {path}")
        return path
    packaged = SPACE_DIR / (f"{task}.yaml" if name == "default" else f"{task}-{name}.yaml")
    if not packaged.is_file():
        names = sorted(
            "default" if p.stem == task else p.stem.removeprefix(f"{task}-")
            for p in SPACE_DIR.glob(f"{task}*.yaml")
        )
        raise DigitformerError(
            f"no sweep space {name!r} for {task}; choose from {', '.join(names)} "
            "or pass --space PATH.yaml"
        )
    return packaged


def parse_space(spec: dict, source: str = "space") -> Space:
    """Read W&B's sweep format: method, metric {name, goal}, parameters with `values`,
    `value`, or `min`/`max` and a `distribution` (uniform, log_uniform_values, int_uniform)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict):
        raise DigitformerError(f"{source}: a sweep space needs a 'parameters' mapping")
    metric = spec.get("metric") or {}
    goal = metric.get("goal", "maximize")
    if goal not in ("maximize", "minimize") or not metric.get("name"):
        raise DigitformerError(f"{source}: metric needs a name and goal maximize or minimize")
    params, fixed = [], {}
    for name, p in spec["parameters"].items():
        if name in NOT_SWEPT:
            raise DigitformerError(f"{source}: {name} is fixed for every trial; it cannot be swept")
        if not isinstance(p, dict):
            raise DigitformerError(f"{source}: parameter {name} must be a mapping")
        if "value" in p:
            fixed[name] = p["value"]
        elif "values" in p:
            params.append(Param(name, "values", tuple(p["values"])))
        elif "min" in p and "max" in p:
            low, high = p["min"], p["max"]
            dist = p.get("distribution")
            if dist is None:  # W&B's rule: two ints mean int_uniform, otherwise uniform
                dist = (
                    "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform"
                )
            kinds = {"uniform": "float", "log_uniform_values": "log", "int_uniform": "int"}
            if dist not in kinds:
                raise DigitformerError(
                    f"{source}: parameter {name}: distribution {dist!r} is not supported "
                    f"(use {', '.join(kinds)})"
                )
            if not low < high or (dist == "log_uniform_values" and low <= 0):
                raise DigitformerError(f"{source}: parameter {name}: bad range {low}..{high}")
            params.append(Param(name, kinds[dist], low=low, high=high))
        else:
            raise DigitformerError(f"{source}: parameter {name} needs value, values or min/max")
    return Space(spec.get("method", "bayes"), metric["name"], goal, tuple(params), fixed)


def load_space(path: Path) -> tuple[Space, dict]:
    spec = read_yaml(path, "sweep space")
    return parse_space(spec, str(path)), spec


def model_valid(task: str, model: dict) -> bool:
    try:
        MODEL_TYPES[TASKS[task].kind.model_type][1].from_dict(model)
    except (ValueError, TypeError):
        return False
    return True


def sample(
    trial, space: Space, task: str, base_model: dict, pinned: frozenset = frozenset()
) -> dict[str, Any]:
    """Draw one trial's settings; choices that would make an invalid model are never offered.
    Parameters in `pinned` (fixed for the study by `--set`) are not drawn.

    A categorical parameter is offered only the values valid beside what was drawn before it
    (heads that divide the drawn width, patch sizes that tile the image). When that narrows
    the choices, the parameter is recorded under a name that carries them (model.heads[4,8]),
    so each name always has the same choices, as TPE requires."""
    drawn: dict[str, Any] = {}
    model = dict(base_model)
    for p in space.params:
        if p.name in pinned:
            continue
        if p.kind == "values":
            choices = list(p.values)
            if p.name.startswith("model."):
                key = p.name[len("model.") :]
                choices = [v for v in choices if model_valid(task, {**model, key: v})]
                if not choices:
                    raise DigitformerError(f"no valid value for {p.name} beside {drawn}")
            label = p.name if len(choices) == len(p.values) else f"{p.name}{choices}"
            value = trial.suggest_categorical(label.replace(" ", ""), choices)
        elif p.kind == "int":
            value = trial.suggest_int(p.name, int(p.low), int(p.high))
        else:
            value = trial.suggest_float(p.name, p.low, p.high, log=p.kind == "log")
        drawn[p.name] = value
        if p.name.startswith("model."):
            model[p.name[len("model.") :]] = value
    return drawn


# ---- studies ----------------------------------------------------------------------------


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


HEARTBEAT_S = 30  # a running trial's agent says it is alive this often...
GRACE_S = 120  # ...and a trial not heard from for this long is failed (its agent died)


def _storage(url: str):
    """SQLite (the default, its folder made) or any SQLAlchemy URL, e.g. postgresql://...
    Heartbeats mark a trial whose agent died as failed, and it is retried once."""
    optuna = _optuna()
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=1
                ),
            )
    except Exception as exc:  # bad URL, unreachable server, missing driver
        raise DigitformerError(f"cannot open sweep storage {url}: {exc}") from None


def create(
    task: str,
    space: str = "default",
    *,
    profile: str = "default",
    fixed: dict[str, Any] | None = None,
    storage: str = DEFAULT_STORAGE,
    name: str | None = None,
) -> str:
    """Create a study (before any agent starts: parallel creation races) and return its name."""
    if task not in TASKS:
        raise DigitformerError(f"unknown model {task!r}; choose from {', '.join(TASKS)}")
    optuna = _optuna()
    path = space_path(space, task)
    parsed, spec = load_space(path)
    profile_path(profile, task)  # fail now, not in every agent
    fixed = {**parsed.fixed, **(fixed or {})}
    bad = sorted(set(fixed) & set(AGENT_OWNED))
    if bad:
        raise DigitformerError(f"{', '.join(bad)} cannot be set for a sweep's trials")
    typed = resolve_settings(task, profile, fixed, env_file=None).to_dict()  # valid, typed
    fixed = {
        k: typed["model"][k[len("model.") :]] if k.startswith("model.") else typed[k] for k in fixed
    }
    name = plain_name(name or f"{task}-{time.strftime('%Y%m%d-%H%M%S')}", "study name")
    try:
        study = optuna.create_study(
            study_name=name, storage=_storage(storage), direction=parsed.goal
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise DigitformerError(f"a study named {name!r} already exists in {storage}") from None
    study.set_user_attr("task", task)
    study.set_user_attr("space", spec)
    study.set_user_attr("space_file", str(path))
    study.set_user_attr("profile", profile)
    study.set_user_attr("fixed", fixed)
    return name


def load(name: str, storage: str = DEFAULT_STORAGE, seed: int | None = None):
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///") :]).is_file():
        # an agent or `best` reads studies: it must not create an empty database by looking
        raise DigitformerError(f"no study named {name!r}: {storage} does not exist")
    optuna = _optuna()
    try:
        study = optuna.load_study(
            study_name=name,
            storage=_storage(storage),
            sampler=optuna.samplers.TPESampler(n_startup_trials=5, seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        )
    except KeyError:
        raise DigitformerError(f"no study named {name!r} in {storage}") from None
    if "task" not in study.user_attrs:
        raise DigitformerError(f"study {name!r} was not made by `digitformer sweep create`")
    return study


def agent(
    name: str,
    count: int,
    *,
    storage: str = DEFAULT_STORAGE,
    out_dir: str = SWEEP_DIR,
    data_dir: str | None = None,
    wandb: bool = False,
    seed: int | None = None,
    say=print,
) -> int:
    """Run `count` trials of the study; return how many completed (pruned ones excluded)."""
    from digitformer.training.logger import Logger
    from digitformer.training.train import train

    if count < 1:
        raise DigitformerError("--count must be at least 1")
    optuna = _optuna()
    study = load(plain_name(name, "study name"), storage, seed)
    attrs = study.user_attrs
    task, space = attrs["task"], parse_space(attrs["space"])
    fixed = dict(attrs["fixed"])
    if data_dir is not None:
        fixed["data_dir"] = data_dir
    base = resolve_settings(task, attrs["profile"], fixed, env_file=None)
    done = 0

    def objective(trial) -> float:
        drawn = sample(trial, space, task, base.model, frozenset(fixed))
        run = {"out_dir": f"{out_dir}/{name}", "run": f"trial-{trial.number}", "display": False}
        overrides = {**fixed, **drawn, **run}
        settings = resolve_settings(task, attrs["profile"], overrides, env_file=None)
        say(f"trial {trial.number}: {_describe(drawn)}")
        logger = Logger(
            wandb=wandb,
            project=settings.wandb_project,
            run_name=f"{name}-trial-{trial.number}",
            config=settings.to_dict(),
            group=name,
        )
        trial.set_user_attr("run_dir", f"{settings.out_dir}/{settings.run}")
        history: list[dict] = []

        def on_epoch(epoch: int, val: dict) -> None:
            history.append({"epoch": epoch + 1, **_scalars(val, "val_")})
            trial.report(trial_score(history, space), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")

        try:
            summary = train(settings, logger=logger, on_epoch=on_epoch)
        finally:
            logger.finish()
        trial.set_user_attr("seconds", sum(h["seconds"] for h in summary["history"]))
        return trial_score(summary["history"], space)

    def report(study, frozen) -> None:
        nonlocal done
        state = frozen.state.name.lower()
        value = "" if frozen.value is None else f" {space.metric} {frozen.value:.4f}"
        best = f"; best so far trial {study.best_trial.number}" if _has_complete(study) else ""
        say(f"trial {frozen.number} {state}{value}{best}")
        done += frozen.state == optuna.trial.TrialState.COMPLETE

    study.optimize(objective, n_trials=count, callbacks=[report], gc_after_trial=True)
    return done


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {prefix + k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def trial_score(history: list[dict], space: Space) -> float:
    """The trial's score: its best epoch by the space's metric (the checkpoint kept as best)."""
    values = [h[space.metric] for h in history if space.metric in h]
    if not values:
        raise DigitformerError(
            f"metric {space.metric!r} is not logged; use e.g. val_accuracy, "
            "val_sequence_accuracy, val_digit_accuracy or val_loss"
        )
    return max(values) if space.goal == "maximize" else min(values)


def _has_complete(study) -> bool:
    return any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


def _describe(params: dict) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items())


def trial_settings(trial) -> dict[str, Any]:
    """The settings a trial drew, under their settings keys (model.heads[4,8] -> model.heads)."""
    return {key.split("[", 1)[0]: value for key, value in trial.params.items()}


def best(name: str, storage: str = DEFAULT_STORAGE, top: int = 5) -> tuple[list[dict], dict]:
    """The top trials (rows for a table) and the best trial's full profile (YAML-ready)."""
    optuna = _optuna()
    study = load(name, storage)
    # a trial whose agent was killed (kill -9, a lost machine) is failed now, as the next
    # agent would: not "running" forever
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            optuna.storages.fail_stale_trials(study)
        except Exception as exc:  # a read-only or locked database: report what it holds
            print(
                f"digitformer: note: stale trials not marked ({type(exc).__name__})",
                file=sys.stderr,
            )
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise DigitformerError(f"study {name!r} has no completed trial yet")
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    ranked = sorted(complete, key=lambda t: sign * t.value)
    rows = [
        {
            "trial": t.number,
            "value": t.value,
            "seconds": t.user_attrs.get("seconds"),
            "settings": trial_settings(t),
            "run_dir": t.user_attrs.get("run_dir"),
        }
        for t in ranked[:top]
    ]
    attrs = study.user_attrs
    profile = {**read_profile(profile_path(attrs["profile"], attrs["task"])), **attrs["fixed"]}
    profile = _nest({**profile, **rows[0]["settings"]})
    counts = {s.name.lower(): 0 for s in optuna.trial.TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    summary = {
        "study": name,
        "task": attrs["task"],
        "metric": parse_space(attrs["space"]).metric,
        "trials": {k: v for k, v in counts.items() if v},
        "profile": profile,
    }
    return rows, summary


def format_best(rows: list[dict], summary: dict) -> str:
    """`sweep best` as a table: the study, its trial counts, then one row per top trial."""
    trials = ", ".join(f"{n} {state}" for state, n in summary["trials"].items())
    lines = [
        f"study {summary['study']} ({summary['task']}): {trials}",
        f"{'trial':>5}  {summary['metric']:>12}  {'minutes':>7}  settings",
    ]
    for row in rows:
        minutes = "" if row["seconds"] is None else f"{row['seconds'] / 60:.1f}"
        settings = _describe(row["settings"])
        lines.append(f"{row['trial']:>5}  {row['value']:>12.4f}  {minutes:>7}  {settings}")
    return "\n".join(lines)


def write_profile(path: str | Path, rows: list[dict], summary: dict) -> None:
    """The best trial's settings as a training profile (`train --config PATH`)."""
    header = (
        f"# best trial of sweep {summary['study']} ({summary['metric']} {rows[0]['value']:.4f}),\n"
        "# with the sweep's fixed settings (epochs, data sizes): raise them for a final run\n"
    )
    write_text_atomic(path, header + yaml.safe_dump(summary["profile"], sort_keys=False))


def _nest(flat: dict) -> dict:
    """{'model.dim': 64, 'model': {...}, 'lr': ...} -> a profile with one 'model' mapping."""
    out: dict[str, Any] = {"model": dict(flat.get("model", {}))}
    for key, value in flat.items():
        if key.startswith("model."):
            out["model"][key[len("model.") :]] = value
        elif key != "model":
            out[key] = value
    out["model"] = out.pop("model")  # the model mapping last, as in the packaged profiles
    return {k: _plain(v) for k, v in out.items()}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    return value
