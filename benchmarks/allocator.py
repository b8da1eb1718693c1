"""Training steps with glibc's default allocator against one that keeps freed memory
(`utils.runtime.keep_freed_memory`, what `train` does on the CPU), in the same process.

    python -m benchmarks.allocator [--tasks encoder-only,encoder-decoder,numbers] [--rounds 4]

For each task's default profile: the same drawn batches, model and optimizer, in rounds that
alternate the two settings (each round one warm-up pass, then a timed one), so the machine's
drift falls on both; the median ms a step of each.
"""

from __future__ import annotations

import argparse
import ctypes
import os
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import guard, machine, write_json
from benchmarks.ops import run_steps
from digitformer.models import build_model
from digitformer.training.optim import make_optimizer
from digitformer.training.settings import resolve_settings
from digitformer.training.tasks import build_task
from digitformer.utils.runtime import keep_freed_memory

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def glibc_default() -> None:
    """Back to glibc's defaults: large blocks mapped and returned (128 KiB), the heap trimmed."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 128 << 10)  # M_TRIM_THRESHOLD
    libc.mallopt(-2, 0)  # M_TOP_PAD
    libc.malloc_trim(0)


def one_task(name: str, steps: int, rounds: int, data_dir: str) -> dict:
    settings = resolve_settings(name, "default", {"data_dir": data_dir}, env_file=None)
    task = build_task(settings, torch.device("cpu"))
    batches = task.train_batches(0)
    drawn = [next(batches) for _ in range(steps)]
    torch.manual_seed(0)
    model = build_model(task.model_type, settings.model).train()
    optimizer = make_optimizer(model, settings, fused=False)

    def step_time() -> float:
        return run_steps(task, model, optimizer, drawn) / steps

    times: dict[str, list[float]] = {"glibc default": [], "keeps freed memory": []}
    for _ in range(rounds):
        for label, apply in (("glibc default", glibc_default), ("keeps freed memory", None)):
            if apply is None:
                keep_freed_memory()
            else:
                apply()
            step_time()  # warm: the allocator settles
            times[label].append(step_time())
    median = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "task": name,
        "batch_size": settings.batch_size,
        "ms_per_step": {k: 1000 * v for k, v in median.items()},
        "speedup": median["glibc default"] / median["keeps freed memory"],
        "rounds_ms": {k: [round(1000 * x, 1) for x in v] for k, v in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="encoder-only,encoder-decoder,numbers")
    parser.add_argument("--steps", type=int, default=4, help="steps a timed pass")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print("| task (default profile) | glibc default | keeps freed memory | speed-up |")
    print("|---|---:|---:|---:|")
    for name in args.tasks.split(","):
        r = one_task(name, args.steps, args.rounds, args.data_dir)
        rows.append(r)
        ms = r["ms_per_step"]
        print(
            f"| {name} | {ms['glibc default']:.0f} ms | {ms['keeps freed memory']:.0f} ms "
            f"| {r['speedup']:.2f}x |",
            flush=True,
        )
    print(f"(median of {args.rounds} alternating rounds of {args.steps} steps; {machine()})")
    write_json(args.json, {"rows": rows, "machine": machine()})


if __name__ == "__main__":
    guard(main)
