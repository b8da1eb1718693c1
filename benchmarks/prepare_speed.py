"""How fast pictures are read end to end: decoding, preparation and the model, side by side.

    python -m benchmarks.prepare_speed [--count 100] [--repeat 3] [--json FILE]
    python benchmarks/prepare_speed.py

Makes its own phone-style photos: `--count` MNIST test digits (seeded), each written dark on
paper about 180x180 with a lighting gradient, sensor noise and JPEG compression (quality 70),
saved as files in a temporary folder; and one 12-megapixel photo (4000x3000 JPEG) of a digit.
Then, in the same run, times reading them as `digitformer predict photos/` does: decoding
(`read_gray`), preparation (`layout_of`, which picks the reader, then `prepare`), the model
(the bundled digit reader, one batch), and the whole `predict_paths` call (which does all
three, and loads the model); the best of `--repeat` runs each. Also the share read right.
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

from benchmarks.common import guard, machine, write_json
from digitformer.data import load_split
from digitformer.inference.checkpoint import load_model
from digitformer.inference.predict import predict_paths
from digitformer.inference.prepare import NoInk, layout_of, prepare, read_gray
from digitformer.inference.readers import read

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
        t0 = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - t0)
    return min(times), result


def read_all(files, model, meta, repeat):
    """Decode, prepare (as predict does: the layout, then the digit) and read `files`."""
    decode, pictures = best(repeat, lambda: [read_gray(f) for f in files])

    def prepare_all():
        inputs, found = [], []
        for p in pictures:
            layout_of(p)
            try:
                inputs.append(prepare(p, grid=False))
                found.append(True)
            except NoInk:
                inputs.append(np.zeros((28, 28), np.uint8))
                found.append(False)
        return np.stack(inputs), np.array(found)

    prep, (inputs, found) = best(repeat, prepare_all)
    model_s, (digits, _) = best(repeat, lambda: read(model, inputs))
    return decode, prep, model_s, digits[:, 0], found


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    test = load_split(args.data_dir, "test")
    pick = np.random.default_rng(0).permutation(len(test))[: args.count]
    rng = np.random.default_rng(1)
    model, meta = load_model("pretrained:digit")
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

        decode, prep, model_s, digits, found = read_all(files, model, meta, args.repeat)
        labels = test.labels[pick]
        end_to_end, (results, *_) = best(
            args.repeat, lambda: predict_paths([str(root / "photos")], device="cpu")
        )
        read = {Path(r.file).name: r.digits for r in results}
        cli_right = np.mean([read.get(f.name) == str(y) for f, y in zip(files, labels)])
        b_decode, b_prep, b_model, b_digits, b_found = read_all([big], model, meta, args.repeat)
        b_total, _ = best(args.repeat, lambda: predict_paths([str(big)], device="cpu"))
    n = len(files)
    rows = {
        "photos": {
            "pictures": n,
            "side": "170-190",
            "decode_s": decode,
            "prepare_s": prep,
            "model_s": model_s,
            "sum_s": decode + prep + model_s,
            "predict_paths_s": end_to_end,
            "pictures_per_s": n / end_to_end,
            "right": float(np.mean((digits == labels) & found)),
            "refused": float(1 - found.mean()),
            "predict_paths_right": float(cli_right),
        },
        "12-megapixel photo": {
            "pictures": 1,
            "side": "4000x3000",
            "decode_s": b_decode,
            "prepare_s": b_prep,
            "model_s": b_model,
            "sum_s": b_decode + b_prep + b_model,
            "predict_paths_s": b_total,
            "pictures_per_s": 1 / b_total,
            "right": float((b_digits[0] == labels[0]) and b_found[0]),
            "refused": float(not b_found[0]),
        },
    }
    print(
        f"{'':20s}{'decode':>10s}{'prepare':>10s}{'model':>10s}{'sum':>10s}{'predict':>10s}"
        f"{'pics/s':>9s}{'right':>8s}{'refused':>8s}"
    )
    for name, r in rows.items():
        print(
            f"{name:20s}"
            + "".join(f"{1000 * r[k]:8.1f}ms" for k in ("decode_s", "prepare_s", "model_s"))
            + f"{1000 * r['sum_s']:8.1f}ms{1000 * r['predict_paths_s']:8.1f}ms"
            + f"{r['pictures_per_s']:9.1f}{100 * r['right']:7.1f}%{100 * r['refused']:7.1f}%"
        )
    print(
        "(best of",
        args.repeat,
        "runs; 'predict' is the whole predict_paths call, model load"
        " included; photos: times for all of them)",
    )
    return {"rows": rows, "repeat": args.repeat, "threads": args.threads, "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--count", type=int, default=100, help="phone-style photos to make")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    write_json(args.json, run(args))


if __name__ == "__main__":
    guard(main)
