"""Fuzzing the doors strangers' input comes through: image bytes, checkpoint files, settings
files (profiles and .env) and JSON bodies sent to the server. Whatever arrives, the only
exception is the project's own (one line at the CLI), never a crash, a hang or a traceback."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from digitformer.inference.checkpoint import load_model
from digitformer.inference.prepare import NoInk, prepare, read_gray
from digitformer.models import build_model
from digitformer.utils.errors import DigitformerError
from helpers import TINY

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def png_of(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@st.composite
def damaged_images(draw) -> bytes:
    """Real image files, cut, spliced or with bytes flipped; and plain noise."""
    kind = draw(st.sampled_from(["png", "jpeg", "gif", "noise"]))
    if kind == "noise":
        return draw(st.binary(max_size=2000))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    pixels = np.frombuffer(draw(st.binary(min_size=h * w, max_size=h * w)), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.reshape(h, w)).save(buffer, format=kind.upper())
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def read_and_prepare(data: bytes) -> None:
    try:
        pixels = read_gray(io.BytesIO(data), name="fuzz")
    except DigitformerError:
        return
    assert pixels.ndim == 2 and np.isfinite(pixels).all()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    for grid in (False, True):
        try:
            out = prepare(pixels, grid)
        except (NoInk, DigitformerError):
            continue
        assert out.dtype == np.uint8 and out.shape == ((56, 56) if grid else (28, 28))


@FUZZ
@given(damaged_images())
def test_any_image_bytes_read_or_fail_in_one_line(data):
    read_and_prepare(data)


def picture_of(dtype, h: int, w: int, seed: int, ink: float) -> np.ndarray:
    """A picture of that dtype whose every value a PNG holds exactly: uint8 0-255, uint16
    0-65535, floats in 0-1 (multiples of 1/255, as an 8-bit PNG stores them) or bool; ink
    (nonzero pixels) on about that fraction of it, light on dark."""
    rng = np.random.default_rng(seed)
    level = rng.random((h, w)) * (rng.random((h, w)) < ink)
    if dtype is bool:
        return level > 0
    if dtype is np.uint16:
        return np.round(level * 65535).astype(np.uint16)
    eight = np.round(level * 255).astype(np.uint8)
    return eight if dtype is np.uint8 else (eight / 255).astype(dtype)


def png_equivalent(pixels: np.ndarray) -> bytes:
    """The PNG of the same picture: 8-bit gray, 16-bit gray or 1-bit, as its dtype says."""
    if pixels.dtype.kind == "f":
        pixels = np.round(pixels * 255).astype(np.uint8)
    return png_of(pixels)


@pytest.fixture(scope="module")
def digit_reader():
    import digitformer

    return digitformer.load("digit", device="cpu")


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pngs")


@FUZZ
@given(
    st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, bool]),
    st.integers(1, 64),
    st.integers(1, 64),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 0.05, 0.3, 1.0]),
)
def test_any_picture_array_reads_as_its_png_does(digit_reader, png_dir, dtype, h, w, seed, ink):
    """Each dtype through the reader's own array path (not through a PNG): the same
    pixels, and the same reading, as the PNG of that picture."""
    from digitformer.inference.reader import _pixels

    pixels = picture_of(dtype, h, w, seed, ink)
    assert pixels.dtype == np.dtype(dtype)
    png = png_equivalent(pixels)
    from_array = _pixels(pixels, "array")
    assert from_array.dtype == np.float32 and from_array.shape == (h, w)
    np.testing.assert_allclose(from_array, read_gray(io.BytesIO(png), name="png"), atol=1e-6)
    path = png_dir / f"{seed}.png"
    path.write_bytes(png)
    array_reading, png_reading = digit_reader.predict([pixels, path])
    assert array_reading.digits == png_reading.digits
    assert array_reading.reason == png_reading.reason
    np.testing.assert_allclose(array_reading.probabilities, png_reading.probabilities, atol=1e-5)
    read_and_prepare(png)
    with contextlib.suppress(NoInk, DigitformerError):
        prepare(from_array, grid=False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
CONFIG_KEYS = list(TINY["encoder-only"]) + ["image_size", "dropout", "norm", "stem", "drop_path"]


@st.composite
def checkpoint_metadata(draw) -> str:
    """Metadata a stranger's checkpoint might carry: near-valid configs with fields of the
    wrong type or range, wrong model types, or arbitrary JSON."""
    if draw(st.booleans()):
        return json.dumps(draw(json_values))
    config = dict(TINY["encoder-only"])
    for key in draw(st.lists(st.sampled_from(CONFIG_KEYS), max_size=3)):
        config[key] = draw(json_values)
    model_type = draw(st.sampled_from(["encoder-only", "encoder-decoder", "x", 3, None]))
    meta = {"format": "digitformer-checkpoint", "model_type": model_type, "model_config": config}
    return json.dumps(meta)


@pytest.fixture(scope="module")
def tiny_weights():
    return {
        k: v.contiguous()
        for k, v in build_model("encoder-only", TINY["encoder-only"]).state_dict().items()
    }


@FUZZ
@given(meta=checkpoint_metadata())
def test_any_checkpoint_metadata_loads_or_fails_in_one_line(tmp_path_factory, tiny_weights, meta):
    path = tmp_path_factory.mktemp("fuzz") / "ckpt.safetensors"
    save_file(tiny_weights, str(path), metadata={"digitformer": meta})
    try:
        model, _ = load_model(path)
    except DigitformerError:
        return
    with torch.no_grad():
        assert model(torch.rand(1, 1, 28, 28)).shape == (1, 10)


SETTING_NAMES = ["epochs", "lr", "batch_size", "layout", "seed", "model", "model.dim", "nope"]


@st.composite
def settings_files(draw) -> tuple[bytes, bytes]:
    """A profile and a .env a user might have: near-valid settings with values of any type,
    YAML of any shape, text in another encoding, or bytes."""
    keys = st.sampled_from(SETTING_NAMES) | st.text(max_size=6)
    kind = draw(st.sampled_from(["yaml", "json", "latin-1", "bytes"]))
    if kind == "yaml":
        profile = yaml.safe_dump(draw(st.dictionaries(keys, json_values, max_size=4))).encode()
    elif kind == "json":
        profile = json.dumps(draw(json_values)).encode()
    elif kind == "latin-1":
        profile = yaml.safe_dump({"run": "caf\xe9"}, allow_unicode=True).encode("latin-1")
    else:
        profile = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        return profile, draw(st.binary(max_size=100))
    env_keys = st.sampled_from(["DIGITFORMER_EPOCHS", "DIGITFORMER_MODEL_DIM", "LEARNING_RATE"])
    lines = draw(st.lists(st.tuples(env_keys | st.text(max_size=6), st.text(max_size=8))))
    return profile, "\n".join(f"{k}={v}" for k, v in lines).encode("utf-8", "surrogatepass")


@FUZZ
@given(files=settings_files(), task=st.sampled_from(["encoder-only", "numbers"]))
def test_any_settings_file_resolves_or_fails_in_one_line(tmp_path_factory, files, task):
    from digitformer.training.settings import resolve_settings
    from digitformer.training.train import check_model_settings

    folder = tmp_path_factory.mktemp("settings")
    (folder / "mine.yaml").write_bytes(files[0])
    (folder / ".env").write_bytes(files[1])
    try:
        check_model_settings(resolve_settings(task, str(folder / "mine.yaml"), {}, folder / ".env"))
    except DigitformerError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= 300


@pytest.fixture(scope="module")
def server():
    from fastapi.testclient import TestClient

    from digitformer.apps.serve.app import create_app, load_models

    return TestClient(create_app(load_models(["pretrained:digit"], "cpu")))


numbers = st.integers(-300, 300) | st.floats(allow_nan=True, allow_infinity=True)
pixel_rows = st.lists(st.lists(numbers, min_size=0, max_size=12), min_size=0, max_size=12)


@FUZZ
@given(
    body=st.one_of(
        pixel_rows.map(lambda rows: json.dumps({"pixels": rows}).encode()),
        json_values.map(lambda value: json.dumps({"pixels": value}).encode()),
        json_values.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=100),
    )
)
def test_any_json_body_is_answered_in_json_never_a_server_error(server, body):
    answer = server.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code in (200, 400, 413, 422), answer.text
    reply = answer.json()
    if answer.status_code == 200:
        assert "digits" in reply
    else:  # what went wrong, in one line
        assert "\n" not in reply["error"] and len(reply["error"]) <= 300
