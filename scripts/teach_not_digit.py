"""Teach the bundled digit reader what is not a digit, and fit its judge.

    python -m scripts.teach_not_digit --out .data/runs/digit-not-digit [--steps 860]
    python -m scripts.teach_not_digit --out .data/runs/digit-marks --scratch   # trained anew
    python -m scripts.bundle_pretrained .data/runs/digit-not-digit --name digit --command "..."
    python -m scripts.fit_novelty --model .data/runs/digit-not-digit --keep 0.999

Fine-tunes `--base` (the bundled digit reader) with an eleventh class on `--marks` pictures of
marks that are no digit (`digitformer.data.marks`, drawn from strokes and MNIST training digits,
prepared as any picture is; never a test digit, nothing of the evaluation suites) and on
`--frames` of them as 28x28 MNIST-format pictures, which are read unprepared:
`digitformer.training.not_digit`. Writes OUT/best.safetensors (a ten-way reader as before) and
OUT/other.safetensors (the head it was taught with, for `fit_novelty`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from benchmarks.common import guard
from safetensors.torch import save_file

from digitformer.data import load_split
from digitformer.data.marks import mnist_like, not_digits
from digitformer.inference.checkpoint import load_model, save_checkpoint
from digitformer.models import build_model
from digitformer.training.not_digit import as_read, teach
from digitformer.training.tasks import split_train_val
from digitformer.utils.fileio import atomic_path
from digitformer.utils.tensors import to_float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="pretrained:digit")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--marks", type=int, default=14000, help="pictures of marks drawn")
    parser.add_argument("--frames", type=int, default=4000, help="marks as MNIST-format frames")
    parser.add_argument("--steps", type=int, default=860, help="batches of 128 digits, 16 marks")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--marks-per-batch", type=int, default=16, help="0: no marks (a control)")
    parser.add_argument("--blocks", type=int, help="train only the last BLOCKS encoder blocks")
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="train a new model of --base's shape with --base's recipe (its epochs, rates and"
        " warm-up), the marks in every batch, instead of fine-tuning --base",
    )
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model, meta = load_model(args.base)
    model.float()
    train, val = split_train_val(load_split(args.data_dir, "train"), 5000, None)
    recipe = meta["settings"]
    schedule = dict(steps=args.steps, lr=args.lr, warmup=0, min_lr=0.0)
    if args.scratch:  # the base's own training run, the marks added to each batch
        model = build_model(meta["model_type"], meta["model_config"])
        steps = recipe["epochs"] * -(-len(train.labels) // recipe["batch_size"])
        schedule = dict(
            steps=steps, lr=recipe["lr"], warmup=recipe["warmup_steps"], min_lr=recipe["min_lr"]
        )
    rng = np.random.default_rng(10 + args.seed)
    drawn = as_read(not_digits(rng, args.marks, train.images, train.labels))
    print(f"{len(drawn)} of {args.marks} pictures of marks have ink to read", flush=True)
    # and as 28x28 MNIST-format pictures, which are read as they are, unprepared
    marks = np.concatenate([drawn, mnist_like(rng, args.frames, train.images, train.labels)])
    other = teach(
        model,
        train.images,
        train.labels,
        marks,
        recipe,
        schedule["steps"],
        schedule["lr"],
        batch_size=recipe["batch_size"] if args.scratch else 128,
        seed=args.seed,
        warmup=schedule["warmup"],
        min_lr=schedule["min_lr"],
        marks_per_batch=args.marks_per_batch,
        blocks=args.blocks,
        log=lambda line: print(line, flush=True),
    )
    with torch.inference_mode():
        logits = model(to_float(torch.from_numpy(val.images)))
    print(f"validation accuracy {(logits.argmax(1).numpy() == val.labels).mean():.2%}")
    taught = {
        "base": args.base,
        "marks": len(drawn),
        "frames": args.frames,
        "scratch": args.scratch,
        **schedule,
        "seed": args.seed,
        "blocks": args.blocks,
        "marks_per_batch": args.marks_per_batch,
    }
    keep = {k: v for k, v in meta.items() if k not in ("format", "version", "stored_as")}
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / "best.safetensors", model, {**keep, "taught_not_digit": taught})
    with atomic_path(args.out / "other.safetensors") as tmp:
        save_file({"other": other.contiguous()}, str(tmp))
    print(f"wrote {args.out}/best.safetensors and other.safetensors")


if __name__ == "__main__":
    guard(main)
