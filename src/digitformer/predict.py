"""Read digits from the user's own images with a trained checkpoint.

    digitformer predict .data/models/encoder-decoder-default photos/ grid.png --json

Images that are not MNIST-like are brought there the way MNIST was made: grayscale, inverted
when the digit is dark on light, cropped to the ink, scaled to fit 20x20 keeping the aspect
ratio, and centred by centre of mass in 28x28. A grid is split into quadrants, each prepared so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from digitformer.checkpoint import load_model
from digitformer.data.grids import tile_2x2
from digitformer.display.braille import render_samples, use_color
from digitformer.errors import DigitformerError
from digitformer.runtime import pick_device
from digitformer.tensors import to_float

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}
INK_THRESHOLD = 0.1  # fraction of the image's dynamic range that counts as ink
MAX_IMAGE_PIXELS = 5000 * 5000  # a small compressed file can claim a huge image


@dataclass
class Prediction:
    file: str
    digits: str
    confidence: list[float]
    probabilities: list[list[float]]

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "digits": self.digits,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
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


def read_gray(path, name: str | None = None) -> np.ndarray:
    """An image file or file object (first frame) -> float grayscale (H, W) in [0, 1]."""
    name = name or str(path)
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DigitformerError(
                    f"{name}: image is {img.width}x{img.height}, over {MAX_IMAGE_PIXELS:,} pixels"
                )
            img.seek(0)
            if img.mode in ("RGBA", "LA") or "transparency" in img.info:
                img = img.convert("RGBA")
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img)  # transparent areas read as paper
            pixels = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise DigitformerError(f"{name}: cannot read image ({reason})") from None
    if pixels.size == 0:
        raise DigitformerError(f"{name}: empty image")
    return pixels


def is_mnist_like(pixels: np.ndarray) -> bool:
    """Light ink on a dark background with a dark border, as MNIST digits are."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return border.mean() < 0.1 and pixels.mean() < 0.5


def to_mnist(pixels: np.ndarray) -> np.ndarray:
    """Any grayscale digit image -> uint8 (28, 28), prepared as MNIST was."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > pixels.mean():  # dark ink on light paper: invert
        pixels = 1.0 - pixels
    low, high = np.percentile(pixels, 1), pixels.max()
    if high - low < 1e-3:
        return np.zeros((28, 28), np.uint8)  # a blank image stays blank
    ink = np.clip((pixels - low) / (high - low), 0, 1)
    ink[ink < INK_THRESHOLD] = 0
    rows, cols = np.nonzero(ink)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    digit = np.asarray(
        Image.fromarray(crop * 255).convert("L").resize(size, Image.LANCZOS), dtype=np.float32
    )
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - size[1]) // 2, (28 - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = digit
    # shift so the centre of mass sits at the centre, as MNIST did
    mass = canvas.sum()
    if mass > 0:
        ys, xs = np.indices(canvas.shape)
        dy = round(13.5 - (ys * canvas).sum() / mass)
        dx = round(13.5 - (xs * canvas).sum() / mass)
        canvas = _shift(canvas, dy, dx)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    h, w = image.shape
    src = image[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def prepare(pixels: np.ndarray, grid: bool, preprocess: bool = True) -> np.ndarray:
    """A grayscale image -> the model's uint8 input: (28, 28) digit or (56, 56) grid."""
    side = 56 if grid else 28
    if pixels.shape == (side, side) and (not preprocess or is_mnist_like(pixels)):
        return np.round(pixels * 255).astype(np.uint8)
    if not preprocess:
        raise DigitformerError(
            f"image is {pixels.shape[1]}x{pixels.shape[0]}, expected {side}x{side} "
            "(drop --no-preprocess to resize it)"
        )
    if not grid:
        return to_mnist(pixels)
    h, w = pixels.shape
    quads = [
        pixels[: h // 2, : w // 2],
        pixels[: h // 2, w // 2 :],
        pixels[h // 2 :, : w // 2],
        pixels[h // 2 :, w // 2 :],
    ]
    if min(q.size for q in quads) == 0:
        raise DigitformerError(f"image is {w}x{h}: too small to hold a 2x2 grid")
    return tile_2x2(np.stack([to_mnist(q) for q in quads])[None])[0]


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
    device="cpu",
):
    """Predictions for the files that could be read, the prepared inputs, and the errors."""
    grid = model_type == "encoder-decoder"
    inputs, kept, errors = [], [], []
    for path in files:
        try:
            inputs.append(prepare(read_gray(path), grid, preprocess))
            kept.append(path)
        except DigitformerError as exc:
            message = str(exc)
            errors.append(message if message.startswith(str(path)) else f"{path}: {message}")
    if not inputs:
        return [], np.zeros((0, 56 if grid else 28, 56 if grid else 28), np.uint8), errors
    batch = np.stack(inputs)
    digits, probs = predict_images(model, model_type, batch, batch_size, device)
    results = [
        Prediction(
            str(path),
            "".join(map(str, d)),
            [float(c) for c in p.max(-1)],
            [[float(x) for x in row] for row in p],
        )
        for path, d, p in zip(kept, digits, probs)
    ]
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
    """One row per file: digits and the confidence of each; with `inputs`, each prepared
    image drawn in Braille under its row (`predict --show`)."""
    width = max([len(r.file) for r in results] + [4])
    lines = [f"{'file':<{width}}  digits  confidence"]
    for i, result in enumerate(results):
        confidence = " ".join(f"{c:.3f}" for c in result.confidence)
        lines.append(f"{result.file:<{width}}  {result.digits:<6}  {confidence}")
        if inputs is not None:
            digits = np.array([int(d) for d in result.digits])
            lines.append(render_samples(inputs[i : i + 1], None, digits, color=use_color()))
    return "\n".join(lines)
