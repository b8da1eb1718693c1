"""Fuzzing the two doors strangers' input comes through: image bytes and checkpoint files.
Whatever arrives, the only exception is the project's own (one line at the CLI), never a
crash, a hang or a traceback."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from digitformer.inference.checkpoint import load_model
from digitformer.inference.prepare import NoInk, prepare, read_gray
from digitformer.models import build_model
from digitformer.utils.errors import DigitformerError
from helpers import TINY

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


@FUZZ
@given(
    st.sampled_from([np.uint8, np.uint16, np.float32, bool]),
    st.integers(1, 64),
    st.integers(1, 64),
    st.integers(0, 2**32 - 1),
)
def test_any_picture_array_prepares_or_says_why(dtype, h, w, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.random((h, w)).astype(np.float32)
    if dtype is bool:
        pixels = (pixels > 0.9).astype(np.float32)
    read_and_prepare(png_of((pixels * 255).astype(np.uint8)))
    with contextlib.suppress(NoInk, DigitformerError):
        prepare(pixels, grid=False)


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
