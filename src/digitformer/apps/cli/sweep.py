"""`digitformer sweep create|agent|run|best`: Optuna studies over training settings."""

from __future__ import annotations

import argparse
import json

from digitformer.apps.cli.common import key_values, tasks
from digitformer.utils.defaults import SWEEP_DIR, SWEEP_STORAGE
from digitformer.utils.errors import DigitformerError, redact


def register(sub, shared) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="hyperparameter sweeps (Optuna: SQLite here, PostgreSQL for many machines)",
        description="Bayesian (TPE) sweeps over a W&B-format search space (packaged ones by "
        "name, or a YAML file), with poor trials pruned after each epoch. Studies live in "
        "--storage: an SQLite file by default, or postgresql://user@host:port/db shared by "
        "agents anywhere.",
    )
    actions = sweep.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    storage = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    storage.add_argument("--storage", default=SWEEP_STORAGE, help=f"default: {SWEEP_STORAGE}")
    study = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    study.add_argument("--model", choices=tasks(), required=True)
    study.add_argument(
        "--space",
        default="default",
        help="default (the original's ranges), cpu (small and quick), or a YAML file",
    )
    study.add_argument("--config", default="default", help="base training profile")
    study.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a setting every trial has"
    )
    study.add_argument("--name", help="study name (default: MODEL-TIMESTAMP)")
    agent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    agent.add_argument("--count", type=int, required=True, help="trials for this agent to run")
    agent.add_argument("--out-dir", default=SWEEP_DIR, help="where trial checkpoints go")
    agent.add_argument("--data-dir", help="data folder (default: the study's)")
    agent.add_argument("--wandb", action="store_true", help="log each trial to W&B, grouped")
    agent.add_argument("--seed", type=int, help="sampler seed (default: random)")

    p = actions.add_parser(
        "create", parents=[study, storage], help="create a study; print its name"
    )
    p.set_defaults(func=cmd_sweep_create)
    p = actions.add_parser("agent", parents=[agent, storage], help="run trials of a study")
    p.add_argument("name")
    p.set_defaults(func=cmd_sweep_agent)
    p = actions.add_parser(
        "run", parents=[study, agent, storage], help="create a study, then run trials of it"
    )
    p.set_defaults(func=cmd_sweep_run)
    p = actions.add_parser(
        "best",
        parents=[storage, shared["json"]],
        help="the best trials, and the best settings as a profile",
    )
    p.add_argument("name")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--out", help="write the best settings here as a YAML profile")
    p.set_defaults(func=cmd_sweep_best)


def _sweeps():
    """The sweep library, once Optuna (the sweep extra, not a core dependency) is there."""
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        raise DigitformerError(
            f"sweeps need the sweep extra: pip install 'digitformer[sweep]' ({exc})"
        ) from None
    from digitformer.training import sweep

    return sweep


def cmd_sweep_create(args) -> int:
    print(_create_study(args))
    return 0


def _create_study(args) -> str:
    sweep = _sweeps()
    return sweep.create(
        args.model,
        args.space,
        profile=args.config,
        fixed=key_values(args.set),
        storage=args.storage,
        name=args.name,
    )


def cmd_sweep_agent(args, name: str | None = None) -> int:
    sweep = _sweeps()
    done = sweep.agent(
        name or args.name,
        args.count,
        storage=args.storage,
        out_dir=args.out_dir,
        data_dir=args.data_dir,
        wandb=args.wandb,
        seed=args.seed,
    )
    print(f"{done} of {args.count} trials completed (the rest were pruned)")
    return 0


def cmd_sweep_run(args) -> int:
    name = _create_study(args)
    print(f"study {name} in {redact(args.storage)}")
    return cmd_sweep_agent(args, name)


def cmd_sweep_best(args) -> int:
    sweep = _sweeps()
    rows, summary = sweep.best(args.name, args.storage, args.top)
    if args.out:
        sweep.write_profile(args.out, rows, summary)
    if args.json:
        print(json.dumps({**summary, "top": rows}))
        return 0
    print(sweep.format_best(rows, summary))
    if args.out:
        print(
            f"best settings written to {args.out}: digitformer train {summary['task']} "
            f"--config {args.out}"
        )
    return 0
