"""Training throughput of the default encoder-only model against a plain baseline; with
--efficiency, how much of the machine training uses; with --inference, reading speed.

    python -m benchmarks.throughput --steps 60
    python -m benchmarks.throughput --efficiency --inference --json benchmarks/results/speed.json
    python -m benchmarks.throughput --efficiency --ops --profiles default   (where the time goes)
    python -m benchmarks.throughput --efficiency --precision fp32,bf16   (bf16 autocast beside fp32)
    (--profiles default,fast: the profiles --efficiency and --inference measure, of both tasks)

ours:     attention through F.scaled_dot_product_attention; the whole training set in memory as a
          uint8 tensor, batches gathered by index and augmented as one tensor (task.train_batches).
baseline: the same model with attention written by hand (softmax(QK^T/sqrt(d))V), fed by a
          per-sample torch Dataset + DataLoader that converts and augments one image at a time.
Both run the same optimizer step, batch size and augmentation, in the same process.

--efficiency: for each task's profile, the training FLOPs per sample (counted by
torch.utils.flop_counter on a forward and backward pass through the explicit attention path,
which it can see; SDPA's fused kernel it cannot), the achieved GFLOP/s at the measured
training speed, and the machine's fp32 matrix-multiply peak measured in the same run (a loop
of 2048x2048 torch.mm), as a percentage; of every task that has the profile (encoder-only,
encoder-decoder, numbers). With --ops, also a step's time by phase (drawing the batch, forward,
backward, optimizer) and its ops' time by family (benchmarks/ops.py); with --compile, the same
steps through torch.compile, against eager timed again after it. With --precision fp32,bf16,
each profile's steps in fp32 and under bf16 autocast (the attention kernel in fp32: the
training's own `precision` setting), the share still that of the fp32 peak: on a CPU with AMX
bf16 matrix units, bf16 can pass it.
--inference: digits/s and grids/s at batch 1 (latency) and batch 512 (throughput) for PyTorch
eager, TorchScript and ONNX Runtime, on the same inputs; the answers must agree.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import guard, machine, write_json
from benchmarks.ops import print_breakdown, step_breakdown
from digitformer.data.augment import random_affine
from digitformer.models import build_model
from digitformer.models.layers import Attention
from digitformer.training.settings import PROFILE_DIR, resolve_settings
from digitformer.training.tasks import TASKS, build_task
from digitformer.training.train import make_optimizer
from digitformer.utils.errors import DigitformerError
from digitformer.utils.runtime import PRECISIONS, autocast


class HandAttention(Attention):
    """The baseline's attention: scores, softmax and weighted sum written out by hand."""

    def forward(self, x, context=None, *, causal=False, cache=None, need_weights=False, **kw):
        out, _ = super().forward(x, context, causal=causal, cache=cache, need_weights=True, **kw)
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


def time_steps(
    model, optimizer, task, batches, steps: int, warmup: int = 5, precision: str = "fp32"
) -> float:
    model.train()
    batches = iter(batches)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        images, labels = next(batches)
        with autocast(torch.device("cpu"), precision):
            loss, _, _ = task.loss(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * task.settings.batch_size / (time.perf_counter() - t0)


def hand_attention(model) -> None:
    """Swap every Attention for the explicit one (same weights): what FLOP counters can see."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is Attention:
                hand = HandAttention(child.heads * child.head_dim, child.heads)
                hand.load_state_dict(child.state_dict())
                setattr(module, name, hand)


def training_flops(task, model, batch) -> float:
    """FLOPs of one training step (forward and backward) per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    images, labels = batch
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _, _ = task.loss(model, images, labels)
        loss.backward()
    return counter.get_total_flops() / len(labels)


def matmul_peak(size: int = 2048, repeats: int = 20) -> float:
    """The machine's fp32 matrix-multiply speed, GFLOP/s (best of three timings)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e9)
    return best


def task_profiles(args) -> list[tuple[str, str]]:
    """(task, profile) for each of --profiles that the task has (every task has `default`)."""
    pairs = []
    for profile in args.profiles.split(","):
        for task_name in ("encoder-only", "encoder-decoder", "numbers"):
            if (PROFILE_DIR / f"{task_name}-{profile}.yaml").is_file():
                pairs.append((task_name, profile))
    if not pairs:
        raise DigitformerError(f"--profiles {args.profiles}: no task has such a profile")
    return pairs


def efficiency(args) -> list[dict]:
    peak = matmul_peak()
    rows = []
    for task_name, profile in task_profiles(args):
        settings = resolve_settings(task_name, profile, {"data_dir": args.data_dir}, env_file=None)
        task = build_task(settings, torch.device("cpu"))
        batches = itertools.chain.from_iterable(task.train_batches(e) for e in itertools.count())
        torch.manual_seed(0)
        model = build_model(task.model_type, settings.model)
        optimizer = make_optimizer(model, settings, fused=False)
        counted = build_model(task.model_type, settings.model)
        hand_attention(counted)
        flops = training_flops(task, counted, next(task.train_batches(0)))
        for precision in args.precisions:  # the same model and optimizer, in turn
            rate = time_steps(model, optimizer, task, batches, args.steps, precision=precision)
            rows.append(
                {
                    "task": task_name,
                    "profile": profile,
                    "precision": precision,
                    "training_flops_per_sample": flops,
                    "samples_per_second": rate,
                    "gflops_per_second": flops * rate / 1e9,
                    "matmul_peak_gflops": peak,
                    "share_of_peak": flops * rate / 1e9 / peak,
                }
            )
        if args.compile:  # the same steps through torch.compile (Inductor), its warm-up apart
            compiled = torch.compile(model, dynamic=False)
            time_steps(compiled, optimizer, task, batches, 3, warmup=0)
            rows[-1]["compiled_samples_per_second"] = time_steps(
                compiled, optimizer, task, batches, args.steps
            )
            rows[-1]["eager_samples_per_second_again"] = time_steps(
                model, optimizer, task, batches, args.steps
            )
        for row in rows[-len(args.precisions) :] if args.ops else []:
            row["breakdown"] = step_breakdown(
                task, model, optimizer, batches, args.ops_steps, precision=row["precision"]
            )
            print_breakdown(f"{task_name} `{profile}` {row['precision']}", row["breakdown"])
    for r in rows:
        if "compiled_samples_per_second" in r:
            print(
                f"{r['task']} `{r['profile']}`: eager {r['samples_per_second']:,.0f} then "
                f"{r['eager_samples_per_second_again']:,.0f} samples/s, torch.compile "
                f"{r['compiled_samples_per_second']:,.0f}"
            )
    print(f"fp32 matmul peak (2048x2048 torch.mm): {peak:.1f} GFLOP/s")
    print("| model | precision | training MFLOP/sample | samples/s | GFLOP/s | of the fp32 peak |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} `{r['profile']}` | {r['precision']} | "
            f"{r['training_flops_per_sample'] / 1e6:,.1f} | "
            f"{r['samples_per_second']:,.0f} | {r['gflops_per_second']:.1f} | "
            f"{100 * r['share_of_peak']:.0f}% |"
        )
    return rows


def inference(args) -> list[dict]:
    """Eager, TorchScript and ONNX Runtime on the same inputs, at batch 1 and 512."""
    import tempfile

    import numpy as np

    from digitformer.inference.export import export_model
    from digitformer.inference.readers import input_shape

    rows = []
    folder = Path(tempfile.mkdtemp(prefix="digitformer-speed-"))
    for task_name, profile in task_profiles(args):
        settings = resolve_settings(task_name, profile, {}, env_file=None)
        torch.manual_seed(0)
        model = build_model(TASKS[task_name].kind.model_type, settings.model).eval()
        shape = input_shape(model)
        readers = {"PyTorch eager": lambda x, m=model: m.read(x)[0]}
        script = export_model(model, "torchscript", folder / f"{task_name}.pt")
        traced = torch.jit.load(str(script))
        readers["TorchScript"] = lambda x, m=traced: first(m(x))
        try:
            import onnxruntime

            onnx_file = export_model(model, "onnx", folder / f"{task_name}.onnx")
            session = onnxruntime.InferenceSession(
                str(onnx_file), providers=["CPUExecutionProvider"]
            )
            readers["ONNX Runtime"] = lambda x, s=session: torch.from_numpy(
                s.run(None, {"images": x.numpy()})[0]
            )
        except ImportError:
            print("onnxruntime is not installed: pip install 'digitformer[export]'")
        for batch in (1, 512):
            images = torch.rand(batch, 1, *shape)
            answers = {}
            for name, read in readers.items():
                with torch.inference_mode():
                    answers[name] = read(images)
                    repeats = max(3, 2000 // batch)
                    t0 = time.perf_counter()
                    for _ in range(repeats):
                        read(images)
                    rate = repeats * batch / (time.perf_counter() - t0)
                rows.append(
                    {
                        "task": task_name,
                        "profile": profile,
                        "runtime": name,
                        "batch": batch,
                        "per_second": rate,
                    }
                )
            reference = answers["PyTorch eager"]
            for name, answer in answers.items():
                same = np.array_equal(answer.numpy(), reference.numpy())
                assert same, f"{name} reads other digits than PyTorch eager"
    unit = {"encoder-only": "digits/s", "encoder-decoder": "grids/s", "numbers": "numbers/s"}
    print("| model | runtime | batch 1 | batch 512 |")
    print("|---|---|---|---|")
    for task_name, profile in task_profiles(args):
        mine = {
            (r["runtime"], r["batch"]): r["per_second"]
            for r in rows
            if (r["task"], r["profile"]) == (task_name, profile)
        }
        for name in dict.fromkeys(runtime for runtime, _ in mine):
            cells = [
                f"{mine[name, b]:,.0f} {unit[task_name]} "
                f"({mine[name, b] / mine['PyTorch eager', b]:.2f}x)"
                for b in (1, 512)
            ]
            print(f"| {task_name} `{profile}` | {name} | {cells[0]} | {cells[1]} |")
    return rows


def first(output):
    """The tokens read (B, S): an exported graph answers (tokens, probabilities)."""
    return output[0] if isinstance(output, tuple) else output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", help="the profile the speed-up times")
    parser.add_argument(
        "--profiles", default="default,fast", help="those --efficiency and --inference measure"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--efficiency", action="store_true", help="FLOPs and share of the peak")
    parser.add_argument("--inference", action="store_true", help="eager, TorchScript, ONNX")
    parser.add_argument(
        "--ops",
        action="store_true",
        help="with --efficiency: a step's time by phase and by op family (torch.profiler)",
    )
    parser.add_argument("--ops-steps", type=int, default=20, help="steps --ops profiles")
    parser.add_argument(
        "--compile", action="store_true", help="with --efficiency: also through torch.compile"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        help="with --efficiency: fp32, bf16 (autocast; the attention kernel in fp32) or both, "
        "comma-separated, each timed on the same model in turn",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.precisions = args.precision.split(",")
    if not set(args.precisions) <= set(PRECISIONS):
        parser.error(f"--precision: each of {', '.join(PRECISIONS)}, got {args.precision!r}")
    result = {"machine": machine()}
    if args.efficiency:
        result["efficiency"] = efficiency(args)
    if args.inference:
        result["inference"] = inference(args)
    if args.efficiency or args.inference:
        write_json(args.json, result)
        return
    settings = resolve_settings(
        "encoder-only", args.profile, {"data_dir": args.data_dir}, env_file=None
    )
    task = build_task(settings, torch.device("cpu"))
    rows = []
    for name in ("baseline", "ours"):
        torch.manual_seed(0)
        model = build_model("encoder-only", settings.model)
        if name == "baseline":
            for block in model.encoder:
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
    guard(main)
