"""Training throughput of the default encoder-only model: ours against a plain baseline.

    python benchmarks/throughput.py --steps 60

ours:     attention through F.scaled_dot_product_attention; the whole training set in memory as a
          uint8 tensor, batches gathered by index and augmented as one tensor (task.train_batches).
baseline: the same model with attention written by hand (softmax(QK^T/sqrt(d))V), fed by a
          per-sample torch Dataset + DataLoader that converts and augments one image at a time.
Both run the same optimizer step, batch size and augmentation, in the same process.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from common import machine  # noqa: E402
from digitformer.augment import random_affine  # noqa: E402
from digitformer.models import build_model  # noqa: E402
from digitformer.models.layers import Attention  # noqa: E402
from digitformer.settings import resolve_settings  # noqa: E402
from digitformer.tasks import build_task  # noqa: E402
from digitformer.train import make_optimizer  # noqa: E402


class HandAttention(Attention):
    """The baseline's attention: scores, softmax and weighted sum written out by hand."""

    def forward(self, x, context=None, *, causal=False, cache=None, need_weights=False):
        out, _ = super().forward(x, context, causal=causal, cache=cache, need_weights=True)
        return out, None


class PerSampleDigits(Dataset):
    """The usual per-sample pipeline: index -> float tensor -> augment one image -> collate."""

    def __init__(self, images, labels, settings, seed: int = 0):
        self.images, self.labels, self.s = images, labels, settings
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = self.images[i].float().div(255).reshape(1, 1, 28, 28)
        image = random_affine(
            image, self.generator, self.s.aug_shift, self.s.aug_rotate, self.s.aug_scale
        )
        return image[0], self.labels[i]


def time_steps(model, optimizer, task, batches, steps: int, warmup: int = 5) -> float:
    model.train()
    batches = iter(batches)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        images, labels = next(batches)
        loss, _, _ = task.loss(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * task.settings.batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--data-dir", default=".data")
    args = parser.parse_args()
    settings = resolve_settings(
        "encoder-only", args.profile, {"data_dir": args.data_dir}, env_file=None
    )
    task = build_task(settings, torch.device("cpu"))
    rows = []
    for name in ("baseline", "ours"):
        torch.manual_seed(0)
        model = build_model("encoder-only", settings.model)
        if name == "baseline":
            for block in model.blocks:
                hand = HandAttention(model.cfg.dim, model.cfg.heads)
                hand.load_state_dict(block.attn.state_dict())
                block.attn = hand
            loader = DataLoader(
                PerSampleDigits(task.train_images, task.train_labels, settings),
                batch_size=settings.batch_size,
                shuffle=True,
                drop_last=True,
            )
            batches = itertools.chain.from_iterable(itertools.repeat(loader))
        else:
            batches = itertools.chain.from_iterable(
                task.train_batches(e) for e in itertools.count()
            )
        optimizer = make_optimizer(model, settings, fused=False)
        rows.append((name, time_steps(model, optimizer, task, batches, args.steps)))
    base = rows[0][1]
    print(
        f"encoder-only '{args.profile}' profile, batch {settings.batch_size}, "
        f"{args.steps} timed steps; {machine()}"
    )
    print("| implementation | training images/s | speed-up |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
