"""Training speed with one process and with several (torchrun, DDP), on this machine.

    python -m benchmarks.distributed [--task numbers] [--profile default] [--train-size 11000]
        [--precision fp32,bf16] [--json FILE]

Trains one epoch of the task's profile in each layout (a warm-up epoch first) and reads
the images/s each run recorded: on the CPU, 1 process of 2 threads against 2 processes of 1
thread (Gloo); on a machine with GPUs, 1 GPU against all of them (NCCL); each in every
`--precision` (the `precision` setting). `--train-size`: the digits of an encoder-only epoch,
the images (grids, lines) of the other tasks'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import machine, write_json

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


def run(
    args, work: Path, name: str, processes: int, threads: int, device: str, precision: str
) -> float:
    size = "train_size" if args.task == "encoder-only" else "train_grids"
    train = [
        "train", args.task, "--config", args.profile, "--env-file", "none",
        "--data-dir", args.data_dir, "--out-dir", str(work), "--name", name, "--epochs", "2",
        "--no-display", "--device", device, "--threads", str(threads),
        "--set", f"{size}={args.train_size}", "--set", "warmup_steps=10",
        "--set", f"precision={precision}",
    ]  # fmt: skip
    launcher = [*TORCHRUN, str(processes)] if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [*launcher, "-m", "digitformer", *train], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        sys.exit(f"error: {name} failed: {result.stderr.strip()[-500:]}")
    history = json.loads((work / name / "last.json").read_text())["history"]
    rate = history[-1]["samples_per_second"]  # the second epoch: the first warmed up
    print(f"{name:32s} {rate:8,.0f} images/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="encoder-only")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--train-size", type=int, default=11000)
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16, auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digitformer-ddp-"))
    rows = {}
    try:
        for precision in args.precision.split(","):
            tag = f", {precision}"
            if torch.cuda.is_available():
                gpus = torch.cuda.device_count()
                rows[f"1 GPU{tag}"] = run(args, work, f"gpu-1-{precision}", 1, 4, "cuda", precision)
                if gpus > 1:
                    rows[f"{gpus} GPUs (DDP, NCCL){tag}"] = run(
                        args, work, f"gpu-{gpus}-{precision}", gpus, 4, "cuda", precision
                    )
            cores = os.cpu_count() or 2
            rows[f"CPU: 1 process x {cores} threads{tag}"] = run(
                args, work, f"cpu-1-{precision}", 1, cores, "cpu", precision
            )
            rows[f"CPU: {cores} processes x 1 thread (DDP, Gloo){tag}"] = run(
                args, work, f"cpu-{cores}-{precision}", cores, 1, "cpu", precision
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = next(iter(rows.values()))
    for name, rate in rows.items():
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")
    result = {"images_per_second": rows, "task": args.task, "profile": args.profile}
    write_json(args.json, {**result, "machine": machine()})


if __name__ == "__main__":
    main()
