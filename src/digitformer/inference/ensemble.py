"""Inference with several readings averaged: an ensemble of models, test-time views, or both.

ensemble = Ensemble([vit_a, vit_b])
log_probs = ensemble(images)            # (B, 10): log of the mean of the models' softmax
digits, probs = ensemble.generate(grids)  # encoder-decoders: probabilities averaged per step
Ensemble([vit], tta=True)               # one model, averaged over test-time views of each digit
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from digitformer.data.augment import warp
from digitformer.inference.readers import DIGIT_VIEWS, kind_of
from digitformer.models import Seq2Seq
from digitformer.models.seq2seq import greedy_decode
from digitformer.utils.tensors import map_tiles


def tta_views(
    images: torch.Tensor, digit_size: int | None = 28, views=DIGIT_VIEWS
) -> list[torch.Tensor]:
    """`views` ((degrees, dx, dy) each, DIGIT_VIEWS by default) of each digit: images
    (N, 1, H, W) with H, W multiples of digit_size (a 2x2 grid is moved digit by digit, so no
    digit spills into its neighbour; None: the whole image at once) -> len(views) tensors of
    the same shape; the view (0, 0, 0) is the images themselves."""
    out = []
    for degrees, dx, dy in views:
        move = lambda d, a=degrees, x=dx, y=dy: warp(d, a, 1.0, x, y)
        if (degrees, dx, dy) == (0, 0, 0):
            out.append(images)
        else:
            out.append(move(images) if digit_size is None else map_tiles(move, images, digit_size))
    return out


class Ensemble(nn.Module):
    """Models of one type. Its outputs are log-probabilities, so cross-entropy on them is the
    loss of the averaged prediction. Encoder-decoders decode together: at each step every
    model sees the same prefix (the ensemble's choices so far), so the average is per position.
    With tta=True every model also reads each of `tta_views` of the input (the digit
    moved a pixel or turned a little; on a grid, each digit on its own), averaged the same way.
    """

    def __init__(self, models: list[nn.Module], tta: bool = False) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        kinds = {type(m) for m in models}
        if len(kinds) != 1:
            raise ValueError("an ensemble's models must all be of one type")
        self.members = nn.ModuleList(models)
        self.cfg = models[0].cfg
        self.tta = tta

    def _readers(self, images: torch.Tensor):
        """(model, input) pairs: every member on every view."""
        if not self.tta:
            return [(m, images) for m in self.members]
        kind = kind_of(self.members[0])
        views = tta_views(images, kind.view_tile, kind.views)
        return [(m, v) for v in views for m in self.members]

    def forward(self, images: torch.Tensor, *targets: torch.Tensor) -> torch.Tensor:
        probs = torch.stack(
            [F.softmax(m(v, *targets).float(), -1) for m, v in self._readers(images)]
        )
        return probs.mean(0).log()

    @torch.inference_mode()
    def read(self, images: torch.Tensor, *, use_cache: bool = True, beam_size: int = 1):
        """The reading contract (`ViT.read`, `Seq2Seq.read`), every reading averaged."""
        if isinstance(self.members[0], Seq2Seq):
            return self.generate(images, use_cache=use_cache, beam_size=beam_size)
        probs = self(images).exp()[:, None]  # (B, 1, 10)
        return probs.argmax(-1), probs

    @torch.inference_mode()
    def generate(self, images: torch.Tensor, *, use_cache: bool = True, beam_size: int = 1):
        if beam_size != 1:
            raise ValueError("an ensemble decodes greedily: beam search is for single models")
        readers = self._readers(images)
        memories = [m.encode(v) for m, v in readers]
        return decode_together([m for m, _ in readers], memories, use_cache=use_cache)


@torch.inference_mode()
def decode_together(
    models: list[nn.Module], memories: list[torch.Tensor], *, use_cache: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding by encoder-decoders that each read their own encoder memory (one per
    model and view): at every step the mean of their softmax picks the next digit for all.
    -> (tokens (B, S), probabilities (B, S, V))."""
    caches = [m.new_cache() if use_cache else None for m in models]

    def next_probs(tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [m.next_probs(tokens, mem, c) for m, mem, c in zip(models, memories, caches)]
        ).mean(0)  # (B, V)

    start = models[0].start_tokens(memories[0].shape[0], memories[0].device)
    return greedy_decode(next_probs, start, models[0].cfg.steps)
