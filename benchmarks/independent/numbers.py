"""Handwritten number lines (1-12 digits) and single-digit sets, seeded and deterministic.

Layouts (all written for this suite):

* each number has a mean digit height drawn from 24-48 px; each digit its own height within
  +-25% of it;
* the digits sit on a baseline that is flat, a smooth wave or a random walk, drifting up to
  +-3 px per 40 px of height;
* one slant per number (a shear of -15..+15 degrees) plus -3..+3 degrees per digit;
* the gap between neighbouring ink boxes is drawn from a mixture: overlapping/touching (-3..0 px),
  normal (1..9 px), wide (10..20 px) or very wide (20..50 px), all scaled by height/36;
* the canvas is as big as the number needs plus a random margin on each side;
* half the numbers are dark ink on light paper, half light ink on dark; a third have their
  strokes thickened or thinned (a 3x3 max/min filter);
* "photographed": a tinted paper colour with a low-frequency texture and grain, a lighting
  gradient, sometimes a soft shadow, a little blur, sensor noise, a random resolution (0.6-1.5x)
  and JPEG compression at quality 40-90; returned as RGB.

Every item records its label string, set, length, `touching` (two neighbours' ink boxes overlap or
meet, gap <= 0, or their inks touch), `ink_touching` (their inks touch: within one pixel), and
the digit boxes (x0, y0, x1, y1), end-exclusive, in the final picture's pixels.

Each item is drawn from its own generator, seeded by (seed, set, index), so an item does not
depend on how many items are built.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from benchmarks.independent.digits import (
    DigitPool,
    PenWriter,
    load_mnist_test,
    load_sklearn_digits,
    pen_digit,
    pen_glyph,
    sklearn_digit_arrays,
    upscale,
)

NUMBER_SETS = ("mnist-layout", "mnist-photo", "writers", "pen", "long")
DIGIT_SETS = ("digit-mnist-tight", "digit-writers-lowres", "digit-pen", "not-digit")
SET_IDS = {name: i for i, name in enumerate(NUMBER_SETS + DIGIT_SETS)}
BANDS = {
    "mnist-layout": [(1, 2), (3, 4), (5, 6), (7, 8)],
    "mnist-photo": [(1, 2), (3, 4), (5, 6), (7, 8)],
    "writers": [(1, 2), (3, 4), (5, 6), (7, 8)],
    "pen": [(1, 2), (3, 4), (5, 6), (7, 8)],
    "long": [(9, 10), (11, 12)],
}
NOT_DIGIT_KINDS = ("blank", "texture", "shadow", "dot", "zigzag", "stroke", "x", "A")
INK = 0.5  # an ink map above this is a stroke (for boxes and touching)


@dataclass
class Item:
    image: np.ndarray  # uint8 (H, W) or, photographed, (H, W, 3)
    label: str | None  # None: nothing to read (the not-digit set)
    set: str
    length: int
    touching: bool = False
    ink_touching: bool = False
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    source: str = ""
    photo: bool = False
    dark_on_light: bool = True
    kind: str = ""  # not-digit: which kind of picture


@dataclass
class Layout:
    """Where the digits of one number go; sample_layout draws one, tests write their own."""

    heights: list[float]  # ink height of each digit, px
    gaps: list[float]  # len n-1: px between ink boxes of neighbours (negative: overlap)
    baseline: list[float]  # len n: px offset of each digit's bottom from the line (down +)
    slants: list[float]  # len n: degrees, positive leans right
    margins: tuple[int, int, int, int]  # left, top, right, bottom


# -- layouts ------------------------------------------------------------------------------------


def _gap(rng: np.random.Generator, scale: float) -> float:
    kind = rng.choice(4, p=[0.2, 0.55, 0.2, 0.05])
    lo, hi = [(-3, 0), (1, 9), (10, 20), (20, 50)][kind]
    return float(rng.uniform(lo, hi) * scale)


def _baseline(rng: np.random.Generator, n: int, mean_h: float) -> list[float]:
    reach = rng.uniform(0, 3) * mean_h / 40
    mode = rng.choice(3, p=[0.2, 0.4, 0.4])
    if mode == 0 or n == 1:
        return [0.0] * n
    if mode == 1:  # a smooth wave
        period = rng.uniform(3, 12)
        phase = rng.uniform(0, 2 * np.pi)
        return [float(reach * np.sin(2 * np.pi * i / period + phase)) for i in range(n)]
    walk = np.cumsum(rng.normal(0, reach / 2 + 1e-6, n))  # a random walk, kept within reach
    walk -= walk.mean()
    peak = np.abs(walk).max()
    return list((walk * (reach / peak) if peak > reach else walk).astype(float))


def sample_layout(rng: np.random.Generator, n: int, groups: bool = False) -> Layout:
    mean_h = rng.uniform(24, 48)
    scale = mean_h / 36
    heights = list(mean_h * rng.uniform(0.75, 1.25, n))
    if groups and n > 4:  # phone-number-like: groups of 2-4, wide gaps between groups
        sizes = []
        while sum(sizes) < n:
            sizes.append(int(rng.integers(2, 5)))
        sizes[-1] -= sum(sizes) - n
        ends = set(np.cumsum([s for s in sizes if s > 0])[:-1] - 1)
        gaps = [
            float(rng.uniform(12, 40) * scale) if i in ends else float(rng.uniform(-2, 7) * scale)
            for i in range(n - 1)
        ]
    else:
        gaps = [_gap(rng, scale) for _ in range(n - 1)]
    slant = rng.uniform(-15, 15)
    slants = list(slant + rng.uniform(-3, 3, n))
    m = [int(rng.integers(2, max(3, int(0.6 * mean_h)))) for _ in range(4)]
    return Layout(heights, gaps, _baseline(rng, n, mean_h), slants, tuple(m))


# -- composing a line ---------------------------------------------------------------------------


def _ink_map(picture: np.ndarray) -> np.ndarray:
    """uint8 light-on-black digit -> float ink 0..1 cropped to its strokes."""
    ink = picture.astype(np.float32) / 255
    rows, cols = np.flatnonzero(ink.max(1) > 0.1), np.flatnonzero(ink.max(0) > 0.1)
    if len(rows) == 0:
        raise ValueError("a digit picture with no ink")
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _glyph(picture: np.ndarray, height: float, slant_deg: float) -> np.ndarray:
    """Scale a digit's ink to `height` px and shear it by the slant; cropped to its ink."""
    ink = _ink_map(picture)
    h = max(4, int(round(height)))
    w = max(1, int(round(ink.shape[1] * h / ink.shape[0])))
    img = Image.fromarray((ink * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    t = float(np.tan(np.deg2rad(slant_deg)))
    out_w = w + int(np.ceil(abs(t) * h))
    # output (x, y) reads input (x + t*y + c, y): the bottom row stays put for t > 0
    c = -t * h if t > 0 else 0.0
    img = img.transform((out_w, h), Image.AFFINE, (1, t, c, 0, 1, 0), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255
    cols = np.flatnonzero(arr.max(0) > 0.05)
    rows = np.flatnonzero(arr.max(1) > 0.05)
    return arr[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def compose(pictures: list[np.ndarray], layout: Layout):
    """Place the digits: (ink map float HxW, boxes, touching, ink_touching)."""
    glyphs = [_glyph(p, h, s) for p, h, s in zip(pictures, layout.heights, layout.slants)]
    left, top, right, bottom = layout.margins
    xs, x = [], 0.0
    for i in range(len(glyphs)):
        if i:
            x += glyphs[i - 1].shape[1] + layout.gaps[i - 1]
        xs.append(x)
    xs = np.round(np.array(xs) - min(xs)).astype(int)
    line = max(g.shape[0] for g in glyphs)
    drop = np.round(layout.baseline).astype(int)
    tops = [line - g.shape[0] + d for g, d in zip(glyphs, drop)]
    shift = -min(tops)
    tops = [t + shift + top for t in tops]
    xs = xs + left
    width = max(int(x0) + g.shape[1] for x0, g in zip(xs, glyphs)) + right
    height = max(t + g.shape[0] for t, g in zip(tops, glyphs)) + bottom
    ink = np.zeros((height, width), np.float32)
    masks, boxes = [], []
    for x0, y0, g in zip(xs, tops, glyphs):
        x0, y0 = int(x0), int(y0)
        ink[y0 : y0 + g.shape[0], x0 : x0 + g.shape[1]] = np.maximum(
            ink[y0 : y0 + g.shape[0], x0 : x0 + g.shape[1]], g
        )
        mask = np.zeros_like(ink, dtype=bool)
        mask[y0 : y0 + g.shape[0], x0 : x0 + g.shape[1]] = g > INK
        masks.append(mask)
        boxes.append((x0, y0, x0 + g.shape[1], y0 + g.shape[0]))
    box_touch = any(boxes[i + 1][0] <= boxes[i][2] for i in range(len(boxes) - 1))
    ink_touch = any(_touch(masks[i], masks[i + 1]) for i in range(len(masks) - 1))
    return ink, boxes, box_touch or ink_touch, ink_touch


def _touch(a: np.ndarray, b: np.ndarray) -> bool:
    """Do two ink masks touch: overlap once `a` is grown by one pixel (8-neighbourhood)."""
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    g2 = grown.copy()
    g2[:, 1:] |= grown[:, :-1]
    g2[:, :-1] |= grown[:, 1:]
    return bool((g2 & b).any())


def _morph(ink: np.ndarray, rng: np.random.Generator, mean_h: float) -> np.ndarray:
    choice = rng.choice(3, p=[2 / 3, 1 / 6, 1 / 6])
    if choice == 0:
        return ink
    img = Image.fromarray((ink * 255).astype(np.uint8))
    if choice == 1:
        img = img.filter(ImageFilter.MaxFilter(3))
    elif mean_h >= 30:  # thinning a small number's strokes would erase them
        img = img.filter(ImageFilter.MinFilter(3))
    return np.asarray(img, dtype=np.float32) / 255


def clean_picture(ink: np.ndarray, rng: np.random.Generator, dark_on_light: bool) -> np.ndarray:
    """Ink map -> uint8 grey picture: plain paper and pen levels."""
    if dark_on_light:
        paper, pen = rng.uniform(215, 255), rng.uniform(0, 60)
    else:
        paper, pen = rng.uniform(0, 40), rng.uniform(195, 255)
    return np.clip(paper + (pen - paper) * ink, 0, 255).round().astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.normal(0, 1, (max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def photograph(ink: np.ndarray, rng: np.random.Generator, dark_on_light: bool, min_h: float):
    """Ink map -> (uint8 RGB photo, scale it was resized by)."""
    lo = max(0.6, 14 / max(min_h, 1))
    scale = float(rng.uniform(lo, max(lo, 1.5)))
    h, w = ink.shape
    nh, nw = max(8, int(round(h * scale))), max(8, int(round(w * scale)))
    ink = np.asarray(
        Image.fromarray(ink, mode="F").resize((nw, nh), Image.BILINEAR), dtype=np.float32
    ).clip(0, 1)
    scale_xy = (nw / w, nh / h)
    if dark_on_light:
        base = rng.uniform(165, 245)
        paper = base + rng.uniform(-12, 12, 3) + np.array([4.0, 2.0, -6.0])  # warm white
        pen = rng.choice(
            [np.array([25.0, 25, 30]), np.array([25.0, 35, 110]), np.array([60.0, 40, 40])]
        )
        pen = pen + rng.uniform(-15, 15, 3)
    else:  # a dark board with chalk or a light pen
        base = rng.uniform(20, 70)
        paper = base + rng.uniform(-10, 10, 3) + np.array([-5.0, 8.0, 0.0])
        pen = rng.uniform(190, 245) + rng.uniform(-10, 10, 3)
    texture = _smooth_noise(rng, nh, nw, int(rng.integers(6, 24))) * rng.uniform(2, 10)
    grain = rng.normal(0, rng.uniform(1, 4), (nh, nw)).astype(np.float32)
    page = paper[None, None, :] + (texture + grain)[..., None]
    alpha = rng.uniform(0.75, 1.0)
    img = page * (1 - alpha * ink[..., None]) + pen[None, None, :] * (alpha * ink[..., None])
    # light: a linear gradient across the page, sometimes a soft shadow
    yy, xx = np.mgrid[0:nh, 0:nw].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / nw + np.sin(angle) * yy / nh) + 0.5
    light = 1 - rng.uniform(0.0, 0.35) * ramp.clip(0, 1.5)
    if rng.random() < 0.5:
        cx, cy = rng.uniform(0, nw), rng.uniform(0, nh)
        r = rng.uniform(0.3, 1.0) * max(nw, nh)
        falloff = np.clip(1 - np.hypot(xx - cx, yy - cy) / r, 0, 1)
        light *= 1 - rng.uniform(0.15, 0.4) * falloff**1.5
    img = img * light[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    pic = Image.fromarray(img, "RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.1)))
    arr = np.asarray(pic, dtype=np.float32) + rng.normal(0, rng.uniform(2, 8), (nh, nw, 3))
    pic = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    pic.save(buf, "JPEG", quality=int(rng.integers(40, 91)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8), scale_xy


def make_number(
    label: str,
    source,
    rng: np.random.Generator,
    set_name: str,
    photo: bool,
    groups: bool = False,
    layout: Layout | None = None,
    photo_rng: np.random.Generator | None = None,
) -> Item:
    """One number line written by `source` (anything with .sample(label, rng) and .name)."""
    pictures = [source.sample(int(d), rng) for d in label]
    layout = layout or sample_layout(rng, len(label), groups)
    ink, boxes, touching, ink_touching = compose(pictures, layout)
    mean_h = float(np.mean(layout.heights))
    ink = _morph(ink, rng, mean_h)
    dark = bool(rng.random() < 0.5)
    if photo:
        image, (sx, sy) = photograph(ink, photo_rng or rng, dark, min(layout.heights))
        boxes = [
            (int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy)))
            for x0, y0, x1, y1 in boxes
        ]
    else:
        image = clean_picture(ink, rng, dark)
    return Item(
        image, label, set_name, len(label), touching, ink_touching, boxes, source.name, photo, dark
    )


# -- the suite ----------------------------------------------------------------------------------


class Sources:
    """The three writers: MNIST test digits, scikit-learn's optdigits, the pen writer."""

    def __init__(self, mnist: DigitPool | None = None, mnist_dir=None):
        self.mnist = (
            mnist
            if mnist is not None
            else (load_mnist_test(mnist_dir) if mnist_dir else load_mnist_test())
        )
        self.writers = load_sklearn_digits(32)
        self.pen = PenWriter(28)
        self._sk_raw = None

    def sklearn_raw(self):
        if self._sk_raw is None:
            self._sk_raw = sklearn_digit_arrays()
        return self._sk_raw


def _rng(seed: int, set_name: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, SET_IDS[set_name], index, stream])


def _label(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, n))


def number_set(name: str, sources: Sources, count: int, seed: int = 1) -> list[Item]:
    """`count` items per length band of the set, the band's lengths taking turns."""
    items = []
    for b, (lo, hi) in enumerate(BANDS[name]):
        for j in range(count):
            index = b * 1_000_000 + j
            n = lo + j % (hi - lo + 1)  # the band's lengths in turn: equal shares
            if name in ("mnist-layout", "mnist-photo"):
                # the same digits and layouts in both: only the photograph differs
                rng = _rng(seed, "mnist-layout", index)
                photo = name == "mnist-photo"
                prng = _rng(seed, name, index, 1)
                items.append(
                    make_number(_label(rng, n), sources.mnist, rng, name, photo, photo_rng=prng)
                )
                continue
            rng = _rng(seed, name, index)
            label = _label(rng, n)
            photo = bool(rng.random() < 0.5)
            if name == "writers":
                src = sources.writers
            elif name == "pen":
                src = sources.pen
            else:
                src = [sources.mnist, sources.writers, sources.pen][int(rng.integers(3))]
            groups = name == "long" and rng.random() < 0.7
            items.append(make_number(label, src, rng, name, photo, groups=groups))
    return items


def _on_paper(ink: np.ndarray, rng: np.random.Generator, dark_on_light=None) -> tuple:
    dark = bool(rng.random() < 0.5) if dark_on_light is None else dark_on_light
    return clean_picture(ink, rng, dark), dark


def digit_set(name: str, sources: Sources, count: int, seed: int = 1) -> list[Item]:
    items = []
    for j in range(count):
        rng = _rng(seed, name, j)
        if name == "not-digit":
            items.append(not_digit(NOT_DIGIT_KINDS[j % len(NOT_DIGIT_KINDS)], rng))
            continue
        label = int(rng.integers(10))
        if name == "digit-mnist-tight":
            pic = sources.mnist.sample(label, rng)
            rows, cols = np.flatnonzero(pic.max(1) > 0), np.flatnonzero(pic.max(0) > 0)
            crop = pic[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            image, dark, src = 255 - crop, True, "mnist"
        elif name == "digit-writers-lowres":
            pixels, labels = sources.sklearn_raw()
            k = int(rng.choice(np.flatnonzero(labels == label)))
            image, dark, src = 255 - upscale(pixels[k], 32, Image.BILINEAR), True, "writers"
        elif name == "digit-pen":
            size = int(rng.integers(16, 97))
            ink = pen_digit(label, rng, size).astype(np.float32) / 255
            image, dark = _on_paper(ink, rng)
            src = "pen"
        else:
            raise KeyError(name)
        h, w = image.shape
        items.append(
            Item(image, str(label), name, 1, boxes=[(0, 0, w, h)], source=src, dark_on_light=dark)
        )
    return items


def not_digit(kind: str, rng: np.random.Generator) -> Item:
    """A picture with no digit in it: the right answer is to refuse it."""
    size = int(rng.integers(28, 65))
    h, w = size, int(size * rng.uniform(0.8, 1.6))
    ink = np.zeros((h, w), np.float32)
    dark = bool(rng.random() < 0.5)
    if kind in ("blank", "texture", "shadow"):
        paper = rng.uniform(190, 250) if dark else rng.uniform(5, 60)
        img = np.full((h, w), paper, np.float32)
        if kind == "texture":
            img += _smooth_noise(rng, h, w, int(rng.integers(3, 10))) * rng.uniform(6, 15)
            img += rng.normal(0, rng.uniform(3, 10), (h, w))
        if kind == "shadow":
            yy, xx = np.mgrid[0:h, 0:w]
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.4, 1.0) * size
            soft = np.clip(1 - np.hypot(xx - cx, yy - cy) / r, 0, 1) ** 2
            img *= 1 - rng.uniform(0.25, 0.5) * soft
            img += rng.normal(0, 2, (h, w))
        image = np.clip(img, 0, 255).astype(np.uint8)
        return Item(image, None, "not-digit", 0, dark_on_light=dark, kind=kind)
    if kind == "dot":
        r = rng.uniform(1.2, 3.5) * size / 40
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        yy, xx = np.mgrid[0:h, 0:w]
        ink = np.clip(r + 0.5 - np.hypot(yy - cy, xx - cx), 0, 1).astype(np.float32)
    else:
        ink = pen_glyph(kind, rng, (w, h)).astype(np.float32) / 255
    image, dark = _on_paper(ink, rng, dark)
    return Item(image, None, "not-digit", 0, dark_on_light=dark, kind=kind)


def build_suite(
    sources: Sources, count: int = 150, seed: int = 1, sets=NUMBER_SETS + DIGIT_SETS
) -> dict[str, list[Item]]:
    """{set name: items}: `count` items per length band for number sets, 2*count per digit set
    (the not-digit set: `count`, spread evenly over its kinds)."""
    suite = {}
    for name in sets:
        if name in NUMBER_SETS:
            suite[name] = number_set(name, sources, count, seed)
        elif name == "not-digit":
            suite[name] = digit_set(name, sources, count, seed)
        else:
            suite[name] = digit_set(name, sources, 2 * count, seed)
    return suite
