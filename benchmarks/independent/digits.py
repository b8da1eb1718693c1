"""Sources of single handwritten digits for the independent suite.

Every source gives uint8 (H, W) pictures of **light ink on black** (ink 255, background 0), one
digit each, plus its labels (int 0-9):

* `load_mnist_test(folder)`: the MNIST **test** split, read from `test-*.parquet` only (the train
  files in the same folder are never opened).
* `load_sklearn_digits(size)`: scikit-learn's bundled UCI optdigits (8x8, 17 grey levels, 43
  writers other than MNIST's), upscaled smoothly (bicubic) to size x size.
* `pen_digit(label, rng)`: a procedural pen writer written for this suite: each digit is a few
  pen strokes (polylines and Catmull-Rom curves through control points), with per-sample jitter
  of the points, slant, aspect, rotation and stroke width, and alternative forms (a 7 with or
  without a bar, a 1 with or without a serif and foot, a 4 open or closed, an 8 in one stroke or
  as two loops, a 9 with a straight or curved tail, a 2 with or without a loop). Drawn
  anti-aliased by supersampling with Pillow's ImageDraw, then downsampled.

`pen_glyph(name, rng)` draws the same way the non-digit shapes of the `not-digit` set (an x, an
A, a zigzag scribble, a lone short stroke).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

MNIST_DIR = Path(__file__).resolve().parents[2] / ".data" / "ylecun" / "mnist"
SUPERSAMPLE = 4  # pen strokes are drawn at 4x and box-filtered down: anti-aliased edges


@dataclass
class DigitPool:
    """Pictures of digits (uint8, light ink on black) and their labels, with a sampler by label."""

    name: str
    images: list[np.ndarray]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self._by_label = {d: np.flatnonzero(self.labels == d) for d in range(10)}

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, label: int, rng: np.random.Generator) -> np.ndarray:
        choices = self._by_label[int(label)]
        if len(choices) == 0:
            raise ValueError(f"{self.name}: no digit {label} in the pool")
        return self.images[int(rng.choice(choices))]


# -- MNIST test split -------------------------------------------------------------------------


def mnist_test_files(folder: str | Path = MNIST_DIR) -> list[Path]:
    """The parquet files of the test split in a Hugging Face MNIST folder (never the train ones)."""
    files = sorted(Path(folder).glob("test-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no test-*.parquet under {folder}")
    return files


def load_mnist_test(folder: str | Path = MNIST_DIR, limit: int | None = None) -> DigitPool:
    """MNIST test digits: 28x28 uint8, light ink on black, as stored."""
    images, labels = [], []
    for path in mnist_test_files(folder):
        table = pq.read_table(path, columns=["image", "label"])
        for cell, label in zip(
            table.column("image").to_pylist(), table.column("label").to_pylist()
        ):
            data = cell["bytes"] if isinstance(cell, dict) else cell
            images.append(np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.uint8))
            labels.append(int(label))
            if limit is not None and len(images) >= limit:
                return DigitPool("mnist", images, np.array(labels))
    return DigitPool("mnist", images, np.array(labels))


# -- scikit-learn's optdigits -------------------------------------------------------------------


def sklearn_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 bundled 8x8 digits as uint8 0-255 (from 17 levels 0-16) and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    return pixels, bunch.target.astype(np.int64)


def upscale(pixels: np.ndarray, size: int, resample=Image.BICUBIC) -> np.ndarray:
    picture = Image.fromarray(pixels).resize((size, size), resample)
    return np.asarray(picture, dtype=np.uint8)


def load_sklearn_digits(size: int = 32) -> DigitPool:
    """Other writers: the optdigits 8x8 digits upscaled smoothly to size x size."""
    pixels, labels = sklearn_digit_arrays()
    return DigitPool("writers", [upscale(p, size) for p in pixels], labels)


# -- the procedural pen writer ------------------------------------------------------------------
# Control points live in a unit box: x 0 (left) .. 1 (right), y 0 (top) .. 1 (bottom). A stroke
# is ("line", points): a polyline with corners, ("curve", points): a smooth Catmull-Rom curve
# through them, or ("loop", points): a closed smooth curve.


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = -90, n: int = 8):
    angles = np.deg2rad(start + np.arange(n) * 360 / n)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


def _zero_overshoot():
    pts = _ellipse(0.5, 0.5, 0.32, 0.48, start=-100, n=10)
    return [("curve", [*pts, pts[0], (pts[1][0] + 0.04, pts[1][1] + 0.02)])]


DIGIT_FORMS: dict[int, list[list[tuple[str, list[tuple[float, float]]]]]] = {
    0: [
        [("loop", _ellipse(0.5, 0.5, 0.32, 0.48))],
        _zero_overshoot(),
    ],
    1: [
        [("line", [(0.52, 0.0), (0.48, 1.0)])],
        [("line", [(0.28, 0.24), (0.55, 0.0), (0.5, 1.0)])],
        [("line", [(0.28, 0.24), (0.55, 0.0), (0.5, 1.0)]), ("line", [(0.28, 1.0), (0.74, 1.0)])],
    ],
    2: [
        [
            ("curve", [(0.18, 0.26), (0.35, 0.04), (0.63, 0.02), (0.8, 0.2), (0.72, 0.45)]),
            ("curve", [(0.72, 0.45), (0.45, 0.72), (0.15, 0.98)]),
            ("line", [(0.15, 0.98), (0.88, 0.97)]),
        ],
        [
            ("curve", [(0.18, 0.26), (0.35, 0.04), (0.63, 0.02), (0.8, 0.2), (0.72, 0.45)]),
            ("curve", [(0.72, 0.45), (0.4, 0.75), (0.2, 0.95), (0.12, 0.84), (0.26, 0.8)]),
            ("curve", [(0.26, 0.8), (0.36, 0.97), (0.6, 0.98), (0.9, 0.94)]),
        ],
    ],
    3: [
        [
            ("curve", [(0.18, 0.13), (0.45, 0.0), (0.75, 0.1), (0.72, 0.34), (0.42, 0.48)]),
            ("curve", [(0.42, 0.48), (0.78, 0.6), (0.82, 0.83), (0.55, 1.0), (0.15, 0.9)]),
        ],
        [
            ("line", [(0.18, 0.02), (0.8, 0.02), (0.45, 0.42)]),
            ("curve", [(0.45, 0.42), (0.78, 0.58), (0.82, 0.83), (0.55, 1.0), (0.15, 0.9)]),
        ],
    ],
    4: [
        [("line", [(0.68, 1.0), (0.68, 0.0), (0.1, 0.68), (0.9, 0.68)])],
        [
            ("line", [(0.28, 0.0), (0.15, 0.62), (0.88, 0.62)]),
            ("line", [(0.68, 0.25), (0.68, 1.0)]),
        ],
    ],
    5: [
        [
            ("line", [(0.8, 0.02), (0.32, 0.02), (0.26, 0.45)]),
            ("curve", [(0.26, 0.45), (0.55, 0.36), (0.8, 0.52), (0.8, 0.8), (0.52, 0.99)]),
            ("curve", [(0.52, 0.99), (0.3, 0.98), (0.16, 0.88)]),
        ],
        [
            ("line", [(0.33, 0.03), (0.26, 0.46)]),
            (
                "curve",
                [(0.26, 0.46), (0.55, 0.37), (0.8, 0.53), (0.8, 0.8), (0.5, 0.99), (0.15, 0.9)],
            ),
            ("line", [(0.33, 0.03), (0.82, 0.0)]),
        ],
    ],
    6: [
        [
            (
                "curve",
                [
                    (0.72, 0.03),
                    (0.45, 0.12),
                    (0.25, 0.45),
                    (0.22, 0.78),
                    (0.45, 0.99),
                    (0.72, 0.9),
                    (0.78, 0.68),
                    (0.55, 0.52),
                    (0.3, 0.58),
                    (0.23, 0.72),
                ],
            )
        ],
    ],
    7: [
        [("line", [(0.12, 0.03), (0.88, 0.02), (0.42, 1.0)])],
        [("line", [(0.12, 0.03), (0.88, 0.02), (0.42, 1.0)]), ("line", [(0.36, 0.52), (0.8, 0.5)])],
        [
            ("line", [(0.12, 0.05), (0.88, 0.02)]),
            ("curve", [(0.88, 0.02), (0.64, 0.38), (0.5, 0.72), (0.46, 1.0)]),
        ],
    ],
    8: [
        [
            (
                "curve",
                [
                    (0.72, 0.15),
                    (0.5, 0.01),
                    (0.26, 0.13),
                    (0.32, 0.36),
                    (0.5, 0.48),
                    (0.75, 0.62),
                    (0.78, 0.85),
                    (0.5, 1.0),
                    (0.22, 0.86),
                    (0.26, 0.62),
                    (0.5, 0.48),
                    (0.68, 0.36),
                    (0.72, 0.15),
                ],
            )
        ],
        [("loop", _ellipse(0.5, 0.25, 0.22, 0.23)), ("loop", _ellipse(0.5, 0.74, 0.29, 0.26))],
    ],
    9: [
        [("loop", _ellipse(0.47, 0.28, 0.29, 0.26)), ("line", [(0.76, 0.24), (0.72, 1.0)])],
        [
            (
                "curve",
                [
                    (0.76, 0.28),
                    (0.58, 0.5),
                    (0.3, 0.5),
                    (0.19, 0.28),
                    (0.4, 0.03),
                    (0.7, 0.05),
                    (0.78, 0.26),
                    (0.74, 0.62),
                    (0.66, 1.0),
                ],
            )
        ],
    ],
}

GLYPH_FORMS = {
    "x": [("line", [(0.15, 0.3), (0.85, 1.0)]), ("line", [(0.85, 0.3), (0.15, 1.0)])],
    "A": [
        ("line", [(0.1, 1.0), (0.5, 0.0), (0.9, 1.0)]),
        ("line", [(0.28, 0.6), (0.72, 0.6)]),
    ],
    "zigzag": [
        ("line", [(0.05, 0.4), (0.2, 0.7), (0.35, 0.35), (0.5, 0.72), (0.65, 0.3), (0.8, 0.7)])
    ],
    "stroke": [("line", [(0.2, 0.55), (0.8, 0.45)])],
}


def _catmull_rom(points: np.ndarray, closed: bool, per_segment: int = 16) -> np.ndarray:
    """A smooth curve through the points (centripetal-free uniform Catmull-Rom)."""
    if closed:
        pts = np.vstack([points[-1], points, points[0], points[1]])
    else:
        pts = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    out.append(pts[-2][None] if not closed else pts[1][None])
    return np.vstack(out)


def _trace(kind: str, points) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if kind == "line":
        return pts
    return _catmull_rom(pts, closed=kind == "loop")


def render_strokes(
    strokes,
    rng: np.random.Generator,
    size: int | tuple[int, int] = 28,
    fill: float = 0.72,
    jitter: float = 0.03,
    slant_deg: tuple[float, float] = (-10, 22),
    aspect: tuple[float, float] = (0.7, 1.15),
    width: tuple[float, float] = (0.07, 0.15),
) -> np.ndarray:
    """Draw pen strokes with random jitter, slant, aspect, rotation and width: uint8, ink 255.

    The shape is scaled so its taller side fills `fill` of the picture, centred."""
    out_w, out_h = (size, size) if isinstance(size, int) else size
    shear = np.tan(np.deg2rad(rng.uniform(*slant_deg)))
    stretch = rng.uniform(*aspect)
    turn = np.deg2rad(rng.uniform(-5, 5))
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    paths, moved = [], {}
    for kind, points in strokes:
        # One jitter per distinct control point: strokes that meet (or a stroke that closes on
        # itself) still meet after the jitter.
        for p in points:
            key = (round(p[0], 4), round(p[1], 4))
            if key not in moved:
                moved[key] = np.array(p, dtype=np.float64) + rng.normal(0, jitter, 2)
        pts = np.array([moved[(round(p[0], 4), round(p[1], 4))] for p in points])
        path = _trace(kind, pts)
        path[:, 0] = 0.5 + (path[:, 0] - 0.5) * stretch + shear * (0.5 - path[:, 1])
        path = (path - 0.5) @ rot.T + 0.5
        paths.append(path)
    every = np.vstack(paths)
    lo, hi = every.min(0), every.max(0)
    extent = max(hi[0] - lo[0], hi[1] - lo[1], 1e-6)
    big_w, big_h = out_w * SUPERSAMPLE, out_h * SUPERSAMPLE
    scale = fill * min(big_w, big_h) / extent
    centre = (lo + hi) / 2
    pen = max(1.0, rng.uniform(*width) * fill * min(big_w, big_h))
    canvas = Image.new("L", (big_w, big_h), 0)
    draw = ImageDraw.Draw(canvas)
    for path in paths:
        xy = (path - centre) * scale + np.array([big_w / 2, big_h / 2])
        w = pen * rng.uniform(0.85, 1.1)
        coords = [tuple(p) for p in xy]
        draw.line(coords, fill=255, width=max(1, int(round(w))), joint="curve")
        for x, y in (coords[0], coords[-1]):  # round pen caps
            draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=255)
    small = canvas.resize((out_w, out_h), Image.BOX)
    return np.asarray(small, dtype=np.uint8)


def pen_forms(label: int) -> int:
    return len(DIGIT_FORMS[int(label)])


def pen_digit(
    label: int, rng: np.random.Generator, size: int = 28, form: int | None = None
) -> np.ndarray:
    """One procedurally written digit: uint8 size x size, light ink on black."""
    forms = DIGIT_FORMS[int(label)]
    pick = int(rng.integers(len(forms))) if form is None else form
    return render_strokes(forms[pick], rng, size)


def pen_glyph(name: str, rng: np.random.Generator, size: int | tuple[int, int] = 28) -> np.ndarray:
    """A pen-drawn shape that is not a digit ("x", "A", "zigzag", "stroke")."""
    fill = 0.4 if name == "stroke" else 0.72
    return render_strokes(GLYPH_FORMS[name], rng, size, fill=fill, slant_deg=(-8, 12))


class PenWriter:
    """A digit source like DigitPool, drawing a fresh pen digit for every request."""

    name = "pen"

    def __init__(self, size: int = 28):
        self.size = size

    def sample(self, label: int, rng: np.random.Generator) -> np.ndarray:
        return pen_digit(label, rng, self.size)


def contact_sheet(rows: list[list[np.ndarray]], cell: int = 36, dark_on_light: bool = True):
    """A PIL picture: one row of pictures per list, each centred in a cell (for eyeballing)."""
    width = max(len(r) for r in rows) * cell
    sheet = Image.new("L", (width, len(rows) * cell), 128)
    for j, row in enumerate(rows):
        for i, pic in enumerate(row):
            p = Image.fromarray(pic if pic.ndim == 2 else pic.mean(-1).astype(np.uint8))
            p.thumbnail((cell - 4, cell - 4))
            if dark_on_light and pic.ndim == 2 and pic.mean() < 128:
                p = Image.fromarray(255 - np.asarray(p))
            sheet.paste(p, (i * cell + (cell - p.width) // 2, j * cell + (cell - p.height) // 2))
    return sheet
