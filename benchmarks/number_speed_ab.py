"""`predict --model number` on a folder of lines, this tree against another, turn by turn.

    git worktree add /tmp/base HEAD~1 && ln -s $PWD/.data /tmp/base/.data
    python -m benchmarks.number_speed_ab --base /tmp/base [--rounds 3] [--json FILE]

The machines this project runs on drift by 10-25% within minutes (another guest's load), so a
benchmark run once for the old code and once for the new can compare two machines. Here each
round reads `number_speed`'s 500 lines (seed 7) by `predict_paths` once with each tree's code,
each in a fresh interpreter (its readers loaded in the time, as the command does), the best of
3 each time; the rounds alternate which tree goes first. Prints lines/s per round and the
median of each tree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_json

ONE_RUN = r"""
import inspect, json, tempfile, time
from pathlib import Path
import torch
torch.set_num_threads({threads})
from benchmarks.number_speed import write_lines
from digitformer.inference import ink
from digitformer.inference.predict import predict_paths
folder = Path(tempfile.mkdtemp())
write_lines(folder, {count}, {data!r})
paths = sorted(str(p) for p in folder.glob("*.png"))
plain = "canvases" in inspect.signature(predict_paths).parameters  # predict without --show
options = {{"canvases": False}} if plain else {{}}
best = float("inf")
for _ in range(3):
    ink._CACHE.clear()
    start = time.perf_counter()
    predict_paths(paths, model="number", device="cpu", **options)
    best = min(best, time.perf_counter() - start)
print(json.dumps({count} / best))
"""


def lines_per_s(tree: Path, count: int, threads: int, data: str) -> float:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}:{tree}", OMP_WAIT_POLICY="PASSIVE")
    code = ONE_RUN.format(threads=threads, count=count, data=data)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip().splitlines()[-1]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other tree (a worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(Path(".data").resolve()))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    trees = {"this": Path.cwd(), "base": args.base.resolve()}
    read: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
        for name in order:
            read[name].append(
                round(lines_per_s(trees[name], args.count, args.threads, args.data_dir), 1)
            )
            print(f"round {round_ + 1}, {name}: {read[name][-1]} lines/s", flush=True)
    medians = {name: float(np.median(v)) for name, v in read.items()}
    print(json.dumps({"median_lines_per_s": medians}))
    write_json(args.json, {"rounds": read, "median": medians, "machine": machine()})


if __name__ == "__main__":
    main()
