"""Small tensor helpers shared by the data, the models and inference; imports nothing of ours."""

from __future__ import annotations

from collections.abc import Callable

import torch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1]: what every model takes."""
    return images.unsqueeze(1).float().div_(255)


def map_tiles(
    fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tile: int
) -> torch.Tensor:
    """fn applied to each tile x tile block of images (B, C, H, W) on its own (e.g. each digit
    of a grid), the blocks put back in place: (B, C', H, W) for fn (N, C, t, t) -> (N, C', t, t)."""
    b, c, h, w = images.shape
    rows, cols = h // tile, w // tile
    blocks = images.reshape(b, c, rows, tile, cols, tile).permute(0, 2, 4, 1, 3, 5)
    out = fn(blocks.reshape(b * rows * cols, c, tile, tile))
    out = out.reshape(b, rows, cols, -1, tile, tile).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(b, -1, h, w)
