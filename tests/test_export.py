import numpy as np
import pytest
import torch

from digitformer.apps.cli import main
from digitformer.data import load_split, make_grids


def inputs_for(model_type, mnist_dir, n=5):
    test = load_split(mnist_dir, "test")
    images = (
        test.images[:n]
        if model_type == "encoder-only"
        else make_grids(test.images, test.labels, n, seed=0).images
    )
    return torch.from_numpy(images).float().div(255).unsqueeze(1)


def reference(model, model_type, x):
    """What every exported graph returns: the model's own reading, tokens and probabilities
    (a digit is a sequence of one: the softmax of its logits)."""
    with torch.no_grad():
        if model_type == "encoder-only":
            probs = model(x).softmax(-1)[:, None]
            return [probs.argmax(-1), probs]
        digits, probs = model.generate(x)
        return [digits, probs]


@pytest.mark.parametrize("stem", [0, 4])  # 4: a convolutional stem (per quadrant on grids)
@pytest.mark.parametrize("model_type", ["encoder-only", "encoder-decoder"])
def test_onnx_export_runs_in_onnxruntime_like_pytorch(
    tmp_path, mnist_dir, tiny_checkpoint, model_type, stem, capsys
):
    ort = pytest.importorskip("onnxruntime")
    model, ckpt = tiny_checkpoint(model_type, stem=stem)
    out = tmp_path / "model.onnx"
    assert main(["export", str(ckpt), str(out), "--format", "onnx"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 7):  # the batch dimension is dynamic
        x = inputs_for(model_type, mnist_dir, n)
        got = session.run(None, {"images": x.numpy()})
        want = reference(model, model_type, x)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            if w.dtype == torch.long:
                assert np.array_equal(g, w.numpy())  # the same digits
            else:
                np.testing.assert_allclose(g, w.numpy(), atol=1e-4)


@pytest.mark.parametrize("model_type", ["encoder-only", "encoder-decoder"])
def test_torchscript_export_round_trip(tmp_path, mnist_dir, tiny_checkpoint, model_type):
    model, ckpt = tiny_checkpoint(model_type)
    out = tmp_path / "model.pt"
    assert main(["export", str(ckpt), str(out), "--format", "torchscript"]) == 0
    loaded = torch.jit.load(str(out))
    x = inputs_for(model_type, mnist_dir, 3)
    got = loaded(x)
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    for g, w in zip(got, reference(model, model_type, x)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_export_of_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "x.safetensors"), str(tmp_path / "m.onnx")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
