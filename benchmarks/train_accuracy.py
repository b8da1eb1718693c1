"""Train a profile from scratch, then score it on the test set: accuracy, wall time, speed.

    python -m benchmarks.train_accuracy --task encoder-only --profile default

Prints a results-table row. The wall time counts the whole `train()` call (per-epoch
validation and checkpoints included), not the data loading before it nor the test evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import machine, timed_run, write_json
from digitformer.inference.checkpoint import read_checkpoint
from digitformer.inference.ensemble import Ensemble
from digitformer.inference.readers import BY_TASK
from digitformer.training.tasks import TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), required=True)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--out-dir", default=".data/bench-runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument(
        "--tta", action="store_true", help="also score the test set with test-time views"
    )
    args = parser.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    run = timed_run(args.task, args.profile, overrides, args.data_dir, args.out_dir)
    settings, task, summary, model, test = (
        run[k] for k in ("settings", "task", "summary", "model", "test")
    )
    wall = run["seconds"]
    if args.tta:
        tta, _ = task.evaluate(Ensemble([model], tta=True).eval(), "test")
        tta["views"] = len(BY_TASK[args.task].views)
    samples = sum(h["samples_per_second"] * h["seconds"] for h in summary["history"])
    train_seconds = sum(h["seconds"] for h in summary["history"])
    result = {
        "task": args.task,
        "profile": args.profile,
        "overrides": overrides,
        "test": {k: v for k, v in test.items() if k != "confusion"},
        **({"test_tta": {k: v for k, v in tta.items() if k != "confusion"}} if args.tta else {}),
        "wall_seconds": wall,
        "train_samples_per_second": samples / train_seconds,
        "epochs": settings.epochs,
        "machine": machine(),
        "run_dir": summary["run_dir"],
    }
    if settings.init_encoder.startswith("pretrained:"):  # bundled: its cost is in its report
        result["init_encoder"] = {"run": settings.init_encoder}
    elif settings.init_encoder:  # the encoder's own training is part of the recipe's cost
        source_path = Path(settings.init_encoder)
        if source_path.is_dir():  # the whole run, not just its best epoch
            source_path = source_path / "last.safetensors"
        _, source = read_checkpoint(source_path)
        result["init_encoder"] = {
            "run": settings.init_encoder,
            "train_seconds": sum(h["seconds"] for h in source["history"]),
        }
    metric = task.primary_metric
    extra = (
        f" (character error rate {100 * test['cer']:.2f}%)"
        if "cer" in test
        else f" (per digit {100 * test['digit_accuracy']:.2f}%)"
        if "digit_accuracy" in test
        else ""
    )
    if args.tta:
        extra += f"; with --tta {100 * tta[metric]:.2f}%"
    print(json.dumps(result, indent=2))
    print(
        f"| {args.task} | {args.profile} | test {metric.replace('_', ' ')} "
        f"{100 * test[metric]:.2f}%{extra} | {wall / 60:.1f} min | "
        f"{result['train_samples_per_second']:,.0f} samples/s | {machine()} |"
    )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
