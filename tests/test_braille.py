import io

import numpy as np
import pytest

from digitformer.display.braille import GREEN, RED, braille, digit_box, render_samples, use_color


def test_braille_exact_characters():
    image = np.zeros((4, 4), np.uint8)
    image[0, 0] = 255  # dot 1
    image[3, 1] = 255  # dot 8
    image[:, 2] = 255  # dots 1, 2, 3, 7 of the second cell
    assert braille(image) == [chr(0x2800 + 0x01 + 0x80) + chr(0x2800 + 0x01 + 0x02 + 0x04 + 0x40)]


def test_braille_pads_odd_sizes_and_thresholds():
    image = np.full((5, 3), 127, np.uint8)
    assert braille(image) == ["\u2800\u2800", "\u2800\u2800"]
    assert braille(np.full((4, 2), 128, np.uint8)) == ["\u28ff"]


def test_digit_box_marks_expected_and_predicted():
    box = digit_box(np.zeros((28, 28), np.uint8), expected=3, predicted=8)
    assert box[0] == "┌" + "─" * 14 + "┐" and box[-1] == "└" + "─" * 14 + "┘"
    assert box[1].startswith("│3") and box[-2].endswith("8│") and len(box) == 9
    colored = digit_box(np.zeros((28, 28), np.uint8), 3, 8, color=True)
    assert RED in colored[-2] and GREEN not in colored[-2]
    assert GREEN in digit_box(np.zeros((28, 28), np.uint8), 8, 8, color=True)[-2]


def test_render_grids_five_per_row_two_by_two():
    images = np.zeros((10, 56, 56), np.uint8)
    labels = np.tile(np.arange(4), (10, 1))
    text = render_samples(images, labels, labels, per_row=5)
    lines = text.split("\n")
    # two sample rows, each two digit rows of 9 lines, with a blank line between sample rows
    assert len(lines) == 2 * 2 * 9 + 1
    assert lines[0].count("┌") == 10
    assert lines[1].startswith("│0") and lines[10].startswith("│2")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_color_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Terminal())  # a terminal gets colour...
    assert not use_color(io.StringIO())  # ...a pipe or file does not
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Terminal())  # and NO_COLOR turns it off even on a terminal


@pytest.mark.parametrize("columns", [40, 80, 200])
def test_samples_fit_the_terminal_they_are_drawn_in(monkeypatch, columns):
    """However wide the terminal, no line of the training display is wider (until one
    sample alone is wider than it)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    digits = np.random.default_rng(0).integers(0, 256, (10, 28, 28)).astype(np.uint8)
    grids = np.random.default_rng(1).integers(0, 256, (10, 56, 56)).astype(np.uint8)
    for images, preds in ((digits, np.arange(10)), (grids, np.zeros((10, 4), int))):
        text = render_samples(images, None, preds)
        widest = max(len(line) for line in text.splitlines())
        one = max(len(line) for line in render_samples(images[:1], None, preds[:1]).splitlines())
        assert widest <= max(columns, one), (columns, widest)
        assert widest > columns - one - 4  # and as many as fit
