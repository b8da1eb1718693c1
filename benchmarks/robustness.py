"""Read MNIST test digits drawn as people's pictures: photos of paper, scans, pens, canvases.

    python -m benchmarks.robustness [--digit pretrained:digit] [--grid pretrained:grid]
        [--count 1000] [--json benchmarks/results/robustness.json] [--picture FILE.png]

Each test digit is re-drawn as a pen stroke (upscaled, its edges made crisp) on a 256x256
picture and put through one named condition; the conditions are made here, independently of
the training augmentation. Every picture is read twice: with the preparation `predict` uses
(`digitformer.inference.prepare`), and naively (grayscale, inverted when the paper is light,
resized to 28x28). Blank pictures under each condition check that nothing is read where
nothing is written. Grids: four digits drawn the same way on a 512x512 picture, scored whole and per
digit. The thin pen traces the strokes' skeletons with scikit-image (`pip install
"digitformer[bench]"`).
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from benchmarks.common import guard, machine, write_json
from digitformer.data import load_split
from digitformer.inference.checkpoint import load_model
from digitformer.inference.prepare import NoInk, prepare
from digitformer.inference.readers import read
from digitformer.utils.errors import DigitformerError

SIDE = 256


# ---- drawing ----------------------------------------------------------------------------


def pen(digit: np.ndarray, height: int, width_change: int = 0) -> np.ndarray:
    """A 28x28 MNIST digit as a crisp pen stroke `height` pixels tall: float ink in [0, 1].
    width_change > 0 thickens the pen by that many pixels a side, < 0 thins it."""
    size = round(height * 28 / 20)  # MNIST's digit box is 20 of its 28 pixels
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), np.float32) / 255
    ink = 1 / (1 + np.exp(-(big - 0.45) * 14))  # crisp edges, like ink rather than a blur
    if width_change > 0:
        ink = ndimage.maximum_filter(ink, size=2 * width_change + 1)
    elif width_change < 0:
        ink = ndimage.minimum_filter(ink, size=-2 * width_change + 1)
    return ink


def fine_pen(ink: np.ndarray, radius: int) -> np.ndarray:
    """The same strokes traced with a pen `radius` pixels wide a side: each stroke's skeleton
    drawn with a round nib. Unlike eroding the strokes, no faint stroke is lost."""
    from skimage.morphology import skeletonize  # pip install scikit-image (benchmarks only)

    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    traced = ndimage.binary_dilation(skeletonize(ink > 0.5), structure=ys**2 + xs**2 <= radius**2)
    return ndimage.gaussian_filter(traced.astype(np.float32), 0.7)  # a little anti-aliasing


def paper(rng: np.random.Generator, side: int = SIDE) -> tuple[np.ndarray, float]:
    """A sheet: light paper of a random shade, and a dark ink colour."""
    return np.full((side, side), rng.uniform(0.8, 0.95), np.float32), rng.uniform(0.05, 0.25)


def place(sheet: np.ndarray, strokes: np.ndarray, top: int, left: int, ink: float) -> None:
    h, w = strokes.shape
    region = sheet[top : top + h, left : left + w]
    region[:] = (
        region * (1 - strokes[: region.shape[0], : region.shape[1]])
        + ink * strokes[: region.shape[0], : region.shape[1]]
    )


def draw(digit, rng, *, height=(150, 190), width_change=0, corner=False, rotate=0.0, fine=False):
    """One digit on a sheet: dark ink on light paper, at a random place; `fine`: traced with
    a pen about one MNIST pixel wide (half MNIST's usual width)."""
    sheet, ink = paper(rng)
    tall = int(rng.integers(*height))
    strokes = pen(digit, tall, width_change)
    if fine:
        strokes = fine_pen(strokes, max(1, round(tall / 40)))
    if rotate:
        strokes = ndimage.rotate(strokes, rotate, reshape=True, order=1)
    h, w = strokes.shape
    if corner:  # small, in a corner region
        top, left = int(rng.integers(5, 60)), int(rng.integers(5, 60))
        if rng.random() < 0.5:
            left = SIDE - w - left
    else:
        top = int(rng.integers(0, max(1, SIDE - h)))
        left = int(rng.integers(0, max(1, SIDE - w)))
    place(sheet, strokes, max(0, top), max(0, left), ink)
    return sheet


def gradient(sheet, rng, low=0.35):
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0 : 1 : sheet.shape[0] * 1j, 0 : 1 : sheet.shape[1] * 1j]
    ramp = np.cos(angle) * xs + np.sin(angle) * ys
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    return sheet * (low + (1 - low) * ramp)


def shadow(sheet, rng, depth=0.55):
    """A soft-edged shadow (a hand, a phone) over part of the sheet."""
    h, w = sheet.shape
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(-0.2, 1.2) * h, rng.uniform(-0.2, 1.2) * w
    ry, rx = rng.uniform(0.3, 0.6) * h, rng.uniform(0.3, 0.6) * w
    inside = (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1).astype(np.float32)
    return sheet * (1 - depth * ndimage.gaussian_filter(inside, h / 20))


def texture(sheet, rng):
    """Paper grain: fibres and blotches at several scales."""
    grain = ndimage.gaussian_filter(rng.normal(0, 1, sheet.shape), 4) * 0.25
    fine = rng.normal(0, 0.02, sheet.shape)
    return sheet + grain.astype(np.float32) + fine.astype(np.float32)


def noise(sheet, rng, sigma=0.1):
    return sheet + rng.normal(0, sigma, sheet.shape).astype(np.float32)


def jpeg(sheet, quality=15):
    buffer = io.BytesIO()
    Image.fromarray(np.clip(sheet * 255, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=quality
    )
    return np.asarray(Image.open(buffer), np.float32) / 255


def blur(sheet, sigma=4.0):
    return ndimage.gaussian_filter(sheet, sigma)


def phone(sheet, rng):
    """Everything a phone photo of a note has at once."""
    sheet = texture(shadow(gradient(sheet, rng, 0.5), rng, 0.4), rng)
    return jpeg(noise(blur(sheet, 1.5), rng, 0.04), quality=40)


Condition = Callable[[np.ndarray, np.random.Generator], np.ndarray]
CONDITIONS: dict[str, Condition] = {
    "dark ink on white": lambda d, r: draw(d, r),
    "light ink on dark": lambda d, r: 1 - draw(d, r),
    "lighting gradient": lambda d, r: gradient(draw(d, r), r),
    "soft shadow": lambda d, r: shadow(draw(d, r), r),
    "paper texture": lambda d, r: texture(draw(d, r), r),
    "blur": lambda d, r: blur(draw(d, r)),
    "noise": lambda d, r: noise(draw(d, r), r),
    "JPEG (quality 15)": lambda d, r: jpeg(draw(d, r)),
    "thick pen": lambda d, r: draw(d, r, width_change=9),
    "thin pen": lambda d, r: draw(d, r, fine=True),
    "small, off-centre": lambda d, r: draw(d, r, height=(36, 56), corner=True),
    "rotated 15-25 degrees": lambda d, r: draw(
        d, r, rotate=float(r.choice([-1, 1]) * r.uniform(15, 25))
    ),
    "phone photo": lambda d, r: phone(draw(d, r), r),
    # the thin pen as first drawn: the strokes eroded, which loses MNIST's faint strokes too
    "thin pen, faint strokes lost": lambda d, r: draw(d, r, width_change=-5),
}


def blank(name: str, rng) -> np.ndarray:
    """A sheet under the same condition with nothing written on it."""
    empty = np.zeros((28, 28), np.uint8)
    return CONDITIONS[name](empty, rng)


def grid_picture(digits: np.ndarray, condition: Condition, rng) -> np.ndarray:
    """Four digits, each drawn under the condition, tiled into a 512x512 picture."""
    quads = [condition(d, rng) for d in digits]
    return np.block([[quads[0], quads[1]], [quads[2], quads[3]]])


# ---- reading ----------------------------------------------------------------------------


def naive(pixels: np.ndarray, side: int) -> np.ndarray:
    """What a user without the preparation would do: invert light paper, resize the whole."""
    pixels = np.clip(pixels, 0, 1)
    if np.median(pixels) > 0.5:
        pixels = 1 - pixels
    img = Image.fromarray((pixels * 255).astype(np.uint8)).resize((side, side), Image.BOX)
    return np.asarray(img, np.uint8)


def prepared(pixels: np.ndarray, grid: bool) -> np.ndarray | None:
    try:
        return prepare(np.clip(pixels, 0, 1), grid)
    except NoInk:
        return None


def accuracy(model, inputs: list, labels: np.ndarray) -> tuple[float, float]:
    """Share of pictures read whole, and of their digits read right; an input of None
    (nothing found) counts as wrong."""
    labels = labels.reshape(len(labels), -1)
    rows = [i for i, x in enumerate(inputs) if x is not None]
    right = np.zeros(labels.shape, bool)
    if rows:
        digits, _ = read(model, np.stack([inputs[i] for i in rows]))
        right[rows] = digits.reshape(len(rows), -1) == labels[rows]
    return float(right.all(1).mean()), float(right.mean())


def run(args) -> dict:
    test = load_split(args.data_dir, "test")
    digit_model = load_model(args.digit)[0] if args.count else None
    grid_model = load_model(args.grid)[0] if args.grid else None
    order = np.random.default_rng(0).permutation(len(test))
    pick = order[: args.count]
    images, labels = test.images[pick], test.labels[pick]
    rows = {}
    only = [n.strip() for n in args.only.split(";")] if args.only else list(CONDITIONS)
    unknown = sorted(set(only) - set(CONDITIONS))
    if unknown:
        raise DigitformerError(f"unknown conditions {unknown}: choose from {list(CONDITIONS)}")
    for c, (name, condition) in enumerate(CONDITIONS.items()):
        if name not in only:
            continue
        t0 = time.perf_counter()
        rng = np.random.default_rng(1000 + c)
        row = {}
        if args.count:
            pictures = [condition(d, rng) for d in images]
            on = [prepared(p, grid=False) for p in pictures]
            off = [naive(p, 28) for p in pictures]
            blanks = [prepared(blank(name, rng), grid=False) for _ in range(args.blanks)]
            row = {
                "digit_prepared": accuracy(digit_model, on, labels)[0],
                "digit_naive": accuracy(digit_model, off, labels)[0],
                "blank_refused": sum(b is None for b in blanks) / len(blanks),
            }
        if grid_model is not None:
            n = args.grids
            quads = np.random.default_rng(2000 + c).integers(0, len(test), (n, 4))
            grids = [grid_picture(test.images[q], condition, rng) for q in quads]
            grid_labels = test.labels[quads]
            row["grid_prepared"], row["grid_digits_prepared"] = accuracy(
                grid_model, [prepared(g, grid=True) for g in grids], grid_labels
            )
            row["grid_naive"], row["grid_digits_naive"] = accuracy(
                grid_model, [naive(g, 56) for g in grids], grid_labels
            )
        row["seconds"] = time.perf_counter() - t0
        rows[name] = row
        grid_text = (
            f"  grids {100 * row['grid_prepared']:6.2f}% (naive {100 * row['grid_naive']:6.2f}%)"
            f", their digits {100 * row['grid_digits_prepared']:6.2f}%"
            if grid_model is not None
            else ""
        )
        digit_text = (
            f" digits {100 * row['digit_prepared']:6.2f}% (naive {100 * row['digit_naive']:6.2f}%)"
            f"  blank refused {100 * row['blank_refused']:5.1f}%"
            if args.count
            else ""
        )
        print(f"{name:24s}{digit_text}{grid_text}", flush=True)
    if args.picture:
        draw_picture(images[:8], args.picture)
    return {
        "digit_checkpoint": str(args.digit),
        "grid_checkpoint": str(args.grid) if args.grid else None,
        "digits": args.count,
        "grids": args.grids if args.grid else 0,
        "conditions": rows,
        "machine": machine(),
    }


def draw_picture(digits: np.ndarray, path: Path) -> None:
    """One example per condition, and what the preparation made of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(CONDITIONS)
    fig, axes = plt.subplots(2, len(names), figsize=(1.6 * len(names), 3.6))
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        picture = np.clip(CONDITIONS[name](digits[i % len(digits)], rng), 0, 1)
        axes[0, i].imshow(picture, cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(name, fontsize=7)
        ready = prepared(picture, grid=False)
        axes[1, i].imshow(np.zeros((28, 28)) if ready is None else ready, cmap="gray")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel("prepared", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digit", default="pretrained:digit", help="encoder-only checkpoint")
    parser.add_argument("--grid", help="encoder-decoder checkpoint (e.g. pretrained:grid)")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument(
        "--count", type=int, default=1000, help="test digits per condition (0: grids only)"
    )
    parser.add_argument("--grids", type=int, default=250, help="test grids per condition")
    parser.add_argument("--blanks", type=int, default=20, help="blank pictures per condition")
    parser.add_argument("--only", help="conditions separated by ';' (default: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--picture", type=Path, help="write a picture of the conditions here")
    args = parser.parse_args()
    result = run(args)
    write_json(args.json, result)


if __name__ == "__main__":
    guard(main)
