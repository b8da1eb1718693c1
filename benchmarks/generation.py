"""Greedy generation speed of an encoder-decoder: with the key/value cache and without it.

    python benchmarks/generation.py [--checkpoint RUN_DIR] [--grids 2000]

Without a checkpoint, a freshly initialized model of the default profile is timed (speed does
not depend on the weights). Both ways must produce the same digits; the script checks that.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import machine  # noqa: E402
from digitformer.checkpoint import load_model  # noqa: E402
from digitformer.data import load_split, make_grids  # noqa: E402
from digitformer.models import build_model  # noqa: E402
from digitformer.settings import resolve_settings  # noqa: E402
from digitformer.tasks import to_float  # noqa: E402


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
    results = {}
    for use_cache in (False, True, False, True):  # twice each, interleaved; the second counts
        t0 = time.perf_counter()
        digits = [
            model.generate(to_float(batch), use_cache=use_cache)[0]
            for batch in images.split(args.batch_size)
        ]
        results[use_cache] = (args.grids / (time.perf_counter() - t0), torch.cat(digits).numpy())
    same = np.array_equal(results[True][1], results[False][1])
    print(f"{what}, {args.grids} test grids, batch {args.batch_size}; {machine()}")
    print("| decoding | grids/s | speed-up |")
    print("|---|---|---|")
    print(f"| recompute the prefix | {results[False][0]:,.0f} | 1.00x |")
    speedup = results[True][0] / results[False][0]
    print(f"| key/value cache | {results[True][0]:,.0f} | {speedup:.2f}x |")
    print(f"same digits both ways: {same}")
    if not same:
        raise SystemExit("cached and uncached generation disagree")


if __name__ == "__main__":
    main()
