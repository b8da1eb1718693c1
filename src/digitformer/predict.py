"""Read digits from the user's own images with a trained checkpoint.

    digitformer predict .data/models/encoder-decoder-default photos/ grid.png --json

Each image is first brought to what the model reads (`digitformer.prepare`: paper, lighting
and pen removed, the digit cut, scaled and centred as MNIST's were; a grid per quadrant). A
picture with nothing to read gets no digits and a reason, never a guess; a reading whose
confidence is low says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from digitformer.checkpoint import load_model
from digitformer.display.braille import render_samples, use_color
from digitformer.errors import DigitformerError
from digitformer.prepare import NoInk, prepare, read_gray
from digitformer.runtime import pick_device
from digitformer.tensors import to_float

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
LOW_CONFIDENCE = 0.6  # a digit read with less than this probability is flagged


@dataclass
class Prediction:
    """What was read in one file: `digits` None (and a `reason`) when there was nothing to
    read; `low_confidence` when some digit's probability is under LOW_CONFIDENCE."""

    file: str
    digits: str | None
    confidence: list[float]
    probabilities: list[list[float]]
    reason: str | None = None

    @property
    def low_confidence(self) -> bool:
        return any(c < LOW_CONFIDENCE for c in self.confidence)

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "digits": self.digits,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "low_confidence": self.low_confidence,
            "reason": self.reason,
        }


def find_images(paths: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Expand folders into their image files (sorted); report paths that do not exist."""
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{path}: no image files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


@torch.inference_mode()
def predict_images(
    model: nn.Module,
    model_type: str,
    images: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, S, S) inputs -> digits (N, positions) and probabilities (N, positions, 10)."""
    digits, probs = [], []
    for batch in torch.from_numpy(images).split(batch_size):
        inputs = to_float(batch.to(device))
        if model_type == "encoder-only":
            p = model(inputs).float().softmax(-1)[:, None]  # (B, 1, 10)
            d = p.argmax(-1)
        else:
            d, p = model.generate(inputs)
        digits.append(d.cpu().numpy())
        probs.append(p.float().cpu().numpy())
    return np.concatenate(digits), np.concatenate(probs)


def predict_files(
    model: nn.Module,
    model_type: str,
    files: list[Path],
    preprocess: bool = True,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[list[Prediction], np.ndarray, list[str]]:
    """Predictions for the files that could be read (in their order; a picture with nothing to
    read gets digits None and the reason), the prepared inputs (zeros for those), and one error
    message per file that could not be read."""
    side = 56 if model_type == "encoder-decoder" else 28
    inputs, kept, blank, errors = [], [], {}, []
    for path in files:
        try:
            image = prepare(read_gray(path), side == 56, preprocess)
        except NoInk as exc:
            blank[len(kept)], image = str(exc), np.zeros((side, side), np.uint8)
        except DigitformerError as exc:
            message = str(exc)
            errors.append(message if message.startswith(str(path)) else f"{path}: {message}")
            continue
        inputs.append(image)
        kept.append(path)
    batch = np.stack(inputs) if inputs else np.zeros((0, side, side), np.uint8)
    readable = [i for i in range(len(kept)) if i not in blank]
    digits, probs = (
        predict_images(model, model_type, batch[readable], batch_size, device)
        if readable
        else (None, None)
    )
    results = [Prediction(str(kept[i]), None, [], [], reason) for i, reason in blank.items()]
    for row, i in enumerate(readable):
        p = probs[row]
        results.append(
            Prediction(
                str(kept[i]),
                "".join(map(str, digits[row])),
                [float(c) for c in p.max(-1)],
                [[float(x) for x in r] for r in p],
            )
        )
    order = {str(path): i for i, path in enumerate(kept)}
    results.sort(key=lambda r: order[r.file])
    return results, batch, errors


def predict_paths(
    checkpoint: str | Path,
    paths: Iterable[str],
    preprocess: bool = True,
    batch_size: int = 256,
    device: str = "auto",
) -> tuple[list[Prediction], np.ndarray, list[str]]:
    """`digitformer predict`: a checkpoint read over image files and folders. -> predictions
    for the files that could be read, their prepared inputs, and one message per failure."""
    if batch_size < 1:
        raise DigitformerError("--batch-size must be at least 1")
    dev = pick_device(device)
    model, meta = load_model(checkpoint, dev)
    files, errors = find_images(paths)
    results, inputs, read_errors = predict_files(
        model, meta["model_type"], files, preprocess, batch_size, dev
    )
    return results, inputs, errors + read_errors


def format_table(results: list[Prediction], inputs: np.ndarray | None = None) -> str:
    """One row per file: digits and the confidence of each (flagged when low, or the reason
    when there was nothing to read); with `inputs`, each prepared image drawn in Braille
    under its row (`predict --show`)."""
    width = max([len(r.file) for r in results] + [4])
    lines = [f"{'file':<{width}}  digits  confidence"]
    for i, result in enumerate(results):
        if result.digits is None:
            lines.append(f"{result.file:<{width}}  {'-':<6}  {result.reason}")
            continue
        confidence = " ".join(f"{c:.3f}" for c in result.confidence)
        flag = "  (low confidence)" if result.low_confidence else ""
        lines.append(f"{result.file:<{width}}  {result.digits:<6}  {confidence}{flag}")
        if inputs is not None:
            digits = np.array([int(d) for d in result.digits])
            lines.append(render_samples(inputs[i : i + 1], None, digits, color=use_color()))
    return "\n".join(lines)
