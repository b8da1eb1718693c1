"""How many written numbers a second `digitformer predict --model number` reads, end to end.

    python -m benchmarks.number_speed [--count 500] [--threads 2] [--json FILE]

Makes `--count` lines of 1 to 8 MNIST test digits (the project's own generator, seed 7: this
measures speed, not accuracy), each written dark on white paper at twice the canvas size and
saved as a PNG in a temporary folder, then times reading the folder as `predict` does
(decoding, finding the ink, cutting into pieces, the digit and numbers models: `Reader`)
in pieces (the default), in pieces with clusters read by the numbers model alone (no cuts),
with the numbers model alone, as the `predict` command reads a folder (`predict_paths`:
in pieces, a process per thread, the readers loaded in the time), and by the command itself
in a fresh interpreter (`cli`: Python's start, the imports and writing a CSV too; the rows
before share this process's imports), in the same run, best of `--repeat`.
Also the share read right. Needs the MNIST test set (`digitformer data fetch`, or --data-dir).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import guard, machine, write_json
from digitformer.data import load_split
from digitformer.data.numbers import make_numbers


def write_lines(folder: Path, count: int, data_dir: str) -> list[str]:
    test = load_split(data_dir, "test")
    lines = make_numbers(test.images, test.labels, count, seed=7)
    for i, image in enumerate(lines.images):
        big = np.kron(255 - image, np.ones((2, 2), np.uint8))
        Image.fromarray(np.pad(big, 12, constant_values=255)).save(folder / f"{i:05d}.png")
    return lines.strings()


def timed(
    paths: list[str], pieces: bool, repeat: int, cuts: bool = True
) -> tuple[float, dict, int]:
    """Best seconds to decode and read `paths`, what each file read (None: not read), and how
    many could not be prepared at all (the model alone refuses lines too wide for its canvas)."""
    import digitformer
    from digitformer.inference import ink
    from digitformer.inference import pieces as in_pieces
    from digitformer.inference.prepare import read_gray

    in_pieces.CUTS = cuts

    reader = digitformer.load("number", pieces=pieces)
    best, readings = float("inf"), None
    for _ in range(repeat):
        ink._CACHE.clear()  # every repeat finds the ink afresh
        t0 = time.perf_counter()
        readings = reader.read_pictures([read_gray(p) for p in paths], paths)
        best = min(best, time.perf_counter() - t0)
    assert readings is not None
    too_wide = sum("too wide" in error for error in readings.errors)
    return best, {r.file: r.digits for r in readings.results}, too_wide


def timed_command(paths: list[str], repeat: int) -> tuple[float, dict, int]:
    """As timed(), by `predict_paths` (the `predict --model number` command without --show:
    a folder of 64 or more in a process per thread, each loading its readers, in the time)."""
    from digitformer.inference import ink
    from digitformer.inference import pieces as in_pieces
    from digitformer.inference.predict import predict_paths

    in_pieces.CUTS = True  # the default (forked workers take the module as it is here)
    best, readings = float("inf"), None
    for _ in range(repeat):
        ink._CACHE.clear()
        t0 = time.perf_counter()
        readings = predict_paths(paths, model="number", device="cpu", canvases=False)
        best = min(best, time.perf_counter() - t0)
    assert readings is not None
    too_wide = sum("too wide" in error for error in readings.errors)
    return best, {r.file: r.digits for r in readings.results}, too_wide


def timed_cli(folder: Path, repeat: int) -> tuple[float, dict, int]:
    """As timed(), by `python -m digitformer predict --model number FOLDER --csv` in a fresh
    interpreter: what a user waits for."""
    import csv
    import subprocess
    import sys

    out = folder.parent / "read.csv"
    command = [sys.executable, "-m", "digitformer", "predict", "--model", "number", str(folder)]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([*command, "--csv", str(out)], check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    with out.open() as f:
        read = {row["file"]: row["digits"] or None for row in csv.DictReader(f)}
    return best, read, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {"count": args.count, "threads": args.threads, "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "lines"
        folder.mkdir()
        truth = write_lines(folder, args.count, args.data_dir)
        paths = sorted(str(p) for p in folder.glob("*.png"))
        rows = {
            "pieces": lambda: timed(paths, True, args.repeat, True),
            "pieces_no_cuts": lambda: timed(paths, True, args.repeat, False),
            "model_alone": lambda: timed(paths, False, args.repeat, False),
            "predict_command": lambda: timed_command(paths, args.repeat),
            "cli": lambda: timed_cli(folder, args.repeat),
        }
        for name, row in rows.items():
            seconds, read, refused = row()
            right = np.mean([read.get(p) == want for p, want in zip(paths, truth)])
            out[name] = {
                "seconds": round(seconds, 2),
                "lines_per_s": round(args.count / seconds, 1),
                "read_right": round(float(right), 4),
                "refused_too_wide": refused,
            }
            print(
                f"{name}: {args.count / seconds:.1f} lines/s, {100 * right:.1f}% right, "
                f"{refused} refused as too wide for the canvas",
                flush=True,
            )
    write_json(args.json, out)


if __name__ == "__main__":
    guard(main)
