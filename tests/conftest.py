import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(1)  # tiny models: one thread is fastest and leaves a core to the other

SUBSET = Path(__file__).parent / "data" / "mnist-subset"


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """A data folder holding a real-MNIST subset (3000 train, 1000 test) in the HF layout."""
    data = tmp_path / "data"
    shutil.copytree(SUBSET, data)
    return data


@pytest.fixture
def rng():
    return np.random.default_rng(0)
