"""Training under torchrun: two CPU processes with Gloo, on tiny models and real data."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from digitformer.inference.checkpoint import load_model
from digitformer.training.train import train
from digitformer.utils.errors import DigitformerError
from helpers import settings_for

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
# No augmentation and no dropout: one process and two see exactly the same numbers.
RUN = {"train_size": 256, "batch_size": 64, "augment": False, "model.dim": 32, "model.depth": 1}

DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from torch.optim.optimizer import register_optimizer_step_post_hook

    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from helpers import settings_for
    from digitformer.training.train import train
    from digitformer.utils.runtime import end_worker

    steps, unequal = [0], [0]

    def check(optimizer, args, kwargs):  # after every step: do all ranks hold the same weights?
        steps[0] += 1
        flat = torch.cat([p.detach().reshape(-1) for g in optimizer.param_groups
                          for p in g["params"]]).double()
        mine = torch.stack([flat.sum(), (flat * flat).sum(), flat[:50].sum()])
        every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(every, mine)
        unequal[0] += not all(torch.equal(every[0], e) for e in every)
        if steps[0] == {kill_at} and dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(check)
    settings = settings_for("encoder-only", {data!r}, Path({root!r}), run="ddp", **{run!r})
    train(settings)
    Path({root!r}, f"rank{{os.environ['RANK']}}.txt").write_text(f"{{steps[0]}} {{unequal[0]}}")
    end_worker(0)  # as `digitformer train` ends a worker
    """
)


def torchrun(tmp_path, data, processes: int, kill_at: int = 0, **run):
    script = tmp_path / "driver.py"
    script.write_text(
        DRIVER.format(
            tests=str(Path(__file__).parent),
            data=str(data),
            root=str(tmp_path),
            run={**RUN, **run},
            kill_at=kill_at,
        )  # fmt: skip
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIGITFORMER_DIST_TIMEOUT": "30"}
    return subprocess.run(
        [*TORCHRUN, str(processes), str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from helpers import SUBSET

    folder = tmp_path_factory.mktemp("ddp") / "data"
    shutil.copytree(SUBSET, folder)
    return folder


def test_two_processes_train_one_model_as_one_process_would(data, tmp_path):
    result = torchrun(tmp_path, data, 2, epochs=2)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):  # 4 steps an epoch, the weights equal on both ranks after each
        steps, unequal = map(int, (tmp_path / f"rank{rank}.txt").read_text().split())
        assert (steps, unequal) == (8, 0)
    assert result.stdout.count("epoch 2/2 |") == 1  # rank 0 alone reports
    model, meta = load_model(tmp_path / "runs" / "ddp")  # loads as a plain model, anywhere
    assert type(model).__name__ == "ViT" and meta["epoch"] == 2
    # the same recipe in one process: batch 64 there, 2 x 32 here
    single = train(settings_for("encoder-only", data, tmp_path, run="single", epochs=2, **RUN))
    one = load_file(str(Path(single["run_dir"]) / "last.safetensors"))
    two = load_file(str(tmp_path / "runs" / "ddp" / "last.safetensors"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=2e-5, rtol=1e-4)


def test_a_killed_rank_stops_the_others_and_the_run_resumes_on_one(data, tmp_path):
    started = time.monotonic()
    result = torchrun(tmp_path, data, 2, kill_at=5, epochs=3)  # rank 1 dies in epoch 2
    assert result.returncode != 0
    assert time.monotonic() - started < 120  # the survivor did not hang
    state = load_file(str(tmp_path / "runs" / "ddp" / "last.state.safetensors"))
    assert state  # epoch 1 was saved before the kill
    resumed = train(
        settings_for("encoder-only", data, tmp_path, run="ddp", epochs=3, **RUN), resume=True
    )  # started on 2 processes, continued on 1
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]


def test_a_batch_that_does_not_divide_among_the_processes_is_refused(data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    settings = settings_for("encoder-only", data, tmp_path, run="odd", **{**RUN, "batch_size": 63})
    with pytest.raises(DigitformerError, match="batch_size 63 does not divide among 2"):
        train(settings)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(DigitformerError, match="RANK 2 does not fit WORLD_SIZE 2"):
        train(settings)


def test_train_nproc_2_through_the_command_ends_cleanly(data, tmp_path):
    """`digitformer train --nproc 2`: torchrun's workers end with end_worker once saved (the
    interpreter's teardown could abort a Gloo worker); the run is whole and reported once."""
    args = ["train", "encoder-only", "--nproc", "2", "--env-file", "none", "--data-dir", str(data)]
    args += ["--out-dir", str(tmp_path / "runs"), "--no-display", "--epochs", "1", "--name", "cli"]
    args += ["--set", "train_size=128", "--set", "val_size=64", "--set", "model.depth=1"]
    args += ["--set", "model.dim=32", "--set", "batch_size=32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIGITFORMER_DIST_TIMEOUT": "30"}
    result = subprocess.run(
        [sys.executable, "-m", "digitformer", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done: best validation") == 1  # rank 0 alone reports
    model, meta = load_model(tmp_path / "runs" / "cli")
    assert meta["epoch"] == 1
