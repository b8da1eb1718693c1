import json

import numpy as np
import pytest
import torch
from PIL import Image

from digitformer.apps.cli import main
from digitformer.data import load_split, make_grids
from digitformer.inference.ensemble import Ensemble
from digitformer.inference.prepare import is_mnist_like, prepare, read_gray, to_mnist
from digitformer.inference.readers import UNSURE
from digitformer.utils.errors import DigitformerError


@pytest.fixture
def digits(mnist_dir):
    return load_split(mnist_dir, "test")


def variants(digit: np.ndarray):
    """The same digit as a user might hand it over: inverted, off-centre, larger, RGB."""
    inverted = 255 - digit
    canvas = np.full((90, 70), 255, np.uint8)
    canvas[5:61, 10:66] = np.kron(inverted, np.ones((2, 2), np.uint8))  # 2x larger, off-centre
    rgb = np.stack([canvas] * 3, -1)
    return inverted, canvas, rgb


def test_mnist_digits_pass_through_unchanged(digits):
    pixels = digits.images[0].astype(np.float32) / 255
    assert is_mnist_like(pixels)
    assert np.array_equal(prepare(pixels, grid=False), digits.images[0])


def test_preprocessing_recovers_an_mnist_like_digit(digits):
    digit = digits.images[0]
    for variant in variants(digit):
        gray = variant.mean(-1) if variant.ndim == 3 else variant
        out = to_mnist(gray.astype(np.float32) / 255)
        assert out.shape == (28, 28) and out.dtype == np.uint8
        assert out[0].max() == 0 and out[:, 0].max() == 0  # dark border: inverted and centred
        ys, xs = np.nonzero(out > 50)
        assert ys.max() - ys.min() <= 21 and xs.max() - xs.min() <= 21  # fits ~20x20
        weights = out.astype(float)
        cy = (np.indices(out.shape)[0] * weights).sum() / weights.sum()
        cx = (np.indices(out.shape)[1] * weights).sum() / weights.sum()
        assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1


@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "gif", "tiff"])
def test_every_format_reads(tmp_path, digits, fmt):
    path = tmp_path / f"d.{fmt}"
    Image.fromarray(digits.images[3]).save(path)
    pixels = read_gray(path)
    assert pixels.shape == (28, 28)
    tolerance = 40 if fmt == "jpeg" else 1
    assert np.abs(pixels * 255 - digits.images[3]).max() <= tolerance


def run_predict(capsys, *args):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("model_type", ["encoder-only", "encoder-decoder"])
def test_predict_matches_the_model_on_files(tmp_path, capsys, digits, model_type, tiny_checkpoint):
    model, ckpt = tiny_checkpoint(model_type)
    folder = tmp_path / "images"
    folder.mkdir()
    if model_type == "encoder-only":
        inputs = digits.images[:6]
    else:
        inputs = make_grids(digits.images, digits.labels, 6, seed=0).images
    for i, image in enumerate(inputs):
        Image.fromarray(image).save(folder / f"{i}.png")
    code, out, err = run_predict(capsys, ckpt, folder, "--json")
    assert code == 0 and err == ""
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in rows] == [str(folder / f"{i}.png") for i in range(6)]
    x = torch.from_numpy(inputs).float().div(255).unsqueeze(1)
    with torch.no_grad():
        if model_type == "encoder-only":  # a digit it is unsure of: the mean of its views
            alone = model(x).softmax(-1)
            unsure = alone.max(-1).values[:, None] < UNSURE
            probs = torch.where(unsure, Ensemble([model], tta=True)(x).exp(), alone)[:, None]
            expected = probs.argmax(-1)
        else:
            expected, probs = model.generate(x)
    positions = 1 if model_type == "encoder-only" else 4
    for row, want, p in zip(rows, expected, probs):
        assert row["digits"] == "".join(map(str, want.tolist())) and len(row["digits"]) == positions
        # --json rounds to 4 decimals
        np.testing.assert_allclose(row["probabilities"], p.numpy(), atol=5e-5)
        np.testing.assert_allclose(row["confidence"], p.max(-1).values.numpy(), atol=5e-5)


def test_bad_files_are_reported_and_the_rest_processed(tmp_path, capsys, digits, tiny_checkpoint):
    _, ckpt = tiny_checkpoint("encoder-only")
    good = tmp_path / "good.png"
    Image.fromarray(digits.images[0]).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    code, out, err = run_predict(
        capsys,
        ckpt,
        good,
        tmp_path / "empty.png",
        tmp_path / "text.png",
        truncated,
        tmp_path / "missing.png",
        "--show",
    )
    assert code == 1
    assert "good.png" in out and "┌" in out
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("digitformer: error: ") for line in lines)
    assert "missing.png: no such file" in err and "Traceback" not in err


def test_missing_or_corrupt_checkpoint(tmp_path, capsys, digits):
    image = tmp_path / "d.png"
    Image.fromarray(digits.images[0]).save(image)
    code, _, err = run_predict(capsys, tmp_path / "nope.safetensors", image)
    assert code == 1 and "checkpoint not found" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 50)
    code, _, err = run_predict(capsys, bad, image)
    assert code == 1 and "not a valid checkpoint" in err


def test_no_preprocess_refuses_wrong_size(tmp_path, capsys, tiny_checkpoint):
    _, ckpt = tiny_checkpoint("encoder-decoder")
    image = tmp_path / "big.png"
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(image)
    code, _, err = run_predict(capsys, ckpt, image, "--no-preprocess")
    assert code == 1 and "expected 56x56" in err


def correlation(a, b):
    """Best correlation over shifts of up to 2 pixels: centring by mass may round either way."""
    shifts = range(-2, 3)
    return max(
        np.corrcoef(np.roll(a, (dy, dx), (0, 1)).ravel().astype(float), b.ravel().astype(float))[
            0, 1
        ]
        for dy in shifts
        for dx in shifts
    )


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff"])
def test_user_like_files_are_prepared_back_to_the_mnist_digit(tmp_path, digits, fmt):
    for i in range(5):
        digit = digits.images[i]
        for j, variant in enumerate(variants(digit)):
            path = tmp_path / f"{i}-{j}.{fmt}"
            Image.fromarray(variant).save(path)
            prepared = prepare(read_gray(path), grid=False)
            assert correlation(prepared, digit) > 0.8, (i, j)


def test_user_like_grid_files_are_prepared_per_quadrant(tmp_path, digits):
    grids = make_grids(digits.images, digits.labels, 4, seed=0)
    for i, grid in enumerate(grids.images):
        big = np.kron(255 - grid, np.ones((3, 3), np.uint8))  # 168x168, dark ink on white
        path = tmp_path / f"grid{i}.png"
        Image.fromarray(np.stack([big] * 3, -1)).save(path)  # RGB
        prepared = prepare(read_gray(path), grid=True)
        assert prepared.shape == (56, 56)
        for q, (r, c) in enumerate([(0, 0), (0, 28), (28, 0), (28, 28)]):
            original = grid[r : r + 28, c : c + 28]
            assert correlation(prepared[r : r + 28, c : c + 28], original) > 0.8, (i, q)


def test_auto_sends_each_picture_to_the_bundled_reader_its_ink_calls_for(tmp_path, capsys, digits):
    """--model auto without a checkpoint: a written number goes to pretrained:number (several
    digits come back), a lone digit to pretrained:digit (one), each as dark ink on paper."""
    from digitformer.data.numbers import make_numbers

    numbers = make_numbers(digits.images, digits.labels, 20, seed=3)
    number = int(np.flatnonzero(numbers.lengths >= 3)[0])  # a number of three digits or more
    pictures = {"number.png": numbers.images[number], "digit.png": digits.images[0]}
    for name, image in pictures.items():
        big = np.kron(image.astype(np.float32), np.ones((3, 3), np.float32))
        Image.fromarray((255 - big).astype(np.uint8)).save(tmp_path / name)  # dark on white
    code, out, _ = run_predict(capsys, tmp_path / "number.png", tmp_path / "digit.png",
                               "--model", "auto", "--json")  # fmt: skip
    assert code == 0
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.splitlines())}
    assert len(rows["number.png"]["digits"]) == numbers.lengths[number]
    assert len(rows["digit.png"]["digits"]) == 1


def test_every_surface_says_when_a_picture_is_for_another_reader(tmp_path, capsys, digits):
    """A 2x2 grid given to the digit reader, and a lone digit given to the grid reader (which
    would read it as four digits), are read as asked but flagged with the reader that fits,
    the same way by the Python API, the command line and the server."""
    from fastapi.testclient import TestClient

    import digitformer
    from digitformer.apps.serve.app import create_app, load_models

    grid = make_grids(digits.images, digits.labels, 1, seed=0).images[0]
    grid_picture = 255 - np.kron(grid, np.ones((3, 3), np.uint8))  # dark on white, 168x168
    lone = 255 - np.kron(digits.images[0], np.ones((4, 4), np.uint8))
    (on_digit,) = digitformer.load("digit").predict(grid_picture)
    (on_grid,) = digitformer.load("grid").predict(lone)
    (fits,) = digitformer.load("digit").predict(lone)
    assert on_digit.looks_like == "grid" and "2x2 grid" in on_digit.warning
    assert on_grid.looks_like == "digit" and "one digit" in on_grid.warning
    assert fits.looks_like is None and fits.warning is None
    Image.fromarray(lone).save(tmp_path / "lone.png")
    code, _, err = run_predict(capsys, tmp_path / "lone.png", "--model", "grid")
    assert code == 0 and "lone.png: looks like one digit" in err and "--model digit" in err
    app = TestClient(create_app(load_models(["pretrained:grid"], "cpu")))
    answer = app.post("/predict", content=(tmp_path / "lone.png").read_bytes(),
                      headers={"content-type": "image/png"}).json()  # fmt: skip
    assert answer["looks_like"] == "digit" and answer["warning"] == on_grid.warning


def test_a_folder_is_read_a_chunk_at_a_time_with_the_same_answers(tmp_path, capsys, digits,
                                                                   monkeypatch):  # fmt: skip
    """predict decodes, prepares and reads a folder in chunks (memory that of one chunk, not
    of the folder): chunks of two give exactly what one chunk of everything gives, in order,
    each picture by the reader its layout calls for."""
    import digitformer.inference.predict as predict

    grid = make_grids(digits.images, digits.labels, 1, seed=1).images[0]
    pictures = [digits.images[i] for i in range(4)] + [grid]
    for i, image in enumerate(pictures):
        big = np.kron(image, np.ones((3, 3), np.uint8))
        Image.fromarray(255 - big).save(tmp_path / f"p{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    _, whole, _ = run_predict(capsys, tmp_path, "--model", "auto", "--json")
    monkeypatch.setattr(predict, "CHUNK", 2)
    code, chunked, err = run_predict(capsys, tmp_path, "--model", "auto", "--json")
    assert code == 1 and "broken.png: cannot read image" in err
    rows, alone = [[json.loads(line) for line in out.splitlines()] for out in (chunked, whole)]
    assert [r["file"] for r in rows] == [r["file"] for r in alone] and len(rows) == 5
    assert [r["digits"] for r in rows] == [r["digits"] for r in alone]
    for a, b in zip(rows, alone):  # the same reading; batches of another size round apart
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)
    assert len(rows[-1]["digits"]) == 4  # the grid, read as a grid


def test_the_bundled_digit_reader_reads_the_same_in_bf16_as_in_fp32(digits, monkeypatch):
    """Reading in bf16 (the default where the CPU has AMX) changes no reading of 300 MNIST test
    digits but a rare near-tie, and moves no probability by more than bf16's rounding."""
    from digitformer.inference.checkpoint import load_model
    from digitformer.inference.readers import read_judged

    images = digits.images[:300]
    model, _ = load_model("pretrained:digit")
    exact = read_judged(model, images, views=True)
    monkeypatch.setenv("DIGITFORMER_PRECISION", "bf16")
    half = read_judged(model, images, views=True)
    assert np.mean(half.tokens == exact.tokens) >= 0.99
    assert np.abs(half.probs - exact.probs).max() < 0.05
    assert np.mean(half.far == exact.far) >= 0.99  # the judges: "not a digit" alike
    assert np.mean(half.two == exact.two) >= 0.99  # and "two digits"
    assert not np.array_equal(half.probs, exact.probs)  # bf16 did run
    monkeypatch.setenv("DIGITFORMER_PRECISION", "fp16")
    with pytest.raises(DigitformerError, match="DIGITFORMER_PRECISION must be one of"):
        read_judged(model, images[:1])
