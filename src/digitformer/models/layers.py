"""The building blocks shared by every model: patch embedding, attention, feed-forward, block.

One `Attention` serves self- and cross-attention, with or without a causal mask and a
key/value cache; one `Block` serves the ViT, the encoder and the decoder (with `cross=True`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from digitformer.utils.tensors import map_tiles

# MNIST pixel statistics: inputs arrive in [0, 1] and are standardized inside the model,
# so callers (training, predict, export) never have to remember to do it.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
NORMS = ("post", "pre")


class PatchEmbed(nn.Module):
    """(B, 1, H, W) images in [0, 1] -> (B, (H/p)*(W/p), D) patch tokens, row-major.

    stem > 0 puts two 3x3 convolutions of `stem` channels before the patch convolution (a
    convolutional stem, Xiao et al. 2021, "Early convolutions help transformers see better"):
    the patches are cut from local features rather than raw pixels. With `tile`, the stem reads
    each tile x tile block on its own (zero-padded at its edges), so a digit in a 2x2 grid gets
    exactly the features it gets alone. stem 0 is the original's plain patch convolution.
    """

    def __init__(
        self, patch_size: int, dim: int, channels: int = 1, stem: int = 0, tile: int = 0
    ) -> None:
        super().__init__()
        self.tile = tile
        self.stem = nn.Sequential(
            *(
                [nn.Conv2d(channels, stem, 3, padding=1), nn.GELU()]
                + [nn.Conv2d(stem, stem, 3, padding=1), nn.GELU()]
                if stem
                else []
            )
        )
        self.proj = nn.Conv2d(stem or channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - MNIST_MEAN) / MNIST_STD
        if len(self.stem):
            x = map_tiles(self.stem, x, self.tile) if self.tile else self.stem(x)
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, T, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class KV:
    """One attention layer's cached keys and values, each (B, heads, T, head_dim)."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None


class KVCache:
    """What a decoder keeps while it generates, per block: the self-attention keys and values
    of the tokens so far (one more each step), and the cross-attention keys and values of the
    encoder memory (projected on the first step, then reused)."""

    def __init__(self, depth: int) -> None:
        self.self_attn = [KV() for _ in range(depth)]
        self.cross_attn = [KV() for _ in range(depth)]

    @property
    def length(self) -> int:
        """Tokens decoded so far."""
        k = self.self_attn[0].k
        return 0 if k is None else k.shape[2]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows `index` (B',) of every cached tensor: beam search's parents."""
        for kv in (*self.self_attn, *self.cross_attn):
            if kv.k is not None:
                kv.k, kv.v = kv.k[index], cast(torch.Tensor, kv.v)[index]  # set with k


class Attention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention`.

    Self-attention when `context` is None, cross-attention otherwise. With `need_weights=True`
    the same projections compute softmax(QK^T/sqrt(d)) explicitly and the weights
    (B, heads, Tq, Tk) are returned beside the output (used for attention maps, never training).
    A `cache` (KV) makes decoding incremental: self-attention appends this call's keys and
    values to it; cross-attention projects the context once and reuses it.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide the model width ({dim})")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        causal: bool = False,
        cache: KV | None = None,
        need_weights: bool = False,
        allowed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`allowed`: a boolean (Tq, Tk) mask of what each query may attend to (a local window);
        `causal` adds the decoder's own."""
        q = self._split(self.q(x))  # (B, h, Tq, d)
        cross = context is not None
        if cross and cache is not None and cache.k is not None:
            k, v = cache.k, cast(torch.Tensor, cache.v)  # projected on the first step
        else:
            k, v = (self._split(t) for t in self.kv(context if cross else x).chunk(2, -1))
            if cache is not None:
                if not cross and cache.k is not None:  # append this step's keys and values
                    k, v = (
                        torch.cat([cache.k, k], 2),
                        torch.cat([cast(torch.Tensor, cache.v), v], 2),
                    )
                cache.k, cache.v = k, v
        mask = _causal_mask(q.shape[2], k.shape[2], q.device) if causal and not cross else None
        if allowed is not None:
            mask = allowed if mask is None else mask & allowed
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, h, Tq, Tk)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1)
            out = weights @ v
        elif q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # PyTorch's CPU attention kernel is 5x slower backward in bf16 than in fp32 (its
            # products are the model's smallest); the projections around it stay bf16
            with torch.autocast("cpu", enabled=False):
                out = _sdpa(q.float(), k.float(), v.float(), mask, self.dropout, self.training)
            out = out.to(q.dtype)
        else:
            out = _sdpa(q, k, v, mask, self.dropout, self.training)
        out = out.transpose(1, 2).flatten(2)  # (B, Tq, D)
        return self.out(out), weights


def _sdpa(q, k, v, mask, dropout: float, training: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout if training else 0.0
    )


def _causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor | None:
    """Boolean (Tq, Tk) mask, True where attention is allowed; queries are the last Tq positions."""
    if tq == 1:
        return None  # one new token may see every cached position
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): while training, zero a residual branch for a random
    fraction p of the samples (the first dimension) and scale the rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.shape[0], *(1,) * (x.ndim - 1), device=x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Per-block stochastic-depth rates rising linearly from 0 to `rate` (as in DeiT)."""
    return [rate * i / max(1, depth - 1) for i in range(depth)]


class Block(nn.Module):
    """Self-attention, optional cross-attention (`cross=True`, for the decoder), feed-forward;
    each a residual sublayer.

    norm="post" is the original's layout, x = LN(x + f(x)); norm="pre" is x = x + f(LN(x)).
    `drop_path` is this block's stochastic-depth rate for each residual branch.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        ff_dim: int,
        dropout: float = 0.0,
        norm: str = "post",
        activation: str = "relu",
        cross: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.pre_norm, self.drop_path = norm == "pre", drop_path
        self.attn = Attention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads, dropout) if cross else None
        self.norm2 = nn.LayerNorm(dim) if cross else None
        self.ff = FeedForward(dim, ff_dim, dropout, activation)
        self.norm3 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        causal: bool = False,
        self_cache: KV | None = None,
        cross_cache: KV | None = None,
        need_weights: bool = False,
        allowed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, T, D) -> (B, T, D) and, when asked, {'self': (B, h, T, T), 'cross': ...}.
        `allowed` (T, T) limits the self-attention (a local window)."""
        weights = {}
        h, weights["self"] = self.attn(
            self._norm_in(self.norm1, x),
            causal=causal,
            cache=self_cache,
            need_weights=need_weights,
            allowed=allowed,
        )
        x = self._norm_out(self.norm1, x + self._drop(h))
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("a cross-attention block needs the encoder memory")
            norm2 = cast(nn.LayerNorm, self.norm2)  # there with the cross-attention
            h, weights["cross"] = self.cross_attn(
                self._norm_in(norm2, x), memory, cache=cross_cache, need_weights=need_weights
            )
            x = self._norm_out(norm2, x + self._drop(h))
        h = self.ff(self._norm_in(self.norm3, x))
        x = self._norm_out(self.norm3, x + self._drop(h))
        return x, {kind: w for kind, w in weights.items() if w is not None}

    def _norm_in(self, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return norm(x) if self.pre_norm else x  # pre-norm: normalize what the sublayer reads

    def _norm_out(self, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return x if self.pre_norm else norm(x)  # post-norm: normalize the residual sum

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        return drop_path(self.drop(h), self.drop_path, self.training)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal linear/embedding weights, zero biases: the usual ViT initialization.
    A convolutional stem gets He initialization instead, as a CNN does, so that its features
    keep their scale through the GELUs."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)
    for m in module.modules():
        if isinstance(m, PatchEmbed):
            for conv in m.stem:
                if isinstance(conv, nn.Conv2d):
                    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
