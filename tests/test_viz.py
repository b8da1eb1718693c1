import numpy as np
import pytest
import torch
from PIL import Image

from digitformer.apps.cli import main
from digitformer.apps.viz import embeddings, training
from digitformer.apps.viz.run import VizOptions, visualize
from digitformer.inference import attention as attention_maps
from digitformer.models import build_model
from digitformer.utils.errors import DigitformerError
from helpers import TINY, data_of


@pytest.fixture(scope="module")
def runs(trained_runs):
    return trained_runs


def png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


# (width, height) in pixels: fixed figure sizes at 100 DPI; attention: 3 samples x 2 in. panels
SIZES = {
    "encoder-only": {
        "tsne": (800, 700),
        "pca_hdbscan": (1600, 700),
        "attention_maps": (600, 800),  # image, CLS, received, rollout
        "attention_heads": (600, 400),  # 2 heads
        "epoch1": (1200, 450),
        "epoch2": (1200, 450),
        "training_curves": (1200, 450),
        "confusion": (700, 600),
    },
    "encoder-decoder": {
        "tsne": (800, 700),
        "pca_hdbscan": (1600, 700),
        "attention_maps": (600, 1400),  # image, encoder, rollout, 4 digits' cross-attention
        "attention_heads": (600, 400),
        "epoch1": (1200, 450),
        "epoch2": (1200, 450),
        "training_curves": (1200, 450),
        "confusion": (700, 600),
    },
}


@pytest.mark.parametrize("task", ["encoder-only", "encoder-decoder"])
def test_viz_writes_every_picture_as_png_of_its_size(runs, task, tmp_path):
    options = VizOptions(samples=60, attention_samples=3, heads=True, rollout=True, max_points=300)
    lines = []
    paths = visualize(runs[task], tmp_path, options, say=lines.append, data_dir=data_of(runs[task]))
    prefix = task.replace("-", "_")
    names = {p.name for p in paths}
    # HDBSCAN may find no structure in a barely trained model and hand over to K-Means
    if f"{prefix}_pca_kmeans.png" in names:
        names = names - {f"{prefix}_pca_kmeans.png"} | {f"{prefix}_pca_hdbscan.png"}
        (tmp_path / f"{prefix}_pca_kmeans.png").rename(tmp_path / f"{prefix}_pca_hdbscan.png")
    assert names == {f"{prefix}_{name}.png" for name in SIZES[task]}
    for name, size in SIZES[task].items():
        assert png_size(tmp_path / f"{prefix}_{name}.png") == size, name
    assert "purity" in lines[0] and "adjusted Rand index" in lines[0]


def test_numbers_viz_draws_where_each_digit_was_read(runs, tmp_path):
    lines = []
    run = runs["numbers"]
    paths = visualize(
        run, tmp_path, VizOptions(attention_samples=3), say=lines.append, data_dir=data_of(run)
    )
    assert [p.name for p in paths] == ["numbers_attention_maps.png", "numbers_training_curves.png"]
    width, height = png_size(paths[0])
    assert width > height and width >= 600  # three numbers side by side
    assert "not drawn" in lines[0] and "t-SNE" in lines[0]


def test_braille_epochs_come_from_the_recorded_run(runs, tmp_path):
    from digitformer.inference.checkpoint import read_checkpoint

    _, meta = read_checkpoint(f"{runs['encoder-decoder']}/last.safetensors")
    recorded = [np.asarray(r["display_predictions"]) for r in meta["history"]]
    assert [r.shape for r in recorded] == [(10, 4), (10, 4)]
    run = runs["encoder-decoder"]
    paths = visualize(run, tmp_path, VizOptions(pictures=("braille",)), data_dir=data_of(run))
    assert [p.name for p in paths] == ["encoder_decoder_epoch1.png", "encoder_decoder_epoch2.png"]


def test_braille_dots_follow_the_terminal_cells():
    image = np.zeros((8, 4), np.uint8)
    image[0, 0] = image[3, 1] = image[4, 2] = 255  # cell (0,0) dots 1 and 8; cell (1,1) dot 1
    dots = training.braille_dots(image)
    d, w, h = training.DOT, training.CELL_W, training.CELL_H
    assert dots.tolist() == [[0, 0], [d, 3 * d], [w, h]]


def test_patches_are_coloured_by_their_own_quadrant():
    side = 8
    quadrants = embeddings.patch_quadrants(side).reshape(side, side)
    assert (quadrants[:4, :4] == 0).all() and (quadrants[:4, 4:] == 1).all()
    assert (quadrants[4:, :4] == 2).all() and (quadrants[4:, 4:] == 3).all()
    torch.manual_seed(0)
    model = build_model("encoder-decoder", TINY["encoder-decoder"]).eval()
    images = torch.randint(0, 256, (3, 56, 56), dtype=torch.uint8)
    labels = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 1, 2]])
    emb = embeddings.collect(model, images, labels, max_points=10_000)
    assert emb.points.shape == (3 * 64, 32)
    digits = emb.digits.reshape(3, side, side)
    assert (digits[1, :4, :4] == 5).all() and (digits[1, :4, 4:] == 6).all()
    assert (digits[2, 4:, :4] == 1).all() and (digits[2, 4:, 4:] == 2).all()
    assert "after block 1 of 1" in emb.what


def _capture(module):
    """Record the attention weights a module returns."""
    seen = []
    handle = module.register_forward_hook(
        lambda mod, args, output: seen.append(output[1]) if output[1] is not None else None
    )
    return seen, handle


def test_vit_attention_maps_are_the_modules_weights():
    torch.manual_seed(0)
    cfg = {**TINY["encoder-only"], "depth": 2}
    model = build_model("encoder-only", cfg).eval()
    images = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    seen, handle = _capture(model.encoder[1].attn)
    maps = attention_maps.vit_maps(model, images, layer=2)
    handle.remove()
    weights = seen[-1]  # (B, h, 17, 17)
    assert maps["cls"].shape == (2, 2, 4, 4)
    np.testing.assert_allclose(maps["cls"].reshape(2, 2, 16), weights[:, :, 0, 1:].numpy())
    np.testing.assert_allclose(
        maps["received"].reshape(2, 2, 16), weights[:, :, 1:, 1:].mean(2).numpy(), rtol=1e-6
    )
    with pytest.raises(DigitformerError, match="between 1 and 2"):
        attention_maps.vit_maps(model, images, layer=3)


def test_seq2seq_attention_maps_are_the_modules_weights():
    torch.manual_seed(0)
    cfg = {**TINY["encoder-decoder"], "attention": "global"}
    model = build_model("encoder-decoder", cfg).eval()
    images = torch.randint(0, 256, (2, 56, 56), dtype=torch.uint8)
    enc_seen, h1 = _capture(model.encoder[0].attn)
    cross_seen, h2 = _capture(model.decoder[0].cross_attn)
    maps = attention_maps.seq2seq_maps(model, images)
    h1.remove()
    h2.remove()
    np.testing.assert_allclose(
        maps["received"].reshape(2, 2, 64), enc_seen[-1].mean(2).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(maps["cross"].reshape(2, 2, 4, 4), cross_seen[-1].numpy())
    digits, _ = model.generate(images.float().unsqueeze(1) / 255)
    assert (maps["digits"] == digits.numpy()).all()


def test_quadrant_attention_maps_stay_inside_their_quadrant():
    torch.manual_seed(0)
    cfg = {**TINY["encoder-decoder"], "attention": "quadrant", "enc_depth": 2}
    model = build_model("encoder-decoder", cfg).eval()
    images = torch.randint(0, 256, (2, 56, 56), dtype=torch.uint8)
    maps = attention_maps.seq2seq_maps(model, images)
    received = maps["received"]  # (B, h, 8, 8): each quadrant's queries share 1 over its keys
    for r in (0, 4):
        for c in (0, 4):
            np.testing.assert_allclose(received[:, :, r : r + 4, c : c + 4].sum((-1, -2)), 1, 1e-5)
            np.testing.assert_allclose(
                maps["rollout"][:, r : r + 4, c : c + 4].sum((-1, -2)), 1, 1e-5
            )
    np.testing.assert_allclose(maps["cross"].sum((-1, -2)), 1, rtol=1e-5)  # over 2x2 quadrants


def test_rollout_multiplies_layers_with_the_residual():
    a = torch.softmax(torch.randn(1, 2, 3, 3), -1)
    b = torch.softmax(torch.randn(1, 2, 3, 3), -1)
    step = lambda w: 0.5 * w.mean(1) + 0.5 * torch.eye(3)  # rows already sum to 1
    torch.testing.assert_close(attention_maps.rollout([a, b]), step(b) @ step(a))


def test_cluster_metrics_on_planted_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 20, (10, 16))
    digits = np.repeat(np.arange(10), 40)
    points = centres[digits] + rng.normal(0, 0.5, (400, 16))
    for method, name in (("hdbscan", "HDBSCAN"), ("kmeans", "K-Means (k=10)")):
        clusters, used = embeddings.cluster(points, method)
        scores = embeddings.cluster_scores(clusters, digits)
        assert used == name
        assert scores["clusters"] == 10 and scores["purity"] == 1.0, method
        assert scores["ari"] > 0.99, method
    scores = embeddings.cluster_scores(np.array([0, 0, 1, 1, -1]), np.array([3, 3, 4, 5, 1]))
    assert scores["purity"] == 0.75 and scores["noise"] == pytest.approx(0.2)
    assert scores["clusters"] == 2


def test_viz_cli_honours_the_original_variables(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODEL_PATH", runs["encoder-only"])
    monkeypatch.setenv("MODEL_TYPE", "encoder_decoder")
    assert main(["viz", "--only", "braille"]) == 1
    assert "MODEL_TYPE is encoder_decoder" in capsys.readouterr().err
    monkeypatch.setenv("MODEL_TYPE", "encoder_only")
    monkeypatch.setenv("NUM_SAMPLES", "many")
    assert main(["viz", "--only", "braille"]) == 1
    assert "NUM_SAMPLES must be a number" in capsys.readouterr().err
    monkeypatch.setenv("NUM_SAMPLES", "50")
    data = ["--data-dir", data_of(runs["encoder-only"])]
    assert main(["viz", "--only", "tsne", "--out", "pics", *data]) == 0
    assert "wrote pics/encoder_only_tsne.png" in capsys.readouterr().out
    assert png_size(tmp_path / "pics" / "encoder_only_tsne.png") == (800, 700)


@pytest.mark.parametrize(
    "args, message",
    [
        (["viz", "missing-run"], "checkpoint not found"),
        (["viz", "{run}", "--layer", "9"], "--layer must be between 0 and 1"),
        (["viz", "{run}", "--attention-layer", "0"], "--attention-layer must be between 1 and 1"),
        (["viz", "{run}", "--only", "tsne,movie"], "unknown pictures"),
        (["viz", "{run}", "--samples", "1"], "--samples must be at least 2"),
    ],
)
def test_viz_cli_errors_are_one_line(runs, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODEL_PATH", raising=False)
    argv = [a.replace("{run}", runs["encoder-only"]) for a in args]
    data = ["--data-dir", data_of(runs["encoder-only"])]
    assert main([*argv, "--out", str(tmp_path / "out"), *data]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_hdbscan_without_structure_hands_over_to_kmeans():
    points = np.random.default_rng(0).normal(0, 1, (12, 8))  # HDBSCAN calls all of it noise
    clusters, used = embeddings.cluster(points, "hdbscan")
    assert used == "K-Means (k=10)" and len(set(clusters)) == 10


def test_viz_with_no_checkpoint_draws_the_bundled_digit_vit(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("MODEL_PATH", "MODEL_TYPE", "NUM_SAMPLES"):
        monkeypatch.delenv(name, raising=False)
    data = ["--data-dir", data_of(runs["encoder-only"])]
    argv = ["viz", "--only", "braille", "--samples", "4", "--split", "test", "--out", "pics"]
    assert main([*argv, *data]) == 0
    assert "encoder_only" in capsys.readouterr().out  # the bundled ViT's pictures
