"""Pictures of marks that are no digit, and of digits drawn the same way, to teach the digit
reader's judge what a digit is not (`digitformer.inference.novelty`).

    pictures = not_digits(np.random.default_rng(0), 1000)     # float (H, W) in [0, 1]
    pictures = on_paper(digit_frames, np.random.default_rng(1))

Both go through the same paper, pen, blur and noise, so that what tells them apart is the mark,
not how it was drawn. The marks: blobs and dots, a soft shadow with nothing written under it,
scribbles, zigzags, crossed strokes, a dash lying down, an arc, printed letters that look like
no digit, and from MNIST training digits (never a test digit) a digit lying on its side, a
digit's left part and two digits touching. `mnist_like` gives the same marks as 28x28
MNIST-format frames. Nothing here is drawn by the independent evaluation suite's code
(`benchmarks/independent`), nor tuned on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

LETTERS = "ACEFHKMNRTVWXYacefhkmnrtvwx#%&@?+=*"  # none of them written like a digit
FONTS = Path("/usr/share/fonts/truetype/dejavu")
SIDEWAYS = (2, 3, 4, 5, 6, 7, 9)  # digits that lying on their side are like none of the ten
AA = 2  # marks are drawn at twice their size and reduced: anti-aliased strokes


def _canvas(rng: np.random.Generator) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    side = int(rng.integers(28, 129)) * AA
    image = Image.new("F", (side, side), 0.0)
    return image, ImageDraw.Draw(image), side


def _pen(rng: np.random.Generator, side: int) -> int:
    return max(1, round(side * rng.uniform(0.04, 0.14)))


def _points(rng: np.random.Generator, side: int, n: int) -> list[tuple[float, float]]:
    lo, hi = 0.15 * side, 0.85 * side
    return [(float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))) for _ in range(n)]


def _blob(rng: np.random.Generator) -> np.ndarray:
    image, draw, side = _canvas(rng)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(-0.1, 1.1, 2) * side
        rx, ry = rng.uniform(0.04, 0.45, 2) * side
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=1.0)
    return np.asarray(image)


def _scribble(rng: np.random.Generator) -> np.ndarray:
    image, draw, side = _canvas(rng)
    draw.line(_points(rng, side, int(rng.integers(6, 16))), fill=1.0, width=_pen(rng, side))
    return np.asarray(image)


def _zigzag(rng: np.random.Generator) -> np.ndarray:
    """A sawtooth of 5-10 strokes, at any angle, its corners jittered; on 1 in 3 a stroke
    across it, as a mark crossed out (a zigzag read as a 3 at 99.9%, #30)."""
    image, draw, side = _canvas(rng)
    n = int(rng.integers(6, 12))
    along = np.linspace(-0.4, 0.4, n) * side * rng.uniform(0.6, 1.0)
    across = (np.arange(n) % 2 - 0.5) * side * rng.uniform(0.2, 0.7)
    pts = np.stack([along, across], 1) + rng.normal(0, 0.03 * side, (n, 2))
    angle = rng.uniform(0, np.pi)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ turn.T + side / 2
    width = _pen(rng, side)
    draw.line([tuple(p) for p in pts], fill=1.0, width=width, joint="curve")
    if rng.random() < 1 / 3:
        ends = pts[[0, -1]] + rng.normal(0, 0.15 * side, (2, 2))
        draw.line([tuple(p) for p in ends[:, ::-1]], fill=1.0, width=width)
    return np.asarray(image)


def _crossed(rng: np.random.Generator) -> np.ndarray:
    image, draw, side = _canvas(rng)
    width, c = _pen(rng, side), side / 2 + rng.uniform(-0.1, 0.1, 2) * side
    for angle in rng.uniform(0, np.pi, int(rng.integers(2, 5))):
        reach = rng.uniform(0.2, 0.42) * side
        d = reach * np.array([np.cos(angle), np.sin(angle)])
        draw.line((*(c - d), *(c + d)), fill=1.0, width=width)
    return np.asarray(image)


def _dash(rng: np.random.Generator) -> np.ndarray:
    """A stroke lying down: within 30 degrees of level (an upright stroke is a 1)."""
    image, draw, side = _canvas(rng)
    angle = np.deg2rad(rng.uniform(60, 120))  # from upright
    d = rng.uniform(0.15, 0.42) * side * np.array([np.sin(angle), np.cos(angle)])
    c = side / 2 + rng.uniform(-0.2, 0.2, 2) * side
    draw.line((*(c - d), *(c + d)), fill=1.0, width=_pen(rng, side))
    return np.asarray(image)


def _arc(rng: np.random.Generator) -> np.ndarray:
    image, draw, side = _canvas(rng)
    r = rng.uniform(0.15, 0.4) * side
    cx, cy = side / 2 + rng.uniform(-0.15, 0.15, 2) * side
    start = rng.uniform(0, 360)
    draw.arc(
        (cx - r, cy - r, cx + r, cy + r),
        start,
        start + rng.uniform(90, 180),
        fill=1.0,
        width=_pen(rng, side),
    )
    return np.asarray(image)


def _letter(rng: np.random.Generator) -> np.ndarray:
    fonts = sorted(FONTS.glob("*.ttf"))
    side = int(rng.integers(28, 129)) * AA
    size = int(side * rng.uniform(0.5, 0.8))
    font = (
        ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size)
        if fonts
        else ImageFont.load_default(size)
    )
    image = Image.new("F", (side, side), 0.0)
    ImageDraw.Draw(image).text(
        (side / 2, side / 2), str(rng.choice(list(LETTERS))), fill=1.0, font=font, anchor="mm"
    )
    return np.asarray(image.rotate(float(rng.uniform(-15, 15)), Image.BILINEAR))


def _sideways(
    frames: np.ndarray, labels: np.ndarray
) -> Callable[[np.random.Generator], np.ndarray]:
    chosen = np.flatnonzero(np.isin(labels, SIDEWAYS))

    def draw(rng: np.random.Generator) -> np.ndarray:
        frame = frames[rng.choice(chosen)].astype(np.float32) / 255
        turned = np.rot90(frame, int(rng.choice([1, 3])))
        return ndimage.rotate(turned, rng.uniform(-20, 20), reshape=False, order=1)

    return draw


def _shadow(rng: np.random.Generator, side: int) -> np.ndarray:
    """How much light a soft shadow takes from each pixel, (side, side) in [0, 1)."""
    ys, xs = np.mgrid[0:side, 0:side] / side
    cy, cx = rng.uniform(-0.3, 1.3, 2)
    ry, rx = rng.uniform(0.2, 0.8, 2)
    inside = (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1).astype(np.float32)
    return rng.uniform(0.2, 0.6) * ndimage.gaussian_filter(inside, side * rng.uniform(0.02, 0.1))


def photographed(ink: np.ndarray, rng: np.random.Generator, shadow: bool = False) -> np.ndarray:
    """Ink (H, W) in [0, 1] at AA times the picture's size -> the picture, float in [0, 1]: a
    margin, dark ink on light paper or the reverse, a pen of some contrast, blur, noise, and
    sometimes (always when `shadow`) a soft shadow."""
    h, w = ink.shape
    pad = int(rng.uniform(0, 0.3) * max(h, w))
    ink = np.pad(ink, pad)
    size = (max(8, (ink.shape[1]) // AA), max(8, ink.shape[0] // AA))
    ink = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.BOX))
    paper, contrast = rng.uniform(0.6, 0.97), rng.uniform(0.35, 0.85)
    dark_on_light = rng.random() < 0.5
    picture = paper - contrast * ink if dark_on_light else (1 - paper) + contrast * ink
    if shadow or rng.random() < 0.15:
        side = max(picture.shape)
        picture = picture * (1 - _shadow(rng, side)[: picture.shape[0], : picture.shape[1]])
    picture = ndimage.gaussian_filter(picture, rng.uniform(0, 1.2))
    picture = picture + rng.normal(0, rng.uniform(0, 0.03), picture.shape)
    return np.clip(picture, 0, 1).astype(np.float32)


def _enlarged(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MNIST-sized ink map drawn at AA times 1-4 times its size, as the other marks are."""
    factor = AA * rng.uniform(1, 4)
    size = (round(ink.shape[1] * factor), round(ink.shape[0] * factor))
    return np.asarray(Image.fromarray(ink).resize(size, Image.BILINEAR))


def _part_and_pair(frames: np.ndarray, labels: np.ndarray):
    """A digit's left part (a third to three fifths of its ink's width; no 1s, and not the
    right part, which of a 4, 7 or 9 is a 1), and two digits side by side touching: a piece
    of a number that is not one digit, what reading a number in pieces asks the judge about."""
    chosen = np.flatnonzero(labels != 1)

    def inked(frame: np.ndarray) -> np.ndarray:
        cols = np.flatnonzero(frame.max(0) > 0.2)
        return frame[:, cols[0] : cols[-1] + 1]

    def part(rng: np.random.Generator) -> np.ndarray:
        ink = inked(frames[rng.choice(chosen)].astype(np.float32) / 255)
        keep = max(2, round(ink.shape[1] * rng.uniform(0.33, 0.6)))
        return _enlarged(np.pad(ink[:, :keep], 4), rng)

    def pair(rng: np.random.Generator) -> np.ndarray:
        a, b = (inked(frames[rng.choice(len(frames))].astype(np.float32) / 255) for _ in "ab")
        overlap = int(rng.integers(0, max(1, min(a.shape[1], b.shape[1]) // 3)))
        out = np.zeros((28, a.shape[1] + b.shape[1] - overlap), np.float32)
        out[:, : a.shape[1]] = a
        out[:, -b.shape[1] :] = np.maximum(out[:, -b.shape[1] :], b)
        return _enlarged(np.pad(out, 4), rng)

    return part, pair


def _kinds(frames: np.ndarray | None, labels) -> list[Callable[[np.random.Generator], np.ndarray]]:
    kinds = [_blob, _scribble, _zigzag, _crossed, _dash, _arc, _letter]
    if frames is not None:
        sideways = _sideways(frames, labels)
        kinds.append(lambda r: np.asarray(Image.fromarray(sideways(r)).resize((56, 56))))
        kinds += list(_part_and_pair(frames, labels))
    return kinds


def not_digits(
    rng: np.random.Generator, n: int, frames: np.ndarray | None = None, labels=None
) -> list[np.ndarray]:
    """`n` pictures with no digit in them, kinds in equal shares (digits on their side only
    when MNIST training `frames` and their `labels` are given)."""
    kinds = _kinds(frames, labels)
    out = []
    for i in range(n):
        if i % (len(kinds) + 1) == len(kinds):  # a shadow on blank paper
            side = int(rng.integers(28, 129)) * AA
            out.append(photographed(np.zeros((side, side), np.float32), rng, shadow=True))
        else:
            out.append(photographed(kinds[i % (len(kinds) + 1)](rng), rng))
    return out


def mnist_like(
    rng: np.random.Generator, n: int, frames: np.ndarray | None = None, labels=None
) -> np.ndarray:
    """`n` marks as a 28x28 MNIST-format picture of them would be given: light on black, no
    paper, read as they are (the preparation leaves such pictures alone). uint8 (n, 28, 28)."""
    kinds = _kinds(frames, labels)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        ink = Image.fromarray(kinds[i % len(kinds)](rng).astype(np.float32))
        small = np.asarray(ink.resize((28, 28), Image.BOX))
        out[i] = np.round(255 * np.clip(small / max(1e-6, small.max()), 0, 1))
    return out


def on_paper(frames: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """MNIST frames (N, 28, 28) uint8 as pictures drawn as `not_digits` draws its marks: each
    scaled to 28-128 pixels, then `photographed`."""
    out = []
    for frame in frames:
        side = int(rng.integers(28, 129)) * AA
        ink = Image.fromarray(frame.astype(np.float32) / 255).resize((side, side), Image.BILINEAR)
        out.append(photographed(np.asarray(ink), rng))
    return out
