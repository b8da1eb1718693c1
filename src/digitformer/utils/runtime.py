"""Where and how computation runs: the device, CPU threads, mixed precision, and the layout
of a distributed run (torchrun's RANK, LOCAL_RANK, WORLD_SIZE).

The bottom of the package: it imports nothing of ours but the error type, so training,
inference and the CLI all share it without pulling each other in.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from digitformer.utils.errors import DigitformerError


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


T = TypeVar("T")
R = TypeVar("R")


def each(work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """work(item) for every item, in order, on as many threads as PyTorch uses: what the
    preparation of pictures does (NumPy, SciPy, Pillow) lets go of the GIL for most of its
    time. An exception from work() is raised here, as from a plain loop."""
    items = list(items)
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, items))


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep the memory a training step frees for the next step, rather
    than hand each large block back to the kernel and take fresh pages (which the kernel then
    zeroes, a page fault each) on the next: blocks up to 32 MiB come from the heap, which grows
    64 MiB at a time and is not trimmed below 1 GiB of free space. Measured on 2 vCPUs
    (`python -m benchmarks.allocator`): the numbers default's steps 1.0-1.3x faster, the
    encoder-only one's, whose tensors are small, unchanged (docs/training.md). Returns whether
    it applied (glibc only; elsewhere a no-op)."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    settings = ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20))
    return all([bool(libc.mallopt(option, value)) for option, value in settings])


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; fp32 elsewhere (bf16 matmuls are far slower without AVX-512)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- more than one process: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE ----------------


@dataclass(frozen=True)
class Dist:
    """This process's place in a distributed run (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def dist_env() -> Dist:
    """The run's layout from torchrun's environment variables (absent: one process)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DigitformerError("RANK, LOCAL_RANK and WORLD_SIZE must be whole numbers") from None
    if world < 1 or not 0 <= rank < world:
        raise DigitformerError(f"RANK {rank} does not fit WORLD_SIZE {world}")
    return Dist(rank, local, world)


def init_distributed(device: torch.device, dist: Dist) -> None:
    """Join the process group: NCCL between GPUs, Gloo between CPU processes. A rank that does
    not answer within DIGITFORMER_DIST_TIMEOUT seconds (default 300) stops the others."""
    import torch.distributed as torch_dist

    if not dist.active or torch_dist.is_initialized():
        return
    if not torch_dist.is_available():
        raise DigitformerError("this PyTorch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    available = torch_dist.is_nccl_available if backend == "nccl" else torch_dist.is_gloo_available
    if not available():
        raise DigitformerError(f"the {backend} backend is not available in this PyTorch build")
    seconds = float(os.environ.get("DIGITFORMER_DIST_TIMEOUT", "300"))
    torch_dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))


def device_for(dist: Dist, device: torch.device) -> torch.device:
    """One GPU per process: LOCAL_RANK picks it."""
    if dist.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device
