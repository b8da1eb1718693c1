"""Time to accuracy: train a profile from scratch with several seeds, against the default profile
on the same machine in the same run.

    python -m benchmarks.time_to_accuracy --profile fast --seeds 3 --json OUT.json
    python -m benchmarks.time_to_accuracy --profile fast --nproc 2   (two processes, torchrun)

Per seed: the whole `train()` time (validation and checkpoints included; not the data loading
before it nor the test evaluation after it), the test accuracy of the last epoch, and the first
epoch whose validation accuracy reached --target. With --nproc N the profile trains under
torchrun, one thread a process, timed from rank 0's data loaded to its last validation.
Then the mean and spread over the seeds.

The baseline is the default profile's `train()` time on this machine, measured in the same run
(the machines differ up to 2x from one session to the next, so only the ratio travels):
`--baseline full` trains it whole; `--baseline epochs:N` (the default, N=1) trains its first N
epochs and scales the time to all its epochs (its epochs cost the same: same model, same data);
`--baseline none` skips it.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.common import guard, launched_run, machine, timed_run, write_json
from digitformer.training.settings import resolve_settings
from digitformer.training.tasks import TASKS
from digitformer.utils.errors import DigitformerError


def first_epoch_at(history: list[dict], metric: str, target: float) -> int | None:
    """The first epoch whose validation `metric` reached `target` (None: none did)."""
    return next((h["epoch"] for h in history if h[f"val_{metric}"] >= target), None)


def parse_seeds(text: str) -> list[int]:
    """'3' -> [0, 1, 2]; '1,2' -> [1, 2]."""
    parts = text.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise DigitformerError(f"--seeds {text!r}: a count (3) or a list of seeds (1,2)")
    if len(parts) == 1:
        if int(parts[0]) < 1:
            raise DigitformerError("--seeds must be at least 1")
        return list(range(int(parts[0])))
    return [int(p) for p in parts]


def parse_baseline(text: str) -> int | None:
    """'full' -> 0 (all epochs), 'epochs:N' -> N, 'none' -> None."""
    if text == "none":
        return None
    if text == "full":
        return 0
    name, _, count = text.partition(":")
    if name == "epochs" and count.isdigit() and int(count) >= 1:
        return int(count)
    raise DigitformerError(f"--baseline {text!r}: use full, epochs:N (N >= 1) or none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default="encoder-only")
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--seeds", default="3", help="N (seeds 0..N-1) or a list: 1,2")
    parser.add_argument("--target", type=float, default=0.99, help="validation accuracy to reach")
    parser.add_argument("--baseline", default="epochs:1", help="full | epochs:N | none")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--out-dir", default=".data/bench-runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--nproc", type=int, default=1, help="train the profile with N processes (torchrun)"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    baseline_epochs = parse_baseline(args.baseline)
    seed_list = parse_seeds(args.seeds)
    overrides = dict(kv.split("=", 1) for kv in args.set)

    seeds = []
    for seed in seed_list:
        settings = {**overrides, "seed": seed, "display": False}
        if args.nproc > 1:
            run = launched_run(
                args.task, args.profile, settings, args.data_dir, args.out_dir, args.nproc
            )
        else:
            run = timed_run(args.task, args.profile, settings, args.data_dir, args.out_dir)
        metric = run["task"].primary_metric
        row = {
            "seed": seed,
            "train_seconds": round(run["seconds"], 1),
            f"test_{metric}": run["test"][metric],
            "first_epoch_at_target": first_epoch_at(run["summary"]["history"], metric, args.target),
            "epochs": run["settings"].epochs,
            f"val_{metric}_by_epoch": [
                round(h[f"val_{metric}"], 4) for h in run["summary"]["history"]
            ],
            "run_dir": run["summary"]["run_dir"],
        }
        seeds.append(row)
        print(
            f"seed {seed}: {row['train_seconds']:.0f} s, test {metric} "
            f"{100 * row[f'test_{metric}']:.2f}%, validation reached {100 * args.target:g}% "
            f"at epoch {row['first_epoch_at_target'] or 'never'} of {row['epochs']}",
            flush=True,
        )
    scores = [row[f"test_{metric}"] for row in seeds]
    times = [row["train_seconds"] for row in seeds]
    result = {
        "task": args.task,
        "profile": args.profile,
        "overrides": overrides,
        "processes": args.nproc,
        "target": args.target,
        "seeds": seeds,
        f"mean_test_{metric}": statistics.mean(scores),
        f"min_test_{metric}": min(scores),
        "mean_train_seconds": statistics.mean(times),
        "max_train_seconds": max(times),
        "machine": machine(),
    }
    print(
        f"{args.profile}: mean test {metric} {100 * statistics.mean(scores):.2f}% "
        f"(min {100 * min(scores):.2f}%), mean train() time {statistics.mean(times):.0f} s "
        f"(max {max(times):.0f} s) over {len(seeds)} seeds"
    )
    if baseline_epochs is not None:
        default = resolve_settings(args.task, "default", env_file=None)
        epochs = baseline_epochs or default.epochs
        run = timed_run(
            args.task, "default", {"epochs": epochs, "display": False}, args.data_dir, args.out_dir
        )
        # `--set epochs=N` leaves the default's cost per epoch alone (only its schedule changes)
        estimate = run["seconds"] * default.epochs / epochs
        result["baseline"] = {
            "profile": "default",
            "epochs_run": epochs,
            "epochs": default.epochs,
            "train_seconds": round(estimate, 1),
            "measured": epochs == default.epochs,
            **({f"test_{metric}": run["test"][metric]} if epochs == default.epochs else {}),
        }
        result["time_ratio"] = statistics.mean(times) / estimate
        how = "measured" if epochs == default.epochs else f"scaled from its first {epochs} epoch(s)"
        print(
            f"default: {estimate:.0f} s for its {default.epochs} epochs ({how}); "
            f"{args.profile} takes {result['time_ratio']:.2f}x of it"
        )
    write_json(args.json, result)


if __name__ == "__main__":
    guard(main)
