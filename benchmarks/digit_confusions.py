"""Which digit is read as which, on single digits of three sources, for one or more readers.

    python -m benchmarks.digit_confusions [CHECKPOINT ...] [--pen 150] [--json F]

Every digit is read alone through `predict` (the preparation a picture gets): all 1,797 of
scikit-learn's optdigits (other writers, 8x8, upscaled 4x bicubically, 8 pixels of margin),
`--pen` procedural pen digits per class (`benchmarks.independent.digits`, seeded) and the
10,000 MNIST test digits. For each reader (default: the bundled `pretrained:digit`; a
checkpoint path loads that reader alone, without the bundled partner and judges) it prints the
error rate, the misread pairs, and the two counts that concern the 1: ones read as something
else, and something else read as 1. Larger samples than the independent suite's digit sets,
to see one confusion move when a recipe changes; no whole numbers.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

import digitformer
from benchmarks.common import guard, machine, write_json
from benchmarks.independent.digits import (
    load_mnist_test,
    pen_digit,
    sklearn_digit_arrays,
    upscale,
)


def sources(pen_per_class: int) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    images, labels = sklearn_digit_arrays()
    optdigits = [np.pad(upscale(a, 32), 8) for a in images]
    rng = np.random.default_rng(11)
    pen = [np.pad(pen_digit(d, rng), 6) for d in range(10) for _ in range(pen_per_class)]
    mnist = load_mnist_test()
    return {
        "optdigits": (optdigits, [int(v) for v in labels]),
        "pen": (pen, [d for d in range(10) for _ in range(pen_per_class)]),
        "mnist": ([np.asarray(a) for a in mnist.images], [int(v) for v in mnist.labels]),
    }


def confusions(reader, images: list[np.ndarray], labels: list[int]) -> dict:
    read = [p.digits for p in reader.predict(images)]
    pairs = collections.Counter(f"{t}>{r}" for t, r in zip(labels, read) if r != str(t))
    return {
        "n": len(labels),
        "error": sum(pairs.values()) / len(labels),
        "ones_misread": sum(v for k, v in pairs.items() if k.startswith("1>")),
        "read_as_one": sum(v for k, v in pairs.items() if k.endswith(">1")),
        "pairs": dict(pairs.most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "readers", nargs="*", default=["digit"], help="checkpoints (default: digit)"
    )
    parser.add_argument("--pen", type=int, default=150, help="pen digits per class")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = sources(args.pen)
    results = {}
    for name in args.readers:
        reader = digitformer.load(name)
        results[name] = {}
        for source, (images, labels) in data.items():
            row = confusions(reader, images, labels)
            results[name][source] = row
            top = ", ".join(f"{k} {v}" for k, v in list(row["pairs"].items())[:6])
            print(
                f"{name[-32:]:32s} {source:9s} error {100 * row['error']:5.2f}%  "
                f"1 misread {row['ones_misread']:3d}  read as 1 {row['read_as_one']:3d}  {top}",
                flush=True,
            )
    write_json(args.json, {"machine": machine(), "pen_per_class": args.pen, "results": results})


if __name__ == "__main__":
    guard(main)
