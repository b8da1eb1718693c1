"""What several test files share: the real-MNIST subset, tiny model sizes, quick settings."""

import json
from pathlib import Path

from digitformer.training.settings import TrainSettings, resolve_settings

SUBSET = Path(__file__).parent / "data" / "mnist-subset"
# Tiny configurations: real forward/backward passes in milliseconds.
TINY = {
    "encoder-only": dict(patch_size=7, dim=32, depth=1, heads=2, ff_dim=64),
    "encoder-decoder": dict(dim=32, enc_depth=1, dec_depth=1, heads=2, ff_dim=64),
}
# ...and for each task (numbers: an encoder-decoder reading lines of up to two digits, 28x56)
TINY_TASKS = {
    **TINY,
    "numbers": dict(
        image_size=28,
        image_width=56,
        max_digits=2,
        ending="end",
        memory="patches",
        dim=32,
        enc_depth=1,
        dec_depth=1,
        heads=2,
        ff_dim=64,
    ),
}

# Small but real: enough steps on real digits to learn well above chance in seconds.
VIT = {
    "model.patch_size": 7,
    "model.dim": 64,
    "model.depth": 2,
    "model.heads": 4,
    "model.ff_dim": 128,
    "model.norm": "pre",
    "batch_size": 32,
    "augment": False,
}
S2S = {
    "model.dim": 64,
    "model.enc_depth": 2,
    "model.dec_depth": 1,
    "model.heads": 2,
    "model.ff_dim": 128,
    "model.attention": "quadrant",
    "model.norm": "pre",
    "batch_size": 16,
    "augment": False,
    "train_grids": 4000,
    "lr": 2e-3,
}


def settings_for(task: str, mnist_dir, tmp_path, **overrides) -> TrainSettings:
    """Quick settings that learn well above chance on the subset in seconds."""
    base = {
        "data_dir": str(mnist_dir),
        "out_dir": str(tmp_path / "runs"),
        "val_size": 500,
        "batch_size": 64,
        "lr": 3e-3,
        "warmup_steps": 10,
        "display": False,
        "val_grids": 200,
        "test_grids": 200,
        "train_grids": 1500,
    }
    base.update(VIT if task == "encoder-only" else S2S)
    base.update(overrides)
    return resolve_settings(task, "default", base, env_file=None)


def data_of(run: str | Path) -> str:
    """The data folder a run trained on: `eval` and `viz` read `.data` unless told otherwise
    (a checkpoint never chooses where data is read), so tests pass it explicitly."""
    meta = json.loads((Path(run) / "last.json").read_text())
    return meta["settings"]["data_dir"]


def read_files(model, files):
    """Read image files as `digitformer predict` does, with `model`: its Readings."""
    from digitformer.inference.predict import predict_pictures
    from digitformer.inference.prepare import read_gray

    return predict_pictures(model, [read_gray(f) for f in files], [str(f) for f in files])
