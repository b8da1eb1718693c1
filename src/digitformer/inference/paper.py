"""The paper and its lighting under a person's strokes, and the order statistics that find them
(`digitformer.inference.ink` finds the strokes against it).

    paper = background(x)              # float (H, W), the paper's level at every pixel
    paper = background(x, wide=True)   # strokes that fill their picture: from its border
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

BACKGROUND_SIZE = 64  # the paper and its lighting are estimated at this size: they are smooth
BACKGROUND_STEP = 4  # ...by windows half its size wide, one every this many pixels


def reduce(pixels: np.ndarray, longest: int) -> np.ndarray:
    """The picture with its longest side at most `longest`, by area averaging (no aliasing)."""
    h, w = pixels.shape
    scale = longest / max(h, w)
    if scale >= 1:
        return pixels.astype(np.float32)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(pixels.astype(np.float32))
    return np.asarray(img.resize(size, Image.BOX), dtype=np.float32)


def resize(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float picture to `shape` (rows, columns)."""
    if pixels.shape == tuple(shape):
        return pixels.astype(np.float32)
    img = Image.fromarray(pixels.astype(np.float32))
    return np.asarray(img.resize(shape[::-1], Image.BILINEAR), dtype=np.float32)


def background(x: np.ndarray, wide: bool = False) -> np.ndarray:
    """The paper and its lighting: a median over windows half the picture wide, where strokes
    are a minority, so it follows gradients and shadow edges but not the strokes. Computed on
    a BACKGROUND_SIZE copy (lighting is smooth), one window every BACKGROUND_STEP pixels,
    and brought back to full size bilinearly from where each window was centred (`spread`).
    Beyond the picture's edges lies more of its paper (see `frame_with_paper`).

    `wide`: for strokes that fill their picture (a digit cropped tight to its ink, a scan it
    fills), where even those windows are half ink: the paper inside is interpolated from the
    picture's border (`paper_inside`), which such strokes touch only here and there."""
    small = reduce(x, BACKGROUND_SIZE)
    if wide:
        return resize(paper_inside(frame_with_paper(small, 0)), x.shape)
    size = max(3, (min(small.shape) // 2) | 1)
    framed = frame_with_paper(small, size // 2)
    step = BACKGROUND_STEP if min(small.shape) >= 32 else 1
    return spread(_window_medians(framed, size, step), step, small.shape, x.shape)


def _window_medians(framed: np.ndarray, size: int, step: int) -> np.ndarray:
    """The median of every `size`-square window of `framed` (an odd count: the middle value),
    one every `step` pixels. Partitioned as the pixels' 16-bit ranks, which order as their
    values do (ties by place) and partition twice as fast as the floats; sorted by NumPy's radix
    sort for 16-bit integers (`kind="stable"`), faster still than their partition (0.76 against
    0.92 ms for a photo's 289 windows of 33x33, on an AMD EPYC)."""
    flat = framed.ravel()
    order = np.argsort(flat, kind="stable")
    ranks = np.empty(flat.size, np.uint16 if flat.size <= 1 << 16 else np.int64)
    ranks[order] = np.arange(flat.size)
    view = np.lib.stride_tricks.sliding_window_view(ranks.reshape(framed.shape), (size, size))
    windows = view[::step, ::step]
    values = windows.reshape(*windows.shape[:2], -1)
    middle = values.shape[-1] // 2
    if ranks.dtype == np.uint16:
        chosen = np.sort(values, axis=-1, kind="stable")[..., middle]
    else:
        chosen = np.partition(values, middle, axis=-1)[..., middle]
    return flat[order[chosen]].astype(np.float32)


def spread(samples: np.ndarray, step: int, small: tuple[int, int], shape: tuple[int, int]):
    """Values taken every `step` pixels of a `small` copy of a picture (the first at its
    pixel 0), brought bilinearly to the picture's `shape` from where they were taken, and
    constant beyond the first and last. (A resize would put each at the centre of a block
    `step` pixels wide: for step 4 at 64, 6 pixels off at 256, enough to move a shadow's
    edge onto the strokes. Sampled every 4 pixels, a sharp shadow edge is still placed within
    +-6 pixels at 256, now to either side.)"""
    rows = _weights(samples.shape[0], step, small[0], shape[0])
    cols = _weights(samples.shape[1], step, small[1], shape[1])
    return (rows @ samples @ cols.T).astype(np.float32)


@lru_cache(maxsize=64)  # a folder's pictures, a number's pieces: the same few sizes again
def _weights(count: int, step: int, small: int, full: int) -> np.ndarray:
    """(full, count): each full-size pixel's bilinear weights over `count` samples taken
    every `step` pixels of a copy `small` pixels long (pixel centres, as a box reduction's).
    Read-only: the answers are shared."""
    at = (step * np.arange(count) + 0.5) * full / small - 0.5
    weights = np.stack([np.interp(np.arange(full), at, e) for e in np.eye(count)], 1)
    weights.flags.writeable = False
    return weights


def paper_inside(edged: np.ndarray) -> np.ndarray:
    """The paper inside a picture whose border holds it (`frame_with_paper`): the Coons patch
    of its four sides (each side blended across, less the corners' bilinear part), which is
    exact for a lighting gradient and sees none of the strokes inside."""
    h, w = edged.shape
    if h < 2 or w < 2:
        return edged
    v, u = np.linspace(0, 1, h)[:, None], np.linspace(0, 1, w)[None, :]
    top, bottom, left, right = edged[:1], edged[-1:], edged[:, :1], edged[:, -1:]
    sides = (1 - v) * top + v * bottom + (1 - u) * left + u * right
    corners = (1 - u) * (1 - v) * edged[0, 0] + u * (1 - v) * edged[0, -1]
    corners = corners + (1 - u) * v * edged[-1, 0] + u * v * edged[-1, -1]
    return (sides - corners).astype(np.float32)


def frame_with_paper(small: np.ndarray, width: int) -> np.ndarray:
    """`small` framed by `width` pixels of its paper: its border's running median, carried on."""
    h, w = small.shape
    if h < 2 or w < 2:
        ring = small.ravel()
        paper = np.full_like(small, median(ring))
        return np.pad(paper, width, mode="edge")
    # the border, once round: top left to right, right down, bottom right to left, left up
    ring = np.concatenate([small[0, :-1], small[:-1, -1], small[-1, :0:-1], small[:0:-1, 0]])
    smooth = ndimage.median_filter(ring, size=max(3, (len(ring) // 2) | 1), mode="wrap")
    edged = small.copy()
    top, right, bottom = w - 1, w - 1 + h - 1, 2 * (w - 1) + h - 1
    edged[0, :-1] = smooth[:top]
    edged[:-1, -1] = smooth[top:right]
    edged[-1, :0:-1] = smooth[right:bottom]
    edged[:0:-1, 0] = smooth[bottom:]
    return np.pad(edged, width, mode="edge")


def percentile(values: np.ndarray, q: float) -> float:
    """np.percentile(values, q) (linear; equal to within a float32 rounding), by one partition:
    several times faster than np.percentile and np.median. A large array is first bracketed
    (`_bracketed`), and only the values near the answer are partitioned."""
    flat = values.ravel()
    if flat.size == 0:
        return float("nan")  # as np.percentile (without its warning)
    position = q / 100 * (flat.size - 1)
    k = int(position)
    top = k + 1 if position > k and k + 1 < flat.size else k  # the last order statistic needed
    near = _bracketed(flat, k, top) if flat.size >= BRACKETED else None
    if near is not None:
        below, near = near
        part = np.partition(near, (k - below, top - below))
        low, high = float(part[k - below]), float(part[top - below])
    else:
        part = np.partition(flat, k)
        low = float(part[k])
        high = float(part[k + 1 :].min()) if top > k else low
    return low + (high - low) * (position - k)


BRACKETED = 4096  # arrays this large are bracketed before they are partitioned
SAMPLE = 1024  # ...by the order statistics of about this many of their values


def _bracketed(flat: np.ndarray, k: int, top: int) -> tuple[int, np.ndarray] | None:
    """The values of `flat` that hold its k-th to top-th smallest (from 0), and how many lie
    below them; None when the bracket missed. Its bounds are order statistics of an evenly
    strided sample, a few standard errors either side of the same rank (as Floyd and Rivest's
    selection): the counts then prove it holds the answer, which is exact whatever the sample."""
    sample = flat[:: max(1, flat.size // SAMPLE)]
    m, n = sample.size, flat.size
    spread = 3 * int(np.sqrt(m)) + 1
    low_rank = int(k / n * m) - spread
    high_rank = int(top / n * m) + spread
    ranks = [r for r in (low_rank, high_rank) if 0 <= r < m]
    part = np.partition(sample, ranks) if ranks else sample
    inside = np.ones(n, bool)
    below = 0
    if low_rank >= 0:
        low = part[low_rank]
        inside &= flat >= low
        below = n - int(np.count_nonzero(inside))
    if high_rank < m:
        inside &= flat <= part[high_rank]
    near = flat[inside]
    if below > k or below + near.size <= top:
        return None
    return below, near


def median(values: np.ndarray) -> float:
    return percentile(values, 50.0)
