"""Fit the bundled digit reader's sense of "not a digit" and store it beside the model.

    python -m scripts.fit_novelty [--data-dir .data] [--fit 20000] [--keep 0.995]

Class means and a shared covariance of `pretrained:digit`'s features over `--fit` MNIST training
digits; the threshold from the training set's fixed validation split (the 5000 digits every run
validates on, never in the fit): the distance that a share `--keep` of them stays within.
Writes src/digitformer/pretrained/digit.novelty.safetensors. No non-digit is looked at.
"""

from __future__ import annotations

import argparse

from benchmarks.common import guard

from digitformer.data import load_split
from digitformer.inference.checkpoint import PRETRAINED_DIR, load_model
from digitformer.inference.novelty import KEEP, fit
from digitformer.training.tasks import split_train_val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--fit", type=int, default=20000, help="training digits in the fit")
    parser.add_argument("--keep", type=float, default=KEEP)
    args = parser.parse_args()
    train, val = split_train_val(load_split(args.data_dir, "train"), 5000, args.fit)
    model, _ = load_model("pretrained:digit")
    novelty = fit(model, train.images, train.labels, val.images, args.keep)
    target = PRETRAINED_DIR / "digit.novelty.safetensors"
    novelty.save(target)
    print(f"wrote {target}: threshold {novelty.threshold:.3f} (keeps {args.keep:.1%} of val)")


if __name__ == "__main__":
    guard(main)
