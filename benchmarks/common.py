"""Helpers shared by the benchmarks: the machine they ran on, their JSON, their errors."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from digitformer.errors import DigitformerError


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
    if torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name()} + {where}"
    return where


def write_json(path: Path | None, result: dict) -> None:
    """The benchmark's result as JSON at `path` (its folder made), when a path is given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def guard(main: Callable[[], None]) -> None:
    """Run a benchmark's main(): a mistake of the user's is one line, not a traceback."""
    try:
        main()
    except DigitformerError as err:
        sys.exit(f"error: {err}")
