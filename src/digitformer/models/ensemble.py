"""Average several trained models' probabilities: one model's interface, many models inside.

ensemble = Ensemble([vit_a, vit_b])
log_probs = ensemble(images)            # (B, 10): log of the mean of the models' softmax
digits, probs = ensemble.generate(grids)  # encoder-decoders: probabilities averaged per step
Ensemble([vit], tta=True)               # one model, averaged over test-time views of each digit
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from digitformer.augment import tta_views


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
        views = tta_views(images) if self.tta else [images]
        return [(m, v) for v in views for m in self.members]

    def forward(self, images: torch.Tensor, *targets: torch.Tensor) -> torch.Tensor:
        probs = torch.stack(
            [F.softmax(m(v, *targets).float(), -1) for m, v in self._readers(images)]
        )
        return probs.mean(0).log()

    @torch.inference_mode()
    def generate(self, images: torch.Tensor, *, use_cache: bool = True, beam_size: int = 1):
        if beam_size != 1:
            raise ValueError("an ensemble decodes greedily: beam search is for single models")
        readers = self._readers(images)
        memories = [m.encode(v) for m, v in readers]
        return decode_together([m for m, _ in readers], memories, use_cache=use_cache)


@torch.inference_mode()
def decode_together(models, memories, *, use_cache: bool = True):
    """Greedy decoding by encoder-decoders that each read their own encoder memory (one per
    model and view): at every step the mean of their softmax picks the next digit for all.
    -> (digits (B, num_digits), probabilities (B, num_digits, 10))."""
    cfg = models[0].cfg
    caches = [[{} for _ in m.decoder] if use_cache else None for m in models]
    tokens = torch.full((memories[0].shape[0], 1), cfg.start_token, device=memories[0].device)
    probs = []
    for _ in range(cfg.num_digits):
        step_input = tokens[:, -1:] if use_cache else tokens
        p = torch.stack(
            [
                F.softmax(m.decode(step_input, mem, caches=c)[0][:, -1].float(), -1)
                for m, mem, c in zip(models, memories, caches)
            ]
        ).mean(0)  # (B, 10)
        probs.append(p)
        tokens = torch.cat([tokens, p.argmax(-1, keepdim=True)], 1)
    return tokens[:, 1:], torch.stack(probs, 1)
