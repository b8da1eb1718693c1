"""Pictures as the readers take them: any image file or file object -> float grayscale (H, W)
in [0, 1], whatever its bit depth or mode, decoded no larger than preparation needs.

    pixels = read_gray("photo.jpg")
"""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from digitformer.utils.errors import DigitformerError

MAX_IMAGE_PIXELS = 5000 * 5000  # a small compressed file can claim a huge image
EXIF_ORIENTATION = 0x0112
# The EXIF Orientation tag -> the turn that shows the picture upright (as ImageOps.exif_transpose)
ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
READ_SIZE = 512  # large files are decoded at no less than this longest side (2 x WORK_SIZE)


class TooLarge(DigitformerError):
    """An image that declares more pixels than allowed (checked from its header)."""


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
            turn = ORIENTATION.get(img.getexif().get(EXIF_ORIENTATION, 1))
            factor = max(img.size) // longest if longest else 1
            if factor >= 2 and img.format == "JPEG":
                img.draft("L" if img.mode in ("L", "RGB") else img.mode, _scaled(img, factor))
            pixels = gray_pixels(img)
            factor = max(pixels.shape) // longest if longest else 1
            if factor >= 2:
                pixels = np.asarray(Image.fromarray(pixels).reduce(factor), np.float32)
            if turn is not None:  # a phone stores a photo as its sensor saw it, and a tag
                pixels = np.asarray(Image.fromarray(pixels).transpose(turn), np.float32)
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
        gray = np.asarray(Image.alpha_composite(white, img).convert("L"), np.float32) / 255
        alpha = np.asarray(img.getchannel("A"), np.float32) / 255
        if np.ptp(gray) < 1 / 255 and np.ptp(alpha) >= 1 / 255:
            return 1 - alpha  # ink drawn only in the alpha channel (white on clear): its opacity
        return gray  # transparent areas read as paper
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
