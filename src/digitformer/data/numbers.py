"""Handwritten numbers made from MNIST digits: lines of 1 to N digits, and grids with blanks.

numbers = make_numbers(test.images, test.labels, n=5000, layout="line", seed=0)
numbers.images.shape == (5000, 28, 196); numbers.strings()[0] == "3094"

Every digit is cut to its ink and placed on the canvas by one affine map (scale, slant,
position) that `F.grid_sample` applies to a whole batch at once, so training draws fresh
numbers every epoch at almost no cost (`draw_numbers`, in torch; `make_numbers` wraps it for
fixed sets in NumPy). Strokes that overlap keep the brighter ink, as on paper.

- line: 1 to max_digits digits, left to right, each number with its own height (14 to 22
  pixels, around MNIST's 20) and slant, each digit with its own size (up to +-25%), slant and
  place on a drifting baseline; gaps from overlapping strokes to very wide spaces; a line too
  long for the canvas is shrunk to fit; a random horizontal offset.
- grid: R x C cells of 28 pixels (R, C from 1 to 3) at a random place on the canvas, each cell
  written with probability 0.7 (at least one); read row by row, blanks skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from digitformer.utils.fileio import atomic_path, write_text_atomic

LAYOUTS = ("line", "grid")
END = 10  # the token that ends a number (and starts one: the decoder's start token)
PAD = 255  # digits past a number's length, in the uint8 label arrays
CELL = 28  # a grid cell: one MNIST digit
INK = 40  # a source pixel brighter than this is ink (for the ink box)


@dataclass(frozen=True)
class Numbers:
    """images uint8 (N, H, W); digits uint8 (N, max_digits) in reading order, PAD after each
    number's length; lengths (N,)."""

    images: np.ndarray
    digits: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def strings(self) -> list[str]:
        return ["".join(map(str, row[:n])) for row, n in zip(self.digits, self.lengths)]


def ink_boxes(images) -> torch.Tensor:
    """(K, 28, 28) digits -> (K, 4) float [left, top, right, bottom] of their ink, inclusive."""
    ink = torch.as_tensor(np.asarray(images)) > INK
    boxes = []
    for axis in (1, 2):  # columns (any over rows), then rows
        seen = ink.any(axis)  # (K, 28)
        first = seen.float().argmax(1)
        last = seen.shape[1] - 1 - seen.flip(1).float().argmax(1)
        boxes.append((first, last))
    (left, right), (top, bottom) = boxes
    return torch.stack([left, top, right, bottom], 1).float()


def _uniform(gen: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=gen)


def _gaps(gen: torch.Generator, b: int, n: int) -> torch.Tensor:
    """Gaps between neighbours in units of the number's height: a quarter overlapping or
    touching (-0.2 to 0), most a normal space (0 to 0.45), some wide (0.45 to 1), a few very
    wide (1 to 2): at height 20, -4 to 40 pixels."""
    kind = torch.bucketize(torch.rand(b, n, generator=gen), torch.tensor([0.25, 0.8, 0.95]))
    low = torch.tensor([-0.2, 0.0, 0.45, 1.0])[kind]
    high = torch.tensor([0.0, 0.45, 1.0, 2.0])[kind]
    return low + (high - low) * torch.rand(b, n, generator=gen)


def _baseline(gen: torch.Generator, b: int, n: int) -> torch.Tensor:
    """(B, N) offsets of each digit from a straight line, in [-1, 1]: a third flat, a third a
    smooth wave, a third a random walk (a line that drifts as a hand does)."""
    kind = torch.randint(0, 3, (b, 1), generator=gen)
    phase = _uniform(gen, 0, 2 * torch.pi, b, 1)
    period = _uniform(gen, 3, 10, b, 1)  # digits per wave
    wave = torch.sin(phase + 2 * torch.pi * torch.arange(n) / period)
    walk = torch.cumsum(_uniform(gen, -0.5, 0.5, b, n), 1)
    walk = walk - walk.mean(1, keepdim=True)
    walk = walk / walk.abs().amax(1, keepdim=True).clamp(min=1.0)
    return torch.where(kind == 0, 0.0, torch.where(kind == 1, wave, walk))


def _line_plan(boxes: torch.Tensor, lengths: torch.Tensor, gen, height: int, width: int):
    """Where each digit of each line goes: centres (B, N, 2), scales (B, N), slants (B, N).

    Per number: a height (14 to 22 pixels), a slant, a spread of digit sizes (each digit up to
    +-25% around the height), digits standing on one baseline or centred on one line, and a
    line that drifts (`_baseline`, up to +-1.5 pixels at height 20). Per digit: its size, a
    little slant of its own, and the gap before it (`_gaps`)."""
    b, n, _ = boxes.shape
    present = torch.arange(n) < lengths[:, None]  # (B, N)
    box_w, box_h = boxes[..., 2] - boxes[..., 0] + 1, boxes[..., 3] - boxes[..., 1] + 1
    h0 = _uniform(gen, 14, 22, b, 1)  # the number's height
    spread = _uniform(gen, 0.0, 0.25, b, 1)  # how much this hand's digits differ in size
    h = h0 * (1 + spread * _uniform(gen, -1, 1, b, n))
    scale = h / box_h
    slant = _uniform(gen, -0.3, 0.3, b, 1) + _uniform(gen, -0.06, 0.06, b, n)  # x per pixel up
    w = box_w * scale + slant.abs() * h  # the width a slanted digit takes
    gap = h0 * _gaps(gen, b, n)
    gap[:, 0] = 0
    w, gap = w * present, gap * present
    total = (w + gap).sum(1, keepdim=True)
    fit = ((width - 4) / total).clamp(max=1.0)  # shrink a line too long for the canvas
    scale, w, gap, h, h0, total = (t * fit for t in (scale, w, gap, h, h0, total))
    left = 2 + torch.rand(b, 1, generator=gen) * (width - 4 - total)
    cx = left + (w + gap).cumsum(1) - w / 2
    line = height / 2 + _uniform(gen, -1.5, 1.5, b, 1) + 0.075 * h0 * _baseline(gen, b, n)
    on_baseline = torch.rand(b, 1, generator=gen) < 0.5  # small digits sit on the line
    cy = torch.where(on_baseline, line + (h0 - h) / 2, line)
    cy = cy.clamp(h / 2 + 0.5, height - h / 2 - 0.5)
    return torch.stack([cx, cy], -1), scale, slant, present


def _grid_plan(boxes: torch.Tensor, gen, height: int, width: int):
    """Cells of R x C grids (N = 9 slots, row-major over 3 x 3), some left blank."""
    b = boxes.shape[0]
    rows = torch.randint(1, 4, (b, 1), generator=gen)
    cols = torch.randint(1, 4, (b, 1), generator=gen)
    slot = torch.arange(9)
    r, c = slot // 3, slot % 3
    inside = (r < rows) & (c < cols)  # (B, 9)
    filled = inside & (torch.rand(b, 9, generator=gen) < 0.7)
    empty = ~filled.any(1)  # none written: write one cell of the grid
    pick = (torch.rand(b, generator=gen) * (rows * cols).squeeze(1)).long()  # (B,)
    chosen = (pick // cols.squeeze(1)) * 3 + pick % cols.squeeze(1)
    filled[empty, chosen[empty]] = True
    top = torch.rand(b, 1, generator=gen) * (height - CELL * rows)
    left = torch.rand(b, 1, generator=gen) * (width - CELL * cols)
    cx = left + CELL * c + CELL / 2 + _uniform(gen, -2, 2, b, 9)
    cy = top + CELL * r + CELL / 2 + _uniform(gen, -2, 2, b, 9)
    box_h = boxes[..., 3] - boxes[..., 1] + 1
    scale = _uniform(gen, 15, 22, b, 9) / box_h
    slant = _uniform(gen, -0.15, 0.15, b, 1).expand(b, 9)
    return torch.stack([cx, cy], -1), scale, slant, filled


def place(
    sources: torch.Tensor,
    boxes: torch.Tensor,
    centres: torch.Tensor,
    scale: torch.Tensor,
    slant: torch.Tensor,
    present: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """Digits (B, N, 28, 28) in [0, 1] drawn on (B, H, W) canvases: each digit's ink box
    centred on its centre (x, y), scaled and slanted; absent slots left out.

    For each canvas pixel (x, y) a digit is sampled at
        u = bx + ((x - cx) + slant * (y - cy)) / scale,   v = by + (y - cy) / scale
    (bx, by: its ink box's centre; slant leans the top to the right): an affine map, so the
    whole batch is one `affine_grid` and one `grid_sample`."""
    b, n = present.shape
    size = sources.shape[-1]
    dev = sources.device
    centres, s, k, boxes = (t.to(dev).float() for t in (centres, scale, slant, boxes))
    cx, cy = centres[..., 0], centres[..., 1]  # (B, N)
    bx = (boxes[..., 0] + boxes[..., 2]) / 2 + 0.5
    by = (boxes[..., 1] + boxes[..., 3]) / 2 + 0.5
    # the map in affine_grid's [-1, 1] coordinates (align_corners=False): x = (xn + 1) W / 2
    zero = torch.zeros_like(s)
    theta = torch.stack(
        [
            torch.stack(
                [
                    width / (size * s),
                    k * height / (size * s),
                    2 / size * (bx + (width / 2 - cx + k * (height / 2 - cy)) / s) - 1,
                ],
                -1,
            ),
            torch.stack(
                [zero, height / (size * s), 2 / size * (by + (height / 2 - cy) / s) - 1], -1
            ),
        ],
        -2,
    )  # (B, N, 2, 3)
    grid = F.affine_grid(theta.view(b * n, 2, 3), [b * n, 1, height, width], align_corners=False)
    drawn = F.grid_sample(
        sources.reshape(b * n, 1, size, size),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).view(b, n, height, width)
    return (drawn * present[..., None, None].to(drawn.dtype)).amax(1)


def draw_numbers(
    sources: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    picks: torch.Tensor,
    gen: torch.Generator,
    *,
    layout: str,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of numbers from `picks` (B, N) indices into digits `sources` (K, 28, 28) in
    [0, 1], their `labels` (K,) and ink `boxes` (K, 4). Lines: the number of digits in each
    is drawn from 1 to N; grids: N is 9. -> canvases (B, 1, H, W) in [0, 1], digits (B, N)
    in reading order (END after the last), lengths (B,)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    b, n = picks.shape
    cpu_picks = picks.cpu()
    box = boxes[cpu_picks]  # (B, N, 4)
    if layout == "line":
        lengths = torch.randint(1, n + 1, (b,), generator=gen)
        centres, scale, slant, present = _line_plan(box, lengths, gen, height, width)
    else:
        if n != 9 or height < 3 * CELL or width < 3 * CELL:
            raise ValueError(f"grids need 9 slots and a canvas of at least {3 * CELL} pixels")
        centres, scale, slant, present = _grid_plan(box, gen, height, width)
        lengths = present.sum(1)
    images = place(sources[picks], box, centres, scale, slant, present, height, width)
    # reading order: the written slots first, in slot order (row-major for grids)
    order = torch.sort((~present).to(torch.uint8), dim=1, stable=True).indices
    digits = labels[picks].gather(1, order.to(picks.device)).long()
    ended = torch.arange(n, device=digits.device) >= lengths.to(digits.device)[:, None]
    digits = digits.masked_fill(ended, END)
    return images.unsqueeze(1), digits, lengths.to(digits.device)


def canvas_size(layout: str, max_digits: int) -> tuple[int, int]:
    """The default canvas (height, width) of a layout: 28 x 196 for lines of up to 8 digits
    (24.5 pixels per digit), 84 x 84 for grids up to 3 x 3."""
    if layout == "grid":
        return 3 * CELL, 3 * CELL
    return CELL, 7 * -(-(max_digits * 49 // 2) // 7)  # a multiple of 7 (the patch size)


def make_numbers(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    seed: int,
    *,
    layout: str = "line",
    max_digits: int = 8,
    height: int | None = None,
    width: int | None = None,
    batch: int = 1000,
) -> Numbers:
    """n numbers drawn from the given digits (uint8 (K, 28, 28), labels (K,)); deterministic
    for a seed. Test numbers from test digits only."""
    if len(images) == 0:
        raise ValueError("make_numbers needs at least one digit")
    if layout == "grid":
        max_digits = 9
    if not 1 <= max_digits <= 32:
        raise ValueError(f"max_digits must be 1 to 32, got {max_digits}")
    default_h, default_w = canvas_size(layout, max_digits)
    height, width = height or default_h, width or default_w
    gen = torch.Generator().manual_seed(seed)
    sources = torch.from_numpy(np.ascontiguousarray(images)).float() / 255
    label_t = torch.from_numpy(np.asarray(labels)).long()
    boxes = ink_boxes(images)
    out_images, out_digits, out_lengths = [], [], []
    for start in range(0, n, batch):
        count = min(batch, n - start)
        picks = torch.randint(0, len(images), (count, max_digits), generator=gen)
        canvas, digits, lengths = draw_numbers(
            sources, label_t, boxes, picks, gen, layout=layout, height=height, width=width
        )
        out_images.append((canvas[:, 0] * 255).round().to(torch.uint8).numpy())
        out_digits.append(digits.masked_fill(digits == END, PAD).to(torch.uint8).numpy())
        out_lengths.append(lengths.numpy())
    return Numbers(
        np.concatenate(out_images), np.concatenate(out_digits), np.concatenate(out_lengths)
    )


def write_numbers(numbers: Numbers, out: str | Path, prefix: str = "number") -> Path:
    """Each number as OUT/<prefix>-00000.png, and OUT/labels.csv (file,digits): a test set
    people can look at and share. Returns the labels file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(numbers) - 1)))
    rows = ["file,digits"]
    for i, (image, digits) in enumerate(zip(numbers.images, numbers.strings())):
        name = f"{prefix}-{i:0{width}d}.png"
        with atomic_path(out / name) as tmp:
            Image.fromarray(image, mode="L").save(tmp, format="PNG")
        rows.append(f"{name},{digits}")
    labels = out / "labels.csv"
    write_text_atomic(labels, "\n".join(rows) + "\n")
    return labels
