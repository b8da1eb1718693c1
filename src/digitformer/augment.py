"""Batched random affine augmentation (shift, rotation, scale) on tensors, seeded."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    shift: float = 2.0,
    rotate: float = 10.0,
    scale: float = 0.1,
) -> torch.Tensor:
    """Apply one random affine map per image: images (N, 1, H, W) float -> same shape.

    shift in pixels, rotate in degrees, scale as a +- fraction; all drawn uniformly on the CPU
    generator so a seed gives the same augmentation on any device.
    """
    n, _, h, w = images.shape
    u = torch.rand(n, 4, generator=generator) * 2 - 1  # (N, 4) in [-1, 1]
    angle = u[:, 0] * math.radians(rotate)
    zoom = 1 + u[:, 1] * scale
    # affine_grid maps output coords to input coords in [-1, 1]: invert the zoom, shift in units
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    tx, ty = u[:, 2] * shift * 2 / w, u[:, 3] * shift * 2 / h
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(
        theta.to(images.device, images.dtype), list(images.shape), align_corners=False
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
