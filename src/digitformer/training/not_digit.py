"""Teach a digit ViT what is not a digit: an eleventh class beside the ten, fine-tuned on MNIST
training digits and on pictures of marks that are no digit (`digitformer.data.marks`, prepared
as any picture is), both augmented as the reader was trained.

    other = teach(model, digits, labels, marks, settings, steps=860)   # (11, D + 1)

Outlier exposure (Hendrycks et al., ICLR 2019): a reader trained only on digits has features
made to tell digits apart, and any mark lands among them. The model keeps its ten-way head
(what it reads and the probabilities among the ten are computed as before); the head it was
taught with, the ten rows and the eleventh, is returned for its judge
(`digitformer.inference.novelty`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digitformer.data.augment import as_trained
from digitformer.training.optim import lr_at, make_optimizer
from digitformer.utils.tensors import to_float


def teach(
    model: nn.Module,
    digits: np.ndarray,
    labels: np.ndarray,
    marks: np.ndarray,
    settings: dict,
    steps: int = 860,
    lr: float = 2e-4,
    batch_size: int = 128,
    marks_per_batch: int = 16,
    seed: int = 0,
    blocks: int | None = None,
    warmup: int = 0,
    min_lr: float = 0.0,
    log: Callable[[str], None] = lambda _: None,
) -> torch.Tensor:
    """Fine-tune `model` (a ViT) in place for `steps` batches of `digits` (uint8 (N, 28, 28))
    with their `labels`, and of `marks` (class 10), the rate warmed up to `lr` for `warmup`
    steps and then decayed to `min_lr` as a training run's is (`optim.lr_at`); augmented as
    `settings` (the model's training settings) say (`data.augment.as_trained`); only the last
    `blocks` encoder blocks, the final norm and the head learn (None: all of it). Returns the
    taught head (11, D + 1), bias last."""
    gen = torch.Generator().manual_seed(seed)
    other = nn.Linear(model.head.in_features, 1)
    nn.init.zeros_(other.weight)
    nn.init.zeros_(other.bias)
    if blocks is not None:
        model.requires_grad_(False)
        for part in [*model.encoder[len(model.encoder) - blocks :], model.norm, model.head]:
            part.requires_grad_(True)
    params = [p for p in [*model.parameters(), *other.parameters()] if p.requires_grad]
    # as a training run's AdamW: no decay on biases, norms and positions (`optim.make_optimizer`)
    recipe = SimpleNamespace(
        lr=lr, weight_decay=settings.get("weight_decay", 0.05), optimizer="adamw"
    )
    opt = make_optimizer(model, recipe, fused=False)
    opt.add_param_group({"params": [other.weight], "weight_decay": recipe.weight_decay})
    opt.add_param_group({"params": [other.bias], "weight_decay": 0.0})
    images, targets = torch.from_numpy(digits), torch.from_numpy(labels.astype(np.int64))
    bank = torch.from_numpy(marks)
    model.train()
    schedule = SimpleNamespace(lr=lr, min_lr=min_lr, warmup_steps=warmup)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, schedule)
        pick = torch.randint(len(images), (batch_size,), generator=gen)
        drawn = torch.randint(len(bank), (marks_per_batch,), generator=gen)
        x = as_trained(to_float(torch.cat([images[pick], bank[drawn]])), gen, settings)
        y = torch.cat([targets[pick], torch.full((marks_per_batch,), 10)])
        cls = model.forward_features(x)[0][:, 0]
        loss = F.cross_entropy(torch.cat([model.head(cls), other(cls)], 1), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}: loss {loss.item():.4f}")
    model.eval()
    weight = torch.cat([model.head.weight, other.weight]).detach()
    bias = torch.cat([model.head.bias, other.bias]).detach()
    return torch.cat([weight, bias[:, None]], 1)


def as_read(pictures: list[np.ndarray]) -> np.ndarray:
    """Pictures -> uint8 (N, 28, 28) as the digit reader meets them (`inference.prepare`);
    those the preparation finds nothing in are left out (they are refused before any judge)."""
    from digitformer.inference.prepare import NoInk, prepare
    from digitformer.utils.runtime import each

    def one(picture: np.ndarray) -> np.ndarray | None:
        try:
            return prepare(picture, grid=False)
        except NoInk:
            return None

    found = [x for x in each(one, pictures) if x is not None]
    return np.stack(found) if found else np.zeros((0, 28, 28), np.uint8)
