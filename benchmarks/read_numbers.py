"""Read whole handwritten numbers: the numbers encoder-decoder against the classic pipeline.

    python -m benchmarks.read_numbers [--line .data/models/numbers-default] [--grid RUN]
        [--digit pretrained:digit] [--count 5000] [--json benchmarks/results/read-numbers.json]

Test numbers are drawn from MNIST's test digits only (`digitformer.data.numbers`, fixed seed
0): lines of 1 to 8 digits, uniform over the length, and grids up to 3x3 with blank cells.
Each is read three ways:

- model: the numbers checkpoint, greedy decoding (its canvas as it is);
- pipeline: what a user could build without a decoder: the ink (above half brightness) cut
  into connected components (scipy.ndimage.label, 8-connected), components one just above the
  other in a column merged (a 5's bar, a broken stroke), specks dropped, each cut to its box
  and brought to MNIST's 20-pixel box and centre of mass, read by the encoder-only model,
  left to right (for grids: in rows, top to bottom, each left to right);
- photo (lines): the model again on the number written dark on paper, photographed (3x size,
  uneven light, noise, JPEG), through `predict`'s preparation.

"Touching" numbers are those with fewer connected marks than digits (strokes that touch or
overlap): where segmentation has to fail.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from benchmarks.common import guard, machine, write_json
from digitformer.data import load_split
from digitformer.data.numbers import Numbers, make_numbers
from digitformer.inference import readers
from digitformer.inference.checkpoint import load_model
from digitformer.inference.predict import predict_pictures
from digitformer.utils.errors import DigitformerError

STRUCTURE = np.ones((3, 3), bool)  # 8-connected


def marks(image: np.ndarray) -> list[tuple[slice, slice, np.ndarray]]:
    """The pipeline's segmentation: connected ink components, merged when one is just above
    the other in the same column (most of the narrower one's width), specks dropped.
    -> (rows, cols, mask) per mark."""
    labels, count = ndimage.label(image > 127, structure=STRUCTURE)
    if count == 0:
        return []
    boxes = ndimage.find_objects(labels)
    areas = ndimage.sum_labels(np.ones_like(labels), labels, np.arange(1, count + 1))
    groups = [[i] for i in range(count) if areas[i] >= max(4, 0.05 * areas.max())]
    merged = True
    while merged:  # join marks one above the other (within 4 pixels) that share a column
        merged = False
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                ca, cb = _span(boxes, groups[a], 1), _span(boxes, groups[b], 1)
                ra, rb = _span(boxes, groups[a], 0), _span(boxes, groups[b], 0)
                overlap = min(ca[1], cb[1]) - max(ca[0], cb[0])
                gap = max(ra[0], rb[0]) - min(ra[1], rb[1])
                if overlap > 0.5 * min(ca[1] - ca[0], cb[1] - cb[0]) and gap < 4:
                    groups[a] += groups.pop(b)
                    merged = True
                    break
            if merged:
                break
    out = []
    for group in groups:
        mask = np.isin(labels, [i + 1 for i in group])
        rows, cols = np.nonzero(mask)
        out.append((slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1), mask))
    return out


def _span(boxes, group: list[int], axis: int) -> tuple[int, int]:
    """The rows (axis 0) or columns (1) a group of components covers."""
    return min(boxes[i][axis].start for i in group), max(boxes[i][axis].stop for i in group)


def to_mnist_box(image: np.ndarray, rows: slice, cols: slice, mask: np.ndarray) -> np.ndarray:
    """One mark cut out (its own pixels, grown by one for the soft edges), scaled into 20x20
    and centred by its centre of mass in 28x28, as MNIST was made."""
    keep = ndimage.binary_dilation(mask, iterations=1)
    crop = np.where(keep, image, 0)[rows, cols].astype(np.float32)
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    digit = np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR), np.float32)
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - size[1]) // 2, (28 - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = digit
    cy, cx = ndimage.center_of_mass(canvas)
    canvas = ndimage.shift(canvas, (round(13.5 - cy), round(13.5 - cx)), order=0)
    return np.clip(canvas / max(1e-6, canvas.max()) * 255, 0, 255).astype(np.uint8)


def reading_order(found: list, layout: str) -> list:
    """Left to right; for grids, rows (marks whose centres are within half a cell, 14 pixels,
    of the row's first) top to bottom."""
    if layout == "line":
        return sorted(found, key=lambda m: m[1].start + m[1].stop)
    by_y = sorted(found, key=lambda m: m[0].start + m[0].stop)
    rows, out = [], []
    for mark in by_y:
        centre = (mark[0].start + mark[0].stop) / 2
        if rows and abs(centre - rows[-1][0]) < 14:
            rows[-1][1].append(mark)
        else:
            rows.append((centre, [mark]))
    for _, row in rows:
        out += sorted(row, key=lambda m: m[1].start + m[1].stop)
    return out


def pipeline(numbers: Numbers, digit_model, layout: str) -> tuple[list[str], np.ndarray]:
    """The segment-and-classify reading of every number, and how many marks each had."""
    crops, owners, counts = [], [], []
    for i, image in enumerate(numbers.images):
        found = reading_order(marks(image), layout)
        counts.append(len(found))
        for rows, cols, mask in found:
            crops.append(to_mnist_box(image, rows, cols, mask))
            owners.append(i)
    texts = [""] * len(numbers)
    if crops:
        tokens, _ = readers.read(digit_model, np.stack(crops), 512)
        for owner, digit in zip(owners, tokens[:, 0]):  # a digit is a sequence of one
            texts[owner] += str(int(digit))
    return texts, np.array(counts)


def photograph(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A canvas written dark on light paper and photographed: 3x size, a lighting gradient,
    sensor noise, JPEG at quality 70. -> float (3H, 3W) in [0, 1]."""
    h, w = image.shape
    big = np.asarray(Image.fromarray(image).resize((3 * w, 3 * h), Image.BICUBIC), np.float32)
    ink = np.clip(big / 255, 0, 1)
    y, x = np.mgrid[0 : 3 * h, 0 : 3 * w] / max(3 * h, 3 * w)
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.9 - 0.25 * (np.cos(angle) * x + np.sin(angle) * y)
    page = light * (1 - 0.8 * ink) + rng.normal(0, 0.02, ink.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=70)
    return np.asarray(Image.open(buffer), np.float32) / 255


def scores(read: list[str], true: list[str], lengths: np.ndarray, subset: np.ndarray) -> dict:
    exact = np.array([r == t for r, t in zip(read, true)])
    edits = sum(_edit(r, t) for r, t in zip(read, true))
    return {
        "exact_match": float(exact.mean()),
        "cer": edits / max(1, int(lengths.sum())),
        "by_length": {str(n): float(exact[lengths == n].mean()) for n in np.unique(lengths)},
        "touching": float(exact[subset].mean()) if subset.any() else None,
        "not_touching": float(exact[~subset].mean()) if (~subset).any() else None,
    }


def _edit(a: str, b: str) -> int:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b)


def evaluate_layout(layout: str, checkpoint: str | None, digit_model, args, test) -> dict:
    model = None
    if checkpoint:
        model, _ = load_model(checkpoint, "cpu")
        if readers.kind_of(model).name != "number":
            raise DigitformerError(f"{checkpoint}: not a numbers model")
        height, width = readers.input_shape(model)
    else:
        height = width = None
    numbers = make_numbers(
        test.images, test.labels, args.count, args.seed, layout=layout, height=height, width=width
    )
    true, lengths = numbers.strings(), numbers.lengths
    start = time.perf_counter()
    read_pipe, counts = pipeline(numbers, digit_model, layout)
    pipe_s = time.perf_counter() - start
    touching = counts < lengths
    result = {
        "count": len(numbers),
        "canvas": list(numbers.images.shape[1:]),
        "touching_share": float(touching.mean()),
        "pipeline": scores(read_pipe, true, lengths, touching) | {"seconds": pipe_s},
    }
    if model is not None:
        start = time.perf_counter()
        tokens, _ = readers.read(model, numbers.images, 500)
        model_s = time.perf_counter() - start
        read_model = readers.token_strings(tokens)
        result["model"] = scores(read_model, true, lengths, touching) | {"seconds": model_s}
        if layout == "line" and args.photos:
            rng = np.random.default_rng(args.seed)
            n = min(args.photos, len(numbers))
            pictures = [photograph(numbers.images[i], rng) for i in range(n)]
            names = [str(i) for i in range(n)]
            readings = predict_pictures(model, pictures, names)
            got = {int(p.file): p.digits or "" for p in readings.results}
            read_photo = [got.get(i, "") for i in range(n)]
            result["photo"] = scores(read_photo, true[:n], lengths[:n], touching[:n]) | {
                "count": n,
                "unreadable": len(readings.errors),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--line", default=".data/models/numbers-default", help="numbers model (lines)"
    )
    parser.add_argument("--grid", help="numbers model trained on grids (optional)")
    parser.add_argument("--digit", default="pretrained:digit", help="the pipeline's classifier")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--photos", type=int, default=1000, help="lines also read as photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    test = load_split(args.data_dir, "test")
    digit_model, _ = load_model(args.digit, "cpu")
    result = {
        "machine": machine(),
        "command": " ".join(["python -m benchmarks.read_numbers", *sys.argv[1:]]),
        "line": evaluate_layout("line", args.line, digit_model, args, test),
        "grid": evaluate_layout("grid", args.grid, digit_model, args, test),
    }
    for layout in ("line", "grid"):
        r = result[layout]
        print(f"{layout}s ({r['count']}, {100 * r['touching_share']:.1f}% touching):")
        for way in ("model", "pipeline", "photo"):
            if way in r:
                s = r[way]
                lengths = " ".join(f"{k}:{100 * v:.1f}" for k, v in s["by_length"].items())
                touching = "-" if s["touching"] is None else f"{100 * s['touching']:.1f}%"
                print(
                    f"  {way:<8} exact {100 * s['exact_match']:.2f}%  CER {100 * s['cer']:.2f}%  "
                    f"touching {touching}  by length {lengths}"
                )
    write_json(args.json, result)


if __name__ == "__main__":
    guard(main)
