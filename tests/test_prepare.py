"""Preparing people's pictures: bit depths, paper, lighting, pens, and nothing to read."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from digitformer.apps.cli import main
from digitformer.data import load_split
from digitformer.inference.prepare import (
    NoInk,
    find_ink,
    prepare,
    read_gray,
    stroke_width,
    to_mnist,
)


@pytest.fixture(scope="module")
def digits():
    from helpers import SUBSET

    return load_split(SUBSET, "test")


def correlation(a, b):
    """Best correlation over shifts of up to 2 pixels: centring by mass may round either way."""
    return max(
        np.corrcoef(np.roll(a, (dy, dx), (0, 1)).ravel().astype(float), b.ravel().astype(float))[
            0, 1
        ]
        for dy in range(-2, 3)
        for dx in range(-2, 3)
    )


def on_paper(digit: np.ndarray, scale: int = 6) -> np.ndarray:
    """The digit written dark on light paper, `scale` times larger, as float in [0, 1]."""
    big = np.kron(digit.astype(np.float32) / 255, np.ones((scale, scale), np.float32))
    sheet = np.full((big.shape[0] + 40, big.shape[1] + 60), 0.9, np.float32)
    sheet[20:-20, 30:-30] -= 0.75 * big
    return sheet


def test_sixteen_bit_images_read_as_their_eight_bit_twin(tmp_path, digits):
    eight = digits.images[0]
    Image.fromarray(eight).save(tmp_path / "8.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "16.png")  # full 16-bit range
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    np.testing.assert_allclose(read_gray(tmp_path / "16.png"), read_gray(tmp_path / "8.png"))
    Image.fromarray(eight.astype(np.float32) / 255).save(tmp_path / "f.tiff")  # float TIFF
    np.testing.assert_allclose(read_gray(tmp_path / "f.tiff"), read_gray(tmp_path / "8.png"))


@pytest.mark.parametrize(
    "lighting",
    [
        lambda s: s * np.linspace(0.35, 1.0, s.shape[1])[None, :],  # a gradient across
        lambda s: s * (1 - 0.5 * (np.arange(s.shape[0])[:, None] > s.shape[0] // 2)),  # a shadow
        lambda s: s + np.random.default_rng(0).normal(0, 0.08, s.shape),  # noise
    ],
    ids=["gradient", "hard shadow", "noise"],
)
def test_uneven_light_is_removed_and_the_digit_recovered(digits, lighting):
    for digit in digits.images[:5]:
        sheet = np.clip(lighting(on_paper(digit)), 0, 1).astype(np.float32)
        assert correlation(to_mnist(sheet), digit) > 0.75


@pytest.mark.parametrize(
    "blank",
    [
        np.ones((280, 280), np.float32),  # an empty canvas
        np.zeros((28, 28), np.float32),  # a black MNIST-sized image
        np.clip(np.random.default_rng(1).normal(0.85, 0.03, (200, 300)), 0, 1),  # paper grain
        np.linspace(0.3, 0.95, 256 * 256).reshape(256, 256).astype(np.float32),  # light only
    ],
    ids=["canvas", "black", "paper", "gradient"],
)
def test_nothing_to_read_is_said_not_guessed(blank):
    with pytest.raises(NoInk, match="no digit found"):
        prepare(blank, grid=False)


def soft_shadow(
    sheet: np.ndarray, blur: float = 12.0, centre=(0.8, 0.9), radius: float = 90
) -> np.ndarray:
    """A hand's soft-edged shadow, `radius` pixels round `centre` (a share of the sheet's
    height and width; by default over its lower right)."""
    from scipy import ndimage

    h, w = sheet.shape
    ys, xs = np.mgrid[0:h, 0:w]
    inside = ((ys - centre[0] * h) ** 2 + (xs - centre[1] * w) ** 2) < radius**2
    return sheet * (1 - 0.55 * ndimage.gaussian_filter(inside.astype(np.float32), blur))


def test_a_soft_shadow_is_not_a_digit_and_a_digit_in_it_still_is(digits):
    """A shadow's edge stands well out of clean paper, but it rises slowly: no pen did it."""
    with pytest.raises(NoInk, match="soft shading"):
        prepare(soft_shadow(np.full((256, 256), 0.9, np.float32)), grid=False)
    for digit in digits.images[:5]:
        sheet = soft_shadow(on_paper(digit, 7)).astype(np.float32)
        assert correlation(to_mnist(sheet), digit) > 0.75


def test_a_digit_in_a_shadow_over_most_of_the_sheet_is_read_without_the_shadows_rim(digits):
    """The bright paper around a wide shadow outweighs the dark strokes in the contrast's
    tails; what that polarity finds has no pen edges, so the other one is read. A shadow's
    rim beside a digit is soft too and left out of its ink."""
    for digit in digits.images[:8]:
        sheet = on_paper(digit, 7)
        wide = 0.6 * sheet.shape[0]
        assert (
            correlation(to_mnist(soft_shadow(sheet, centre=(0.5, 0.5), radius=wide)), digit) > 0.9
        )
        assert (
            correlation(to_mnist(soft_shadow(sheet, centre=(0.5, 1.25), radius=wide)), digit) > 0.9
        )


def test_a_faint_stretch_of_a_stroke_is_kept_where_it_joins_a_strong_one():
    """A 7 whose bar fades away from the stem (a pencil, a pen running dry): Otsu's threshold
    alone cuts the whole bar off and leaves a 1; joined to the strong stem, it stays."""
    sheet = np.full((200, 200), 0.9, np.float32)
    sheet[40:52, 50:150] -= np.linspace(0.1, 0.35, 100)[None, :]  # the bar, fading to the left
    for y in range(52, 170):  # the stem, dark, down to the lower left
        x = 146 - (y - 52) * 50 // 118
        sheet[y, x - 6 : x + 6] = 0.15
    assert (find_ink(sheet).image[40:52] > 0).sum() > 0.5 * 12 * 100


def test_a_grid_with_an_empty_quadrant_says_which(digits):
    sheet = np.ones((200, 200), np.float32)
    sheet[:100, :100] = on_paper(digits.images[0], 3)[:100, :100]
    with pytest.raises(NoInk, match="top-right"):
        prepare(sheet, grid=True)


def seven(width: int) -> np.ndarray:
    """A 7 written on a 280x280 canvas with a pen `width` pixels wide: dark on white."""
    from PIL import ImageDraw

    canvas = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(canvas).line([(60, 50), (220, 50), (120, 240)], fill=0, width=width)
    return np.asarray(canvas, np.float32) / 255


def test_a_fine_pen_is_grown_to_mnists_width_and_a_marker_left_whole():
    fine = to_mnist(seven(2)) > 100
    assert 1.8 <= stroke_width(fine) <= 4.8  # MNIST's pens: 2.1-4.1 (5th-95th percentile)
    marker = to_mnist(seven(45)) > 100
    assert stroke_width(marker) > 3.5  # not eroded: thinning broke the shapes of thick digits
    square = np.zeros((40, 40), bool)
    square[10:30, 10:14] = True  # a bar 4 pixels wide
    assert stroke_width(square) == pytest.approx(4, rel=0.25)


def test_a_thick_pens_zero_is_read_as_ink_around_a_hole():
    """A marker's 0 covers more of its neighbourhood than the paper does: the local contrast's
    tails look alike there, and the hole was once taken for light ink on a dark board."""
    from PIL import ImageDraw

    canvas = Image.new("L", (256, 256), 230)
    ImageDraw.Draw(canvas).ellipse((60, 30, 196, 226), outline=30, width=40)
    digit = to_mnist(np.asarray(canvas, np.float32) / 255)
    assert digit[12:16, 12:16].mean() < 60  # the hole is paper
    assert digit[10:18, 4:9].max() > 200  # the ring's left side is ink


def test_predict_reports_blank_pictures_and_still_reads_the_rest(
    tmp_path, capsys, digits, tiny_checkpoint
):
    _, ckpt = tiny_checkpoint("encoder-only")
    Image.fromarray(np.full((100, 100), 255, np.uint8)).save(tmp_path / "a-blank.png")
    Image.fromarray(digits.images[0]).save(tmp_path / "b-digit.png")
    assert main(["predict", str(ckpt), str(tmp_path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == ["a-blank.png", "b-digit.png"]
    assert rows[0]["digits"] is None and "no digit found" in rows[0]["reason"]
    assert len(rows[1]["digits"]) == 1 and rows[1]["reason"] is None
    assert rows[1]["low_confidence"] == (rows[1]["confidence"][0] < 0.6)
    assert main(["predict", str(ckpt), str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "no digit found" in table


def test_jpeg_of_a_photo_reads_from_bytes(digits):
    buffer = io.BytesIO()
    sheet = np.clip(on_paper(digits.images[2]) * 255, 0, 255).astype(np.uint8)
    Image.fromarray(sheet).save(buffer, "JPEG", quality=20)
    buffer.seek(0)
    assert correlation(to_mnist(read_gray(buffer)), digits.images[2]) > 0.75


def test_predict_reads_standard_input_and_writes_csv(tmp_path, digits, tiny_checkpoint):
    import csv
    import subprocess
    import sys

    _, ckpt = tiny_checkpoint("encoder-only")
    image = io.BytesIO()
    Image.fromarray(digits.images[0]).save(image, format="PNG")
    out = tmp_path / "read.csv"
    result = subprocess.run(
        [sys.executable, "-m", "digitformer", "predict", str(ckpt), "-", "--csv", str(out)],
        input=image.getvalue(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert row["file"] == "-" and len(row["digits"]) == 1 and row["reason"] == ""
    assert float(row["number_confidence"]) == pytest.approx(float(row["confidence"]), abs=1e-4)


def test_standard_input_is_read_no_further_than_a_picture_and_csv_never_replaces_one(
    tmp_path, digits, monkeypatch, capsys
):
    """An endless pipe to `predict -` is refused once past MAX_STDIN_BYTES (not held in
    memory), and `--csv` naming one of the pictures is refused before anything is written."""
    import sys

    import digitformer.inference.predict as predict

    monkeypatch.setattr(predict, "MAX_STDIN_BYTES", 1000)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x" * 5000)))
    assert main(["predict", "-"]) == 1
    assert "standard input is over 1,000 bytes" in capsys.readouterr().err
    picture = tmp_path / "x.png"
    Image.fromarray(255 - digits.images[0]).save(picture)
    before = picture.read_bytes()
    assert main(["predict", str(picture), "--csv", str(picture)]) == 1
    assert "is one of the pictures" in capsys.readouterr().err
    assert picture.read_bytes() == before


def test_the_ink_layout_tells_a_grid_from_one_digit(digits):
    from digitformer.data import make_grids
    from digitformer.inference.prepare import layout_of

    looks_like_grid = lambda p: layout_of(p) == "grid"

    grids = make_grids(digits.images, digits.labels, 10, seed=3).images
    as_pictures = [1 - g.astype(np.float32) / 255 for g in grids]  # dark ink on white
    assert sum(looks_like_grid(p) for p in as_pictures) >= 9
    singles = [on_paper(d, 4) for d in digits.images[:20]]
    assert sum(looks_like_grid(p) for p in singles) <= 1
    assert not looks_like_grid(np.ones((100, 100), np.float32))  # nothing at all


def test_the_ink_layout_tells_a_number_from_one_digit_and_a_grid(digits):
    from digitformer.data import make_grids
    from digitformer.data.numbers import make_numbers
    from digitformer.inference.prepare import layout_of

    lines = make_numbers(digits.images, digits.labels, 40, seed=2, max_digits=6)
    several = [
        1 - n.astype(np.float32) / 255 for n, k in zip(lines.images, lines.lengths) if k >= 3
    ]
    assert sum(layout_of(p) == "number" for p in several) >= 0.9 * len(several)
    singles = [on_paper(d, 4) for d in digits.images[:20]]
    assert sum(layout_of(p) == "digit" for p in singles) >= 18
    grids = make_grids(digits.images, digits.labels, 10, seed=3).images
    assert sum(layout_of(1 - g.astype(np.float32) / 255) == "grid" for g in grids) >= 9


# ---- invariance: a digit read right on its MNIST frame reads the same on any clear picture ----
# (benchmarks/invariance.py measures the same on 1000 test digits; these floors are looser)

PAPER = 0.92


def _paper(digit: np.ndarray, scale: int = 4) -> np.ndarray:
    side = 28 * scale
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR), np.float32)
    return PAPER - 0.8 * ink / 255


def _jpeg(picture: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(picture * 255, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=quality
    )
    return np.asarray(Image.open(buffer), np.float32) / 255


def _crop(digit, rng):
    picture = _paper(digit)
    ys, xs = np.nonzero(picture < PAPER - 0.05)
    margin = int(round(rng.uniform(0, 0.5) * max(np.ptp(ys), np.ptp(xs))))
    framed = np.pad(picture, margin, constant_values=PAPER)
    return framed[ys.min() : ys.max() + 1 + 2 * margin, xs.min() : xs.max() + 1 + 2 * margin]


def _scale(digit, rng):
    factor = float(np.exp(rng.uniform(np.log(0.25), np.log(8))))
    side = max(1, round(28 * factor))
    method = Image.BOX if factor < 1 else Image.BILINEAR
    return np.asarray(Image.fromarray(_paper(digit, 1)).resize((side, side), method), np.float32)


def _non_square(digit, rng):
    picture = _paper(digit)
    extra = int(round(picture.shape[0] * rng.uniform(0.2, 2)))
    pad = [(0, 0), (0, 0)]
    pad[int(rng.integers(2))] = (extra // 3, extra - extra // 3)
    return np.pad(picture, pad, constant_values=PAPER)


def _ramp(shape, rng, low):
    h, w = shape
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (
        np.cos(angle) * np.linspace(0, 1, w)[None, :]
        + np.sin(angle) * np.linspace(0, 1, h)[:, None]
    )
    ramp = (ramp - ramp.min()) / np.ptp(ramp)
    return (low + (1 - low) * ramp).astype(np.float32)


def _shadow(picture, rng):
    h, w = picture.shape
    centre = (rng.uniform(0, 1), rng.uniform(0, 1))
    return soft_shadow(picture, blur=h / 20, centre=centre, radius=rng.uniform(0.3, 0.6) * h)


def _one_side_lighter(digit, rng):
    """The digit's ink beyond a line through its centre, at a random angle, 40-70% as dark."""
    picture = _paper(digit)
    ys, xs = np.mgrid[0:112, 0:112] - 56
    angle = rng.uniform(0, 2 * np.pi)
    beyond = np.cos(angle) * xs + np.sin(angle) * ys > 0
    return np.where(beyond, PAPER - (PAPER - picture) * rng.uniform(0.4, 0.7), picture)


INVARIANCE = {
    "crop 0-50% margin": _crop,
    "scale 0.25x-8x": _scale,
    "non-square": _non_square,
    "inverted": lambda d, r: 1 - _paper(d),
    "blur sigma 0-2": lambda d, r: ndimage_filter(_paper(d), r.uniform(0, 2)),
    "JPEG quality 30-95": lambda d, r: _jpeg(_paper(d), int(r.integers(30, 96))),
    "rotated +-15": lambda d, r: ndimage_rotate(_paper(d), r.uniform(-15, 15)),
    "gradient": lambda d, r: _paper(d) * _ramp((112, 112), r, r.uniform(0.35, 0.7)),
    "shadow": lambda d, r: _shadow(_paper(d), r),
    "one side lighter": _one_side_lighter,
}


def ndimage_filter(picture, sigma):
    from scipy import ndimage

    return ndimage.gaussian_filter(picture, sigma)


def ndimage_rotate(picture, angle):
    from scipy import ndimage

    return ndimage.rotate(picture, angle, reshape=False, order=1, cval=PAPER)


@pytest.fixture(scope="module")
def reader():
    import digitformer

    return digitformer.load("digit", device="cpu")


def _read(reader, pictures):
    """The digit read in each picture, or None where nothing was found."""
    return [
        r.digits for r in reader.predict([np.clip(p, 0, 1).astype(np.float32) for p in pictures])
    ]


@pytest.fixture(scope="module")
def read_right(digits, reader):
    """30 real MNIST test digits the bundled reader gets right on their own frame."""
    own = _read(reader, [d.astype(np.float32) / 255 for d in digits.images[:40]])
    right = [i for i, d in enumerate(own) if d == str(digits.labels[i])][:30]
    return digits.images[right], digits.labels[right]


@pytest.mark.parametrize("name", list(INVARIANCE))
def test_a_digit_read_right_on_its_frame_reads_the_same_on_any_clear_picture_of_it(
    read_right, reader, name
):
    images, labels = read_right
    rng = np.random.default_rng(sorted(INVARIANCE).index(name))
    read = _read(reader, [INVARIANCE[name](d, rng) for d in images])
    same = np.mean([r == str(y) for r, y in zip(read, labels)])
    assert same >= 0.9, f"{name}: {same:.0%} read the same"


def test_a_prepared_digit_is_as_full_of_ink_as_mnists_however_dark_its_pen(digits):
    """MNIST's strokes are saturated: 38% of a digit's inked pixels are at full ink. A digit
    drawn with a dark pen, a pale pencil, or one side pressed lighter is prepared as full."""
    rng = np.random.default_rng(0)
    pens = {
        "dark": _paper,
        "pale": lambda d: PAPER - (PAPER - _paper(d)) * 0.4,
        "one side lighter": lambda d: _one_side_lighter(d, rng),
    }
    for name, pen in pens.items():
        full = []
        for d in digits.images[:30]:
            x = prepare(np.clip(pen(d), 0, 1).astype(np.float32), grid=False) / 255
            full.append(np.mean(x[x > 0] >= 0.95))
        assert 0.3 <= np.median(full) <= 0.6, f"{name}: {np.median(full):.0%} at full ink"


def test_a_digit_cropped_tight_to_its_ink_or_filling_a_tiny_scan_is_read(digits, reader):
    """Ink touching the frame is no lighting: the paper is what lies beyond it. MNIST digits
    (dark on white) cut to their ink with no margin, and tiny scans that the digit fills
    (shrunk to 12x12 or 16x16) are read, not refused as blank."""
    images, labels = digits.images[:60], digits.labels[:60]
    tight = []
    for d in images:
        ys, xs = np.nonzero(d)
        tight.append(
            1 - d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255
        )
    read = _read(reader, tight)
    assert sum(r is None for r in read) <= 3
    assert np.mean([r == str(y) for r, y in zip(read, labels)]) >= 0.9
    for side in (12, 16):  # the tight digits shrunk to a tiny scan that they fill
        small = [np.asarray(Image.fromarray(t).resize((side, side), Image.BOX)) for t in tight[:20]]
        read = _read(reader, small)
        assert sum(r == str(y) for r, y in zip(read, labels)) >= 16


def test_few_digits_cropped_to_their_ink_are_taken_for_blank_paper(digits):
    """A digit that fills its frame leaves no part of it paper alone: its noise is measured on
    the class below Otsu's split, not at the most common value, which for MNIST's saturated
    strokes is ink; and where even that finds nothing, the paper inside is interpolated from
    the picture's border (`paper_inside`), not taken as a median of windows that are still
    half ink. Of the subset's 1000 test digits cut to their ink, 17 were refused as blank,
    clean or with grain, then 7, now 3 (issue 30: none should be)."""
    from digitformer.inference.ink import find_ink

    rng = np.random.default_rng(0)
    refused = {"clean": 0, "grainy": 0}
    for d in digits.images:
        ys, xs = np.nonzero(d)
        tight = 1 - d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255
        grainy = np.clip(0.9 * tight + 0.05 + rng.normal(0, 0.02, tight.shape), 0, 1)
        for kind, picture in (("clean", tight), ("grainy", grainy.astype(np.float32))):
            try:
                find_ink(picture)
            except NoInk:
                refused[kind] += 1
    assert len(digits.images) == 1000 and max(refused.values()) <= 4, refused


def test_the_paper_inside_a_picture_is_interpolated_from_its_border():
    """The Coons patch of the border: exact for a lighting gradient (a plane), and blind to
    strokes inside however much of the picture they fill."""
    from digitformer.inference.paper import paper_inside

    rows, cols = np.mgrid[0:30, 0:20].astype(np.float32)
    plane = 0.9 - 0.01 * rows + 0.004 * cols
    inked = plane.copy()
    inked[3:-3, 3:-3] = 0.1  # strokes over two thirds of it, the border left paper
    np.testing.assert_allclose(paper_inside(inked), plane, atol=1e-5)


def test_a_phone_photo_of_a_blank_sheet_is_refused():
    """Everything a phone photo of a note has at once (gradient, shadow, paper texture, blur,
    noise, JPEG at quality 40: `benchmarks.robustness.phone`) on a sheet with nothing on it.
    The preparation alone refuses 80% of them (its texture's blotches pass for marks in the
    rest: a known limit, measured here, not hidden). Measuring the noise of pictures that
    strokes fill at the finest scale (Haar) read nearly all of them as ink; this guards it."""
    from benchmarks.robustness import blank

    rng = np.random.default_rng(11)
    refused = 0
    for _ in range(60):
        try:
            prepare(np.clip(blank("phone photo", rng), 0, 1).astype(np.float32), grid=False)
        except NoInk:
            refused += 1
    assert refused >= 42, f"{refused} of 60 refused"  # 48, then 46, now 47 (41 with no side rule)


def BLANK_SHADOW(r, s):
    centre = (r.uniform(0, 1), r.uniform(0, 1))
    return soft_shadow(np.full((s, s), 0.85, np.float32), s / 20, centre, 0.4 * s)


@pytest.mark.parametrize(
    "blank",
    [
        lambda r, s: np.full((s, s), r.uniform(0.6, 0.97), np.float32),
        lambda r, s: np.full((s, s), 0.85, np.float32) + r.normal(0, r.uniform(0.03, 0.12), (s, s)),
        lambda r, s: np.full((s, s), 0.85, np.float32) * _ramp((s, s), r, r.uniform(0.35, 0.7)),
        lambda r, s: (
            0.85 + ndimage_filter(r.normal(0, 1, (s, s)), 3) * 0.2 + r.normal(0, 0.02, (s, s))
        ),
        BLANK_SHADOW,
    ],
    ids=["sheet", "noise", "gradient", "texture", "shadow"],
)
def test_a_blank_sheet_texture_shadow_or_noise_alone_is_refused_at_any_size(blank):
    rng = np.random.default_rng(7)
    refused = 0
    # a shadow's rim blurred by under ~7 pixels rises like a pen's edge: shadows on large
    # pictures only (a known limit of the edge test, as before)
    sides = (256, 320, 400) * 4 if blank is BLANK_SHADOW else (16, 40, 112, 256) * 3
    for side in sides:
        try:
            prepare(np.clip(blank(rng, side), 0, 1).astype(np.float32), grid=False)
        except NoInk:
            refused += 1
    assert refused >= 11, f"{refused} of 12 refused"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_phone_photo_stored_sideways_is_read_upright(tmp_path, digits, orientation):
    """Phones store a photo as the sensor saw it and an EXIF Orientation tag saying how to turn
    it: every path that decodes a file (the CLI, the API, the server) reads it upright."""
    from PIL import Image

    import digitformer

    turn = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
            8: Image.Transpose.ROTATE_270}[orientation]  # fmt: skip
    upright = Image.fromarray(255 - np.kron(digits.images[7], np.ones((6, 6), np.uint8)))
    stored = upright.transpose(turn)  # what the sensor saw; the tag turns it back
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    stored.save(path, quality=92, exif=exif)
    assert np.abs(read_gray(path) - np.asarray(upright, np.float32) / 255).mean() < 0.02
    reader = digitformer.load("digit")
    (from_file,) = reader.predict([path])
    (from_pil,) = reader.predict([Image.open(path)])
    assert from_file.digits == from_pil.digits == str(digits.labels[7])


def test_a_shadows_rim_apart_from_a_digit_is_no_part_of_it(digits):
    """One pen and one focus drew every stroke of a picture: a shadow's rim that stands out
    of the paper as a mark of its own has edges several times wider than the strokes' and is
    left out (before that rule, it pulled most of these digits off their frame)."""
    from scipy import ndimage

    h, w = 112, 168
    ys, xs = np.mgrid[0:h, 0:w]
    for k, digit in enumerate(digits.images[:12]):
        sheet = np.full((h, w), 0.9, np.float32)
        big = np.asarray(Image.fromarray(digit).resize((h, h), Image.BILINEAR), np.float32)
        sheet[:, :h] -= 0.75 * big / 255  # the digit on the left, the shadow on the right
        top = [0.0, 0.5, 1.0][k % 3] * h
        inside = (((ys - top) / 36) ** 2 + ((xs - w) / 36) ** 2 < 1).astype(np.float32)
        shaded = sheet * (1 - 0.45 * ndimage.gaussian_filter(inside, h / 20))
        assert correlation(to_mnist(shaded), to_mnist(sheet)) > 0.95, k


def test_strokes_of_one_pen_stay_however_faint_or_blurred():
    """A mark is judged by its edges' width, not its contrast: a fainter stroke apart from a
    strong one, both blurred alike, are both ink."""
    from scipy import ndimage

    sheet = np.full((160, 160), 0.9, np.float32)
    sheet[30:130, 40:52] -= 0.75  # a strong stem
    sheet[30:42, 80:130] -= 0.5  # a fainter bar, apart from it
    for sigma in (0.0, 1.5, 3.0):
        mask = find_ink(ndimage.gaussian_filter(sheet, sigma)).mask
        assert mask[30:130, 40:52].mean() > 0.5 and mask[30:42, 80:130].mean() > 0.5, sigma


def test_a_thin_pale_one_beside_a_bold_zero_is_ink_not_a_speck():
    """A speck is small every way: a mark as tall as the writing stays, however little ink it
    has (a thin 1 beside a bold 0: under a tenth of the 0's area, dropped before); dust does
    not."""
    yy, xx = np.mgrid[0:80, 0:160]
    page = np.full((80, 160), 0.9, np.float32)
    page[(np.hypot(yy - 40, xx - 40) > 12) & (np.hypot(yy - 40, xx - 40) < 22)] = 0.1  # a bold 0
    page[20:60, 100:102] = 0.35  # a thin, paler 1 as tall as the 0 (80 pixels against 1072)
    page[38:41, 140:143] = 0.35  # a speck of dust
    mask = find_ink(page).mask
    assert mask[20:60, 98:104].sum() >= 70  # the 1
    assert not mask[30:50, 130:150].any()  # the speck
    assert mask[:, :70].sum() > 900  # the 0
