"""How fast does the numbers reader start to read? The first steps of the default model, variants.

    python -m benchmarks.numbers_start scratch [--align] [--memory-pos] [--seconds 240]
    python -m benchmarks.numbers_start vit [--memory-pos]

Trains the default numbers model (28x196 lines of 1 to 8 digits, d=128, 6 + 3 blocks) on
20000 fixed numbers from the first 20000 training digits, batch 64, AdamW lr 1e-3, one thread,
for a fixed time, and prints every 50 steps the training loss, the token accuracy (digits and
end tokens) and the accuracy of the first digit. Variants: `vit` starts the encoder from
pretrained:digit (as the default profile does); `--align` moves every number to the left edge
first; `--memory-pos` adds unit-scale learnable positions to the decoder's memory (the
default model has them now; without the flag they are removed).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.common import guard
from digitformer.data import load_split
from digitformer.data.numbers import make_numbers
from digitformer.inference.checkpoint import load_model
from digitformer.models import Seq2Seq, Seq2SeqConfig
from digitformer.training.settings import resolve_settings
from digitformer.training.tasks import IGNORE, number_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start", choices=("scratch", "vit"))
    parser.add_argument("--align", action="store_true")
    parser.add_argument("--memory-pos", action="store_true")
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--data-dir", default=".data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = load_split(args.data_dir, "train")
    numbers = make_numbers(train.images[:20000], train.labels[:20000], 20000, 0, max_digits=8)
    x = torch.from_numpy(numbers.images).float().div(255).unsqueeze(1)
    if args.align:  # the first inked column to x = 2
        first = (x[:, 0].amax(1) > 0.2).float().argmax(1)
        for n in range(len(x)):
            x[n] = torch.roll(x[n], 2 - int(first[n]), dims=-1)
    targets = number_targets(
        torch.from_numpy(numbers.digits).long(), torch.from_numpy(numbers.lengths), 9
    )
    model_cfg = resolve_settings("numbers", "default", env_file=None).model
    model = Seq2Seq(Seq2SeqConfig.from_dict(model_cfg))
    if not args.memory_pos:
        model.mem_pos = None
    if args.start == "vit":
        vit, _ = load_model("pretrained:digit", "cpu")
        model.init_encoder_from(vit)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.05)
    start = time.time()
    for step in range(1, 1_000_000):
        i = torch.randint(0, len(x), (64,))
        logits = model(x[i], targets[i])
        loss = F.cross_entropy(logits.flatten(0, 1), targets[i].reshape(-1), ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0:
            scored = targets[i] != IGNORE
            right = (logits.argmax(-1) == targets[i]) & scored
            first = (logits[:, 0].argmax(-1) == targets[i][:, 0]).float().mean()
            print(
                f"step {step} {time.time() - start:.0f}s loss {loss.item():.3f} "
                f"accuracy {right.sum() / scored.sum():.3f} first digit {first:.3f}",
                flush=True,
            )
        if time.time() - start > args.seconds:
            break


if __name__ == "__main__":
    guard(main)
