"""Read digits from the user's own images with a trained checkpoint.

    digitformer predict .data/models/encoder-decoder-default photos/ grid.png --json

Each image is first brought to what the model reads (`digitformer.prepare`: paper, lighting
and pen removed, the digit cut, scaled and centred as MNIST's were; a grid per quadrant). A
picture with nothing to read gets no digits and a reason, never a guess; a reading whose
confidence is low says so.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from torch import nn

from digitformer.checkpoint import CHECKPOINT_FILES, PRETRAINED_DIR, load_model
from digitformer.display.braille import render_numbers, render_samples, use_color
from digitformer.errors import DigitformerError
from digitformer.fileio import write_text_atomic
from digitformer.metrics import number_strings
from digitformer.models import input_shape, reader_kind
from digitformer.prepare import NoInk, layout_of, prepare, prepare_number, read_gray
from digitformer.runtime import pick_device
from digitformer.tensors import to_float

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
LOW_CONFIDENCE = 0.6  # a digit read with less than this probability is flagged
STDIN = "-"  # an image path of "-" is read from standard input
READERS = ("digit", "grid", "number", "auto")  # --model: a bundled reader, or chosen per picture
LAYOUT_NAMES = {"grid": "a 2x2 grid of digits", "number": "a number of several digits"}
LAYOUT_HINTS = {
    "grid": "use --model grid, or --model auto",
    "number": "give a numbers run, e.g. .data/models/numbers-default from `train numbers`",
}
ERR = Console(stderr=True)


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
        if raw == STDIN:
            files.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                errors.append(f"{path}: no image files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():  # a FIFO, a device, a socket: reading it could block forever
            errors.append(f"{path}: not a regular file")
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
    """uint8 (N, H, W) inputs -> tokens (N, positions) and probabilities (N, positions, V):
    one position for a digit, four for a grid, a number's digits then its end token (10)."""
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


def predict_pictures(
    model: nn.Module,
    model_type: str,
    pictures: list[np.ndarray],
    names: list[str],
    preprocess: bool = True,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[list[Prediction], np.ndarray, list[str]]:
    """Grayscale pictures (H, W) in [0, 1] -> a Prediction for each that could be prepared (in
    their order; digits None and the reason where there is nothing to read), their prepared
    inputs (zeros for those), and one message per picture that could not be prepared."""
    kind, (height, width) = reader_kind(model), input_shape(model)
    results, inputs, errors = [], [], []
    for name, pixels in zip(names, pictures):
        try:
            if kind == "number":
                inputs.append(prepare_number(pixels, height, width, preprocess))
            else:
                inputs.append(prepare(pixels, kind == "grid", preprocess))
            results.append(Prediction(name, None, [], []))
        except NoInk as exc:
            inputs.append(np.zeros((height, width), np.uint8))
            results.append(Prediction(name, None, [], [], str(exc)))
        except DigitformerError as exc:
            message = str(exc)
            errors.append(message if message.startswith(name) else f"{name}: {message}")
    batch = np.stack(inputs) if inputs else np.zeros((0, height, width), np.uint8)
    readable = [i for i, r in enumerate(results) if r.reason is None]
    if readable:
        tokens, probs = predict_images(model, model_type, batch[readable], batch_size, device)
        read = number_strings(tokens) if kind == "number" else None
        for row, i in enumerate(readable):
            digits = read[row] if read is not None else "".join(map(str, tokens[row]))
            steps = probs[row][: len(digits), :10]  # each digit's step (not the end token's)
            results[i].confidence = [float(c) for c in steps.max(-1)]
            results[i].probabilities = [[float(x) for x in r] for r in steps]
            results[i].digits = digits or None
            if not digits:
                results[i].reason = "no number read (the model ended before any digit)"
    return results, batch, errors


def predict_files(
    model: nn.Module,
    model_type: str,
    files: list[Path],
    preprocess: bool = True,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[list[Prediction], np.ndarray, list[str]]:
    """`predict_pictures` over image files; files that cannot be read are reported too."""
    pictures, names, errors = [], [], []
    for path in files:
        try:
            pictures.append(read_gray(path))
            names.append(str(path))
        except DigitformerError as exc:
            message = str(exc)
            errors.append(message if message.startswith(str(path)) else f"{path}: {message}")
    results, batch, prepare_errors = predict_pictures(
        model, model_type, pictures, names, preprocess, batch_size, device
    )
    return results, batch, errors + prepare_errors


def looks_like_checkpoint(path: str) -> bool:
    """Whether a `predict` argument names a checkpoint rather than an image or a folder."""
    if path.startswith(("pretrained:", "hf://")) or path.endswith((".safetensors", ".json")):
        return True
    folder = Path(path)
    return folder.is_dir() and any((folder / f).is_file() for f in CHECKPOINT_FILES)


def predict_paths(
    paths: Iterable[str],
    checkpoint: str | Path | None = None,
    model: str = "digit",
    preprocess: bool = True,
    batch_size: int = 256,
    device: str = "auto",
) -> tuple[list[Prediction], list[np.ndarray], list[str], list[str]]:
    """`digitformer predict`: image files and folders read by a checkpoint, or by the bundled
    model `model` ("digit", "grid", "number", or "auto": each picture by the one its ink
    layout calls for). -> predictions in file order, their prepared inputs, one message per
    failure, and warnings (a grid or a number given to the digit reader, a lone digit to the
    grid reader)."""
    if batch_size < 1:
        raise DigitformerError("--batch-size must be at least 1")
    if model not in READERS:
        raise DigitformerError(f"--model must be one of {', '.join(READERS)}, got {model!r}")
    dev = pick_device(device)
    files, errors = find_images(paths)
    pictures, names = [], []
    many = len(files) > 50  # a folder of pictures: show progress (on standard error)
    for path in track(files, "reading pictures", disable=not many, transient=True, console=ERR):
        try:
            source = io.BytesIO(sys.stdin.buffer.read()) if str(path) == STDIN else path
            pictures.append(read_gray(source, str(path)))
            names.append(str(path))
        except DigitformerError as exc:
            message = str(exc)
            errors.append(message if message.startswith(str(path)) else f"{path}: {message}")
    layouts = [layout_of(p) for p in pictures]  # what each picture looks like
    if checkpoint is not None:
        loaded = load_model(checkpoint, dev)
        kinds = [reader_kind(loaded[0])] * len(names)
        readers = {kinds[0]: loaded} if kinds else {}
    else:
        kinds = layouts if model == "auto" else [model] * len(names)
        if model == "auto" and not (PRETRAINED_DIR / "number.safetensors").is_file():
            kinds = ["digit" if k == "number" else k for k in kinds]  # warned about below
        readers = {k: load_model(f"pretrained:{k}", dev) for k in set(kinds)}
    warnings = [
        f"{name}: looks like {LAYOUT_NAMES[layout]}, read as one digit ({LAYOUT_HINTS[layout]})"
        for name, layout, kind in zip(names, layouts, kinds)
        if kind == "digit" and layout != "digit"
    ]
    results: dict[str, Prediction] = {}
    inputs: dict[str, np.ndarray] = {}
    for kind, (reader, meta) in readers.items():
        picked = [i for i, k in enumerate(kinds) if k == kind]
        found, batch, failed = predict_pictures(
            reader,
            meta["model_type"],
            [pictures[i] for i in picked],
            [names[i] for i in picked],
            preprocess,
            batch_size,
            dev,
        )
        errors += failed
        for result, image in zip(found, batch):
            results[result.file], inputs[result.file] = result, image
            if kind == "grid" and result.reason and "quadrant" in result.reason:
                result.reason += " (a single digit? use --model digit, or --model auto)"
    order = [n for n in names if n in results]
    return [results[n] for n in order], [inputs[n] for n in order], errors, warnings


def write_csv(results: list[Prediction], path: str | Path) -> None:
    """One row per picture: file, digits, confidence per digit, low_confidence, reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "digits", "confidence", "low_confidence", "reason"])
    for r in results:
        confidence = " ".join(f"{c:.4f}" for c in r.confidence)
        writer.writerow([r.file, r.digits or "", confidence, r.low_confidence, r.reason or ""])
    write_text_atomic(path, buffer.getvalue())


def format_table(results: list[Prediction], inputs: list[np.ndarray] | None = None) -> str:
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
            image = inputs[i]
            if image.shape in ((28, 28), (56, 56)):
                digits = np.array([int(d) for d in result.digits])
                lines.append(render_samples(image[None], None, digits, color=use_color()))
            else:  # a number's canvas
                lines.append(render_numbers(image[None], None, [result.digits], color=use_color()))
    return "\n".join(lines)
