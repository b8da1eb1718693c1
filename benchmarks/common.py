"""Helpers shared by the benchmarks: a description of the machine they ran on."""

from __future__ import annotations

import os
import platform

import torch


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
