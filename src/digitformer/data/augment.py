"""Batched random augmentation on tensors, seeded: affine (shift, rotation, scale) and optional
elastic distortion (Simard et al. 2003), sampled together in one pass; pen width (strokes
made thicker or thinner by grayscale morphology); resolution and focus."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    shift: float = 2.0,
    rotate: float = 10.0,
    scale: float = 0.1,
    elastic: float = 0.0,
    sigma: float = 4.0,
    shear: float = 0.0,
    aspect: float = 0.0,
) -> torch.Tensor:
    """Apply one random affine map per image: images (N, 1, H, W) float -> same shape.

    shift in pixels, rotate in degrees, scale as a +- fraction; all drawn uniformly on the CPU
    generator so a seed gives the same augmentation on any device. elastic > 0 adds a smooth
    random displacement field (uniform noise per pixel blurred by a Gaussian of `sigma` pixels)
    whose standard deviation is about `elastic` pixels. Simard's alpha 34, sigma 4 is ~1.4.
    shear > 0: a slant of up to that many degrees either way (the top moved sideways, as
    people's writing leans); aspect > 0: the width times exp(+-aspect), uniform in its log
    (a narrower or wider hand). Each is drawn only when asked for, after the rest, so a recipe
    without them draws what it drew before.
    """
    n = images.shape[0]
    u = torch.rand(n, 4, generator=generator) * 2 - 1  # (N, 4) in [-1, 1]
    flow = None
    if elastic > 0:
        flow = elastic_flow(n, *images.shape[2:], elastic, sigma, generator)
        flow = flow.to(images.device, images.dtype)
    slant = (torch.rand(n, generator=generator) * 2 - 1) * shear if shear > 0 else 0.0
    width = torch.exp((torch.rand(n, generator=generator) * 2 - 1) * aspect) if aspect > 0 else 1.0
    return warp(
        images,
        u[:, 0] * rotate,
        1 + u[:, 1] * scale,
        -u[:, 2] * shift,
        -u[:, 3] * shift,
        flow,
        slant,
        width,
    )


def elastic_flow(
    n: int, h: int, w: int, elastic: float, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """(n, 2, h, w) random displacement in pixels (x, then y) with a standard deviation of
    `elastic`: uniform noise blurred by a Gaussian of `sigma` pixels. The noise is drawn `3 sigma`
    wider on every side and blurred without padding, so the field is alike everywhere, edges
    too; rescaled by the blur's known shrinkage of white noise (1 / (2 sqrt(pi) sigma), and
    uniform noise in [-1, 1] has deviation 1 / sqrt(3)), so the strength does not depend on
    sigma."""
    radius = max(1, math.ceil(3 * sigma))
    noise = torch.rand(n, 2, h + 2 * radius, w + 2 * radius, generator=generator) * 2 - 1
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    row = (kernel / kernel.sum()).view(1, 1, 1, -1).expand(2, 1, 1, -1)  # one per channel
    blur = F.conv2d(F.conv2d(noise, row, groups=2), row.mT, groups=2)  # (n, 2, h, w)
    return blur * (elastic * 2 * math.sqrt(math.pi) * sigma * math.sqrt(3))


def warp(
    images, degrees, zoom, dx, dy, flow: torch.Tensor | None = None, slant=0.0, width=1.0
) -> torch.Tensor:
    """Rotate (degrees), scale (zoom) and shift (pixels) each image (N, 1, H, W) about its
    centre, zero outside; each argument a tensor (N,) or a number. Whole-pixel shifts are exact.
    `flow` (N, 2, H, W), x then y displacement in pixels, is added where each output pixel reads.
    `slant` (degrees, positive: the top leans right) and `width` (a factor on the width) come
    before the rotation and zoom."""
    n, _, h, w = images.shape
    degrees, zoom, dx, dy, slant, width = (
        torch.as_tensor(v, dtype=torch.float32).expand(n)
        for v in (degrees, zoom, dx, dy, slant, width)
    )
    angle = degrees * (math.pi / 180)
    # affine_grid maps output coords to input coords in [-1, 1]: invert the zoom and the shift
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    tx, ty = -dx * 2 / w, -dy * 2 / h
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    # ...and, read first, the inverse of the slant and the width: x_in = (x + tan * y) / width
    # (y grows downwards: the top, y < 0, moves right for a positive slant)
    tan = torch.tan(slant * (math.pi / 180))
    lean = torch.stack(
        [torch.stack([1 / width, tan / width], 1), torch.stack([torch.zeros(n), torch.ones(n)], 1)],
        1,
    )  # (N, 2, 2); the identity when neither is asked for, and then theta is as it was
    theta = lean @ theta
    grid = F.affine_grid(
        theta.to(images.device, images.dtype), list(images.shape), align_corners=False
    )
    if flow is not None:
        scale = torch.tensor([2 / w, 2 / h], device=images.device, dtype=images.dtype)
        grid = grid + flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_stroke(images: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    """Change the pen: each image (N, 1, H, W) in [0, 1], with probability p, gets its strokes
    thickened (a 3x3 grayscale dilation, about a pixel on each side: a felt pen or a finger on
    a canvas) or thinned (a 2x2 erosion, half a pixel a side: a fine pen), half and half.
    MNIST's strokes are all of about one width; people's are not."""
    if p <= 0:
        return images
    u = torch.rand(images.shape[0], 2, generator=generator).to(images.device)
    thick = (u[:, 0] < p) & (u[:, 1] < 0.5)
    thin = (u[:, 0] < p) & (u[:, 1] >= 0.5)
    dilated = F.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(F.pad(-images, (0, 1, 0, 1), value=0.0), 2, stride=1)
    pick = lambda mask: mask.view(-1, 1, 1, 1)
    return torch.where(pick(thick), dilated, torch.where(pick(thin), eroded, images))


def two_loop_eights(zeros: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Eights written as two loops, one above the other, from pairs of 0s: (M, 2, 1, 28, 28)
    zeros in [0, 1] -> (M, 1, 28, 28). Each loop is a 0 squeezed to about half a digit's height
    (the top one a little smaller), the strokes thickened back by a pixel a side, so the two
    loops touch or overlap by up to 3 pixels: the 8 that people draw as two circles, which
    MNIST's writers seldom did."""
    m = zeros.shape[0]
    u = torch.rand(m, 2, 4, generator=generator)
    sx = 0.5 + 0.2 * u[..., 0]  # (M, 2): top, bottom
    sy = (0.42 + 0.1 * u[..., 1]) * torch.tensor([0.9, 1.0])
    gap = -1 + 3 * u[:, 0, 2]  # pixels between the loops
    heights = 20 * sy  # MNIST's digits are about 20 pixels tall
    top = 14 - (heights.sum(1) + gap) / 2 + heights[:, 0] / 2
    centre_y = torch.stack([top, top + heights.sum(1) / 2 + gap], 1)
    centre_x = 14 + 3 * (u[..., 3] - 0.5)
    ty, tx = (centre_y - 14) * 2 / 28, (centre_x - 14) * 2 / 28
    zero = torch.zeros_like(sx)
    theta = torch.stack(
        [torch.stack([1 / sx, zero, -tx / sx], -1), torch.stack([zero, 1 / sy, -ty / sy], -1)], -2
    )  # (M, 2, 2, 3): output -> input coordinates
    loops = zeros.reshape(m * 2, 1, 28, 28)
    grid = F.affine_grid(
        theta.reshape(m * 2, 2, 3).to(loops), list(loops.shape), align_corners=False
    )
    drawn = F.grid_sample(loops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # squeezed, a stroke is about half as thick: a pixel more on each side
    return F.max_pool2d(drawn.view(m, 2, 1, 28, 28).amax(1), 3, stride=1, padding=1)


def flagged_ones(ones: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Ones written the continental way, from MNIST's plain ones (M, 1, 28, 28) in [0, 1]: a
    flag from the top of the stroke down to the left (20-45% of the digit's height long, 20-55
    degrees under the horizontal) and, on two in five, a foot across the bottom (a quarter to a
    half of the height wide). Both are drawn with the stroke's own width (its ink over its
    height) and anti-aliased. Many writers outside MNIST's write their ones so; MNIST's seldom
    did, and a reader taught only on its plain ones reads a flagged 1 as 7, or a footed one as
    8. A 1 leaning to the left stays as it is (a flag there makes a caret). Shorter, steeper
    flags and feet only on upright ones read worse (docs/reading-pictures.md, "Ones with a
    flag")."""
    m, _, h, w = ones.shape
    if m == 0:
        return ones
    ink = ones[:, 0] > 0.5  # (M, H, W)
    rows = ink.any(2)
    ys = torch.arange(h, device=ones.device)
    top = torch.where(rows, ys, h).amin(1)  # the first and last rows with ink
    bottom = torch.where(rows, ys, -1).amax(1)
    height = (bottom - top + 1).clamp(min=1).float()
    xs = torch.arange(w, device=ones.device, dtype=ones.dtype)

    def x_at(row: torch.Tensor) -> torch.Tensor:  # the ink's centre on a row (and its neighbour)
        near = (ys.view(1, -1) - row.view(-1, 1)).abs() <= 1  # (M, H)
        weight = (ink & near.unsqueeze(2)).to(ones.dtype)
        return (weight * xs).sum((1, 2)) / weight.sum((1, 2)).clamp(min=1)

    width = (ones[:, 0].sum((1, 2)) / height).clamp(1.5, 4.0)
    u = torch.rand(m, 4, generator=generator).to(ones.device, ones.dtype)
    length = height * (0.2 + 0.25 * u[:, 0])
    angle = torch.deg2rad(20 + 35 * u[:, 1])
    start = torch.stack([x_at(top), top + width / 2], 1)  # (M, 2): x, y
    end = start + torch.stack([-torch.cos(angle), torch.sin(angle)], 1) * length.view(-1, 1)
    foot = height * (0.125 + 0.125 * u[:, 2])  # half its width
    base = torch.stack([x_at(bottom), bottom - width / 2 + 0.5], 1)
    left, right = base - torch.stack([foot, 0 * foot], 1), base + torch.stack([foot, 0 * foot], 1)
    grid = torch.stack(torch.meshgrid(xs, ys.to(xs.dtype), indexing="xy"), -1).view(1, h, w, 2)

    def segment(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (M, H, W) anti-aliased
        ab = (b - a).view(m, 1, 1, 2)
        ap = grid - a.view(m, 1, 1, 2)
        t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-6)).clamp(0, 1)
        d = (ap - t.unsqueeze(-1) * ab).norm(dim=-1)
        return (width.view(m, 1, 1) / 2 + 0.5 - d).clamp(0, 1)

    drawn = torch.maximum(ones[:, 0], segment(start, end))
    footed = (u[:, 3] < 0.4).view(m, 1, 1)
    drawn = torch.where(footed, torch.maximum(drawn, segment(left, right)), drawn)
    leaning = (start[:, 0] < base[:, 0] - 0.15 * height).view(m, 1, 1)  # its top left of its foot
    return torch.where(leaning, ones[:, 0], drawn).unsqueeze(1)


def with_flagged_ones(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, p: float
) -> torch.Tensor:
    """A share p of the 1s among images (N, 1, 28, 28) redrawn by `flagged_ones`; nothing is
    drawn from the generator when p is 0."""
    if p <= 0:
        return images
    chosen = torch.rand(len(labels), generator=generator) < p
    ones = torch.nonzero((labels.cpu() == 1) & chosen).flatten().to(images.device)
    if len(ones) == 0:
        return images
    out = images.clone()
    out[ones] = flagged_ones(images[ones], generator)
    return out


def random_resolution(
    images: torch.Tensor, generator: torch.Generator, p: float, sizes: tuple[int, int] = (9, 16)
) -> torch.Tensor:
    """A share p of images (N, 1, H, W) in [0, 1] seen at a lower resolution: averaged down to
    k x k pixels (k drawn per image from `sizes`, both ends included; MNIST's 20-pixel digit
    then spans about 0.7k) and brought back up bilinearly, each to its own brightest ink (as a
    picture's preparation does). A scan of 8x8 pixels, or a digit a few pixels tall in a photo,
    reaches the model so. The filter is antialiased bilinear (a triangle, both ways): it keeps
    the ink's sum and its centre, where "area" pooling at a ratio like 28:9 moves it a pixel
    or two."""
    if p <= 0:
        return images
    u = torch.rand(images.shape[0], 2, generator=generator)
    ks = sizes[0] + (u[:, 1] * (sizes[1] - sizes[0] + 1)).long().clamp(max=sizes[1] - sizes[0])
    out = images.clone()
    for k in torch.unique(ks[u[:, 0] < p]).tolist():
        idx = torch.nonzero((u[:, 0] < p) & (ks == k)).flatten().to(images.device)
        low = F.interpolate(images[idx], size=(k, k), mode="bilinear", antialias=True)
        up = F.interpolate(low, size=images.shape[2:], mode="bilinear", align_corners=False)
        peak = images[idx].amax((2, 3), keepdim=True)
        out[idx] = up * peak / up.amax((2, 3), keepdim=True).clamp(min=1e-6)
    return out


def random_blur(images: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    """A share p of images (N, 1, H, W) in [0, 1] out of focus: a Gaussian blur of 0.5 to 1.1
    pixels (one per batch), each blurred image brought back to its own brightest ink (as a
    picture's preparation does)."""
    if p <= 0:
        return images
    sigma = 0.5 + 0.6 * float(torch.rand(1, generator=generator))
    x = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    row = (kernel / kernel.sum()).view(1, 1, 1, 5).to(images)
    blurred = F.conv2d(F.conv2d(images, row, padding=(0, 2)), row.mT, padding=(2, 0))
    peak = images.amax((2, 3), keepdim=True)
    blurred = blurred * peak / blurred.amax((2, 3), keepdim=True).clamp(min=1e-6)
    chosen = (torch.rand(images.shape[0], generator=generator) < p).view(-1, 1, 1, 1)
    return torch.where(chosen.to(images.device), blurred, images)


def as_trained(
    images: torch.Tensor,
    generator: torch.Generator,
    settings: Mapping[str, Any],
    shift: float | None = None,
) -> torch.Tensor:
    """A digit reader's augmentation of images (N, 1, H, W), as its training settings give it
    (`vars(TrainSettings)`, or the dict a checkpoint keeps): the pen, one affine map (shift,
    rotation, scale, elastic), the resolution. `shift` in place of the settings' (0: digits
    that something centres later)."""
    images = random_stroke(images, generator, settings.get("aug_stroke", 0.0))
    images = random_affine(
        images,
        generator,
        settings.get("aug_shift", 2.0) if shift is None else shift,
        settings.get("aug_rotate", 10.0),
        settings.get("aug_scale", 0.1),
        settings.get("aug_elastic", 0.0),
        settings.get("aug_elastic_sigma", 4.0),
        settings.get("aug_shear", 0.0),
        settings.get("aug_aspect", 0.0),
    )
    return random_resolution(images, generator, settings.get("aug_lowres", 0.0))
