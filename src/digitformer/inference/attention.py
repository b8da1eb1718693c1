"""Attention maps from the models' own attention modules (their `need_weights` path), with no
plotting library: what `viz` draws and the server sends to its page.

The encoder-only model: where the CLS token looks, and the mean attention each patch receives.
The encoder-decoder: the attention each patch receives in the encoder, and for each generated
digit the decoder's cross-attention over the memory (which quadrant, or which patches, it reads).
Maps are averaged over heads unless per-head maps are asked for; `rollout` multiplies the
head-averaged maps of every layer, with the residual path as identity (Abnar & Zuidema, 2020).
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from digitformer.models import Seq2Seq, ViT
from digitformer.models.seq2seq import from_quadrants
from digitformer.utils.errors import DigitformerError
from digitformer.utils.tensors import to_float


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
    return cast(torch.Tensor, joint)  # weights: one or more layers'


@torch.inference_mode()
def vit_maps(model: ViT, images: torch.Tensor, layer: int = 1) -> dict[str, np.ndarray]:
    """For uint8 images (B, 28, 28): per-head maps (B, h, side, side) of the CLS token's
    attention ("cls") and the mean attention received per patch ("received") in block `layer`,
    and the CLS row of the rollout over all blocks ("rollout", (B, side, side))."""
    check_layer(layer, len(model.encoder))
    _, weights = model.forward_features(to_float(images), need_weights=True)
    w = weights[layer - 1]  # (B, h, 1+T, 1+T)
    side = model.cfg.image_size // model.cfg.patch_size
    grid = lambda m: m.reshape(*m.shape[:-1], side, side).float().numpy()
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
    side = cfg.patch_side
    inputs = to_float(images)
    _, enc = model.forward_features(inputs, need_weights=True)
    if cfg.attention == "quadrant":  # (B, 4, h, T/4, T/4): back to one S x S map per head
        per_patch = lambda m: from_quadrants(m.transpose(-1, -2), side).transpose(1, 2)
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


def digit_looked(model: ViT, images: torch.Tensor) -> np.ndarray:
    """(B, 1, side, side): the CLS token's attention rolled out over every block, which differs
    from digit to digit (the first block's alone is much the same band for every digit)."""
    return vit_maps(model, images)["rollout"][:, None]


def grid_looked(model: Seq2Seq, images: torch.Tensor) -> np.ndarray:
    """(B, 4, m, m): the first decoder block's cross-attention for each digit of a grid."""
    return seq2seq_maps(model, images)["cross"].mean(1)


def number_looked(model: Seq2Seq, images: torch.Tensor) -> np.ndarray:
    """(B, S, rows, cols): the last decoder block's cross-attention for each step, the one
    that moves along the number."""
    return number_maps(model, images, len(model.decoder))["cross"].mean(1)
