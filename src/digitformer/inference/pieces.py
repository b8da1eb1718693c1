"""A written number read in pieces: cut where its digits stand apart (at empty columns, or along
their marks where their boxes overlap but their inks do not touch), each lone digit read by the
digit reader, each cluster of touching digits by the numbers model, which says how many digits
it holds, and re-read by the digit reader cut into that many (`digitformer.inference.cuts`).

    readings = read_in_pieces(number_model, digit_model, pictures, names)

The digit reader is the better reader of one digit (it was trained on every kind of digit, the
numbers model on numbers drawn by one generator), and a cut at an empty column is certain where
the sequence model has to guess a number's length. What stays joined (digits whose strokes
touch) is what the sequence model is for; and a number longer than
its canvas is read a piece at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from digitformer.inference.cuts import read_by_cuts
from digitformer.inference.ink import EIGHT, Ink
from digitformer.inference.predict import Prediction, Readings, predict_pictures
from digitformer.inference.prepare import NoInk, TooWide, digit_height, find_ink, ink_to_mnist
from digitformer.inference.readers import READERS, input_shape
from digitformer.utils.runtime import each

SINGLE_WIDTH = 1.0  # a piece at most as wide as it is tall (times this) is one digit
MIN_HEIGHT = 0.35  # a mark under this share of the digits' height is no digit (a dot, a dash)
DIGIT_PART = 0.6  # a run cut along its marks: a mark this share of the digits' height is a digit
MARGIN = 0.3  # each piece is read on black this share of the digits' height around it
# clusters re-read by the digit reader, cut into as many digits as the numbers model read there
# (digitformer.inference.cuts); False: the numbers model's reading stands
CUTS = True
# ...and read as one digit fewer, or as the numbers model read it, where both readers together
# find that more probable (`read_by_cuts(..., number=...)`)
VOTE = True


@dataclass(frozen=True)
class Piece:
    """One digit, or a cluster of touching digits: `image` float (h, w), light ink on black
    with a margin, as `find_ink` found it in the whole picture; `single` when it is about one
    digit wide; `span` its columns [left, right) as shares of the picture's width (so they
    hold at any size it is read at); `digit` uint8 (28, 28), the piece made as MNIST was, which
    the digit reader reads (its strokes not looked for again: a faint loop beside a dark
    crossing was lost so, twice)."""

    image: np.ndarray
    single: bool
    span: tuple[float, float] = (0.0, 1.0)
    digit: np.ndarray = field(kw_only=True)


def cut_at_gaps(pixels: np.ndarray) -> list[Piece]:
    """A grayscale picture of a number -> its pieces, left to right. Raises NoInk when there
    is nothing to read."""
    ink = find_ink(pixels)
    height = digit_height(ink.mask)
    columns = np.concatenate([[False], ink.mask.any(0), [False]]).astype(np.int8)
    runs = np.flatnonzero(np.diff(columns)).reshape(-1, 2)  # (start, stop) of each ink run
    margin = max(2, round(MARGIN * height))
    width = ink.mask.shape[1]  # find_ink's copy: large pictures are read reduced
    pieces = []
    for start, stop in runs:
        for a, b, image, mask in _apart(ink.image[:, start:stop], ink.mask[:, start:stop], height):
            rows = np.flatnonzero(image.any(1))
            if len(rows) == 0 or rows[-1] - rows[0] + 1 < MIN_HEIGHT * height:
                continue
            cut, strokes = image[rows[0] : rows[-1] + 1], mask[rows[0] : rows[-1] + 1]
            # one digit is about as wide as it is tall: its own height, not the line's (an 8 of
            # two loops is two marks half as tall, and would make the line's digits look small)
            single = bool(b - a <= SINGLE_WIDTH * cut.shape[0])
            span = ((start + a) / width, (start + b) / width)
            cut, strokes = np.pad(cut, margin), np.pad(strokes, margin)
            try:
                digit = ink_to_mnist(Ink(cut, strokes))
            except NoInk:
                continue  # a faint smudge: nothing of it stands out of the paper
            pieces.append(Piece(cut, single, span, digit=digit))
    if not pieces:
        raise NoInk("no digit found (only marks much smaller than digits)")
    return pieces


def _apart(image: np.ndarray, mask: np.ndarray, height: float) -> list:
    """A run of ink columns (`image`, its strokes `mask`) -> [(first column, stop column, its
    ink, its strokes)] of the digits in it that do not touch: a run whose marks stand apart
    (boxes that overlap, a slanted neighbour's tail over the next digit's columns) is cut along
    its marks, not its columns, however narrow it is (a 1 beside a 4 is no wider than one
    digit). Only marks of a digit's height (DIGIT_PART of the line's) make digits of their own;
    smaller ones join the nearest (a 5's bar, a broken stroke), and tall marks sharing half the
    columns of the narrower are one digit (an 8 of two loops)."""
    whole = [(0, image.shape[1], image, mask)]
    labels, count = ndimage.label(mask, EIGHT)
    boxes = ndimage.find_objects(labels)
    tall = [k for k, (r, _) in enumerate(boxes) if r.stop - r.start >= DIGIT_PART * height]
    groups = _side_by_side(boxes, tall)
    if len(groups) < 2:
        return whole
    centres = [np.mean([_centre(boxes[j]) for j in g]) for g in groups]
    owner = np.zeros(count + 1, int)  # each mark's digit (1...), the nearest tall one's
    owner[1:] = [int(np.argmin([abs(_centre(box) - x) for x in centres])) + 1 for box in boxes]
    for n, g in enumerate(groups, 1):
        owner[[j + 1 for j in g]] = n
    # the soft rims and faint stretches around the strokes go with the nearest stroke
    nearest = ndimage.distance_transform_edt(
        labels == 0, return_distances=False, return_indices=True
    )
    parts = np.where((image > 0) | mask, owner[labels[tuple(nearest)]], 0)
    out = []
    for n in range(1, len(groups) + 1):
        cols = np.flatnonzero((parts == n).any(0))  # never empty: each holds a tall mark
        a, b = int(cols[0]), int(cols[-1]) + 1
        part = parts[:, a:b] == n
        out.append((a, b, np.where(part, image[:, a:b], 0), part & mask[:, a:b]))
    return sorted(out, key=lambda t: (t[0] + t[1]) / 2)


def _side_by_side(boxes: list, tall: list[int]) -> list[list[int]]:
    """The `tall` marks grouped into digits, left to right: a mark sharing half the columns of
    the narrower of it and a group is part of that group's digit."""
    groups: list[list[int]] = []
    for k in sorted(tall, key=lambda k: boxes[k][1].start):
        c = boxes[k][1]
        for g in groups:
            a, b = min(boxes[j][1].start for j in g), max(boxes[j][1].stop for j in g)
            if min(b, c.stop) - max(a, c.start) >= 0.5 * min(b - a, c.stop - c.start):
                g.append(k)
                break
        else:
            groups.append([k])
    return groups


def _centre(box: tuple[slice, slice]) -> float:
    return (box[1].start + box[1].stop) / 2


def read_in_pieces(
    number_model: nn.Module,
    digit_model: nn.Module,
    pictures: list[np.ndarray],
    names: list[str],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    canvases: bool = True,
) -> Readings:
    """Pictures of numbers -> one Prediction each (in order): the pieces' digits joined, with
    a confidence each; digits None and a reason when nothing could be read or a piece could not
    be; one error per picture a piece of which could not be prepared. Its inputs: each whole
    number on the numbers model's canvas, what --show and the page draw (zeros where it does
    not fit, and for all without `canvases`)."""
    out, cut = _survey(pictures, names, number_model, canvases)
    owners = [(i, k) for i, p in enumerate(cut) for k in range(len(p))]
    labels = {owner: f"{names[owner[0]]} piece {owner[1] + 1}" for owner in owners}

    def read_as(model: nn.Module, layout: str, chosen: list) -> tuple[dict, Readings]:
        """The `chosen` pieces read by `model`: {owner: (Prediction, its input)}, unjudged (a
        mark in a number is read as the digit it is most like)."""
        pieces = [cut[i][k] for i, k in chosen]
        digits = layout == "digit"  # a digit is ink already, made as MNIST was (Piece.digit)
        part = predict_pictures(
            model,
            [p.digit.astype(np.float32) / 255 if digits else p.image for p in pieces],
            [labels[o] for o in chosen],
            not digits,
            batch_size,
            device,
            [layout] * len(chosen),
            judge=False,
            apart=False,  # whether a piece is one digit: the reader's own judge (its features)
        )
        by_label = {r.file: (r, x) for r, x in zip(part.results, part.inputs)}
        return {o: by_label[labels[o]] for o in chosen if labels[o] in by_label}, part

    narrow = [o for o in owners if cut[o[0]][o[1]].single]
    single = set(narrow)
    as_digit, digit_part = read_as(digit_model, "digit", narrow)
    two = {o for o in narrow if labels[o] in digit_part.two}  # the pair probe's (`inference.pairs`)
    # the numbers model reads what is wider than a digit, and a narrow piece that is like no
    # one digit or that the pair probe finds two (slim digits touching: 11, 17, 14)
    doubted = two | {o for o in narrow if labels[o] in digit_part.unlike}
    asked = [o for o in owners if o not in single or o in doubted]
    as_number, number_part = read_as(number_model, "number", asked)
    # a wide piece is the digit reader's only where the numbers model did not read two digits
    # or more there (`_choose`): only those are read by it
    alone = [o for o in asked if o not in single and _digits(as_number.get(o)) < 2]
    as_wide, wide_part = read_as(digit_model, "digit", alone)
    as_digit |= as_wide
    read = {o: _choose(as_digit.get(o, (None,))[0], as_number.get(o, (None,))[0]) for o in owners}
    if CUTS and asked:  # the sequence model says how many digits, the digit reader which
        said = [as_number.get(o, (None, None)) for o in asked]
        said = [(x, r.digits) if r and r.digits else (None, None) for r, x in said]
        number = (number_model, [x for x, _ in said], [d for _, d in said])
        number = number if VOTE else None
        read.update(_recut(digit_model, cut, asked, read, batch_size, device, number, two))
    unread = tuple(f"{labels[o]}: " for o in owners if read[o] is None)
    parts = (digit_part, wide_part, number_part)
    out.errors += [e for part in parts for e in part.errors if e.startswith(unread)]
    for i, (result, pieces) in enumerate(zip(out.results, cut)):
        if result.reason is None:
            _join(result, [read[i, k] for k in range(len(pieces))], pieces)
    return out


def _survey(pictures, names, number_model, canvases) -> tuple[Readings, list[list[Piece]]]:
    """Each picture's Prediction, unread (a reason where it has no ink), its input (`_surveyed`)
    and its pieces (none where it has no ink)."""
    out, cut = Readings(), []
    surveyed = each(partial(_surveyed, number_model=number_model, canvas=canvases), pictures)
    for name, (whole, pieces) in zip(names, surveyed):
        out.inputs.append(whole)
        cut.append(pieces if isinstance(pieces, list) else [])
        reason = str(pieces) if isinstance(pieces, NoInk) else None
        out.results.append(Prediction(name, None, [], [], reason))
    return out, cut


def _surveyed(
    pixels: np.ndarray, number_model: nn.Module, canvas: bool = True
) -> tuple[np.ndarray, list | NoInk]:
    """A picture -> the whole number on the numbers model's canvas (what --show and the page
    draw; zeros without `canvas`), and its pieces (or why it has none)."""
    whole = (
        _whole(pixels, number_model) if canvas else np.zeros(input_shape(number_model), np.uint8)
    )
    try:
        return whole, cut_at_gaps(pixels)
    except NoInk as exc:
        return whole, exc


def _recut(digit_model, cut, asked, read, batch_size, device, number=None, two=()) -> dict:
    """{owner: reading} of the `asked` clusters the digit reader could cut into as many digits
    as they were read to hold, at least two in those found `two` (with `number`, the numbers
    model and its inputs and readings of them: or one fewer, or as it read them,
    `read_by_cuts`), their spans as shares of the whole picture."""
    counts = [len(read[o].digits) if read[o] and read[o].digits else None for o in asked]
    counts = [max(n, 2) if n and o in two else n for n, o in zip(counts, asked)]
    clusters = [cut[i][k].image for i, k in asked]
    found = read_by_cuts(digit_model, clusters, counts, batch_size, device, number)
    return {
        o: _within(f, cut[o[0]][o[1]].span, f"piece {o[1] + 1}")
        for o, f in zip(asked, found)
        if f is not None
    }


def _digits(reading: tuple | None) -> int:
    """How many digits a `read_as` answer (Prediction, input) holds (0: none, or not read)."""
    return len(reading[0].digits or "") if reading is not None else 0


def _choose(as_digit: Prediction | None, as_number: Prediction | None) -> Prediction | None:
    """One piece's reading: the numbers model's where it read two digits or more there, the
    digit reader's otherwise (one digit is the digit reader's to read; and where the numbers
    model refused the piece, as too tall for its canvas)."""
    if as_number is not None and as_number.digits is not None and len(as_number.digits) >= 2:
        return as_number
    if as_digit is not None and as_digit.digits is not None:
        return as_digit
    return as_number if as_number is not None else as_digit


def _within(found: Prediction, span: tuple[float, float], name: str) -> Prediction:
    """A cluster's reading by cuts with its digits' spans as shares of the whole picture."""
    a, w = span[0], span[1] - span[0]
    found.spans = [[round(a + w * s, 4), round(a + w * e, 4)] for s, e in found.spans]
    found.file = name
    return found


def _whole(pixels: np.ndarray, number_model: nn.Module) -> np.ndarray:
    """The whole number on the numbers model's canvas (zeros when it does not fit)."""
    try:
        return READERS["number"].prepare(pixels, number_model)
    except (NoInk, TooWide):
        return np.zeros(input_shape(number_model), np.uint8)


def _join(result: Prediction, pieces: list, cut: list[Piece]) -> None:
    missing = [p for p in pieces if p is None or p.digits is None]
    if missing:
        reasons = [p.reason for p in missing if p is not None and p.reason]
        result.reason = (
            f"a piece of the number could not be read ({reasons[0] if reasons else 'error'})"
        )
        return
    read = [p for p in pieces if p is not None]
    result.digits = "".join(p.digits or "" for p in read)
    result.confidence = [c for p in read for c in p.confidence]
    result.probabilities = [row for p in read for row in p.probabilities]
    result.spans = [
        span
        for p, c in zip(read, cut)
        for span in (p.spans if p.spans else _shares(c.span, len(p.digits)))
    ]


def _shares(span: tuple[float, float], count: int) -> list[list[float]]:
    """A piece's span split evenly among the `count` digits read in it."""
    edges = np.linspace(span[0], span[1], count + 1).round(4)
    return [[float(a), float(b)] for a, b in zip(edges, edges[1:])]
