"""Two touching digits no wider than one: can the digit reader's features tell them apart?

    python -m benchmarks.pair_probe [--train 12000] [--test 3000] [--json OUT.json]

Reading in pieces (`digitformer.inference.pieces`) reads a piece no wider than it is tall as
one digit, so a touching pair such as 14 or 11 is read as one digit: the largest kind of error
left on the independent suite's development seed. This measures whether a probe on the frozen
digit reader's final CLS features (the judge's, `inference/novelty.py`) could say "two digits":

- pieces: one or two MNIST digits (training split for the fit, the fixed validation split for
  the test; never a test digit, never the independent suite), 60 pixels tall, each 0.8-1.15 of
  that, narrowed together by 0.55-1.0 (pairs) or 0.55-1.7 (singles), overlapping by 0-35% of
  the narrower, half of them photographed on paper (`data.marks.photographed`); cut by
  `pieces.cut_at_gaps`, kept where it gives one piece judged `single`;
- probes: logistic regression (and a one-hidden-layer MLP) on the first reader's features, and
  on both bundled readers' features side by side; the threshold is the probability that 99% or
  99.5% of *held-out* single digits stay under (the test pieces' first half), the rates are
  measured on the second half.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import guard, machine, write_json  # noqa: E402
from digitformer.data import load_split  # noqa: E402
from digitformer.inference.checkpoint import load_model  # noqa: E402
from digitformer.inference.novelty import features  # noqa: E402
from digitformer.inference.readers import partners_of  # noqa: E402
from digitformer.training.pairs import narrow_pieces  # noqa: E402
from digitformer.training.tasks import split_train_val  # noqa: E402


def probe(train_x, train_y, test_x, test_y, hidden: int) -> dict:
    torch.manual_seed(0)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    y = torch.tensor(train_y == 2).float()
    layers = [torch.nn.Linear(a.shape[1], hidden), torch.nn.GELU()] if hidden else []
    net = torch.nn.Sequential(*layers, torch.nn.Linear(hidden or a.shape[1], 1))
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(a)[:, 0], y).backward()
        opt.step()
    with torch.no_grad():
        p = torch.sigmoid(net(b)[:, 0]).numpy()
    half = len(p) // 2  # thresholds from the first half's singles, rates on the second half
    out = {}
    for keep in (0.99, 0.995):
        threshold = float(np.quantile(p[:half][test_y[:half] == 1], keep))
        rest, truth = p[half:], test_y[half:]
        out[str(keep)] = {
            "threshold": threshold,
            "singles_flagged": float((rest[truth == 1] > threshold).mean()),
            "pairs_caught": float((rest[truth == 2] > threshold).mean()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--test", type=int, default=3000)
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    start = time.perf_counter()
    train, val = split_train_val(load_split(args.data_dir, "train"), 5000, None)
    train_x, train_y = narrow_pieces(train.images, np.random.default_rng(0), args.train)
    test_x, test_y = narrow_pieces(val.images, np.random.default_rng(1), args.test)
    model, _ = load_model("pretrained:digit")
    readers = [model, *partners_of(model)]
    feats = [(features(m, train_x), features(m, test_x)) for m in readers]
    far = model.novelty.is_novel(feats[0][1]).numpy()
    result = {
        "command": "python -m benchmarks.pair_probe"
        + (f" --json {args.json}" if args.json else ""),
        "machine": machine(),
        "pieces": {
            "train": len(train_y),
            "train_pairs": int((train_y == 2).sum()),
            "test": len(test_y),
            "test_pairs": int((test_y == 2).sum()),
        },
        "judge": {
            "singles_flagged": float(far[test_y == 1].mean()),
            "pairs_caught": float(far[test_y == 2].mean()),
        },
        "probes": {},
    }
    both = (torch.cat([f[0] for f in feats], 1), torch.cat([f[1] for f in feats], 1))
    for name, (a, b) in {"first reader": feats[0], "both readers": both}.items():
        for hidden in (0, 128):
            key = f"{name}, {'linear' if not hidden else f'MLP {hidden}'}"
            result["probes"][key] = found = probe(a, train_y, b, test_y, hidden)
            rates = "; ".join(
                f"{k}: singles {v['singles_flagged']:.2%} pairs {v['pairs_caught']:.1%}"
                for k, v in found.items()
            )
            print(f"{key:28} {rates}")
    print(
        f"judge alone: singles {result['judge']['singles_flagged']:.2%}, "
        f"pairs {result['judge']['pairs_caught']:.1%}"
    )
    result["wall_s"] = round(time.perf_counter() - start, 1)
    write_json(args.json, result)


if __name__ == "__main__":
    guard(main)
