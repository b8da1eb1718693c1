"""Attention maps from the models' own attention modules (their `need_weights` path).

The encoder-only model: where the CLS token looks, and the mean attention each patch receives.
The encoder-decoder: the attention each patch receives in the encoder, and for each generated
digit the decoder's cross-attention over the memory (which quadrant, or which patches, it reads).
Maps are averaged over heads unless per-head maps are asked for; `rollout` multiplies the
head-averaged maps of every layer, with the residual path as identity (Abnar & Zuidema, 2020).
"""

from __future__ import annotations

import numpy as np
import torch

from digitformer.errors import DigitformerError
from digitformer.models import Seq2Seq, ViT
from digitformer.models.seq2seq import from_quadrants
from digitformer.tensors import to_float
from digitformer.viz.plots import PANEL, figure, overlay, save

QUADRANT_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right")


def check_layer(layer: int, depth: int) -> None:
    if not 1 <= layer <= depth:
        raise DigitformerError(
            f"--attention-layer must be between 1 and {depth} for this model, got {layer}"
        )


def rollout(weights: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout of per-layer weights (..., h, T, T) -> (..., T, T)."""
    joint = None
    for w in weights:
        a = w.mean(-3)  # average the heads
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype)  # the residual path
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    return joint


@torch.inference_mode()
def vit_maps(model: ViT, images: torch.Tensor, layer: int = 1) -> dict[str, np.ndarray]:
    """For uint8 images (B, 28, 28): per-head maps (B, h, side, side) of the CLS token's
    attention ("cls") and the mean attention received per patch ("received") in block `layer`,
    and the CLS row of the rollout over all blocks ("rollout", (B, side, side))."""
    check_layer(layer, len(model.blocks))
    _, weights = model.forward_features(to_float(images), need_weights=True)
    w = weights[layer - 1]  # (B, h, 1+T, 1+T)
    side = model.cfg.image_size // model.cfg.patch_size
    grid = lambda m: m.reshape(*m.shape[:-1], side, side).float().numpy()  # noqa: E731
    return {
        "cls": grid(w[:, :, 0, 1:]),
        "received": grid(w[:, :, 1:, 1:].mean(2)),
        "rollout": grid(rollout(weights)[:, 0, 1:]),
    }


@torch.inference_mode()
def seq2seq_maps(model: Seq2Seq, images: torch.Tensor, layer: int = 1) -> dict[str, np.ndarray]:
    """For uint8 grids (B, 56, 56): the mean attention each patch receives in encoder block
    `layer` ("received", (B, h, S, S) for S = 56 / patch_size patches a side; inside its own
    quadrant with attention="quadrant"), its rollout over all encoder blocks ("rollout",
    (B, S, S)), the generated digits ("digits", (B, 4)) and decoder block `layer`'s
    cross-attention for each digit ("cross", (B, h, 4, 2, 2) over the quadrant memory or
    (B, h, 4, S, S) over all patches)."""
    cfg = model.cfg
    check_layer(layer, len(model.encoder))
    side = cfg.grid_side
    inputs = to_float(images)
    _, enc = model.forward_features(inputs, need_weights=True)
    if cfg.attention == "quadrant":  # (B, 4, h, T/4, T/4): back to one S x S map per head
        per_patch = lambda m: from_quadrants(m.transpose(-1, -2), side).transpose(1, 2)  # noqa: E731
        received = per_patch(enc[layer - 1].mean(-2))  # (B, h, T)
        rolled = per_patch(rollout(enc).mean(-2).unsqueeze(-2))[:, 0]  # (B, T)
    else:
        received = enc[layer - 1].mean(-2)
        rolled = rollout(enc).mean(-2)
    digits, _ = model.generate(inputs)
    start = torch.full_like(digits[:, :1], cfg.start_token)
    # teacher-forcing the generated digits gives the weights of each generation step exactly
    _, dec = model.decode(
        torch.cat([start, digits[:, :-1]], 1), model.encode(inputs), need_weights=True
    )
    cross = dec[min(layer, len(model.decoder)) - 1]["cross"]  # (B, h, 4, M)
    mem_side = 2 if cross.shape[-1] == 4 else side
    return {
        "received": received.reshape(*received.shape[:2], side, side).float().numpy(),
        "rollout": rolled.reshape(-1, side, side).float().numpy(),
        "digits": digits.numpy(),
        "cross": cross.reshape(*cross.shape[:3], mem_side, mem_side).float().numpy(),
    }


@torch.inference_mode()
def number_maps(model: Seq2Seq, images: torch.Tensor, layer: int = 1) -> dict[str, np.ndarray]:
    """For uint8 numbers (B, H, W): the tokens read ("tokens", (B, S): digits, then the end
    token) and decoder block `layer`'s cross-attention of each step over the patches
    ("cross", (B, h, S, rows, cols)): where the model looked for each digit it wrote."""
    inputs = to_float(images)
    tokens, _ = model.generate(inputs)
    start = torch.full_like(tokens[:, :1], model.cfg.start_token)
    # teacher-forcing the generated tokens gives the weights of each generation step exactly
    _, dec = model.decode(
        torch.cat([start, tokens[:, :-1]], 1), model.encode(inputs), need_weights=True
    )
    cross = dec[min(layer, len(model.decoder)) - 1]["cross"]  # (B, h, S, T)
    rows, cols = model.cfg.patch_grid
    return {
        "tokens": tokens.numpy(),
        "cross": cross.reshape(*cross.shape[:3], rows, cols).float().numpy(),
    }


def plot_numbers(images: np.ndarray, expected: list[str], maps, layer: int, path) -> None:
    """One column per number: the number, then the decoder's cross-attention for each digit
    it read, top to bottom: the reading moving along the number."""
    from digitformer.metrics import number_strings

    read = number_strings(maps["tokens"])
    steps = max(1, max(len(r) for r in read))
    n = len(images)
    h, w = images.shape[1:]
    panel_w = min(6.0, PANEL * w / h / 2)
    fig = figure(n * panel_w, (steps + 1) * (panel_w * h / w + 0.35))
    axes = fig.subplots(steps + 1, n, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.5 / (steps + 1), hspace=0.5)
    cross = maps["cross"].mean(1)  # (B, S, rows, cols)
    for i in range(n):
        overlay(axes[0, i], images[i], None, f"true {expected[i]}, read {read[i]}")
        for k in range(steps):
            if k < len(read[i]):
                overlay(axes[k + 1, i], images[i], cross[i, k], f"digit {k + 1}: '{read[i][k]}'")
            else:
                axes[k + 1, i].axis("off")
    fig.suptitle(
        f"numbers: decoder block {layer} cross-attention for each digit read, mean of heads",
        fontsize=10,
    )
    save(fig, path)


def plot_vit(images: np.ndarray, labels: np.ndarray, maps, layer: int, with_rollout: bool, path):
    rows = [
        ("CLS attention", maps["cls"].mean(1)),
        ("attention received", maps["received"].mean(1)),
    ]
    if with_rollout:
        rows.append(("rollout (CLS)", maps["rollout"]))
    fig = _grid(len(rows) + 1, len(images))
    axes = fig.axes
    n = len(images)
    for i in range(n):
        overlay(axes[i], images[i], None, f"digit {labels[i]}")
        for r, (name, heat) in enumerate(rows, 1):
            overlay(axes[r * n + i], images[i], heat[i], name)
    fig.suptitle(f"encoder-only: block {layer} attention, mean of heads", fontsize=10)
    save(fig, path)


def plot_seq2seq(
    images: np.ndarray, labels: np.ndarray, maps, layer: int, with_rollout: bool, path
):
    n = len(images)
    extra = 1 if with_rollout else 0
    fig = _grid(2 + extra + 4, n)
    axes = fig.axes
    cross = maps["cross"].mean(1)  # (B, 4, m, m)
    for i in range(n):
        truth = "".join(map(str, labels[i]))
        read = "".join(map(str, maps["digits"][i]))
        overlay(axes[i], images[i], None, f"true {truth}, read {read}")
        overlay(axes[n + i], images[i], maps["received"][i].mean(0), "encoder: received")
        if with_rollout:
            overlay(axes[2 * n + i], images[i], maps["rollout"][i], "encoder rollout")
        for k in range(4):
            quadrant = QUADRANT_NAMES[int(_quadrant_of(cross[i, k]))]
            overlay(
                axes[(2 + extra + k) * n + i],
                images[i],
                cross[i, k],
                f"digit {k + 1} '{read[k]}': {quadrant}",
            )
    fig.suptitle(
        f"encoder-decoder: encoder block {layer} attention, decoder cross-attention per "
        "generated digit; mean of heads",
        fontsize=10,
    )
    save(fig, path)


def _quadrant_of(cross_map: np.ndarray) -> int:
    """The quadrant a cross-attention map (m, m) puts most weight on."""
    half = cross_map.shape[0] // 2
    sums = [
        cross_map[r * half : (r + 1) * half, c * half : (c + 1) * half].sum()
        for r in (0, 1)
        for c in (0, 1)
    ]
    return int(np.argmax(sums))


def plot_heads(images: np.ndarray, heads: np.ndarray, title: str, path) -> None:
    """One row per head: per-head maps (B, h, s, s) over the images."""
    n, h = heads.shape[:2]
    fig = _grid(h, n)
    for head in range(h):
        for i in range(n):
            overlay(fig.axes[head * n + i], images[i], heads[i, head], f"head {head + 1}")
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def _grid(rows: int, cols: int):
    fig = figure(cols * PANEL, rows * PANEL)
    fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.35 / rows, hspace=0.3)
    return fig
