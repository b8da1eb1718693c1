"""Encoder-decoder transformer that reads the digits of an image.

model = Seq2Seq(Seq2SeqConfig())
logits = model(images, targets)          # teacher forcing: (B, 4, 10)
digits, probs = model.read(images)       # greedy with a key/value cache: (B, 4), (B, 4, 10)
digits, probs = model.generate(images, beam_size=3)   # beam search

The default configuration is the original task: the four digits of a 56x56 2x2 grid, always
four. With `ending="end"` the same classes read numbers of any length up to `max_digits`: the
head gets an eleventh class, the end token (10, the start token's id too), generation stops
each sequence when it writes it (every later step is forced to the end token again, so a batch
of mixed lengths decodes together), and targets are padded with -100 after it.

Shapes below: T = rows * cols encoder tokens (64 for a 56x56 grid at patch 7, T / 4 per
quadrant; 112 for a 28x196 line); M memory tokens for the decoder (4 quadrants, or T);
S = cfg.steps decoding steps; V = cfg.vocab classes (10, or 11 with the end token).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from digitformer.models.config import NUM_CLASSES, Seq2SeqConfig
from digitformer.models.layers import Block, KVCache, PatchEmbed, drop_path_rates, init_weights

if TYPE_CHECKING:
    from digitformer.models.vit import ViT


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


def after_end(
    probs: torch.Tensor, tokens: torch.Tensor, end: int | None, max_digits: int
) -> torch.Tensor:
    """Probabilities (B, V) of the next token, with sequences that have already written the
    end token (`tokens` (B, L) after the start token), or max_digits digits, forced to write
    it: ended numbers stay ended in a batch, and in beam search a finished beam keeps its
    score."""
    if end is None or tokens.shape[1] < 2:
        return probs
    ended = (tokens[:, 1:] == end).any(1, keepdim=True)  # (B, 1)
    if tokens.shape[1] > max_digits:  # no room for another digit
        ended = torch.ones_like(ended)
    forced = F.one_hot(torch.full_like(tokens[:, 0], end), probs.shape[-1]).to(probs.dtype)
    return torch.where(ended, forced, probs)


def quadrant_pool(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(B, side*side, D) patch tokens -> (B, 4, D): the mean of each quadrant's patches."""
    return to_quadrants(tokens, side).mean(2)


def greedy_decode(
    next_probs: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one greedy loop: from `start` tokens (B, 1), `steps` times append the most probable
    next token. `next_probs(tokens (B, L))` -> probabilities (B, V) of the token after them.
    -> tokens (B, steps) and the probabilities (B, steps, V) each step chose from. A fixed
    number of steps, no early exit: the loop unrolls into an exported graph as it is."""
    tokens, probs = start, []
    for _ in range(steps):
        p = next_probs(tokens)  # (B, V)
        probs.append(p)
        tokens = torch.cat([tokens, p.argmax(-1, keepdim=True)], 1)
    return tokens[:, 1:], torch.stack(probs, 1)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        block = cfg.block_args()
        tile = cfg.image_size // 2 if cfg.is_2x2 else 0  # a 2x2 grid's stem reads each digit
        self.patch = PatchEmbed(cfg.patch_size, cfg.dim, stem=cfg.stem, tile=tile)
        rows, cols = cfg.patch_grid
        self.enc_pos = nn.Parameter(torch.zeros(1, rows * cols, cfg.dim))  # one per 2D patch
        self.encoder = nn.ModuleList(
            Block(**block, drop_path=rate) for rate in drop_path_rates(cfg.drop_path, cfg.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(cfg.dim) if cfg.norm == "pre" else nn.Identity()
        # Which memory token is which quadrant: the pooled positions average out to nearly the
        # same vector, so without this the decoder needs many steps to tell the digits apart.
        # Unit scale, like the normalized encoder tokens it is added to.
        # A numbers model's memory, every patch, gets such positions too: with the encoder's
        # small learned positions alone its decoder took thousands of steps to start reading.
        memory_tokens = 4 if cfg.memory == "quadrants" else rows * cols
        numbers = cfg.memory == "patches" and cfg.end_token is not None
        self.mem_pos = (
            nn.Parameter(torch.randn(1, memory_tokens, cfg.dim))
            if cfg.memory == "quadrants" or numbers
            else None
        )
        self.token_embed = nn.Embedding(NUM_CLASSES + 1, cfg.dim)  # digits 0-9 + start/end (10)
        self.dec_pos = nn.Parameter(torch.zeros(1, cfg.steps, cfg.dim))
        self.decoder = nn.ModuleList(
            Block(**block, cross=True, drop_path=rate)
            for rate in drop_path_rates(cfg.drop_path, cfg.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(cfg.dim) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.dim, cfg.vocab)  # digits, and the end token if there is one
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
        side = self.cfg.patch_side
        local = self.cfg.attention == "quadrant"
        if local:  # each digit's patches attend only to each other: (4B, T/4, D)
            x = to_quadrants(x, side).flatten(0, 1)
        allowed = self._window(x.device)
        attn = []
        for block in self.encoder[:layers]:
            x, weights = block(x, need_weights=need_weights, allowed=allowed)
            if need_weights:
                w = weights["self"]
                attn.append(w.unflatten(0, (-1, 4)) if local else w)
        if layers is None or layers >= len(self.encoder):
            x = self.enc_norm(x)
        if local:
            x = from_quadrants(x.unflatten(0, (-1, 4)), side)
        return x, attn

    def _window(self, device: torch.device) -> torch.Tensor | None:
        """(T, T) True where patch j lies within `window` columns of patch i (None: global)."""
        if not self.cfg.window:
            return None
        rows, cols = self.cfg.patch_grid
        col = torch.arange(cols, device=device).repeat(rows)  # (T,) row-major
        return (col[:, None] - col[None, :]).abs() <= self.cfg.window

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Decoder memory (B, M, D): 4 quadrant tokens with their own learnable positions, or
        the T patch tokens with memory="patches" (with their own positions for numbers)."""
        tokens, _ = self.forward_features(images)
        if self.cfg.memory == "quadrants":
            mem_pos = cast(nn.Parameter, self.mem_pos)  # quadrants have their positions
            return quadrant_pool(tokens, self.cfg.patch_side) + mem_pos  # (B, 4, D)
        return tokens if self.mem_pos is None else tokens + self.mem_pos  # (B, T, D)

    @torch.no_grad()
    def init_encoder_from(self, vit: ViT) -> None:
        """Start the encoder from a trained encoder-only ViT of the same layout: its patch
        embedding, blocks and final norm, and its patch positions repeated in every 28x28 tile
        of the image (in every quadrant of a 2x2 grid, exactly a ViT input; along a number's
        line, where a digit may sit anywhere). Its CLS token and head are not used."""
        c, v = self.cfg, vit.cfg
        differ = [
            k
            for k in ("patch_size", "dim", "heads", "ff_dim", "norm", "activation", "stem")
            if getattr(c, k) != getattr(v, k)
        ]
        differ += ["depth"] if c.enc_depth != v.depth else []
        if c.is_2x2 and c.image_size != 2 * v.image_size:
            differ += ["digit size"]
        if differ:
            raise ValueError(f"the encoder and the ViT differ in {', '.join(differ)}")
        self.patch.load_state_dict(vit.patch.state_dict())
        self.encoder.load_state_dict(vit.encoder.state_dict())
        self.enc_norm.load_state_dict(vit.norm.state_dict())
        side = v.image_size // v.patch_size
        digit_pos = vit.pos[:, 1:].reshape(1, side, side, -1)  # (1, s, s, D)
        if c.is_2x2:
            quads = digit_pos.reshape(1, 1, side * side, -1).expand(-1, 4, -1, -1)
            self.enc_pos.copy_(from_quadrants(quads, c.patch_side))
            return
        rows, cols = c.patch_grid
        tiled = digit_pos.repeat(1, -(-rows // side), -(-cols // side), 1)[:, :rows, :cols]
        self.enc_pos.copy_(tiled.reshape(1, rows * cols, -1))

    # ---- decoder ------------------------------------------------------------------------

    def decode(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor,
        *,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Logits (B, L, V) for each input token (B, L), the first being the start token.
        With a `cache`, `tokens` are only the new ones after the cached prefix."""
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
        return self.head(self.dec_norm(x)), attn  # (B, L, V)

    def next_probs(
        self, tokens: torch.Tensor, memory: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Probabilities (B, V) of the token after `tokens` (B, L). With a cache only the
        tokens it has not seen yet are fed; without it the whole prefix is recomputed. A
        sequence that has ended writes the end token again."""
        new = tokens[:, cache.length :] if cache is not None else tokens
        logits, _ = self.decode(new, memory, cache=cache)
        probs = F.softmax(logits[:, -1].float(), -1)
        return after_end(probs, tokens, self.cfg.end_token, self.cfg.max_digits)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.decoder))

    def start_tokens(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch, 1), self.cfg.start_token, device=device)  # (B, 1)

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, S, V) for targets (B, S), from [start, t1, ..., t(S-1)]
        (for a 2x2 grid [start, d1, d2, d3]). Targets past a number's end token may be -100
        (ignored by the loss); they only feed positions whose outputs are ignored."""
        return self.forward_from_memory(self.encode(images), targets)

    def forward_from_memory(self, memory: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The decoding half of `forward`, from an encoder memory (B, M, D): one picture's
        memory, encoded once, can be weighed against several targets (`cuts.sequence_logp`)."""
        start = torch.full_like(targets[:, :1], self.cfg.start_token)
        inputs = torch.cat([start, targets[:, :-1].clamp(min=0)], 1)  # (B, S)
        logits, _ = self.decode(inputs, memory)
        return logits

    @torch.inference_mode()
    def generate(
        self, images: torch.Tensor, *, use_cache: bool = True, beam_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: tokens (B, S) and the probabilities (B, S, V) each step chose from
        (numbers: the digits, then the end token (10) to the last step).

        With the cache each step feeds one token; without it the whole prefix is recomputed
        (kept to check the cache and to measure what it saves). beam_size > 1: beam search."""
        if beam_size > 1:
            return self.beam_search(images, beam_size)
        return self.generate_from_memory(self.encode(images), use_cache=use_cache)

    def read(
        self, images: torch.Tensor, *, use_cache: bool = True, beam_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reading contract every model keeps (`ViT.read` too): `generate`."""
        return self.generate(images, use_cache=use_cache, beam_size=beam_size)

    @torch.inference_mode()
    def generate_from_memory(
        self, memory: torch.Tensor, *, use_cache: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoding half of `generate`, from an encoder memory (B, M, D)."""
        cache = self.new_cache() if use_cache else None
        return greedy_decode(
            lambda tokens: self.next_probs(tokens, memory, cache),
            self.start_tokens(memory.shape[0], memory.device),
            self.cfg.steps,
        )

    @torch.inference_mode()
    def beam_search(
        self, images: torch.Tensor, beam_size: int = 3
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The most probable sequence among `beam_size` kept at every step (with the key/value
        cache), and the probabilities (B, S, V) each of its steps chose from. Ended beams write
        the end token with probability 1: they keep their score while the others go on."""
        if not 1 <= beam_size <= NUM_CLASSES:
            raise ValueError(f"beam_size must be 1 to {NUM_CLASSES}, got {beam_size}")
        k, n = beam_size, self.cfg.vocab
        memory = self.encode(images).repeat_interleave(k, 0)  # (B*k, M, D)
        b = images.shape[0]
        tokens = self.start_tokens(b * k, images.device)  # (B*k, 1)
        scores = torch.full((b, k), float("-inf"), device=images.device)
        scores[:, 0] = 0.0  # the beams start as copies of one: keep only the first alive
        cache = self.new_cache()
        step_probs: list[torch.Tensor] = []
        for _ in range(self.cfg.steps):
            p = self.next_probs(tokens, memory, cache)  # (B*k, V)
            total = scores.unsqueeze(-1) + p.log().view(b, k, n)  # (B, k, V)
            scores, best = total.view(b, k * n).topk(k, -1)  # (B, k), best first
            parent = (torch.arange(b, device=images.device)[:, None] * k + best // n).view(-1)
            tokens = torch.cat([tokens[parent], (best % n).view(-1, 1)], 1)
            step_probs = [q[parent] for q in step_probs] + [p[parent]]
            cache.reorder(parent)  # each beam carries on its parent's keys and values
        digits = tokens[:, 1:].view(b, k, -1)[:, 0]
        probs = torch.stack(step_probs, 1).view(b, k, self.cfg.steps, n)[:, 0]
        return digits, probs
