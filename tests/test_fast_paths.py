"""The preparation's fast paths give what the library calls they replace give, and reading on
several threads or processes gives what one gives."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from digitformer.data import load_split
from digitformer.inference import ink, paper
from digitformer.utils.errors import DigitformerError
from digitformer.utils.runtime import each

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
floats = arrays(
    np.float32,
    st.integers(1, 400),
    elements=st.floats(-1, 1, width=32, allow_nan=False),
)
masks = arrays(bool, st.tuples(st.integers(1, 30), st.integers(1, 30)))


@FAST
@given(floats, st.floats(0, 100))
def test_percentile_is_numpys(values, q):
    assert paper.percentile(values, q) == pytest.approx(np.percentile(values, q), abs=1e-6)
    assert paper.median(values) == pytest.approx(np.median(values), abs=1e-6)


@FAST
@given(
    st.integers(paper.BRACKETED, 5 * paper.BRACKETED),
    st.sampled_from(["uniform", "ties", "sorted", "mostly zero"]),
    st.floats(0, 100),
    st.integers(0, 2**32 - 1),
)
def test_a_large_percentile_bracketed_first_is_numpys(size, kind, q, seed):
    """Large arrays are partitioned only near the answer: exact whatever the strided sample
    saw (sorted values, heavy ties, a picture's mostly empty ink)."""
    values = np.random.default_rng(seed).random(size, dtype=np.float32)
    if kind == "ties":
        values = np.round(values * 4) / 4
    elif kind == "sorted":
        values = np.sort(values)
    elif kind == "mostly zero":
        values = np.clip(values - 0.97, 0, None)
    assert paper.percentile(values, q) == pytest.approx(np.percentile(values, q), abs=1e-6)


@FAST
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(3, 40), st.integers(3, 40)),
        elements=st.floats(0, 1, width=32),
    ),
    st.integers(1, 4),
)
def test_window_medians_are_numpys(framed, step):
    size = max(1, (min(framed.shape) // 2) | 1)
    windows = np.lib.stride_tricks.sliding_window_view(framed, (size, size))[::step, ::step]
    assert np.array_equal(paper._window_medians(framed, size, step), np.median(windows, (2, 3)))


@FAST
@given(arrays(np.float32, st.integers(1, 5000), elements=st.floats(0, 1, width=32)))
def test_the_256_bin_histogram_is_numpys(values):
    assert np.array_equal(ink._histogram256(values), np.histogram(values, 256, (0.0, 1.0))[0])


@FAST
@given(masks, st.integers(0, 2**32 - 1))
def test_each_marks_peak_is_scipys_maximum(mask, seed):
    labels, count = ndimage.label(mask)
    values = np.random.default_rng(seed).random(mask.shape, dtype=np.float32)
    want = ndimage.maximum(values, labels, np.arange(1, count + 1)) if count else []
    assert np.array_equal(ink._peaks(labels, values, count)[1:], np.asarray(want, np.float32))


@FAST
@given(arrays(np.float32, st.tuples(st.integers(2, 40), st.integers(2, 40)),
              elements=st.floats(-1, 1, width=32)))  # fmt: skip
def test_the_slope_is_numpys_hypot_of_the_gradient(contrast):
    gy, gx = np.gradient(contrast)
    np.testing.assert_array_equal(ink._slope(contrast), np.hypot(gy, gx))


@FAST
@given(masks, st.integers(1, 4))
def test_boundary_and_grow_are_scipys_erosion_and_dilation(mask, steps):
    assert np.array_equal(ink._boundary(mask), mask & ~ndimage.binary_erosion(mask))
    assert np.array_equal(ink.grow(mask, steps), ndimage.binary_dilation(mask, iterations=steps))


def test_each_keeps_the_order_and_raises_as_a_loop():
    torch.set_num_threads(2)
    try:
        assert each(lambda x: x * x, range(50)) == [x * x for x in range(50)]

        def fails(x):
            if x == 7:
                raise ValueError("seven")
            return x

        with pytest.raises(ValueError, match="seven"):
            each(fails, range(20))
    finally:
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    from helpers import SUBSET

    return load_split(SUBSET, "test")


def test_a_folder_read_by_two_processes_is_read_as_by_one(tmp_path, digits):
    """predict_paths reads a folder of MIN_FOLDER pictures or more in a process per thread
    PyTorch uses (fewer, on threads): the same answers, errors and order."""
    from PIL import Image

    from digitformer.inference import predict

    rng = np.random.default_rng(0)
    count = predict.MIN_FOLDER + 2
    for i in range(count):
        paper = np.full((90, 90), 230, np.uint8)
        paper[20:76, 17:73] = 255 - np.asarray(Image.fromarray(digits.images[i]).resize((56, 56)))
        noisy = np.clip(paper + rng.normal(0, 6, paper.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "50-broken.png").write_bytes(b"\x89PNG not really")
    answers = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        folder = [tmp_path / "x.png"] * (count + 1)
        assert predict._workers(folder, torch.device("cpu")) == threads
        assert predict._workers([*folder, Path(predict.STDIN)], torch.device("cpu")) == 1
        ink._CACHE.clear()
        read = predict.predict_paths([str(tmp_path)], device="cpu")
        answers.append(([(r.file, r.digits, r.reason) for r in read.results], read.errors))
    torch.set_num_threads(1)
    assert answers[0] == answers[1]
    results, errors = answers[0]
    assert len(results) == count and len(errors) == 1 and "50-broken.png" in errors[0]
    assert [f for f, _, _ in results] == sorted(f for f, _, _ in results)
    right = sum(d == str(y) for (_, d, _), y in zip(results, digits.labels[:count]))
    assert right >= 0.9 * count


def _stop_at_once(files):
    os._exit(3)  # as a process killed for memory


def test_a_process_reading_pictures_that_dies_is_one_clear_error(tmp_path, digits, monkeypatch):
    from PIL import Image

    from digitformer.inference import predict

    for i in range(predict.MIN_FOLDER):
        Image.fromarray(255 - digits.images[i]).save(tmp_path / f"{i:02d}.png")
    monkeypatch.setattr(predict, "_read_in_worker", _stop_at_once)  # forked workers have it
    torch.set_num_threads(2)
    try:
        with pytest.raises(DigitformerError, match="a process reading pictures stopped"):
            predict.predict_paths([str(tmp_path)], device="cpu")
    finally:
        torch.set_num_threads(1)


def test_the_paper_sampled_every_few_pixels_comes_back_where_it_was_taken():
    """A lighting ramp sampled every 4 pixels of a 64-pixel copy is the same ramp at 256, not
    shifted as a resize would shift it (it puts each sample at a block's centre)."""
    rows = np.arange(0, 64, 4, dtype=np.float32)
    ramp = np.repeat(rows[:, None], 16, 1)  # each sample: the copy's row it was taken at
    full = paper.spread(ramp, 4, (64, 64), (256, 256))
    truth = (np.arange(256) + 0.5) * 64 / 256 - 0.5  # each full row's place in the copy
    inside = slice(2, 256 - 14)  # beyond the first and last samples it is held constant
    np.testing.assert_allclose(full[inside, 5], truth[inside], atol=1e-4)
    assert np.abs(paper.resize(ramp, (256, 256))[inside, 5] - truth[inside]).max() > 1
