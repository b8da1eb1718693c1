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

import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from digitformer.utils.errors import DigitformerError

MAX_IMAGE_PIXELS = 5000 * 5000  # a small compressed file can claim a huge image
WORK_SIZE = 256  # larger pictures are reduced to this longest side first: the digit needs less
MIN_WORK_SIZE = 56  # smaller ones (an 8x8 scan) are enlarged to it: room for a pen's edges
READ_SIZE = 2 * WORK_SIZE  # read_gray decodes large files at no less than this (a grid's quads)
BACKGROUND_SIZE = 64  # the paper and its lighting are estimated at this size: they are smooth
MIN_CONTRAST = 0.12  # ink must stand this far (of the full range) above its background
INKY = 0.25  # strokes over this share of the picture: its noise is measured on the paper alone
MIN_SNR = 5.0  # ...and this many times the paper's noise: a 5-sigma mark is not grain
WEAK_SNR = 6.0  # ...and a faint stretch of stroke joined to a strong one, this many (see _strokes)
MIN_EDGE = 0.06  # ...and rise at its edges by this share of its height a pixel (see _strokes)
TIE_BREAK = 0.02  # weight of the whole picture's polarity against the local one's (find_ink)
MNIST_STROKE = 2.6  # median stroke width of MNIST digits in their 20-pixel box
THIN_PEN = 2.0  # MNIST's 5th percentile of stroke width: thinner pens are grown to 2.6


NOTHING = "no digit found (nothing stands out of the background)"


class TooLarge(DigitformerError):
    """An image that declares more pixels than allowed (checked from its header)."""


class NoInk(DigitformerError):
    """There is nothing to read: blank paper, an empty canvas, a quadrant with no digit."""


class TooWide(DigitformerError):
    """A number too long (or a layout too large) for the canvas of the model that reads it."""


NUMBER_DIGIT_HEIGHT = 18.0  # a written number's digits are scaled to this height (14-22 trained)
NUMBER_MIN_HEIGHT = 12.0  # ...and shrunk no smaller than this to fit the canvas


@dataclass(frozen=True)
class Ink:
    """Where the strokes are: `image` float (H, W) in [0, 1], light ink on black, zero off
    the strokes; `mask` the strokes' pixels."""

    image: np.ndarray
    mask: np.ndarray


def read_gray(
    path,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    longest: int | None = READ_SIZE,
) -> np.ndarray:
    """An image file or file object (first frame) -> float grayscale (H, W) in [0, 1].

    Every mode is scaled, not clipped: 16-bit and 32-bit grayscale by their range, float images
    as they are; transparent areas read as white paper. A picture more than twice `longest` on
    its longest side is read reduced by a whole factor, to no less than `longest` (the
    preparation reads at most WORK_SIZE of it; None: full size): a JPEG decodes at that size
    (its DCT scaled, 2-8x faster), others are averaged over blocks."""
    name = name or str(path)
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:  # checked from the header, before decoding
                raise TooLarge(
                    f"{name}: image is {img.width}x{img.height}, over {max_pixels:,} pixels"
                )
            img.seek(0)
            factor = max(img.size) // longest if longest else 1
            if factor >= 2 and img.format == "JPEG":
                img.draft("L" if img.mode in ("L", "RGB") else img.mode, _scaled(img, factor))
            pixels = gray_pixels(img)
            factor = max(pixels.shape) // longest if longest else 1
            if factor >= 2:
                pixels = np.asarray(Image.fromarray(pixels).reduce(factor), np.float32)
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
    ) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise DigitformerError(f"{name}: cannot read image ({reason})") from None
    if pixels.size == 0:
        raise DigitformerError(f"{name}: empty image")
    return pixels


def _scaled(img: Image.Image, factor: int) -> tuple[int, int]:
    return -(-img.width // factor), -(-img.height // factor)


def gray_pixels(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> float grayscale (H, W) in [0, 1], scaled, not clipped."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        return np.clip(values / top, 0, 1).astype(np.float32)
    if img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float32))
        top = max(1.0, float(values.max()))
        return np.clip(values / top, 0, 1)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)  # transparent areas read as paper
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def is_mnist_like(pixels: np.ndarray) -> bool:
    """Light ink on a dark background with a dark border, as MNIST digits are."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return border.mean() < 0.1 and pixels.mean() < 0.5


def find_ink(pixels: np.ndarray) -> Ink:
    """The strokes of a grayscale picture, light on black, with paper and lighting removed.
    Raises NoInk when nothing stands out of the paper. The last few answers are kept: the
    layout and the preparation of one picture both ask (`predict`)."""
    x = _work_size(pixels)
    key = (x.shape, x.tobytes())
    with _CACHE_LOCK:
        found = _CACHE.get(key)
    if found is None:
        try:
            found = _find_ink(x)
            found.image.flags.writeable = found.mask.flags.writeable = False  # shared answers
        except NoInk as error:
            found = error
        with _CACHE_LOCK:
            _CACHE[key] = found
            while len(_CACHE) > 4:
                _CACHE.pop(next(iter(_CACHE)))
    if isinstance(found, NoInk):
        raise NoInk(*found.args)
    return found


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _first_pass(x: np.ndarray, background: np.ndarray) -> tuple[Ink, float, bool]:
    """The strokes against a first estimate of the paper, its noise, and whether they are
    dark. Raises NoInk."""
    local = x - background
    # Polarity: the local background decides (a shadow over half the sheet fools the
    # picture's median), but a thick pen's blots can outnumber the paper in its windows and
    # leave both tails alike: there the contrast with the picture's median, where strokes are
    # still a minority, breaks the tie.
    dark = _dark_margin(local) + TIE_BREAK * _dark_margin(x - np.median(x)) > 0
    # A shadow over most of the sheet can still fool both: its bright margins then outweigh
    # dark strokes, and what is found is soft shading. Pen strokes have edges: when one
    # polarity finds none, the other is tried.
    try:
        first, noise = _strokes(-local if dark else local)
    except NoInk as error:
        try:
            first, noise = _strokes(local if dark else -local)
        except NoInk:
            raise error from None
        dark = not dark
    return first, noise, dark


def _find_ink(x: np.ndarray) -> Ink:
    # First pass: the paper from a median over windows half the picture wide; when nothing
    # is found so, the strokes may fill the picture (cropped tight to its ink): then windows
    # reaching beyond it, into a frame of its own paper.
    # (Only then: what was found but soft, a shadow's rim, is no stroke cut by the frame.)
    try:
        first, noise, dark = _first_pass(x, _background(x))
    except NoInk as error:
        if error.args[0] != NOTHING:
            raise
        try:
            first, noise, dark = _first_pass(x, _background(x, wide=True))
        except NoInk:
            raise error from None
    # Second pass, now that the pen's width is known: a closing (an opening for light ink)
    # three strokes wide, and at least half the digit wide (a thick pen fills loops into blots
    # wider than its strokes, and those are ink too), removes the strokes and keeps the paper,
    # its lighting and shadow edges more closely than the median could. Dark ink is then
    # measured against its paper (a shadow dims both), light ink (chalk, a screen) by its
    # difference. Beyond the picture's edge lies more paper (mode "nearest": a stroke cut by
    # the frame is not taken for paper there).
    rows, cols = np.nonzero(first.mask)
    box = max(np.ptp(rows), np.ptp(cols)) + 1
    size = max(3, int(max(3 * stroke_width(first.mask), box / 2)) | 1)
    if dark:  # light falls on paper and ink alike: divide it out, as a scanner's flat field
        paper = ndimage.grey_closing(x, size=size, mode="nearest")
        scale = np.maximum(paper, 0.1)
        local = (paper - x) / scale
        noise = noise / float(np.median(scale))
    else:
        local = x - ndimage.grey_opening(x, size=size, mode="nearest")
    return _strokes(local, noise)[0]


def _work_size(pixels: np.ndarray) -> np.ndarray:
    """The picture at the size it is prepared at: reduced to WORK_SIZE on its longest side,
    or enlarged (bilinear) to MIN_WORK_SIZE when smaller."""
    longest = max(pixels.shape)
    if longest < MIN_WORK_SIZE:
        h, w = pixels.shape
        scale = MIN_WORK_SIZE / longest
        return _resize(pixels, (max(1, round(h * scale)), max(1, round(w * scale))))
    return _reduce(pixels, WORK_SIZE)


def _dark_margin(contrast: np.ndarray) -> float:
    """> 0 when the strokes are dark: they leave a long negative tail in the contrast, light
    ones a positive one; paper and lighting vary slowly and leave neither."""
    low, high = np.percentile(contrast, (0.5, 99.5))
    return float(-low - high)


def _paper_noise(contrast: np.ndarray, share: float) -> float:
    """The paper's own noise (grain, sensor, JPEG), robustly. While strokes are a minority
    (`share`, the picture's share above Otsu's threshold, under INKY), the median absolute
    deviation of the whole. A digit cropped to its ink fills half its frame, and that is then
    the strokes' own contrast: strokes lie only above the paper's level, so the paper is found
    at the contrast's most common value, its spread from the side below it, and then, clipped
    of what lies more than 2.5 spreads above it, refined as the median absolute deviation of
    the rest (never more than the whole's)."""
    mad = 1.4826 * float(np.median(np.abs(contrast - np.median(contrast))))
    low, high = np.percentile(contrast, (0.5, 99.5))
    if share < INKY or high <= low:
        return mad
    hist, edges = np.histogram(contrast, bins=128, range=(float(low), float(high)))
    hist = ndimage.uniform_filter1d(hist.astype(np.float32), 5, mode="constant")
    level = float(edges[int(np.argmax(hist)) + 1])  # the paper's level (its bin's upper edge)
    noise = 1.4826 * float(np.median(level - contrast[contrast <= level]))
    for _ in range(3):
        paper = contrast[contrast <= level + 2.5 * noise]
        level = float(np.median(paper))
        noise = 1.4826 * float(np.median(np.abs(paper - level)))
    return min(mad, noise)


def _strokes(contrast: np.ndarray, noise: float | None = None) -> tuple[Ink, float]:
    """Ink from the local contrast of the strokes (positive where they are), and the paper's
    noise (measured here, or as given: the smaller)."""
    ink = np.clip(contrast, 0, None)
    peak = float(np.percentile(ink, 99.7))
    if peak < MIN_CONTRAST:
        raise NoInk(NOTHING)
    ink = np.clip(ink / peak, 0, 1)
    threshold = _otsu(ink)
    measured = _paper_noise(contrast, float(np.mean(ink > threshold)))
    noise = measured if noise is None else min(noise, measured)
    if peak < MIN_SNR * noise:
        raise NoInk(NOTHING)
    # A pen leaves edges; light and shadow do not: the contrast must rise at the marks' edges
    # by MIN_EDGE of its height a pixel or more (a shadow's penumbra is a slow ramp).
    slope = _slope(ink)
    mask = _drop_specks(_sharp_marks(ink > threshold, ink, slope))
    if not mask.any():
        raise NoInk("no digit found (only specks)")
    if np.percentile(slope[_boundary(mask)], 75) < MIN_EDGE:
        raise NoInk("no digit found (only soft shading, no pen strokes)")
    # Keep the soft edges of the strokes (anti-aliasing), not the faint haze of noise or JPEG
    # ringing around them, nor anything away from the strokes that remain but faint stretches
    # joined to them (hysteresis, as Canny's edges: a pencil's stroke, a pen running dry). The
    # mask (the pen's width, the layout of the marks) stays the strokes above the threshold.
    soft = np.clip((ink - threshold / 2) / (1 - threshold / 2), 0, 1)
    low = min(threshold, max(threshold / 2, WEAK_SNR * noise / peak))
    pieces, _ = ndimage.label(ink > low, structure=EIGHT)
    joined = pieces[mask]
    kept = np.zeros(pieces.max() + 1, bool)
    kept[joined] = True
    kept[0] = False
    keep = ndimage.binary_dilation(kept[pieces] | mask, structure=EIGHT_CROSS)
    return Ink(np.where(keep, soft, 0.0).astype(np.float32), mask), noise


EIGHT = np.ones((3, 3), bool)
EIGHT_CROSS = ndimage.generate_binary_structure(2, 1)


def _slope(ink: np.ndarray) -> np.ndarray:
    """The contrast's rise a pixel (central differences, one-sided at the picture's edges)."""
    if min(ink.shape) < 2:
        return np.zeros_like(ink)
    gy, gx = np.gradient(ink)
    return np.hypot(gy, gx)


def _reduce(pixels: np.ndarray, longest: int) -> np.ndarray:
    """The picture with its longest side at most `longest`, by area averaging (no aliasing)."""
    h, w = pixels.shape
    scale = longest / max(h, w)
    if scale >= 1:
        return pixels.astype(np.float32)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(pixels.astype(np.float32))
    return np.asarray(img.resize(size, Image.BOX), dtype=np.float32)


def _resize(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float picture to `shape` (rows, columns)."""
    if pixels.shape == tuple(shape):
        return pixels.astype(np.float32)
    img = Image.fromarray(pixels.astype(np.float32))
    return np.asarray(img.resize(shape[::-1], Image.BILINEAR), dtype=np.float32)


def _background(x: np.ndarray, wide: bool = False) -> np.ndarray:
    """The paper and its lighting: a median over windows half the picture wide, where strokes
    are a minority, so it follows gradients and shadow edges but not the strokes. Computed on
    a BACKGROUND_SIZE copy (lighting is smooth; a quarter of it when wide), every other
    window, and brought back to full size. Beyond the picture's edges lies more of its paper
    (see `_frame_with_paper`).

    `wide`: for strokes that fill their picture (a digit cropped tight to its ink, a scan it
    fills), where even those windows are mostly ink: the picture is framed by half its size of
    its paper and the windows are half the framed picture wide, so they reach beyond it."""
    small = _reduce(x, BACKGROUND_SIZE // 4 if wide else BACKGROUND_SIZE)
    if wide:
        framed = _frame_with_paper(small, max(1, min(small.shape) // 2))
        size = max(3, (min(framed.shape) // 2) | 1)
        step = 1
    else:
        size = max(3, (min(small.shape) // 2) | 1)
        framed = _frame_with_paper(small, size // 2)
        step = 2 if min(small.shape) >= 32 else 1
    windows = np.lib.stride_tricks.sliding_window_view(framed, (size, size))[::step, ::step]
    background = np.median(windows.reshape(*windows.shape[:2], -1), axis=-1).astype(np.float32)
    return _resize(background, x.shape)


def _frame_with_paper(small: np.ndarray, width: int) -> np.ndarray:
    """`small` framed by `width` pixels of its paper: its border's running median, carried on."""
    h, w = small.shape
    if h < 2 or w < 2:
        ring = small.ravel()
        paper = np.full_like(small, np.median(ring))
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


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (the split that maximizes between-class variance)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(1, hist.sum())
    omega = np.cumsum(p)
    mu = np.cumsum(p * (edges[:-1] + edges[1:]) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1 - omega))
    return float(edges[int(np.nanargmax(between)) + 1])


def _sharp_marks(mask: np.ndarray, ink: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Drop the soft marks beside the strokes (the rim of a shadow the background missed):
    those whose contrast rises at their edges by less than MIN_EDGE of their own height a
    pixel. All of them soft: the mask is kept, for the caller's test to refuse."""
    labels, count = ndimage.label(mask, structure=EIGHT)
    if count <= 1:
        return mask
    index = np.arange(1, count + 1)
    height = ndimage.maximum(ink, labels, index)
    edge = _boundary(mask)
    rise = _labelled_percentile(slope[edge], labels[edge], count, 75)
    sharp = np.zeros(count + 1, bool)
    sharp[1:] = rise >= MIN_EDGE * np.maximum(height, 1e-6)
    return sharp[labels] if sharp.any() else mask


def _labelled_percentile(values, labels, count: int, q: float) -> np.ndarray:
    """The q-th percentile (linear, as np.percentile) of `values` for each label 1..count
    (0 where a label has none), all at once."""
    order = np.lexsort((values, labels))
    values, labels = values[order], labels[order]
    n = np.bincount(labels, minlength=count + 1)[1:]
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    position = start + q / 100 * np.maximum(n - 1, 0)
    lo = np.floor(position).astype(int)
    hi = np.minimum(lo + 1, start + np.maximum(n - 1, 0))
    if not len(values):
        return np.zeros(count)
    lo, hi = np.minimum(lo, len(values) - 1), np.minimum(hi, len(values) - 1)
    out = values[lo] + (values[hi] - values[lo]) * (position - lo)
    return np.where(n > 0, out, 0.0)


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """Keep the digit's pieces: components of at least a tenth of the largest one's area."""
    labels, count = ndimage.label(mask, structure=EIGHT)
    if count <= 1:
        return mask
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    areas[0] = 0
    return (areas >= 0.1 * areas.max())[labels] & mask


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's own pixels that touch the outside."""
    return mask & ~ndimage.binary_erosion(mask)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 x area / boundary length (both edges of a stroke)."""
    return 2.0 * mask.sum() / max(1, _boundary(mask).sum())


def _normalize_pen(ink: Ink, box: int) -> np.ndarray:
    """Grow strokes far thinner than MNIST's (their width scaled to the 20-pixel box under
    THIN_PEN) to its median width. Thick pens are left alone: thinning them by erosion closed
    loops and broke strokes, and the models are trained on thick pens (aug_stroke)."""
    scaled = stroke_width(ink.mask) * 20.0 / box
    radius = round((MNIST_STROKE - scaled) * box / 20.0 / 2)
    if scaled >= THIN_PEN or radius < 1:
        return ink.image
    return ndimage.maximum_filter(ink.image, size=2 * radius + 1)


def to_mnist(pixels: np.ndarray) -> np.ndarray:
    """Any grayscale picture of one digit -> uint8 (28, 28), prepared as MNIST was.
    Raises NoInk when there is nothing to read."""
    ink = find_ink(pixels)
    rows, cols = np.nonzero(ink.image > 0)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    box = max(bottom - top, right - left)
    strokes = _normalize_pen(ink, box)
    rows, cols = np.nonzero(strokes > 0.05)
    crop = strokes[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.BOX if scale < 1 else Image.BILINEAR
    digit = np.asarray(
        Image.fromarray(crop.astype(np.float32)).resize(size, resample), dtype=np.float32
    )
    digit = digit / max(1e-6, float(digit.max()))  # the darkest stroke is full ink, as in MNIST
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - size[1]) // 2, (28 - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = digit
    # shift so the centre of mass sits at the centre, as MNIST did
    cy, cx = ndimage.center_of_mass(canvas)
    canvas = ndimage.shift(canvas, (round(13.5 - cy), round(13.5 - cx)), order=0)
    return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)


def looks_like_grid(pixels: np.ndarray) -> bool:
    """Whether the ink forms three or more separate marks spread over both halves of the
    picture, across and down, in two rows, as a 2x2 grid of digits does (one digit is one
    mark, or a few close together). Pictures with nothing to read are not grids."""
    return layout_of(pixels) == "grid"


def looks_like_number(pixels: np.ndarray) -> bool:
    """Whether the ink is a row of digits: at least 1.6 times as wide as its digits are tall,
    or 1.2 times with two or more large marks side by side (a lone digit is about as wide as
    it is tall, or less). Grids and pictures with nothing to read are not numbers."""
    return layout_of(pixels) == "number"


def layout_of(pixels: np.ndarray) -> str:
    """Which reader a picture calls for, from its ink: "grid", "number" or "digit" (also for
    a picture with nothing to read)."""
    try:
        mask = find_ink(pixels).mask
    except NoInk:
        return "digit"
    labels, large, reach = _large_marks(mask)
    height = _median_height(labels, large, reach)
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
    labels, count = ndimage.label(ndimage.binary_dilation(mask, iterations=reach))
    if count == 0:
        return labels, [], reach
    areas = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return labels, [int(i) + 1 for i in np.flatnonzero(areas >= 0.2 * areas.max())], reach


def _median_height(labels: np.ndarray, large: list[int], reach: int) -> float:
    boxes = ndimage.find_objects(labels)
    heights = [boxes[i - 1][0].stop - boxes[i - 1][0].start - 2 * reach for i in large]
    return float(max(1, np.median(heights))) if heights else 1.0


def digit_height(mask: np.ndarray) -> float:
    """The height of the digits in a picture of several: the median height of its large
    marks (see `_large_marks`)."""
    return _median_height(*_large_marks(mask))


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
    digit_h = digit_height(mask)
    strokes = _normalize_pen(Ink(crop, mask), round(digit_h))
    h, w = crop.shape
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
