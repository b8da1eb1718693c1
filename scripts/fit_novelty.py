"""Fit the bundled digit reader's sense of "not a digit" and store it beside the model.

    python -m scripts.fit_novelty [--model RUN] [--data-dir .data] [--fit 20000] [--keep 0.995]
    python -m scripts.fit_novelty --model RUN --name digit.judge --keep 0.999   # the judge

Class means and a shared covariance of the reader's features over `--fit` MNIST training
digits; the threshold from the training set's fixed validation split (the 5000 digits every
run validates on, never in the fit): the distance that a share `--keep` of them stays within.
For a reader taught "not a digit" (`scripts.teach_not_digit`: RUN/other.safetensors) the fit
also takes the training digits as augmented in training, and the thresholds (the distance's
and the taught class's probability) the validation digits as they are, augmented, and drawn
on paper and prepared as a picture is (`digitformer.data.marks.on_paper`). Writes
src/digitformer/pretrained/NAME.novelty.safetensors (`--name`: digit, or digit.judge for the
judge apart bundled by `scripts.bundle_pretrained --judge`). No non-digit is looked at.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from benchmarks.common import guard
from safetensors.torch import load_file

from digitformer.data import load_split
from digitformer.data.augment import as_trained
from digitformer.data.marks import on_paper
from digitformer.inference.checkpoint import PRETRAINED_DIR, load_model
from digitformer.inference.novelty import KEEP, fit
from digitformer.training.not_digit import as_read
from digitformer.training.tasks import split_train_val
from digitformer.utils.errors import DigitformerError
from digitformer.utils.tensors import to_float


def augmented(images: np.ndarray, settings: dict, seed: int) -> np.ndarray:
    """uint8 digits as the reader was trained on them, in place (no shift: the preparation
    centres every digit)."""
    gen = torch.Generator().manual_seed(seed)
    x = as_trained(to_float(torch.from_numpy(images)), gen, settings, shift=0.0)
    return (x.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pretrained:digit")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--fit", type=int, default=20000, help="training digits in the fit")
    parser.add_argument("--keep", type=float, default=KEEP)
    parser.add_argument(
        "--whole-keep",
        type=float,
        help="also the distance a share of held-out digits stays within for a whole picture,"
        " which a judge apart judges too (the bundle has none; docs: 'strict', 0.999)",
    )
    parser.add_argument(
        "--name", default="digit", help="the bundled model it judges for: digit, digit.judge"
    )
    args = parser.parse_args()
    train, val = split_train_val(load_split(args.data_dir, "train"), 5000, args.fit)
    model, meta = load_model(args.model)
    settings = meta["settings"]
    other_file = Path(args.model) / "other.safetensors"
    if args.name != "digit" and not other_file.is_file():
        raise DigitformerError(
            f"--name {args.name}: --model must be a run taught 'not a digit' ({other_file} missing)"
        )
    if other_file.is_file():  # a taught reader: digits as the reader meets them too
        other = load_file(str(other_file))["other"]
        digits = np.concatenate([train.images, augmented(train.images, settings, 1)])
        labels = np.tile(train.labels, 2)
        met = as_read(on_paper(val.images, np.random.default_rng(3)))
        held = np.concatenate([val.images, augmented(val.images, settings, 2), met])
    else:
        other, digits, labels, held = None, train.images, train.labels, val.images
    novelty = fit(model, digits, labels, held, args.keep, other, args.whole_keep)
    target = PRETRAINED_DIR / f"{args.name}.novelty.safetensors"
    novelty.save(target)
    taught = f", not a digit over {novelty.other_threshold:.3f}" if other is not None else ""
    whole = novelty.whole_threshold
    whole_s = (
        "" if whole is None else f"; a whole picture's over {whole:.3f} ({args.whole_keep:.1%})"
    )
    print(
        f"wrote {target}: distance over {novelty.threshold:.3f}{taught} (keeps {args.keep:.1%})"
        + whole_s
    )


if __name__ == "__main__":
    guard(main)
