"""Encoder-decoder transformer that reads the four digits of a 56x56 2x2 grid.

model = Seq2Seq(Seq2SeqConfig())
logits = model(images, targets)          # teacher forcing: (B, 4, 10)
digits, probs = model.generate(images)   # greedy with a key/value cache: (B, 4), (B, 4, 10)
digits, probs = model.generate(images, beam_size=3)   # beam search

Shapes below: T = (56 / patch_size)**2 encoder tokens, T / 4 per quadrant (64 and 16 for
patch 7, 196 and 49 for patch 4); M memory tokens for the decoder (4 quadrants, or T).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from digitformer.models.config import NUM_CLASSES, Seq2SeqConfig
from digitformer.models.layers import Block, KVCache, PatchEmbed, drop_path_rates, init_weights


def to_quadrants(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(B, side*side, D) row-major patch tokens -> (B, 4, side*side/4, D), grouped by quadrant
    in reading order (top-left, top-right, bottom-left, bottom-right), row-major inside each."""
    b, _, d = tokens.shape
    half = side // 2
    grid = tokens.reshape(b, 2, half, 2, half, d)  # (B, row, y, col, x, D)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(b, 4, half * half, d)


def from_quadrants(quads: torch.Tensor, side: int) -> torch.Tensor:
    """Inverse of to_quadrants: (B, 4, side*side/4, D) -> (B, side*side, D) row-major."""
    b, _, _, d = quads.shape
    half = side // 2
    grid = quads.reshape(b, 2, 2, half, half, d)  # (B, row, col, y, x, D)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(b, side * side, d)


def quadrant_pool(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(B, side*side, D) patch tokens -> (B, 4, D): the mean of each quadrant's patches."""
    return to_quadrants(tokens, side).mean(2)


def greedy_decode(
    next_probs: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one greedy loop: from `start` tokens (B, 1), `steps` times append the most probable
    next digit. `next_probs(tokens (B, L))` -> probabilities (B, 10) of the digit after them.
    -> digits (B, steps) and the probabilities (B, steps, 10) each step chose from."""
    tokens, probs = start, []
    for _ in range(steps):
        p = next_probs(tokens)  # (B, 10)
        probs.append(p)
        tokens = torch.cat([tokens, p.argmax(-1, keepdim=True)], 1)
    return tokens[:, 1:], torch.stack(probs, 1)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        block = cfg.block_args()
        self.patch = PatchEmbed(cfg.patch_size, cfg.dim, stem=cfg.stem, tile=cfg.image_size // 2)
        self.enc_pos = nn.Parameter(torch.zeros(1, cfg.grid_side**2, cfg.dim))
        self.encoder = nn.ModuleList(
            Block(**block, drop_path=rate) for rate in drop_path_rates(cfg.drop_path, cfg.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(cfg.dim) if cfg.norm == "pre" else nn.Identity()
        # Which memory token is which quadrant: the pooled positions average out to nearly the
        # same vector, so without this the decoder needs many steps to tell the digits apart.
        # Unit scale, like the normalized encoder tokens it is added to.
        self.mem_pos = (
            nn.Parameter(torch.randn(1, 4, cfg.dim)) if cfg.memory == "quadrants" else None
        )
        self.token_embed = nn.Embedding(NUM_CLASSES + 1, cfg.dim)  # digits 0-9 + start (10)
        self.dec_pos = nn.Parameter(torch.zeros(1, cfg.num_digits, cfg.dim))
        self.decoder = nn.ModuleList(
            Block(**block, cross=True, drop_path=rate)
            for rate in drop_path_rates(cfg.drop_path, cfg.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(cfg.dim) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.dim, NUM_CLASSES)  # only digits can be produced
        init_weights(self)
        nn.init.trunc_normal_(self.enc_pos, std=0.02)
        nn.init.trunc_normal_(self.dec_pos, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters that weight decay would only pull towards zero: positions, embeddings."""
        names = {"enc_pos", "dec_pos", "token_embed.weight"}
        return names | ({"mem_pos"} if self.mem_pos is not None else set())

    # ---- encoder ------------------------------------------------------------------------

    def forward_features(
        self, images: torch.Tensor, *, layers: int | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encoder patch tokens (B, T, D) after `layers` blocks, and their attention weights:
        (B, heads, T, T) with global attention, (B, 4, heads, T/4, T/4) per quadrant with
        attention="quadrant"."""
        x = self.patch(images) + self.enc_pos  # (B, T, D)
        side = self.cfg.grid_side
        local = self.cfg.attention == "quadrant"
        if local:  # each digit's patches attend only to each other: (4B, T/4, D)
            x = to_quadrants(x, side).flatten(0, 1)
        attn = []
        for block in self.encoder[:layers]:
            x, weights = block(x, need_weights=need_weights)
            if need_weights:
                w = weights["self"]
                attn.append(w.unflatten(0, (-1, 4)) if local else w)
        if layers is None or layers >= len(self.encoder):
            x = self.enc_norm(x)
        if local:
            x = from_quadrants(x.unflatten(0, (-1, 4)), side)
        return x, attn

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Decoder memory (B, M, D): 4 quadrant tokens with their own learnable positions, or
        the T patch tokens with memory="patches"."""
        tokens, _ = self.forward_features(images)
        if self.cfg.memory == "quadrants":
            return quadrant_pool(tokens, self.cfg.grid_side) + self.mem_pos  # (B, 4, D)
        return tokens

    @torch.no_grad()
    def init_encoder_from(self, vit: nn.Module) -> None:
        """Start the encoder from a trained encoder-only ViT of the same layout: its patch
        embedding, blocks and final norm, and its patch positions repeated in every quadrant (a
        digit's 28x28 quadrant is exactly a ViT input). Its CLS token and head are not used."""
        c, v = self.cfg, vit.cfg
        differ = [
            k
            for k in ("patch_size", "dim", "heads", "ff_dim", "norm", "activation", "stem")
            if getattr(c, k) != getattr(v, k)
        ]
        differ += ["depth"] if c.enc_depth != v.depth else []
        differ += ["digit size"] if c.image_size != 2 * v.image_size else []
        if differ:
            raise ValueError(f"the encoder and the ViT differ in {', '.join(differ)}")
        self.patch.load_state_dict(vit.patch.state_dict())
        self.encoder.load_state_dict(vit.blocks.state_dict())
        self.enc_norm.load_state_dict(vit.norm.state_dict())
        digit_pos = vit.pos[:, 1:].unsqueeze(1).expand(-1, 4, -1, -1)  # (1, 4, T/4, D)
        self.enc_pos.copy_(from_quadrants(digit_pos, c.grid_side))

    # ---- decoder ------------------------------------------------------------------------

    def decode(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor,
        *,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Digit logits (B, L, 10) for each input token (B, L), the first being the start
        token. With a `cache`, `tokens` are only the new ones after the cached prefix."""
        start = cache.length if cache is not None else 0  # tokens already decoded
        x = self.token_embed(tokens) + self.dec_pos[:, start : start + tokens.shape[1]]
        attn = []
        for i, block in enumerate(self.decoder):
            x, weights = block(
                x,
                memory,
                causal=True,
                self_cache=None if cache is None else cache.self_attn[i],
                cross_cache=None if cache is None else cache.cross_attn[i],
                need_weights=need_weights,
            )
            attn.append(weights)
        return self.head(self.dec_norm(x)), attn  # (B, L, 10)

    def next_probs(
        self, tokens: torch.Tensor, memory: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Probabilities (B, 10) of the digit after `tokens` (B, L). With a cache only the
        tokens it has not seen yet are fed; without it the whole prefix is recomputed."""
        new = tokens[:, cache.length :] if cache is not None else tokens
        logits, _ = self.decode(new, memory, cache=cache)
        return F.softmax(logits[:, -1].float(), -1)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.decoder))

    def start_tokens(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch, 1), self.cfg.start_token, device=device)  # (B, 1)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, 4, 10) for targets (B, 4), from [start, d1, d2, d3]."""
        start = torch.full_like(targets[:, :1], self.cfg.start_token)
        inputs = torch.cat([start, targets[:, :-1]], 1)  # (B, 4)
        logits, _ = self.decode(inputs, self.encode(images))
        return logits

    @torch.inference_mode()
    def generate(
        self, images: torch.Tensor, *, use_cache: bool = True, beam_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: digits (B, 4) and the probabilities (B, 4, 10) each step chose from.

        With the cache each step feeds one token; without it the whole prefix is recomputed
        (kept to check the cache and to measure what it saves). beam_size > 1: beam search."""
        if beam_size > 1:
            return self.beam_search(images, beam_size)
        return self.generate_from_memory(self.encode(images), use_cache=use_cache)

    @torch.inference_mode()
    def generate_from_memory(
        self, memory: torch.Tensor, *, use_cache: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoding half of `generate`, from an encoder memory (B, M, D)."""
        cache = self.new_cache() if use_cache else None
        return greedy_decode(
            lambda tokens: self.next_probs(tokens, memory, cache),
            self.start_tokens(memory.shape[0], memory.device),
            self.cfg.num_digits,
        )

    @torch.inference_mode()
    def beam_search(
        self, images: torch.Tensor, beam_size: int = 3
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The most probable digit sequence among `beam_size` kept at every step (with the key/
        value cache), and the probabilities (B, 4, 10) each of its steps chose from."""
        if not 1 <= beam_size <= NUM_CLASSES:
            raise ValueError(f"beam_size must be 1 to {NUM_CLASSES}, got {beam_size}")
        k, n = beam_size, NUM_CLASSES
        memory = self.encode(images).repeat_interleave(k, 0)  # (B*k, M, D)
        b = images.shape[0]
        tokens = self.start_tokens(b * k, images.device)  # (B*k, 1)
        scores = torch.full((b, k), float("-inf"), device=images.device)
        scores[:, 0] = 0.0  # the beams start as copies of one: keep only the first alive
        cache = self.new_cache()
        step_probs: list[torch.Tensor] = []
        for _ in range(self.cfg.num_digits):
            p = self.next_probs(tokens, memory, cache)  # (B*k, 10)
            total = scores.unsqueeze(-1) + p.log().view(b, k, n)  # (B, k, 10)
            scores, best = total.view(b, k * n).topk(k, -1)  # (B, k), best first
            parent = (torch.arange(b, device=images.device)[:, None] * k + best // n).view(-1)
            tokens = torch.cat([tokens[parent], (best % n).view(-1, 1)], 1)
            step_probs = [q[parent] for q in step_probs] + [p[parent]]
            cache.reorder(parent)  # each beam carries on its parent's keys and values
        digits = tokens[:, 1:].view(b, k, -1)[:, 0]
        probs = torch.stack(step_probs, 1).view(b, k, self.cfg.num_digits, n)[:, 0]
        return digits, probs
