"""How fast pictures are read end to end: decoding, preparation and the model, side by side.

    python -m benchmarks.prepare_speed [--count 100] [--repeat 3] [--json FILE]
    python benchmarks/prepare_speed.py

Makes its own phone-style photos: `--count` MNIST test digits (seeded), each written dark on
paper about 180x180 with a lighting gradient, sensor noise and JPEG compression (quality 70),
saved as files in a temporary folder; and one 12-megapixel photo (4000x3000 JPEG) of a digit.
Then, in the same run, on one thread (the baseline) and on `--threads` (all cores), times
reading them as `digitformer predict photos/` does: decoding (`read_gray`), preparation
(`layout_of`, which picks the reader, then `prepare`), the model (the bundled digit reader, one
batch), a loaded reader's `predict(files)` (all three: what a folder costs once the model is
loaded) and the whole `predict_paths` call (the model loaded too); the best of `--repeat` runs
each. Also the share read right.
Needs the MNIST test set (`digitformer download`, or --data-dir).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import digitformer
from benchmarks.common import guard, machine, write_json
from digitformer.data import load_split
from digitformer.inference import ink
from digitformer.inference.predict import predict_paths
from digitformer.inference.prepare import NoInk, layout_of, prepare, read_gray
from digitformer.inference.readers import read
from digitformer.utils.runtime import each

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def photo(digit: np.ndarray, side: int, rng: np.random.Generator, quality: int = 70) -> bytes:
    """A digit written dark on paper `side` pixels square (the digit about 70% of it tall),
    under a lighting gradient, with sensor noise, as JPEG bytes."""
    h, w = (side, side) if np.isscalar(side) else side
    tall = int(0.7 * min(h, w) * rng.uniform(0.85, 1.1))
    size = round(tall * 28 / 20)
    ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), np.float32)
    ink = np.clip(ink / 255, 0, 1)
    sheet = np.full((h, w), rng.uniform(0.8, 0.92), np.float32)
    top = (h - size) // 2 + int(rng.integers(-h // 20, h // 20 + 1))
    left = (w - size) // 2 + int(rng.integers(-w // 20, w // 20 + 1))
    region = sheet[max(0, top) : top + size, max(0, left) : left + size]
    part = ink[max(0, -top) :, max(0, -left) :][: region.shape[0], : region.shape[1]]
    region[:] = region * (1 - part) + rng.uniform(0.1, 0.25) * part
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (
        np.cos(angle) * np.linspace(0, 1, w)[None, :]
        + np.sin(angle) * np.linspace(0, 1, h)[:, None]
    )
    ramp = (ramp - ramp.min()) / max(1e-6, np.ptp(ramp))
    sheet = sheet * (0.55 + 0.45 * ramp).astype(np.float32)
    sheet = sheet + rng.normal(0, 0.03, sheet.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(sheet * 255, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=quality
    )
    return buffer.getvalue()


def best(repeat: int, work):
    """The fastest of `repeat` runs of work() -> (seconds, its last result)."""
    times, result = [], None
    for _ in range(repeat):
        ink._CACHE.clear()  # every run finds the ink afresh
        t0 = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - t0)
    return min(times), result


def stages(files, model, repeat) -> dict:
    """Decoding, preparation (as predict does: the layout, then the digit) and the model, each
    timed alone, on the threads PyTorch uses; and the reading right."""
    decode, pictures = best(repeat, lambda: each(read_gray, files))

    def prepared(p):
        layout_of(p)
        try:
            return prepare(p, grid=False)
        except NoInk:
            return None

    prep, inputs = best(repeat, lambda: each(prepared, pictures))
    found = np.array([x is not None for x in inputs])
    batch = np.stack([np.zeros((28, 28), np.uint8) if x is None else x for x in inputs])
    model_s, (digits, _) = best(repeat, lambda: read(model, batch))
    return {
        "decode_s": decode,
        "prepare_s": prep,
        "model_s": model_s,
        "found": found,
        "digits": digits[:, 0],
    }


def row(files, labels, threads: int, repeat: int) -> dict:
    """One row of the table: the stages, `Reader.predict` on the files (decode, prepare, read:
    what a loaded reader does), and the whole `predict_paths` (the model loaded too)."""
    torch.set_num_threads(threads)
    reader = digitformer.load("digit", device="cpu")
    s = stages(files, reader.model, repeat)
    whole, results = best(repeat, lambda: reader.predict(files))
    with_load, _ = best(repeat, lambda: predict_paths([str(f) for f in files], device="cpu"))
    n = len(files)
    right = [r.digits == str(y) for r, y in zip(results, labels)]
    return {
        "pictures": n,
        "threads": threads,
        **{k: v for k, v in s.items() if k.endswith("_s")},
        "sum_s": s["decode_s"] + s["prepare_s"] + s["model_s"],
        "predict_s": whole,
        "pictures_per_s": n / whole,
        "predict_paths_s": with_load,
        "right": float(np.mean(right)),
        "refused": float(np.mean([r.digits is None for r in results])),
    }


def run(args) -> dict:
    test = load_split(args.data_dir, "test")
    pick = np.random.default_rng(0).permutation(len(test))[: args.count]
    rng = np.random.default_rng(1)
    threads = sorted({1, args.threads})
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "photos").mkdir()
        files = []
        for i, k in enumerate(pick):
            path = root / "photos" / f"{i:04d}.jpg"
            path.write_bytes(photo(test.images[k], int(rng.integers(170, 191)), rng))
            files.append(path)
        big = root / "big.jpg"
        big.write_bytes(photo(test.images[pick[0]], (3000, 4000), rng, quality=85))
        for n in threads:
            rows[f"{len(files)} photos ~180x180, {n} thread(s)"] = row(
                files, test.labels[pick], n, args.repeat
            )
        for n in threads:
            rows[f"one 4000x3000 photo, {n} thread(s)"] = row(
                [big], test.labels[pick[:1]], n, args.repeat
            )
    print(
        f"{'':36s}{'decode':>9s}{'prepare':>9s}{'model':>9s}{'predict':>9s}{'pics/s':>8s}"
        f"{'+load':>9s}{'right':>7s}{'refused':>8s}"
    )
    for name, r in rows.items():
        print(
            f"{name:36s}"
            + "".join(f"{1000 * r[k]:7.1f}ms" for k in ("decode_s", "prepare_s", "model_s"))
            + f"{1000 * r['predict_s']:7.1f}ms{r['pictures_per_s']:8.1f}"
            + f"{1000 * r['predict_paths_s']:7.1f}ms"
            + f"{100 * r['right']:6.1f}%{100 * r['refused']:7.1f}%"
        )
    print(
        f"(best of {args.repeat} runs, times for all the pictures of a row; 'predict' is a loaded"
        " reader's predict(files): decode, prepare, read; '+load' the whole predict_paths call,"
        " the model loaded too)"
    )
    return {"rows": rows, "repeat": args.repeat, "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--count", type=int, default=100, help="phone-style photos to make")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing (best kept)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads, beside 1 (the baseline)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    write_json(args.json, run(args))


if __name__ == "__main__":
    guard(main)
