import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import SUBSET, TINY, TINY_TASKS

torch.set_num_threads(1)  # tiny models: one thread is fastest and leaves a core to the other
# fp32 on every machine (training and reading: one variable sets both), so that the exact
# comparisons (two processes against one, a reader against its model) hold on a CPU with AMX,
# where `auto` means bf16; the bf16 tests ask for it
os.environ["DIGITFORMER_PRECISION"] = "fp32"


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """A data folder holding a real-MNIST subset (3000 train, 1000 test) in the HF layout."""
    data = tmp_path / "data"
    shutil.copytree(SUBSET, data)
    return data


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """make(model_type, **config) -> (model in eval mode, path of its saved checkpoint)."""
    from digitformer.inference.checkpoint import save_checkpoint
    from digitformer.models import build_model

    def make(model_type: str, **config):
        torch.manual_seed(0)
        model = build_model(model_type, {**TINY[model_type], **config}).eval()
        path = save_checkpoint(
            tmp_path / f"{model_type}.safetensors",
            model,
            {"model_type": model_type, "model_config": model.cfg.to_dict()},
        )
        return model, path

    return make


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, str]:
    """A tiny real run of each task: 2 epochs on the real-MNIST subset, checkpoints, history
    and all. {task: run folder}."""
    from digitformer.training.settings import resolve_settings
    from digitformer.training.train import train

    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(SUBSET, root / "data")
    runs = {}
    for task in ("encoder-only", "encoder-decoder", "numbers"):
        model = {f"model.{k}": v for k, v in TINY_TASKS[task].items()}
        settings = resolve_settings(
            task,
            "default",
            {
                **model,
                "data_dir": str(root / "data"),
                "out_dir": str(root / "runs"),
                "run": task,
                "epochs": 2,
                "train_size": 600,
                "train_grids": 300,
                "val_size": 200,
                "val_grids": 40,
                "test_grids": 40,
                "warmup_steps": 2,
                "display": False,
                "init_encoder": "",
            },
            env_file=None,
        )
        runs[task] = train(settings)["run_dir"]
    return runs
