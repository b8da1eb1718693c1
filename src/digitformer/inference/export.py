"""Export a checkpoint for deployment: ONNX (run it with onnxruntime) or TorchScript.

    digitformer export .data/models/encoder-decoder-default --format onnx model.onnx

Every model takes float images (B, 1, H, W) in [0, 1] with a dynamic batch B and returns what
its `read` does: tokens (B, S) int64 and probabilities (B, S, V). A digit is S = 1 of V = 10;
the encoder-decoder graph runs the whole greedy decoding: for a 2x2 grid S = 4 digits; for
numbers S = max_digits + 1 steps, the loop in the graph with a fixed number of steps, every
step after a number's end token (10) forced to write it again (so read each row up to its
first 10).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from digitformer.inference.readers import input_shape
from digitformer.utils.errors import DigitformerError
from digitformer.utils.fileio import atomic_path

FORMATS = ("onnx", "torchscript")


class ReadingGraph(nn.Module):
    """A model's `read` as one graph: images -> tokens (B, S) and probabilities (B, S, V).
    An encoder-decoder's loop of S steps unrolls at export, ended numbers masked to the end
    token; it recomputes the prefix each step instead of carrying a cache: at these lengths
    (4 or 9) the difference is small and the graph stays free of state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return cast(Any, self.model).read(images, use_cache=False)  # ViT.read or Seq2Seq.read


OUTPUTS = ["digits", "probabilities"]


SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript"}


def export_model(model: nn.Module, fmt: str | None, out: str | Path) -> Path:
    """Write the model to `out` as ONNX or TorchScript (`fmt`; None: from the file's suffix)."""
    out = Path(out)
    if fmt is None:
        if out.suffix.lower() not in SUFFIXES:
            raise DigitformerError(
                f"{out}: say --format onnx or torchscript (or name it .onnx, .pt)"
            )
        fmt = SUFFIXES[out.suffix.lower()]
    if fmt not in FORMATS:
        raise DigitformerError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if out.is_dir():
        raise DigitformerError(f"{out} is a folder: give the file to write")
    module = ReadingGraph(model.cpu().eval()).eval()
    example, outputs = torch.rand(2, 1, *input_shape(model)), OUTPUTS
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter about tracing; failures still raise
        if fmt == "torchscript":
            traced = torch.jit.trace(module, example)
            buffer = io.BytesIO()  # written by Python: a full disk is an OSError, not an abort
            torch.jit.save(traced, buffer)
            tmp.write_bytes(buffer.getvalue())
        else:
            _export_onnx(module, example, outputs, tmp)
    return out


def _export_onnx(module: nn.Module, example: torch.Tensor, outputs: list[str], path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; say so plainly if missing)
    except ImportError:
        raise DigitformerError("ONNX export needs: pip install onnx onnxscript") from None
    batch = torch.export.Dim("batch", min=1, max=65536)
    # The exporter names each torchvision operator it cannot register when torchvision is not
    # installed: noise for models that use none of them.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        program = _onnx_program(module, example, outputs, batch)
    finally:
        registration.setLevel(level)
    program.save(str(path))


def _onnx_program(module: nn.Module, example: torch.Tensor, outputs: list[str], batch):
    return torch.onnx.export(
        module,
        (example,),
        input_names=["images"],
        output_names=outputs,
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
