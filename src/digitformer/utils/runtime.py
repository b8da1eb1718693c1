"""Where and how computation runs: the device, CPU threads, mixed precision, and the layout
of a distributed run (torchrun's RANK, LOCAL_RANK, WORLD_SIZE).

The bottom of the package: it imports nothing of ours but the error type, so training,
inference and the CLI all share it without pulling each other in.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import torch
from threadpoolctl import threadpool_limits

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
    """work(item) for every item, in order, on as many threads as PyTorch uses (at most
    MAX_WORKERS): what the preparation of pictures does (NumPy, SciPy, Pillow) lets go of the
    GIL for part of its time (1.1-1.8x on 2 cores). An exception from work() is raised here, as
    from a plain loop."""
    items = list(items)
    workers = min(torch.get_num_threads(), len(items), MAX_WORKERS)
    if workers <= 1:
        return [work(item) for item in items]
    # NumPy's OpenBLAS would start threads of its own for each worker's small products, and
    # they spin between calls: on 2 cores two workers then ran slower than one (threadpoolctl)
    with threadpool_limits(1, user_api="blas"):
        pool = ThreadPoolExecutor(workers)
        try:
            return list(pool.map(work, items))
        finally:  # an error (or Ctrl-C) stops what has not started, as a loop would
            pool.shutdown(wait=True, cancel_futures=True)


MAX_WORKERS = 8  # each may hold a picture decoded at full size (a 5000x5000 PNG: 100 MB)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products are faster than fp32 on `device`: on CUDA, and on a CPU with
    bf16 dot products in hardware: AMX's bf16 tiles (Intel Xeon since Sapphire Rapids: 4x
    fp32's speed on the models' shapes) or AVX-512 BF16 (AMD EPYC since Zen 4: training 1.4x,
    reading 1.5x fp32's). Elsewhere PyTorch's bf16 CPU kernels are far slower than fp32 (40x on
    an AMD EPYC without them: docs/training.md, "bf16 autocast on a CPU with AMX")."""
    if device.type == "cuda":
        return True
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    return device.type == "cpu" and any(capabilities.get(k, False) for k in BF16_UNITS)


BF16_UNITS = ("amx_bf16", "avx512_bf16")  # CPU features that make bf16 faster than fp32


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast for `precision` "bf16", or "auto" where it is fast (`fast_bf16`); fp32
    otherwise (and on devices autocast does not serve)."""
    wanted = precision == "bf16" or (precision == "auto" and fast_bf16(device))
    if wanted and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


PRECISIONS = ("auto", "fp32", "bf16")
# the readers' precision, and training's `precision` setting by its environment name
PRECISION_VARIABLE = "DIGITFORMER_PRECISION"
MIN_BF16_BATCH = 16  # inputs a call from which bf16 reads faster than fp32 (`reading`)


@contextlib.contextmanager
def reading(model: torch.nn.Module, batch: int) -> Iterator[None]:
    """How the readers run a model on `batch` inputs at once: without autograd, under
    `autocast` at the precision DIGITFORMER_PRECISION names (auto, the default: bf16 where it
    is fast, for batches of MIN_BF16_BATCH or more: on an AMX Xeon the digit ViT reads 64 digits
    1.9x faster in bf16, one 1.5x slower, its casts then costing more than its products). The
    independent suite reads the same within a number or two of 400 (docs/numbers.md, "Reading
    in bf16")."""
    precision = os.environ.get(PRECISION_VARIABLE, "").strip() or "auto"
    if precision not in PRECISIONS:
        raise DigitformerError(
            f"{PRECISION_VARIABLE} must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "auto" and batch < MIN_BF16_BATCH:
        precision = "fp32"
    device = next(model.parameters()).device
    with torch.inference_mode(), autocast(device, precision):
        yield


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


def end_worker(code: int = 0) -> NoReturn:
    """End a torchrun worker whose run is saved, without the interpreter's teardown. Under
    load a Gloo worker thread can still be letting go of the last collective's tensor when
    the interpreter finalizes; it then needs the GIL, Python ends the thread, and the process
    aborts ("terminate called without an active exception", seen in a core dump; DDP keeps
    the group alive past destroy_process_group, so its threads cannot be joined first)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def device_for(dist: Dist, device: torch.device) -> torch.device:
    """One GPU per process: LOCAL_RANK picks it."""
    if dist.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device
