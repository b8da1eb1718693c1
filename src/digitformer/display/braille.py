"""Draw digits in Unicode Braille (one character per 2x4 pixels), boxed, with the expected
digit at a box's top-left and the predicted one at its bottom-right (green right, red wrong).

    print(render_samples(images, labels, preds, per_row=5, color=use_color()))
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

# Braille dot bit for pixel (row, col) inside a 4x2 cell (Unicode's dot numbering).
DOT_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int64)
GREY, GREEN, RED, RESET = "\x1b[90m", "\x1b[32m", "\x1b[31m", "\x1b[0m"


def use_color(stream=None) -> bool:
    """ANSI colours only on a terminal, and never when NO_COLOR is set."""
    stream = stream or sys.stdout
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def braille(image: np.ndarray, threshold: int = 128) -> list[str]:
    """(H, W) uint8 image -> rows of Braille characters, ceil(H/4) rows of ceil(W/2) chars."""
    h, w = image.shape
    ink = np.zeros((-(-h // 4) * 4, -(-w // 2) * 2), dtype=bool)
    ink[:h, :w] = image >= threshold
    cells = ink.reshape(ink.shape[0] // 4, 4, ink.shape[1] // 2, 2).transpose(0, 2, 1, 3)
    codes = (cells * DOT_BITS).sum((2, 3)) + 0x2800  # (rows, cols)
    return ["".join(map(chr, row)) for row in codes]


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color else text


def digit_box(
    image: np.ndarray, expected: int | None, predicted: int, color: bool = False
) -> list[str]:
    """A boxed Braille digit: expected (if known) at the top-left, predicted at the
    bottom-right, green when it matches and red when not."""
    rows = braille(image)
    width = len(rows[0])
    if expected is not None:
        rows[0] = _paint(str(expected), GREY, color) + rows[0][1:]
    mark = GREY if expected is None else GREEN if expected == predicted else RED
    rows[-1] = rows[-1][:-1] + _paint(str(predicted), mark, color)
    return ["┌" + "─" * width + "┐", *("│" + r + "│" for r in rows), "└" + "─" * width + "┘"]


def render_samples(
    images: np.ndarray,
    labels: np.ndarray | None,
    preds: np.ndarray,
    per_row: int | None = None,
    color: bool = False,
) -> str:
    """Single digits (N, 28, 28) with digits (N,) or 2x2 grids (N, 56, 56) with (N, 4).

    Each grid is drawn as its four digit boxes, two above two; samples sit side by side, as
    many as the terminal is wide (`per_row`: that many). Without labels only the predictions
    are marked.
    """
    preds = preds.reshape(len(images), -1)
    labels = None if labels is None else labels.reshape(len(images), -1)
    per_sample = preds.shape[1]
    side = 2 if per_sample == 4 else 1
    d = images.shape[1] // side  # one digit's size in pixels
    if per_row is None:  # a box is d/2 Braille cells and its border wide; samples 4 apart
        sample = side * (-(-d // 2) + 2) + side - 1
        per_row = max(1, (shutil.get_terminal_size().columns + 4) // (sample + 4))
    blocks = []
    for start in range(0, len(images), per_row):
        chunk = range(start, min(start + per_row, len(images)))
        for row in range(side):
            lines = None
            for i in chunk:
                boxes = [
                    digit_box(
                        images[i, row * d : (row + 1) * d, col * d : (col + 1) * d],
                        None if labels is None else int(labels[i, row * side + col]),
                        int(preds[i, row * side + col]),
                        color,
                    )
                    for col in range(side)
                ]
                sample = [" ".join(parts) for parts in zip(*boxes)]
                lines = sample if lines is None else [a + "    " + b for a, b in zip(lines, sample)]
            blocks.append("\n".join(lines))
        blocks.append("")
    return "\n".join(blocks).rstrip("\n")


def render_numbers(
    images: np.ndarray, expected: list[str] | None, read: list[str], color: bool = False
) -> str:
    """Numbers (N, H, W) drawn in Braille, one under the other, each boxed with what was read
    beside it (green when it is the expected number, red when not; grey with no labels)."""
    blocks = []
    for i, image in enumerate(images):
        rows = braille(image)
        width = len(rows[0])
        want = None if expected is None else expected[i]
        mark = GREY if want is None else GREEN if want == read[i] else RED
        note = _paint(f"read {read[i] or '(nothing)'}", mark, color)
        if want is not None:
            note += f"  expected {want}"
        lines = ["┌" + "─" * width + "┐", *("│" + r + "│" for r in rows), "└" + "─" * width + "┘"]
        lines[len(lines) // 2] += "  " + note
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
