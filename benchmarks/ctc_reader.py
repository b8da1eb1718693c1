"""A CTC reader of numbers, measured against the sequence model on the independent suite.

    python -m benchmarks.ctc_reader train --minutes 30 [--init pretrained:digit] [--out DIR]
    python -m benchmarks.ctc_reader evaluate [--out DIR] [--count 100] [--json FILE]

The design question of issue #31, section 2: instead of a decoder that writes a number's digits
one at a time, a head that reads the line's columns (connectionist temporal classification,
Graves et al. 2006): the numbers model's encoder (28x196 canvas, 4 x 28 patches of 7 pixels,
local attention two columns wide) gives each column of patches one vector (its four rows side
by side), and a linear head gives each column two steps of 11 classes (the ten digits and a
blank). A number is the steps' best classes, repeats merged and blanks dropped; no length is
guessed, so a wrong length comes only from a digit missed or doubled in the columns.

`train` fits it on the same generator, augmentation and MNIST training digits as
`digitformer train numbers` (its default profile; the encoder starts from `--init`, the digit
ViT as the sequence model's did), for `--minutes` of wall time on this machine, and saves it in
`--out`. `evaluate` reads the independent suite (`benchmarks.independent`) with it, alone and in
pieces (`digitformer.inference.pieces`, the CTC reader in the numbers model's place), beside
the bundled sequence model in the same run, and the own test lines (5000, the test seed).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from benchmarks.common import guard, machine, write_json
from digitformer.models import Seq2Seq, Seq2SeqConfig
from digitformer.utils.defaults import DATA_DIR

BLANK = 10  # CTC's blank: the class after the ten digits
END = 10  # the reading contract's end token (readers.END_TOKEN)
STEPS_PER_COLUMN = 2  # a digit 14-22 pixels wide spans 4-6 steps: room for a blank between


class CTCReader(nn.Module):
    """The numbers model's encoder and a CTC head over its columns. Keeps the reading contract
    (`read`: tokens (B, S) = the digits, then END; probabilities (B, S, 11)) and the numbers
    model's `cfg`, so predict_pictures and read_in_pieces take it as a numbers model."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Seq2Seq(cfg)
        rows, _ = cfg.patch_grid
        self.head = nn.Linear(rows * cfg.dim, STEPS_PER_COLUMN * (BLANK + 1))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] -> (B, steps, 11) logits, left to right."""
        tokens, _ = self.encoder.forward_features(images)  # (B, rows * cols, D), row-major
        rows, cols = self.cfg.patch_grid
        columns = tokens.unflatten(1, (rows, cols)).permute(0, 2, 1, 3).flatten(2)
        return self.head(columns).unflatten(2, (STEPS_PER_COLUMN, BLANK + 1)).flatten(1, 2)

    def loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """CTC loss against decoder targets (digits, END, then -100 pads)."""
        log_probs = F.log_softmax(self.logits(images).float(), -1)  # (B, T, C)
        lengths = (targets >= 0).sum(1) - 1  # the digits before END
        labels = targets.clamp(min=0)[:, : int(lengths.max())]
        steps = torch.full((len(images),), log_probs.shape[1], dtype=torch.long)
        return F.ctc_loss(
            log_probs.transpose(0, 1), labels, steps, lengths, blank=BLANK, zero_infinity=True
        )

    @torch.inference_mode()
    def read(self, images: torch.Tensor, **_) -> tuple[torch.Tensor, torch.Tensor]:
        probs = F.softmax(self.logits(images).float(), -1)  # (B, T, 11)
        best = probs.argmax(-1)
        tokens = torch.full((len(images), self.cfg.steps), END, dtype=torch.long)
        out = torch.zeros(len(images), self.cfg.steps, BLANK + 1)
        for b in range(len(images)):
            k, previous = 0, BLANK
            for t, c in enumerate(best[b].tolist()):
                if c != BLANK and c != previous and k < self.cfg.steps - 1:
                    tokens[b, k], out[b, k] = c, probs[b, t]
                    k += 1
                elif c != BLANK and c == previous and k and probs[b, t, c] > out[b, k - 1, c]:
                    out[b, k - 1] = probs[b, t]  # the digit's surest step
                previous = c
            out[b, k:, END] = 1.0
        return tokens, out


def _task(device: torch.device):
    from digitformer.data import load_split
    from digitformer.training.settings import resolve_settings
    from digitformer.training.tasks import NumbersTask

    settings = resolve_settings("numbers", "default", {"val_grids": 500}, env_file=None)
    train = load_split(settings.data_dir, "train")
    return settings, NumbersTask(settings, train, device)


def train(args) -> dict:
    from digitformer.inference.checkpoint import load_model

    torch.manual_seed(0)
    device = torch.device("cpu")
    settings, task = _task(device)
    model = CTCReader(Seq2SeqConfig.from_dict(settings.model))
    if args.init:
        model.encoder.init_encoder_from(load_model(args.init, device)[0])
    for name, p in model.named_parameters():  # the decoder half of Seq2Seq is not used
        p.requires_grad_(_kept(name))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    budget, t0, step, epoch, history = args.minutes * 60, time.perf_counter(), 0, 0, []
    while time.perf_counter() - t0 < budget:
        for images, targets in task.train_batches(epoch):
            done = (time.perf_counter() - t0) / budget  # the schedule runs on the clock
            lr = _lr(step, settings.warmup_steps, done, settings.lr, settings.min_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = model.loss(images, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            opt.step()
            step += 1
            if step % 50 == 0:
                elapsed = time.perf_counter() - t0
                history.append({"step": step, "s": round(elapsed), "loss": float(loss)})
                print(f"step {step} epoch {epoch} {elapsed:.0f} s loss {loss:.4f}", flush=True)
            if time.perf_counter() - t0 >= budget:
                break
        epoch += 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if _kept(k)}
    save_file(weights, str(out / "ctc.safetensors"))
    summary = {
        "minutes": args.minutes,
        "steps": step,
        "lines": step * settings.batch_size,
        "init": args.init,
        "config": settings.model,
        "history": history,
        "machine": machine(),
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    return summary


def _kept(name: str) -> bool:
    return name.startswith("head.") or name.split(".")[1] in ENCODER_PARTS


ENCODER_PARTS = ("patch", "enc_pos", "encoder", "enc_norm")


def _lr(step: int, warmup: int, done: float, top: float, low: float) -> float:
    """Linear warmup over `warmup` steps, then a cosine to `low` as the time budget runs out
    (`done`, its share spent)."""
    if step < warmup:
        return top * (step + 1) / warmup
    return low + (top - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def load(out: Path) -> CTCReader:
    settings_model = json.loads((out / "train.json").read_text())["config"]
    model = CTCReader(Seq2SeqConfig.from_dict(settings_model))
    missing, _ = model.load_state_dict(load_file(str(out / "ctc.safetensors")), strict=False)
    assert all(not _kept(k) for k in missing), missing
    return model.eval()


def evaluate(args) -> dict:
    import digitformer
    from benchmarks.independent.evaluate import NUMBER_SETS, InPieces, read_all, score, table
    from benchmarks.independent.numbers import Sources, build_suite

    torch.set_num_threads(1)
    ctc = digitformer.load("number", device="cpu", pieces=False)
    ctc.model = load(Path(args.out))
    number = digitformer.load("number", device="cpu", pieces=False)
    digit = digitformer.load("digit", device="cpu")
    suite = build_suite(Sources(), count=args.count, seed=args.seed)
    readers = {
        "number": number,
        "ctc": ctc,
        "pieces": InPieces(number, digit),
        "ctc-pieces": InPieces(ctc, digit),
    }
    results = []
    for name in NUMBER_SETS:
        for reader_name, reader in readers.items():
            t0 = time.perf_counter()
            reads = read_all(reader, [it.image for it in suite[name]])
            r = score(name, reader_name, suite[name], reads, time.perf_counter() - t0)
            print(f"  {name:<14} {reader_name:<10} {100 * r['accuracy']:.1f}%", flush=True)
            results.append(r)
    own = _own_test(ctc.model, number.model)
    print(table(results))
    print(json.dumps(own))
    return {
        "command": "python -m benchmarks.ctc_reader evaluate "
        + f"--count {args.count} --seed {args.seed}",
        "train": json.loads((Path(args.out) / "train.json").read_text()) | {"history": None},
        "own_test": own,
        "table": table(results),
        "results": results,
        "machine": machine(),
    }


def _own_test(ctc: CTCReader, number: nn.Module) -> dict:
    """Exact match on the own 5000 test lines (the test seed), both readers, greedy."""
    from digitformer.data import load_split
    from digitformer.inference.readers import read, token_strings

    settings, task = _task(torch.device("cpu"))
    test = load_split(settings.data_dir, "test")
    numbers = task.make(test, settings.test_grids, settings.test_seed)
    truth = numbers.strings()
    out = {}
    for name, model in (("number", number), ("ctc", ctc)):
        tokens, _ = read(model, numbers.images, 256)
        out[name] = float(np.mean([a == b for a, b in zip(token_strings(tokens), truth)]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["train", "evaluate"])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--init", default="pretrained:digit")
    parser.add_argument("--out", default=str(Path(DATA_DIR) / "ctc"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = train(args) if args.what == "train" else evaluate(args)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    guard(main)
