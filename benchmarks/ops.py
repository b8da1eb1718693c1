"""Where a training step's time goes: its phases timed (drawing the batch, forward, backward,
the optimizer) and the model's own work by op family (torch.profiler's self CPU time of each
op, summed by family; what no op accounts for is Python and the dispatcher between ops).

    from benchmarks.ops import step_breakdown, print_breakdown
    print_breakdown(step_breakdown(task, model, optimizer, batches, steps=20))

Used by `python -m benchmarks.throughput --efficiency --ops`.
"""

from __future__ import annotations

import re
import time

import torch
from torch.profiler import ProfilerActivity, profile

from digitformer.utils.runtime import autocast

# Op names (aten's, less "aten::") -> family; the first pattern that matches names it.
FAMILIES = (
    ("matmul", r"^(mm|addmm|bmm|baddbmm|matmul|linear|_mkldnn|mkldnn_)"),
    ("attention kernel", r"scaled_dot_product|flash_attention|efficient_attention"),
    ("softmax", r"softmax"),
    ("layer norm", r"layer_norm"),
    ("GELU", r"gelu"),
    ("optimizer", r"^_foreach|^_fused_adam|adam"),
    (
        "copies, views, new tensors",
        r"copy|clone|contiguous|cat$|stack|^to$|_to_copy|empty|zeros|"
        r"ones|fill|full|view|reshape|transpose|permute|expand|squeeze|unsqueeze|select|slice|"
        r"^t$|narrow|split|chunk|unbind|index|gather|scatter|as_strided|unfold|flatten|repeat|pad",
    ),
    (
        "elementwise",
        r"add|mul|sub|div|neg|where|masked|sum|mean|pow|sqrt|rsqrt|exp|log|clamp|"
        r"max|min|argmax|eq|ne|lt|gt|abs|sign|dropout|bernoulli|rand|threshold|relu|sigmoid|tanh",
    ),
)


def family(op: str) -> str:
    name = op.removeprefix("aten::")
    for label, pattern in FAMILIES:
        if re.search(pattern, name):
            return label
    return "other ops"


def run_steps(task, model, optimizer, batches, precision: str = "fp32") -> float:
    """A training step on each (images, labels) of `batches`; the seconds they took."""
    t0 = time.perf_counter()
    for images, labels in batches:
        with autocast(torch.device("cpu"), precision):
            loss, _, _ = task.loss(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def step_breakdown(
    task, model, optimizer, batches, steps: int = 20, warmup: int = 3, precision: str = "fp32"
) -> dict:
    """Seconds a step spends drawing its batch and in forward, backward and the optimizer
    (timed apart, `steps` steps after `warmup`), and the shares of the model's step
    (forward + backward + optimizer, profiled again without the batches) by op family."""
    model.train()
    phases = dict.fromkeys(("batch", "forward", "backward", "optimizer"), 0.0)
    drawn = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        images, labels = next(batches)
        t1 = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            loss, _, _ = task.loss(model, images, labels)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        if i >= warmup:
            for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[name] += dt / steps
            drawn.append((images, labels))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = run_steps(task, model, optimizer, drawn, precision)
    by_family: dict[str, float] = {}
    by_op: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):  # the ops themselves; wrappers have no self time
            label = family(event.key)
            by_family[label] = by_family.get(label, 0.0) + event.self_cpu_time_total / 1e6
            by_op[event.key] = event.self_cpu_time_total / 1e6
    by_family["Python, dispatch (no op)"] = max(0.0, wall - sum(by_family.values()))
    total = sum(by_family.values())
    return {
        "phase_s": phases,
        "step_s": sum(phases.values()),
        "op_share": {k: v / total for k, v in sorted(by_family.items(), key=lambda kv: -kv[1])},
        "top_ops": {k: v / total for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:10]},
        "profiled_steps": len(drawn),
    }


def print_breakdown(name: str, b: dict) -> None:
    step = b["step_s"]
    phases = ", ".join(
        f"{k} {1000 * v:.1f} ms ({100 * v / step:.0f}%)" for k, v in b["phase_s"].items()
    )
    print(f"{name}: step {1000 * step:.1f} ms = {phases}")
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in b["op_share"].items() if v >= 0.005)
    print(f"  forward+backward+optimizer by op family (self CPU time): {shares}")
    top = ", ".join(f"{k.removeprefix('aten::')} {100 * v:.0f}%" for k, v in b["top_ops"].items())
    print(f"  its ten largest ops: {top}")
