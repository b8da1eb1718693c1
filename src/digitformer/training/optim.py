"""The optimizers the training loop steps: AdamW (no decay on biases, norms, positions and
embeddings), Muon for the weight matrices with AdamW for the rest (stepped, scheduled and saved
as one), warm-up + cosine learning rates, and a moving average of the weights.

optimizer = make_optimizer(model, settings, fused=False)
averaged = weight_average(model, settings.ema)   # None when settings.ema is 0
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from digitformer.training.settings import TrainSettings
from digitformer.utils.errors import DigitformerError


def lr_at(step: int, total: int, s: TrainSettings) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at the last step."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, total - s.warmup_steps)
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    model: nn.Module, s: TrainSettings, fused: bool
) -> torch.optim.Optimizer | Optimizers:
    """AdamW; no weight decay on biases and norms (1-D) or what the model names in
    `no_weight_decay()` (positions, embeddings). With `optimizer: muon`, the weight matrices of
    the linear layers but the output head get Muon (orthogonalized momentum updates, its rate
    scaled to match AdamW's update size, so one `lr` serves both) and the rest AdamW."""
    named = model.no_weight_decay()
    matrices = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name != "head"
    }
    muon, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if s.optimizer == "muon" and name in matrices:
            muon.append(p)
        else:
            (no_decay if p.ndim < 2 or name in named else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    adamw = torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.999), fused=fused or None)
    if not muon:
        return adamw
    if not hasattr(torch.optim, "Muon"):
        raise DigitformerError(f"optimizer: muon needs torch >= 2.9 (this is {torch.__version__})")
    orthogonal = Muon(muon, lr=s.lr, weight_decay=s.weight_decay, adjust_lr_fn="match_rms_adamw")
    return Optimizers(orthogonal, adamw)


class Muon(getattr(torch.optim, "Muon", torch.optim.Optimizer)):  # type: ignore[misc]
    """torch.optim.Muon, its Newton-Schulz iterations in float32 on the CPU. PyTorch's runs
    them in bfloat16 whatever the device: on a CPU without bfloat16 matrix units (this
    project's AMD EPYC: a 128x512 product 40x slower than in float32) that made the optimizer
    three quarters of a `fast` step (docs/training.md, "Muon's bfloat16 on a CPU"). On a GPU,
    bfloat16 as PyTorch does. The same update rule, state and saved form as PyTorch's."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            buffers: list[torch.Tensor] = []
            self._init_group(group, params, grads, buffers)
            lr, momentum = group["lr"], group["momentum"]
            for p, grad, buf in zip(params, grads, buffers):
                buf.lerp_(grad, 1 - momentum)
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalized(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"]
                )
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr * _rate_scale(group["adjust_lr_fn"], p.shape))
        return loss


def _rate_scale(how: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's adjust_lr_fn: "match_rms_adamw" makes an update as large as AdamW's
    (0.2 sqrt(max(A, B))); "original" (None) as Keller Jordan's, sqrt(max(1, A / B))."""
    rows, cols = shape[:2]
    if how == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols)) if how in (None, "original") else 1.0


def orthogonalized(
    matrix: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration towards the orthogonal factor of `matrix`, as
    torch.optim's, in float32 on the CPU and bfloat16 elsewhere."""
    a, b, c = coefficients
    x = matrix.to(torch.float32 if matrix.device.type == "cpu" else torch.bfloat16)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Optimizers:
    """Several optimizers over disjoint parameters, stepped, scheduled and saved as one: their
    param_groups one list, their state_dict one dict indexed as if one optimizer held them all."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers
        self.param_groups = [g for o in optimizers for g in o.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for optimizer in self.optimizers:
            part = optimizer.state_dict()
            state |= {offset + i: v for i, v in part["state"].items()}
            groups += [
                {**g, "params": [offset + i for i in g["params"]]} for g in part["param_groups"]
            ]
            offset += sum(len(g["params"]) for g in part["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups, offset = list(state_dict["param_groups"]), 0
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{len(groups)} parameter groups saved, {len(self.param_groups)} here")
        for optimizer in self.optimizers:
            mine, groups = (
                groups[: len(optimizer.param_groups)],
                groups[len(optimizer.param_groups) :],
            )
            count = sum(len(g["params"]) for g in mine)
            optimizer.load_state_dict(
                {
                    "state": {
                        i - offset: v
                        for i, v in state_dict["state"].items()
                        if offset <= i < offset + count
                    },
                    "param_groups": [
                        {**g, "params": [i - offset for i in g["params"]]} for g in mine
                    ],
                }
            )
            offset += count
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights, updated after every step (None when decay
    is 0). Its decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so that the
    first, random weights are soon forgotten."""
    if not decay:
        return None

    def update(average: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        rate = min(decay, (1 + int(n)) / (10 + int(n)))
        torch._foreach_lerp_(average, current, 1 - rate)

    return AveragedModel(model, multi_avg_fn=update)
