"""Where and how computation runs: the device, CPU threads and mixed precision.

The bottom of the package: it imports nothing of ours but the error type, so training,
inference and the CLI all share it without pulling each other in.
"""

from __future__ import annotations

import contextlib

import torch

from digitformer.errors import DigitformerError


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA, else Apple's MPS, else the CPU. A named device must be available."""
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise DigitformerError("device cuda requested but CUDA is not available")
        if name == "mps" and not torch.backends.mps.is_available():
            raise DigitformerError("device mps requested but MPS is not available")
        try:
            return torch.device(name)
        except RuntimeError:
            raise DigitformerError(
                f"unknown device {name!r}: use auto, cpu, cuda[:N] or mps"
            ) from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def configure_threads(threads: int | None) -> None:
    """Use `threads` CPU threads (None: PyTorch's default, all cores)."""
    if threads is not None:
        if threads < 1:
            raise DigitformerError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; fp32 elsewhere (bf16 matmuls are far slower without AVX-512)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
