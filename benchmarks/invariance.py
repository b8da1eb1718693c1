"""Does the preparation read a digit the same whatever the picture of it? And refuse blanks?

    python -m benchmarks.invariance [--count 1000] [--blanks 100] [--json FILE]
    python benchmarks/invariance.py

Takes `--count` MNIST test digits (seeded) that the bundled digit reader gets right on their
own 28x28 frame (reads as their label and does not refuse as "not a digit"), draws each dark
on light paper (its frame 4x larger, 112x112) and puts the picture through each
transformation with random parameters in the stated ranges (seeded; a handwriting's slant
and width among them):
the share read the same as on its own frame (a picture refused, as "no digit found" or as
"not a digit" (`--no-novelty`: without that test), is not). Then blank pictures of each kind
(nothing written): the share refused. And two sets of other pictures, scored by
their labels: MNIST test digits cropped to their ink with no margin ("tight crop", the
reader is not told where the paper was) and scikit-learn's 8x8 scans of other writers'
digits, which fill their frame, upscaled 4x (bilinear) to 32x32 ("low resolution").
Needs the MNIST test set (`digitformer download`, or --data-dir) and scikit-learn.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from benchmarks.common import guard, machine, write_json
from digitformer.data import load_split
from digitformer.inference import readers
from digitformer.inference.checkpoint import load_model
from digitformer.inference.prepare import NoInk, prepare

SCALE = 4  # the digits are drawn at 4x their MNIST frame, 112x112


def on_paper(digit: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """A 28x28 MNIST digit written dark on white paper, `scale` times larger (bilinear)."""
    side = 28 * scale
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR), np.float32)
    return 0.92 - 0.8 * ink / 255


def resized(picture: np.ndarray, factor: float, height: float | None = None) -> np.ndarray:
    """`picture` scaled by `factor` (its height by `height` where given)."""
    h, w = picture.shape
    height = factor if height is None else height
    size = (max(1, round(w * factor)), max(1, round(h * height)))
    method = Image.BOX if min(factor, height) < 1 else Image.BILINEAR
    return np.asarray(Image.fromarray(picture.astype(np.float32)).resize(size, method), np.float32)


def crop(digit, rng):
    """Cut to the ink with a margin of 0-50% of the digit's size (paper beyond the frame)."""
    picture = on_paper(digit)
    ys, xs = np.nonzero(picture < 0.92 - 0.05)
    margin = int(round(rng.uniform(0, 0.5) * max(np.ptp(ys), np.ptp(xs))))
    framed = np.pad(picture, margin, constant_values=0.92)
    return framed[ys.min() : ys.max() + 1 + 2 * margin, xs.min() : xs.max() + 1 + 2 * margin]


def scaled(digit, rng):
    """The 28x28 frame scaled 0.25x-8x (7 to 224 pixels)."""
    return resized(on_paper(digit, 1), float(np.exp(rng.uniform(np.log(0.25), np.log(8)))))


def non_square(digit, rng):
    """More paper on one axis: an aspect of 1:1.2 to 1:3."""
    picture = on_paper(digit)
    extra = int(round(picture.shape[0] * (rng.uniform(1.2, 3) - 1)))
    before = int(rng.integers(0, extra + 1))
    pad = (
        ((before, extra - before), (0, 0))
        if rng.random() < 0.5
        else ((0, 0), (before, extra - before))
    )
    return np.pad(picture, pad, constant_values=0.92)


def jpeg(picture: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(picture * 255, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=quality
    )
    return np.asarray(Image.open(buffer), np.float32) / 255


def gradient(picture: np.ndarray, rng, low=(0.35, 0.7)) -> np.ndarray:
    h, w = picture.shape
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (
        np.cos(angle) * np.linspace(0, 1, w)[None, :]
        + np.sin(angle) * np.linspace(0, 1, h)[:, None]
    )
    ramp = (ramp - ramp.min()) / max(1e-6, np.ptp(ramp))
    lowest = rng.uniform(*low)
    return picture * (lowest + (1 - lowest) * ramp).astype(np.float32)


def shadow(picture: np.ndarray, rng) -> np.ndarray:
    """A soft-edged shadow (a hand, a phone), 30-55% deep, over part of the picture."""
    h, w = picture.shape
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(-0.2, 1.2) * h, rng.uniform(-0.2, 1.2) * w
    ry, rx = rng.uniform(0.3, 0.6) * h, rng.uniform(0.3, 0.6) * w
    inside = (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1).astype(np.float32)
    return picture * (1 - rng.uniform(0.3, 0.55) * ndimage.gaussian_filter(inside, h / 20))


def lighter_side(digit, rng) -> np.ndarray:
    """One side of the digit (beyond a line at a random angle through its centre, with a
    few pixels' blend) written 40-70% as dark: a pencil pressing less, a pen running dry."""
    picture = on_paper(digit)
    h, w = picture.shape
    ys, xs = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * np.pi)
    side = np.cos(angle) * (xs - w / 2) + np.sin(angle) * (ys - h / 2)
    weight = 1 - (1 - rng.uniform(0.4, 0.7)) / (1 + np.exp(-side / 3))
    return (0.92 - (0.92 - picture) * weight).astype(np.float32)


def texture(picture: np.ndarray, rng) -> np.ndarray:
    grain = ndimage.gaussian_filter(rng.normal(0, 1, picture.shape), 3) * 0.2
    return picture + (grain + rng.normal(0, 0.02, picture.shape)).astype(np.float32)


def slanted(digit, rng):
    """Leaning by -20 to +20 degrees (a shear: the top moved sideways, as handwriting leans)."""
    picture = Image.fromarray(on_paper(digit))
    tan, c = np.tan(np.radians(rng.uniform(-20, 20))), picture.height / 2
    # each output pixel (x, y) reads the input at (x + tan * (y - c), y)
    sheared = picture.transform(
        picture.size, Image.AFFINE, (1, tan, -tan * c, 0, 1, 0), Image.BILINEAR, fillcolor=0.92
    )
    return np.asarray(sheared, np.float32)


def narrower_or_wider(digit, rng):
    """The picture's width times 0.6 to 1.6 (uniform in its log): a narrow or a broad hand."""
    return resized(on_paper(digit), float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))), 1.0)


TRANSFORMS = {
    "crop to 0-50% margin": crop,
    "scale 0.25x-8x": scaled,
    "non-square (1:1.2-1:3)": non_square,
    "inverted": lambda d, r: 1 - on_paper(d),
    "blur (sigma 0-2)": lambda d, r: ndimage.gaussian_filter(on_paper(d), r.uniform(0, 2)),
    "JPEG (quality 30-95)": lambda d, r: jpeg(on_paper(d), int(r.integers(30, 96))),
    "rotated +-15 degrees": lambda d, r: ndimage.rotate(
        on_paper(d), r.uniform(-15, 15), reshape=False, order=1, cval=0.92
    ),
    "lighting gradient": lambda d, r: gradient(on_paper(d), r),
    "soft shadow": lambda d, r: shadow(on_paper(d), r),
    "one side lighter (40-70%)": lighter_side,
    "slanted +-20 degrees": slanted,
    "narrower or wider (x0.6-1.6)": narrower_or_wider,
}


def sheet(rng, side: int = 28 * SCALE) -> np.ndarray:
    return np.full((side, side), rng.uniform(0.6, 0.97), np.float32)


BLANKS = {
    "blank sheet": sheet,
    "paper texture": lambda r: texture(sheet(r), r),
    "shadow alone": lambda r: shadow(sheet(r), r),
    "gradient alone": lambda r: gradient(sheet(r), r),
    "noise alone": lambda r: sheet(r) + r.normal(0, r.uniform(0.03, 0.12), (112, 112)),
}


def tight(digit: np.ndarray) -> np.ndarray:
    """The MNIST digit dark on white (255 - image), cut to its ink with no margin."""
    ys, xs = np.nonzero(digit)
    return 1 - digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255


def low_resolution(scan: np.ndarray) -> np.ndarray:
    """A scikit-learn 8x8 scan (0-16, ink high) dark on white, upscaled 4x (bilinear)."""
    picture = Image.fromarray((255 - scan * 255 / 16).astype(np.float32))
    return np.asarray(picture.resize((32, 32), Image.BILINEAR), np.float32) / 255


def prepared(pictures) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and whether each picture had something to read."""
    inputs, found = [], []
    for p in pictures:
        try:
            inputs.append(prepare(np.clip(p, 0, 1).astype(np.float32), grid=False))
            found.append(True)
        except NoInk:
            inputs.append(np.zeros((28, 28), np.uint8))
            found.append(False)
    return np.stack(inputs), np.array(found)


def run(args) -> dict:
    model, meta = load_model(args.digit)

    novelty = None if args.no_novelty else getattr(model, "novelty", None)  # "not a digit"

    def read(pictures):
        """Digits read, and whether each picture was read at all: ink found, and (as
        `predict` does) not refused as unlike any digit."""
        inputs, found = prepared(pictures)
        judged = readers.read_judged(model, inputs, views=True, apart=True)  # as predict reads
        if novelty is not None:
            found &= ~judged.far
        return judged.tokens[:, 0], found

    test = load_split(args.data_dir, "test")
    order = np.random.default_rng(0).permutation(len(test))
    first = order[: 2 * args.count]
    own, accepted = read([test.images[i].astype(np.float32) / 255 for i in first])
    # got right: read as its label, and not refused (the judge turns down a few MNIST frames)
    as_labelled = own == test.labels[first]
    right = first[as_labelled & accepted][: args.count]
    turned_down = int(np.sum(as_labelled & ~accepted))
    images, labels = test.images[right], test.labels[right]
    rows: dict[str, dict] = {}

    def report(name, kind, share, refused, n, seconds):
        rows[name] = {"kind": kind, "share": share, "refused": refused, "n": n, "s": seconds}
        print(f"{name:28s}{kind:>14s}{100 * share:8.2f}%{100 * refused:8.2f}%{n:7d}", flush=True)

    print(f"{turned_down} of {len(first)} frames read right but refused as not a digit: left out")
    print(f"{'':28s}{'measured':>14s}{'share':>9s}{'refused':>9s}{'n':>7s}")
    for k, (name, transform) in enumerate(TRANSFORMS.items()):
        t0 = time.perf_counter()
        rng = np.random.default_rng(100 + k)
        digits, found = read([transform(d, rng) for d in images])
        same = float(np.mean((digits == labels) & found))
        report(
            name,
            "read the same",
            same,
            float(1 - found.mean()),
            len(images),
            time.perf_counter() - t0,
        )
    for k, (name, blank) in enumerate(BLANKS.items()):
        t0 = time.perf_counter()
        rng = np.random.default_rng(200 + k)
        _, found = read([blank(rng) for _ in range(args.blanks)])
        refused = float(1 - found.mean())
        report(name, "refused", refused, refused, args.blanks, time.perf_counter() - t0)
    t0 = time.perf_counter()
    pick = order[: args.count]
    digits, found = read([tight(test.images[i]) for i in pick])
    share = float(np.mean((digits == test.labels[pick]) & found))
    report(
        "tight crop (MNIST, 0 px)",
        "read right",
        share,
        float(1 - found.mean()),
        len(pick),
        time.perf_counter() - t0,
    )
    from sklearn.datasets import load_digits  # pip install scikit-learn (benchmarks only)

    t0 = time.perf_counter()
    scans = load_digits()
    pick = np.random.default_rng(0).permutation(len(scans.images))[: args.count]
    digits, found = read([low_resolution(scans.images[i]) for i in pick])
    share = float(np.mean((digits == scans.target[pick]) & found))
    report(
        "low resolution (8x8, 4x)",
        "read right",
        share,
        float(1 - found.mean()),
        len(pick),
        time.perf_counter() - t0,
    )
    return {
        "digit_checkpoint": args.digit,
        "novelty": novelty is not None,
        "count": len(images),
        "frames_read_right_but_refused": turned_down,
        "frames_tried": len(first),
        "rows": rows,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digit", default="pretrained:digit", help="digit checkpoint")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--count", type=int, default=1000, help="digits per transformation")
    parser.add_argument("--blanks", type=int, default=100, help="blank pictures of each kind")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-novelty", action="store_true", help="without 'not a digit'")
    args = parser.parse_args()
    write_json(args.json, run(args))


if __name__ == "__main__":
    guard(main)
