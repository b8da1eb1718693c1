"""Greedy generation speed of an encoder-decoder, with the key/value cache and without it.

    python -m benchmarks.generation [--checkpoint RUN_DIR] [--grids 2000]

Timed twice: the whole model (encoder + decoding) and the decoding alone from a precomputed
encoder memory, where the cache acts. Without a checkpoint, a freshly initialized model of
the default profile is timed (speed does not depend on the weights). Both ways must produce
the same digits; the script checks that.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import machine
from digitformer.data import load_split, make_grids
from digitformer.inference.checkpoint import load_model
from digitformer.models import build_model
from digitformer.training.settings import resolve_settings
from digitformer.utils.tensors import to_float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--grids", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--data-dir", default=".data")
    args = parser.parse_args()
    if args.checkpoint:
        model, _ = load_model(args.checkpoint)
        what = args.checkpoint
    else:
        settings = resolve_settings("encoder-decoder", args.profile, {}, env_file=None)
        torch.manual_seed(0)
        model = build_model("encoder-decoder", settings.model).eval()
        what = f"untrained '{args.profile}' profile model"
    test = load_split(args.data_dir, "test")
    grids = make_grids(test.images, test.labels, args.grids, seed=0)
    images = torch.from_numpy(grids.images)
    batches = [to_float(batch) for batch in images.split(args.batch_size)]
    with torch.inference_mode():
        memories = [model.encode(batch) for batch in batches]
    results = {}
    for use_cache in (False, True, False, True):  # twice each, interleaved; the second counts
        t0 = time.perf_counter()
        digits = [model.generate(batch, use_cache=use_cache)[0] for batch in batches]
        whole = args.grids / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for memory in memories:
            model.generate_from_memory(memory, use_cache=use_cache)
        decoding = args.grids / (time.perf_counter() - t0)
        results[use_cache] = (whole, decoding, torch.cat(digits).numpy())
    same = np.array_equal(results[True][2], results[False][2])
    print(f"{what}, {args.grids} test grids, batch {args.batch_size}; {machine()}")
    print("| decoding | grids/s, encoder + decoder | grids/s, decoder only |")
    print("|---|---|---|")
    for use_cache, name in ((False, "recompute the prefix"), (True, "key/value cache")):
        whole, decoding, _ = results[use_cache]
        print(f"| {name} | {whole:,.0f} | {decoding:,.0f} |")
    print(f"same digits both ways: {same}")
    if not same:
        raise SystemExit("cached and uncached generation disagree")


if __name__ == "__main__":
    main()
