"""Run a sweep, then train the default profile's model on the same budget, and compare them on
the fixed validation split (the test set is never used for selection).

    python -m benchmarks.sweep_vs_default --task encoder-only --space cpu --count 20

The budget is the space's fixed settings (e.g. 3 epochs on 12000 digits): the default profile
is trained with exactly those, so the only difference is what the sweep chose.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import machine
from digitformer.training import sweep
from digitformer.training.settings import resolve_settings
from digitformer.training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("encoder-only", "encoder-decoder"), required=True)
    parser.add_argument("--space", default="cpu")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--storage", default=sweep.DEFAULT_STORAGE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    name = sweep.create(args.task, args.space, storage=args.storage)
    t0 = time.perf_counter()
    sweep.agent(name, args.count, storage=args.storage, seed=args.seed)
    sweep_minutes = (time.perf_counter() - t0) / 60
    rows, summary = sweep.best(name, args.storage, top=5)
    space, _ = sweep.load_space(sweep.space_path(args.space, args.task))
    baseline = resolve_settings(
        args.task,
        "default",
        {
            **space.fixed,
            "out_dir": f".data/sweeps/{name}",
            "run": "default-profile",
            "display": False,
        },
        env_file=None,
    )
    history = train(baseline)["history"]
    default_value = sweep.trial_score(history, space)
    result = {
        "task": args.task,
        "study": name,
        "space": args.space,
        "metric": space.metric,
        "budget": space.fixed,
        "trials": summary["trials"],
        "sweep_minutes": sweep_minutes,
        "best": rows[0],
        "top": rows,
        "default_profile": {"value": default_value, "model": baseline.model},
        "machine": machine(),
    }
    print(json.dumps(result, indent=2, default=str))
    print(
        f"| {args.task} | sweep of {args.count} ({args.space} space) | best trial "
        f"{space.metric} {100 * rows[0]['value']:.2f}% vs default profile "
        f"{100 * default_value:.2f}% on the same budget | {sweep_minutes:.1f} min | {machine()} |"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
