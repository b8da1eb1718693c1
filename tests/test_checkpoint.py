import json

import pytest
import torch

from digitformer.inference.checkpoint import load_model, save_checkpoint
from digitformer.models import build_model
from digitformer.utils.errors import DigitformerError
from helpers import TINY


@pytest.mark.parametrize("model_type", list(TINY))
def test_round_trip_gives_identical_outputs(tmp_path, model_type):
    torch.manual_seed(0)
    model = build_model(model_type, TINY[model_type]).eval()
    path = save_checkpoint(
        tmp_path / "best.safetensors",
        model,
        {"model_type": model_type, "model_config": model.cfg.to_dict(), "epoch": 3},
    )
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 3
    loaded, meta = load_model(tmp_path)  # a run folder resolves to its best checkpoint
    assert meta["model_type"] == model_type and type(loaded) is type(model)
    side = 28 if model_type == "encoder-only" else 56
    images = torch.rand(4, 1, side, side)
    with torch.no_grad():
        if model_type == "encoder-only":
            assert torch.equal(model(images), loaded(images))
        else:
            assert torch.equal(model.generate(images)[1], loaded.generate(images)[1])
    assert load_model(path.with_suffix(".json"))[1]["epoch"] == 3


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(DigitformerError, match="checkpoint not found"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(DigitformerError, match="no checkpoint"):
        load_model(tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    model = build_model("encoder-only", TINY["encoder-only"])
    path = save_checkpoint(
        tmp_path / "last.safetensors",
        model,
        {"model_type": "encoder-only", "model_config": model.cfg.to_dict()},
    )
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DigitformerError, match="not a valid checkpoint"):
        load_model(path)
    path.write_bytes(b"")
    with pytest.raises(DigitformerError, match="not a valid checkpoint"):
        load_model(path)


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(DigitformerError, match="not a digitformer checkpoint"):
        load_model(tmp_path / "x.safetensors")


def _with_meta(tmp_path, meta: dict, weights=None):
    """A checkpoint file holding `weights` (a tiny ViT's by default) and the metadata `meta`."""
    from safetensors.torch import save_file

    if weights is None:
        weights = build_model("encoder-only", TINY["encoder-only"]).state_dict()
    path = tmp_path / "crafted.safetensors"
    save_file(
        {k: v.contiguous() for k, v in weights.items()},
        str(path),
        metadata={"digitformer": json.dumps({"format": "digitformer-checkpoint", **meta})},
    )
    return path


def test_a_small_file_declaring_a_huge_model_is_refused_before_allocating(tmp_path):
    import resource

    huge = {**TINY["encoder-only"], "dim": 65536, "ff_dim": 262144, "heads": 1, "depth": 48}
    path = _with_meta(tmp_path, {"model_type": "encoder-only", "model_config": huge})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DigitformerError, match="dim must be at most 4096"):
        load_model(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # far below the ~3 TB such a model would need


@pytest.mark.parametrize("field", ["depth", "dim"])
def test_a_declared_size_past_the_limits_is_refused_before_anything_is_built(tmp_path, field):
    """A 4 KB file declaring depth 10^8 once grew without bound (the modules were built on the
    meta device before the shapes were compared): now one line, at once, little memory."""
    import resource
    import time

    crafted = {**TINY["encoder-only"], field: 100_000_000}
    path = _with_meta(tmp_path, {"model_type": "encoder-only", "model_config": crafted})
    before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(DigitformerError, match=f"{field} must be at most"):
        load_model(path)
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000


@pytest.mark.parametrize(
    "meta",
    [
        [],  # not a mapping at all: replaced below by a list document
        {"model_type": "encoder-only", "model_config": ["dim", 32]},
        {"model_type": "encoder-only", "model_config": {**TINY["encoder-only"], "dim": "32"}},
        {"model_type": "encoder-only", "model_config": {**TINY["encoder-only"], "depth": 1.5}},
        {"model_type": "encoder-only", "model_config": {**TINY["encoder-only"], "dim": True}},
        {"model_type": ["encoder-only"], "model_config": {}},
        {"model_type": "transformer-xl", "model_config": {}},
    ],
    ids=["list", "config-list", "string-number", "float-int", "bool-int", "type-list", "type"],
)
def test_metadata_of_the_wrong_type_is_a_clear_error(tmp_path, meta):
    from safetensors.torch import save_file

    if meta == []:
        path = tmp_path / "list.safetensors"
        save_file({"w": torch.zeros(1)}, str(path), metadata={"digitformer": "[1, 2]"})
    else:
        path = _with_meta(tmp_path, meta)
    with pytest.raises(DigitformerError):
        load_model(path)


def test_hub_checkpoints_fail_fast_and_clearly_without_the_hub(monkeypatch):
    import time

    import digitformer.utils.hub as hub

    monkeypatch.setattr(hub, "reachable", lambda host="", timeout=5.0: False)
    started = time.monotonic()
    with pytest.raises(DigitformerError, match="Hugging Face Hub .* is not reachable"):
        load_model("hf://someone/digits")
    assert time.monotonic() - started < 5
    with pytest.raises(DigitformerError, match="give hf://owner/repo"):
        load_model("hf://just-a-name")


def test_bundled_models_by_name(tmp_path):
    with pytest.raises(DigitformerError, match="choose from pretrained:digit, pretrained:grid"):
        load_model("pretrained:letters")
    for name, kind in (
        ("digit", "encoder-only"),
        ("grid", "encoder-decoder"),
        ("number", "encoder-decoder"),
    ):
        model, meta = load_model(f"pretrained:{name}")
        assert meta["model_type"] == kind and meta["stored_as"] == "float16"
        assert all(p.dtype == torch.float32 for p in model.parameters())  # computes in fp32


def test_loading_a_numbers_reader_does_not_import_torchdynamo_or_sympy():
    """The shapes check builds the model on the meta device without its random fills, which
    there (nn.Embedding's `normal_`, the memory positions' `torch.randn`) import TorchDynamo
    and SymPy: 0.9 s and 0.43 s of the start of every process that reads numbers. Checked in
    a fresh interpreter (this one may have imported them); the model loaded is the real one,
    and reads."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, digitformer\n"
        "reader = digitformer.load('number')\n"
        "line = np.ones((40, 120), np.float32); line[8:32, 20:24] = 0; line[8:32, 60:64] = 0\n"
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)\n"
        "print(reader.predict(line)[0].digits)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "11"]
