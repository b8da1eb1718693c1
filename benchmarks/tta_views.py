"""Which test-time views help an encoder-decoder? Score sets of views on one split.

    python -m benchmarks.tta_views RUN/last.safetensors --split val

Each view (each digit of a grid moved or turned on its own, as `--tta` does) is encoded
once; every set of views is then decoded greedily with the views' probabilities averaged at
each position, as `Ensemble(tta=True)` does. Choose on `val`; read `test` only to confirm.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import guard, machine, write_json
from digitformer.inference.checkpoint import load_model
from digitformer.inference.ensemble import decode_together, tta_views
from digitformer.inference.readers import DIGIT_VIEWS as TTA_VIEWS
from digitformer.training.tasks import task_for_checkpoint
from digitformer.utils.tensors import to_float

# name -> (degrees, dx, dy), as TTA_VIEWS holds them
ONE = [(1, 0), (-1, 0), (0, 1), (0, -1)]
VIEWS = {"id": (0, 0, 0)}
VIEWS |= {f"move{k * x:+d},{k * y:+d}": (0, k * x, k * y) for k in (1, 2, 3) for x, y in ONE}
VIEWS |= {f"turn{d:+d}": (d, 0, 0) for d in (6, -6, 12, -12)}

TTA = [name for view in TTA_VIEWS for name, v in VIEWS.items() if v == view]
TWO = ["move+2,+0", "move-2,+0", "move+0,+2", "move+0,-2"]
THREE = ["move+3,+0", "move-3,+0", "move+0,+3", "move+0,-3"]
SETS = {
    "as is": ["id"],
    "--tta": TTA,
    "--tta + moves of 2": TTA + TWO,
    "--tta + moves of 2 and 3": TTA + TWO + THREE,
    "--tta + turns of 12": TTA + ["turn+12", "turn-12"],
    "all views": list(VIEWS),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    model, meta = load_model(args.checkpoint, "cpu")
    if meta["model_type"] != "encoder-decoder":
        sys.exit("error: benchmarks.tta_views reads encoder-decoder checkpoints")
    task = task_for_checkpoint(meta, torch.device("cpu"), split=args.split)
    data = task.eval_sets[args.split]
    images, labels = to_float(data.images), data.labels
    t0 = time.perf_counter()
    memories = {}
    with torch.inference_mode():
        for name, view in zip(VIEWS, tta_views(images, views=list(VIEWS.values()))):
            memories[name] = torch.cat(
                [
                    model.encode(view[i : i + args.batch_size])
                    for i in range(0, len(view), args.batch_size)
                ]
            )
    rows = {}
    for set_name, names in SETS.items():
        digits, _ = decode_together([model] * len(names), [memories[n] for n in names])
        right = digits == labels
        rows[set_name] = {
            "views": len(names),
            "wrong_grids": int((~right.all(1)).sum()),
            "wrong_digits": int((~right).sum()),
            "sequence_accuracy": right.all(1).float().mean().item(),
            "digit_accuracy": right.float().mean().item(),
        }
        r = rows[set_name]
        print(
            f"{set_name:26s} {r['views']:2d} views  sequence {100 * r['sequence_accuracy']:.2f}% "
            f"({r['wrong_grids']} wrong)  digit {100 * r['digit_accuracy']:.3f}% "
            f"({r['wrong_digits']} wrong)",
            flush=True,
        )
    result = {
        "checkpoint": args.checkpoint,
        "split": args.split,
        "grids": len(labels),
        "sets": rows,
        "seconds": time.perf_counter() - t0,
        "machine": machine(),
    }
    write_json(args.json, result)


if __name__ == "__main__":
    guard(main)
