"""Bring a person's picture of a digit to what the models read: MNIST's 28x28 (or a 56x56 grid).

    pixels = read_gray("photo.jpg")          # float (H, W) in [0, 1], any bit depth or mode
    digit = to_mnist(pixels)                 # uint8 (28, 28); raises NoInk on blank paper

MNIST was made by cutting each digit to its ink, scaling it into 20x20 and centring it by its
centre of mass in 28x28, light ink on black. Cameras and scanners add what MNIST never had:
dark ink on light paper, uneven light and shadows, paper texture and noise, JPEG blocks, pens
much thicker or thinner than MNIST's. So, in order:

1. polarity: ink is the rarer, darker (or lighter) tail of the local contrast (the contrast
   with the whole picture breaks near-ties: a thick pen can outnumber the paper locally);
   when that polarity finds no pen edges (a shadow over most of the sheet), the other;
2. background: a median over windows half the picture wide (strokes are a minority there)
   estimates the paper and its lighting; beyond the picture's edges lies more of its paper
   (its border's running median, carried on), not a mirror of the strokes: a digit cropped
   tight to its ink, or a scan it fills, has strokes at the frame. Where even so nothing
   stands out (strokes that fill the picture), the windows reach beyond it, into half its
   size of that paper. Once the strokes' width is known, a closing three strokes wide
   estimates it again, closer; it is subtracted (a gradient or a shadow goes);
3. ink: Otsu's threshold on what is left, with hysteresis (a faint stretch of stroke joined to
   a strong one is kept, if it stands six times the paper's noise out of it); marks without a
   pen's sharp edges (a shadow's rim) and specks far smaller than the digit are dropped;
   nothing that stands out of the paper by a real contrast and five times its noise (measured
   on the paper alone when strokes cover over a quarter of the picture), with
   the sharp edges of a pen rather than the slow ramp of a shadow, means nothing to read
   (`NoInk`), never a guess;
4. pen width: strokes far thinner than MNIST's (measured as 2 x area / boundary, scaled to
   the 20-pixel box; MNIST's median is 2.6 pixels) are grown to it;
5. MNIST's own crop, scale and centring.

Pictures are prepared at WORK_SIZE (reduced) or MIN_WORK_SIZE (tiny ones enlarged); `read_gray`
decodes large JPEGs at a reduced size. The last few `find_ink` answers are kept (the layout and
the preparation of one picture both need them).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from digitformer.inference.ink import (
    Ink,
    NoInk,
    find_ink,
    grow,
    normalize_pen,
    stroke_width,
)
from digitformer.inference.pictures import TooLarge, gray_pixels, read_gray
from digitformer.utils.errors import DigitformerError

__all__ = [  # what the readers import from here, wherever it is defined
    "Ink",
    "NoInk",
    "TooLarge",
    "TooWide",
    "find_ink",
    "gray_pixels",
    "is_mnist_like",
    "layout_of",
    "prepare",
    "prepare_number",
    "read_gray",
    "stroke_width",
    "to_mnist",
]


class TooWide(DigitformerError):
    """A number too long (or a layout too large) for the canvas of the model that reads it."""


NUMBER_DIGIT_HEIGHT = 18.0  # a written number's digits are scaled to this height (14-22 trained)
NUMBER_MIN_HEIGHT = 12.0  # ...and shrunk no smaller than this to fit the canvas
LINE_SPAN = 1.5  # one line's ink spans at most this many of its tallest mark's height


def is_mnist_like(pixels: np.ndarray) -> bool:
    """Light ink on a dark background with a dark border, as MNIST digits are."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return border.mean() < 0.1 and pixels.mean() < 0.5


def to_mnist(pixels: np.ndarray) -> np.ndarray:
    """Any grayscale picture of one digit -> uint8 (28, 28), prepared as MNIST was.
    Raises NoInk when there is nothing to read."""
    return ink_to_mnist(find_ink(pixels))


MNIST_FULL = 0.38  # the share of an MNIST digit's inked pixels at full ink (>= 0.95 of it)


def ink_to_mnist(ink: Ink) -> np.ndarray:
    """A digit's strokes (light on black, found) -> uint8 (28, 28), as MNIST was made: the pen
    evened out, the ink's box scaled to 20 pixels, as much of its ink at full ink as of an
    MNIST digit's (MNIST_FULL: a pale pencil, or a side pressed lighter, reads as a dark pen),
    its centre of mass at the centre. Raises NoInk when none of it is darker than a twentieth
    of full ink."""
    if not (ink.image > 0.05).any():  # (the pen only grows: then no stroke would be either)
        raise NoInk("no digit found (nothing stands out of the background)")
    rows, cols = np.nonzero(ink.image > 0)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    box = max(bottom - top, right - left)
    strokes = normalize_pen(ink, box)
    rows, cols = np.nonzero(strokes > 0.05)
    crop = strokes[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.BOX if scale < 1 else Image.BILINEAR
    digit = np.asarray(
        Image.fromarray(crop.astype(np.float32)).resize(size, resample), dtype=np.float32
    )
    full = float(np.quantile(digit[digit > 0], 1 - MNIST_FULL))  # (never empty: see above)
    digit = np.clip(digit / max(1e-6, full), 0, 1)  # as much of it full ink as of MNIST's
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - size[1]) // 2, (28 - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = digit
    # shift so the centre of mass sits at the centre, as MNIST did
    cy, cx = ndimage.center_of_mass(canvas)
    canvas = ndimage.shift(canvas, (round(13.5 - cy), round(13.5 - cx)), order=0)
    return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)


def layout_of(pixels: np.ndarray) -> str:
    """Which reader a picture calls for, from its ink: "grid", "number" or "digit" (also for
    a picture with nothing to read)."""
    try:
        mask = find_ink(pixels).mask
    except NoInk:
        return "digit"
    labels, large, reach = _large_marks(mask)
    height = _median_height(_mark_heights(labels, large, reach))
    if len(large) >= 3:
        centres = np.array(ndimage.center_of_mass(mask, labels, large))  # (marks, 2): y, x
        h, w = mask.shape
        across = len({c[1] > w / 2 for c in centres}) == 2
        down = len({c[0] > h / 2 for c in centres}) == 2
        # two rows, not one jittery line: the marks' centres lie a digit's height apart
        if across and down and np.ptp(centres[:, 0]) > 0.6 * height:
            return "grid"
    _, cols = np.nonzero(mask)
    wide = (np.ptp(cols) + 1) / height
    # touching digits join into one mark: a row that wide is several digits all the same
    return "number" if wide >= 1.6 or (wide >= 1.2 and len(large) >= 2) else "digit"


def _large_marks(mask: np.ndarray) -> tuple[np.ndarray, list[int], int]:
    """The marks of the ink: connected strokes with pieces up to two strokes apart joined (a
    5's bar, a broken stroke). -> their labels, the labels of the large ones (at least a fifth
    of the largest's area), and the joining reach in pixels."""
    reach = max(1, round(stroke_width(mask)))
    labels, count = ndimage.label(grow(mask, reach))
    if count == 0:
        return labels, [], reach
    areas = np.bincount(labels[mask], minlength=count + 1)[1:]  # each mark's strokes
    return labels, [int(i) + 1 for i in np.flatnonzero(areas >= 0.2 * areas.max())], reach


def _mark_heights(labels: np.ndarray, large: list[int], reach: int) -> list[int]:
    boxes = ndimage.find_objects(labels)
    return [boxes[i - 1][0].stop - boxes[i - 1][0].start - 2 * reach for i in large]


def _median_height(heights: list[int]) -> float:
    return float(max(1, np.median(heights))) if heights else 1.0


def digit_height(mask: np.ndarray) -> float:
    """The height of the digits in a picture of several: the median height of its large
    marks (see `_large_marks`)."""
    return _median_height(_mark_heights(*_large_marks(mask)))


QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _as_it_is(pixels: np.ndarray, height: int, width: int, preprocess: bool) -> np.ndarray | None:
    """The picture as the model's uint8 input when it already is one (the model's size and
    MNIST-like, or preprocess off); None when it must be prepared. Raises NoInk for a black
    input, and a clear error for a wrong size with preprocess off."""
    if pixels.shape == (height, width) and (not preprocess or is_mnist_like(pixels)):
        if not pixels.any():
            raise NoInk("no digit found (the image is black)")
        return np.round(pixels * 255).astype(np.uint8)
    if not preprocess:
        raise DigitformerError(
            f"image is {pixels.shape[1]}x{pixels.shape[0]}, expected {width}x{height} "
            "(drop --no-preprocess to resize it)"
        )
    return None


def prepare(pixels: np.ndarray, grid: bool, preprocess: bool = True) -> np.ndarray:
    """A grayscale picture -> the model's uint8 input: (28, 28) digit or (56, 56) grid.
    Raises NoInk when a digit (or a quadrant of a grid) holds nothing to read."""
    side = 56 if grid else 28
    ready = _as_it_is(pixels, side, side, preprocess)
    if ready is not None:
        return ready
    if not grid:
        return to_mnist(pixels)
    h, w = pixels.shape
    if min(h, w) < 4:
        raise DigitformerError(f"image is {w}x{h}: too small to hold a 2x2 grid")
    quads = [
        pixels[: h // 2, : w // 2],
        pixels[: h // 2, w // 2 :],
        pixels[h // 2 :, : w // 2],
        pixels[h // 2 :, w // 2 :],
    ]
    digits = []
    for name, quad in zip(QUADRANTS, quads):
        try:
            digits.append(to_mnist(quad))
        except NoInk:
            raise NoInk(f"no digit found in the {name} quadrant") from None
    return np.stack(digits).reshape(2, 2, 28, 28).swapaxes(1, 2).reshape(56, 56)


def prepare_number(
    pixels: np.ndarray, height: int, width: int, preprocess: bool = True
) -> np.ndarray:
    """A picture of a number (a line of digits, or a grid) -> the (height, width) uint8 canvas
    a numbers model reads: ink light on black, its digits scaled to NUMBER_DIGIT_HEIGHT (as
    the training numbers are) and centred; shrunk, down to NUMBER_MIN_HEIGHT, when the number
    is too wide for the canvas. Raises NoInk with nothing to read, TooWide when it cannot fit."""
    ready = _as_it_is(pixels, height, width, preprocess)
    if ready is not None:
        return ready
    ink = find_ink(pixels)
    rows, cols = np.nonzero(ink.image > 0)
    top, left = rows.min(), cols.min()
    crop = ink.image[top : rows.max() + 1, left : cols.max() + 1]
    mask = ink.mask[top : rows.max() + 1, left : cols.max() + 1]
    h, w = crop.shape
    heights = _mark_heights(*_large_marks(mask))
    digit_h = _median_height(heights)
    # One line of ink (no taller than LINE_SPAN of its tallest mark: not rows of digits) is
    # never read with digits less tall than the ink fitted to the canvas's height makes them:
    # the marks' median height undercounts a line whose marks differ in size (an 8 of two
    # loops, a dot), which would then seem too tall for the canvas. Rows of digits (a grid
    # given to a line's model) are still refused.
    if heights and h <= LINE_SPAN * max(heights):
        digit_h = max(digit_h, h * NUMBER_DIGIT_HEIGHT / (height - 2))
    strokes = normalize_pen(Ink(crop, mask), round(digit_h))
    scale = NUMBER_DIGIT_HEIGHT / digit_h
    fit = min(1.0, (width - 2) / (w * scale), (height - 2) / (h * scale))
    if NUMBER_DIGIT_HEIGHT * fit < NUMBER_MIN_HEIGHT:
        shape = "wide" if w * height > h * width else "tall"
        raise TooWide(
            f"the number is too {shape} for this model's {width}x{height} canvas: its digits "
            f"would be under {NUMBER_MIN_HEIGHT:.0f} pixels tall (fewer digits, or a grid model?)"
        )
    scale *= fit
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.BOX if scale < 1 else Image.BILINEAR
    number = np.asarray(
        Image.fromarray(strokes.astype(np.float32)).resize(size, resample), dtype=np.float32
    )
    number = number / max(1e-6, float(number.max()))
    canvas = np.zeros((height, width), np.float32)
    y, x = (height - size[1]) // 2, (width - size[0]) // 2
    canvas[y : y + size[1], x : x + size[0]] = number
    return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)
