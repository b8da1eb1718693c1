"""Fit the bundled digit reader's sense of "two touching digits" and store it beside it.

    python -m scripts.fit_pairs [--data-dir .data] [--fit 12000] [--held 3000] [--keep 0.995]

The probe (`digitformer.inference.pairs`) is fitted on `--fit` narrow pieces of one or two
MNIST training digits (`digitformer.training.pairs`), and its threshold set on `--held` pieces
of the fixed validation split's digits (the 5000 every run validates on, never in the fit): the
probability that a share `--keep` of the single digits among them stays under. Writes
src/digitformer/pretrained/digit.pairs.safetensors. No test digit, nothing of the independent
suite, is looked at.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from benchmarks.common import guard

from digitformer.data import load_split
from digitformer.inference.checkpoint import PRETRAINED_DIR, load_model
from digitformer.inference.novelty import KEEP, features
from digitformer.inference.pairs import fit
from digitformer.training.pairs import narrow_pieces
from digitformer.training.tasks import split_train_val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--fit", type=int, default=12000, help="pieces in the fit")
    parser.add_argument("--held", type=int, default=3000, help="pieces setting the threshold")
    parser.add_argument("--keep", type=float, default=KEEP)
    parser.add_argument("--out", type=Path, default=PRETRAINED_DIR / "digit.pairs.safetensors")
    args = parser.parse_args()
    train, val = split_train_val(load_split(args.data_dir, "train"), 5000, None)
    pieces, counts = narrow_pieces(train.images, np.random.default_rng(0), args.fit)
    held, held_counts = narrow_pieces(val.images, np.random.default_rng(1), args.held)
    model, _ = load_model("pretrained:digit")
    pairs = fit(model, pieces, counts, held, held_counts, args.keep)
    pairs.save(args.out)
    caught = pairs.is_two(features(model, held[held_counts == 2])).float().mean()
    print(
        f"wrote {args.out}: two digits over {pairs.threshold:.3f} (keeps {args.keep:.1%} of "
        f"held-out singles; catches {caught:.1%} of the held-out pairs beside them)"
    )


if __name__ == "__main__":
    guard(main)
