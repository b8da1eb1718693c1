"""The independent evaluation suite (benchmarks/independent): deterministic, well-labelled, built
from MNIST's test split only. Tiny data, no models: these run in a few seconds."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from benchmarks.independent import digits as D
from benchmarks.independent import numbers as N
from benchmarks.independent.evaluate import crops, score, table
from PIL import Image


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _write_split(path, pictures, labels) -> None:
    images = [{"bytes": _png(p), "path": None} for p in pictures]
    pq.write_table(pa.table({"image": images, "label": pa.array(labels, pa.int64())}), path)


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    """A fake MNIST folder: a test split of pen digits (3 of each), and a train split of solid
    white squares, which must never be read."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    labels = [d for d in range(10) for _ in range(3)]
    _write_split(
        folder / "test-00000-of-00001.parquet", [D.pen_digit(d, rng) for d in labels], labels
    )
    train = [np.full((28, 28), 255, np.uint8)] * 10
    _write_split(folder / "train-00000-of-00001.parquet", train, list(range(10)))
    return folder


@pytest.fixture(scope="module")
def sources(mnist_folder):
    return N.Sources(mnist_dir=mnist_folder)


@pytest.fixture(scope="module")
def suite(sources):
    return N.build_suite(sources, count=2, seed=3)


def test_only_the_test_split_is_read(mnist_folder):
    assert [p.name for p in D.mnist_test_files(mnist_folder)] == ["test-00000-of-00001.parquet"]
    pool = D.load_mnist_test(mnist_folder)
    assert len(pool) == 30 and sorted(set(pool.labels.tolist())) == list(range(10))
    assert all(p.shape == (28, 28) and p.dtype == np.uint8 for p in pool.images)
    assert not any((p == 255).all() for p in pool.images)  # no train square slipped in


def test_no_test_split_is_an_error(tmp_path):
    _write_split(tmp_path / "train-00000-of-00001.parquet", [np.zeros((28, 28), np.uint8)], [1])
    with pytest.raises(FileNotFoundError):
        D.load_mnist_test(tmp_path)


def test_suite_is_deterministic_for_a_seed(sources, suite):
    again = N.build_suite(sources, count=2, seed=3)
    other = N.build_suite(sources, count=2, seed=4, sets=("pen",))
    for name, items in suite.items():
        assert len(items) == len(again[name]) > 0
        for a, b in zip(items, again[name]):
            assert a.label == b.label and a.boxes == b.boxes and a.touching == b.touching
            assert np.array_equal(a.image, b.image)
    assert [i.label for i in other["pen"]] != [i.label for i in suite["pen"]]


def test_an_item_does_not_depend_on_the_count(sources, suite):
    more = N.build_suite(sources, count=3, seed=3, sets=("writers",))["writers"]
    assert np.array_equal(more[0].image, suite["writers"][0].image)


def test_labels_match_the_digit_boxes(suite):
    for name in N.NUMBER_SETS:
        for item in suite[name]:
            assert item.label.isdigit() and len(item.label) == item.length == len(item.boxes)
            h, w = item.image.shape[:2]
            xs = [b[0] for b in item.boxes]
            assert xs == sorted(xs)  # left to right
            for x0, y0, x1, y1 in item.boxes:
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_lengths_cover_1_to_12(suite):
    lengths = {item.length for name in N.NUMBER_SETS for item in suite[name]}
    assert lengths == set(range(1, 13))
    assert {i.length for i in suite["long"]} == set(range(9, 13))


def test_photographed_mnist_is_the_same_numbers(suite):
    clean, photo = suite["mnist-layout"], suite["mnist-photo"]
    assert [i.label for i in clean] == [i.label for i in photo]
    assert all(i.image.ndim == 2 for i in clean)
    assert all(i.image.ndim == 3 and i.image.shape[2] == 3 for i in photo)


def _layout(n: int, gap: float) -> N.Layout:
    return N.Layout([30.0] * n, [gap] * (n - 1), [0.0] * n, [0.0] * n, (4, 4, 4, 4))


def test_touching_flag(sources):
    rng = np.random.default_rng(0)
    pictures = [sources.pen.sample(d, rng) for d in (8, 0, 3)]
    _, boxes, touching, _ = N.compose(pictures, _layout(3, -3))
    assert touching and boxes[1][0] < boxes[0][2]
    _, boxes, touching, ink = N.compose(pictures, _layout(3, 15))
    assert not touching and not ink
    assert boxes[1][0] - boxes[0][2] == 15
    item = N.make_number("80", sources.pen, rng, "pen", False, layout=_layout(2, -3))
    assert item.touching


def test_not_digit_has_no_label(suite):
    items = suite["not-digit"]
    assert len(items) == 2 and all(i.label is None and i.length == 0 for i in items)
    assert {N.not_digit(k, np.random.default_rng(1)).kind for k in N.NOT_DIGIT_KINDS} == set(
        N.NOT_DIGIT_KINDS
    )


def test_digit_sets(suite):
    tight = suite["digit-mnist-tight"]
    for item in tight:  # dark on white, cropped to the ink: every edge has some ink
        assert item.image.min() < 128 and item.label.isdigit()
        dark = item.image < 255
        assert dark[0].any() and dark[-1].any() and dark[:, 0].any() and dark[:, -1].any()
    assert all(i.image.shape == (32, 32) for i in suite["digit-writers-lowres"])


def test_scoring_and_crops(suite):
    items = suite["pen"][:4]
    reads = [(items[0].label, None, True), (None, "nothing", False)]
    reads += [(items[2].label + "1", None, True), (items[3].label, None, False)]
    r = score("pen", "number", items, reads, 0.0)
    assert r["accuracy"] == 0.5 and r["refused"] == 0.25 and r["wrong_length"] == 0.25
    # the flag caught the one wrong reading, and flagged one of the two right ones
    assert r["flag_catches"] == [1.0, 1] and r["flag_false_alarms"] == [0.5, 2]
    assert "pen" in table([r])
    pieces = crops(items[1])
    assert len(pieces) == items[1].length and all(p.size for p in pieces)
    refusals = score("not-digit", "digit", suite["not-digit"], [(None, "x"), ("4", None)], 0.0)
    assert refusals["accuracy"] == 0.5
