"""Helpers shared by the benchmarks: the machine they ran on, their JSON, their errors."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from digitformer.inference.checkpoint import PRETRAINED_DIR, load_model
from digitformer.training.settings import resolve_settings
from digitformer.training.tasks import build_task
from digitformer.training.train import train
from digitformer.utils.errors import DigitformerError
from digitformer.utils.runtime import pick_device


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    where = (
        f"{os.cpu_count()} vCPU {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    flags = getattr(torch.cpu, "get_capabilities", dict)()
    bf16 = [name for name in ("amx_bf16", "avx512_bf16") if flags.get(name)]
    where += f", bf16 units: {' '.join(bf16) or 'none'}"
    if torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name()} + {where}"
    return where


def write_json(path: Path | None, result: dict) -> None:
    """The benchmark's result as JSON at `path` (its folder made), when a path is given, with
    which bundled models it read (`bundled`): a commit does not say, when the models were
    rebundled in a working copy."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        result = {**result, "bundled": result.get("bundled") or bundled()}
        path.write_text(json.dumps(result, indent=2) + "\n")


def bundled() -> dict[str, str]:
    """The package's model files (pretrained/*.safetensors), each with the first 12 hex
    digits of its SHA-256."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:12]
        for f in sorted(PRETRAINED_DIR.glob("*.safetensors"))
    }


def guard(main: Callable[[], None]) -> None:
    """Run a benchmark's main(): a mistake of the user's is one line, not a traceback."""
    try:
        main()
    except DigitformerError as err:
        sys.exit(f"error: {err}")
    except ModuleNotFoundError as err:  # a benchmark's own library (scikit-image, ...)
        sys.exit(f"error: {err.name} is not installed: pip install -e '.[bench]'")


def timed_run(
    task_name: str, profile: str, overrides: dict, data_dir: str, out_dir: str
) -> dict[str, Any]:
    """Train `profile` from scratch in a new run folder and score its last epoch on the test
    set: settings, task, summary, model, test metrics and the wall time of the whole `train()`
    call (per-epoch validation and checkpoints included; not the data loading before it)."""
    run = run_name(task_name, profile)
    settings = resolve_settings(
        task_name,
        profile,
        {"data_dir": data_dir, "out_dir": out_dir, "run": run, **overrides},
        env_file=None,
    )
    device = pick_device(settings.device)
    task = build_task(settings, device, with_test=True)
    t0 = time.perf_counter()
    summary = train(settings, task=task)
    seconds = time.perf_counter() - t0
    model, test = tested(task, Path(summary["run_dir"]), device)
    return {
        "settings": settings,
        "task": task,
        "summary": summary,
        "model": model,
        "test": test,
        "seconds": seconds,
    }


def launched_run(
    task_name: str, profile: str, overrides: dict, data_dir: str, out_dir: str, nproc: int
) -> dict[str, Any]:
    """As timed_run, trained by `digitformer train --nproc N` (torchrun, one thread a process);
    its time is rank 0's, from its data loaded to its last validation (the epoch records'
    `elapsed`), as timed_run's leaves out the data loading."""
    run = run_name(task_name, profile)
    sets = [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]
    command = [
        sys.executable, "-m", "digitformer", "train", task_name, "--config", profile,
        "--env-file", "none", "--data-dir", data_dir, "--out-dir", out_dir, "--name", run,
        "--nproc", str(nproc), "--threads", "1", *sets,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    if subprocess.run(command, env=env).returncode != 0:
        raise DigitformerError(f"the training under torchrun failed: {' '.join(command)}")
    folder = Path(out_dir) / run
    history = json.loads((folder / "last.json").read_text())["history"]
    settings = resolve_settings(
        task_name, profile, {"data_dir": data_dir, **overrides}, env_file=None
    )
    task = build_task(settings, torch.device("cpu"), with_test=True)
    model, test = tested(task, folder, torch.device("cpu"))
    summary = {"run_dir": str(folder), "history": history}
    return {"settings": settings, "task": task, "summary": summary, "model": model,
            "test": test, "seconds": history[-1]["elapsed"]}  # fmt: skip


def run_name(task_name: str, profile: str) -> str:
    """A benchmark run's folder name: the task, the profile and the time it started."""
    return f"{task_name}-{Path(profile).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def tested(task, folder: Path, device: torch.device) -> tuple[Any, dict]:
    """The run's last checkpoint and its metrics on the task's test set."""
    model, _ = load_model(folder / "last.safetensors", device)
    test, _ = task.evaluate(model, "test")
    return model, test
