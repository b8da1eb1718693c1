"""Encoder-only Vision Transformer for single 28x28 digits.

model = ViT(ViTConfig())            # patch 4 -> T = 49 patch tokens + CLS, 4 post-norm blocks
logits = model(images)              # images (B, 1, 28, 28) in [0, 1] -> (B, 10)
digits, probs = model.read(images)  # the reading contract: (B, 1) and (B, 1, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from digitformer.models.config import NUM_CLASSES, ViTConfig
from digitformer.models.layers import Block, PatchEmbed, drop_path_rates, init_weights


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch = PatchEmbed(cfg.patch_size, cfg.dim, stem=cfg.stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.dim))
        self.encoder = nn.ModuleList(
            Block(**cfg.block_args(), drop_path=rate)
            for rate in drop_path_rates(cfg.drop_path, cfg.depth)
        )
        # pre-norm leaves the residual stream un-normalized: close it with a final LayerNorm
        self.norm = nn.LayerNorm(cfg.dim) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.dim, NUM_CLASSES)
        init_weights(self)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters that weight decay would only pull towards zero: positions, CLS token."""
        return {"pos", "cls_token"}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, 1 + T, D): CLS then patch tokens, positions added."""
        patches = self.patch(images)  # (B, T, D)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, D); shape, not len(): export
        return torch.cat([cls, patches], 1) + self.pos

    def forward_features(
        self, images: torch.Tensor, *, layers: int | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens (B, 1 + T, D) after `layers` blocks (all by default) and the attention weights
        of each block run (B, heads, 1 + T, 1 + T) when `need_weights`."""
        x = self.embed(images)
        attn = []
        for block in self.encoder[:layers]:
            x, weights = block(x, need_weights=need_weights)
            if need_weights:
                attn.append(weights["self"])
        if layers is None or layers >= len(self.encoder):
            x = self.norm(x)
        return x, attn

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.forward_features(images)
        return self.head(tokens[:, 0])  # (B, 10) from the CLS token

    @torch.inference_mode()
    def read(self, images: torch.Tensor, **_) -> tuple[torch.Tensor, torch.Tensor]:
        """What every model answers (`Seq2Seq.read` too): the tokens read (B, S) and the
        probabilities (B, S, V) each was chosen from. A digit is a sequence of one."""
        probs = self(images).float().softmax(-1)[:, None]  # (B, 1, 10)
        return probs.argmax(-1), probs
