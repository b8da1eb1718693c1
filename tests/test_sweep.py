import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from digitformer.apps.cli import main
from digitformer.models import MODEL_TYPES
from digitformer.training import sweep
from digitformer.training.settings import resolve_settings
from digitformer.utils.errors import DigitformerError
from helpers import SUBSET

TINY_SPACE = {
    "method": "bayes",
    "metric": {"name": "val_accuracy", "goal": "maximize"},
    "parameters": {
        "epochs": {"value": 2},
        "lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 5e-3},
        "model.dim": {"values": [16, 24]},
        "model.heads": {"values": [2, 3, 4]},
    },
}
# every trial: tiny model and data, one thread
FIXED = [
    "train_size=300",
    "val_size=200",
    "model.depth=1",
    "model.ff_dim=32",
    "model.patch_size=7",
    "batch_size=50",
    "warmup_steps=2",
    "threads=1",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-data")
    shutil.copytree(SUBSET, root / "data")
    return root / "data"


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


def test_parse_space_reads_the_wandb_format():
    space = sweep.parse_space(
        {
            "metric": {"name": "val_loss", "goal": "minimize"},
            "parameters": {
                "epochs": {"value": 3},
                "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
                "model.depth": {"min": 2, "max": 6},
                "model.dropout": {"min": 0.0, "max": 0.3},
                "batch_size": {"values": [32, 64]},
            },
        }
    )
    assert space.goal == "minimize" and space.fixed == {"epochs": 3}
    kinds = {p.name: p.kind for p in space.params}
    assert kinds == {
        "lr": "log",
        "model.depth": "int",
        "model.dropout": "float",
        "batch_size": "values",
    }


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"val_size": {"values": [1000, 2000]}}, "cannot be swept"),
        ({"lr": {"distribution": "normal", "min": 0, "max": 1}}, "not supported"),
        ({"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}, "bad range"),
        ({"lr": {"max": 1}}, "needs value, values or min/max"),
    ],
)
def test_parse_space_refuses_what_it_cannot_run(parameters, message):
    spec = {"metric": {"name": "val_accuracy"}, "parameters": parameters}
    with pytest.raises(DigitformerError, match=message):
        sweep.parse_space(spec)


@pytest.mark.parametrize("task", ["encoder-only", "encoder-decoder"])
def test_the_packaged_spaces_only_ever_draw_valid_models(task):
    space, _ = sweep.load_space(sweep.space_path("default", task))
    base = resolve_settings(task, "default", env_file=None).model
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_heads = set()
    for _ in range(60):
        trial = study.ask()
        drawn = sweep.sample(trial, space, task, base)
        model = {**base, **{k[6:]: v for k, v in drawn.items() if k.startswith("model.")}}
        MODEL_TYPES[task][1].from_dict(model)  # raises if invalid
        seen_heads.add((model["dim"], model["heads"]))
        study.tell(trial, 0.0)
    assert all(dim % heads == 0 for dim, heads in seen_heads)
    assert len(seen_heads) >= 5  # the valid combinations are all reachable


def test_a_choice_invalid_everywhere_is_never_drawn():
    space = sweep.parse_space(
        {
            "metric": {"name": "val_sequence_accuracy"},
            "parameters": {"model.patch_size": {"values": [7, 8]}},
        }
    )
    study = optuna.create_study()
    trial = study.ask()
    drawn = sweep.sample(trial, space, "encoder-decoder", {})
    assert drawn == {"model.patch_size": 7}
    assert list(trial.params) == ["model.patch_size[7]"]  # its own name: its own choices


def _trials(storage: str, name: str):
    study = optuna.load_study(study_name=name, storage=sweep._storage(storage))
    return study.get_trials()


def test_sqlite_sweep_runs_resumes_and_reports_the_best(data_dir, space_file, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/s.db"
    fixed = [x for kv in [*FIXED, f"data_dir={data_dir}"] for x in ("--set", kv)]
    args = ["--model", "encoder-only", "--space", str(space_file), *fixed, "--storage", storage]
    out = ["--out-dir", str(tmp_path / "trials")]
    assert main(["sweep", "run", *args, "--name", "s", "--count", "2", *out, "--seed", "0"]) == 0
    assert main(["sweep", "agent", "s", "--count", "1", "--storage", storage, *out]) == 0
    trials = _trials(storage, "s")
    assert [t.number for t in trials] == [0, 1, 2]  # the resumed agent continued the count
    for t in trials:
        assert t.state.name in ("COMPLETE", "PRUNED")
        assert set(t.intermediate_values) <= {0, 1} and 0 in t.intermediate_values
        assert Path(t.user_attrs["run_dir"]).is_dir()
    capsys.readouterr()
    profile = tmp_path / "best.yaml"
    assert main(["sweep", "best", "s", "--storage", storage, "--out", str(profile)]) == 0
    table = capsys.readouterr().out
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"{best.number:>5}  {best.value:>12.4f}" in table
    settings = resolve_settings("encoder-only", str(profile), env_file=None)  # train --config
    assert settings.model["dim"] == best.params["model.dim"] and settings.train_size == 300
    assert settings.lr == pytest.approx(best.params["lr"], rel=1e-5)


def test_sweep_errors_are_clear(tmp_path, space_file, capsys):
    storage = f"sqlite:///{tmp_path}/s.db"
    assert main(["sweep", "agent", "nope", "--count", "1", "--storage", storage]) == 1
    assert "no study named 'nope'" in capsys.readouterr().err
    create = ["sweep", "create", "--model", "encoder-only", "--space", str(space_file)]
    assert main([*create, "--storage", storage, "--name", "x"]) == 0
    assert main([*create, "--storage", storage, "--name", "x"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*create, "--set", "run=mine", "--storage", storage]) == 1
    assert main([*create, "--storage", "nosuchdb://x"]) == 1
    assert "cannot open sweep storage" in capsys.readouterr().err
    assert main(["sweep", "best", "x", "--storage", storage]) == 1
    assert "no completed trial" in capsys.readouterr().err


# ---- many agents on one study: SQLite, and a real PostgreSQL server -----------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's package; .ci/run installs it)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        if os.environ.get("DIGITFORMER_CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run should have installed it")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="digitformer-pg-"))
    root.chmod(0o755)
    port = _free_port()
    as_root = os.geteuid() == 0  # initdb refuses root: run the server as the postgres user

    def run(cmd: str) -> None:
        full = ["su", "postgres", "-c", cmd] if as_root else ["bash", "-c", cmd]
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    if as_root:
        shutil.chown(root, "postgres")
    run(f"{bin_dir}/initdb -D {root}/data -A trust -U postgres")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    run(f"{bin_dir}/pg_ctl -D {root}/data -o '{options}' -l {root}/log -w start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(f"{bin_dir}/pg_ctl -D {root}/data -m fast -w stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_agents_in_parallel_share_one_study(backend, request, data_dir, space_file, tmp_path):
    storage = (
        f"sqlite:///{tmp_path}/s.db" if backend == "sqlite" else request.getfixturevalue("postgres")
    )
    name = f"parallel-{backend}"
    fixed = [x for kv in [*FIXED, f"data_dir={data_dir}", "epochs=1"] for x in ("--set", kv)]
    create = ["sweep", "create", "--model", "encoder-only", "--space", str(space_file), *fixed]
    assert main([*create, "--storage", storage, "--name", name]) == 0  # before the agents
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    agent = [
        sys.executable,
        "-m",
        "digitformer",
        "sweep",
        "agent",
        name,
        "--count",
        "2",
        "--storage",
        storage,
        "--out-dir",
        str(tmp_path / "trials"),
    ]
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            agent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = _trials(storage, name)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # each trial once
    assert all(t.state.name == "COMPLETE" for t in trials)  # one epoch: nothing to prune
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4
    assert all("2 of 2 trials completed" in out for out in outputs)
    rows, summary = sweep.best(name, storage)
    assert summary["trials"] == {"complete": 4} and len(rows) == 4
    assert time.monotonic() - started < 300


def test_best_of_an_unknown_study_creates_no_database(tmp_path, capsys):
    from digitformer.apps.cli import main

    db = tmp_path / "none.db"
    assert main(["sweep", "best", "nope", "--storage", f"sqlite:///{db}"]) == 1
    assert "does not exist" in capsys.readouterr().err and not db.exists()


@pytest.mark.parametrize("name", ["../../etc", "/tmp/abs", "a/b", ".hidden"])
def test_a_study_name_never_leads_out_of_the_trials_folder(tmp_path, space_file, name, capsys):
    """Trial checkpoints go to OUT_DIR/STUDY/trial-N: a study name that is a path is refused
    when the study is made and when an agent is started on it, before anything is written."""
    storage = f"sqlite:///{tmp_path}/s.db"
    args = ["--model", "encoder-only", "--space", str(space_file), "--storage", storage]
    assert main(["sweep", "create", *args, "--name", name]) == 1
    assert "plain folder name" in capsys.readouterr().err
    out = ["--out-dir", str(tmp_path / "trials"), "--storage", storage]
    assert main(["sweep", "agent", name, "--count", "1", *out]) == 1
    assert "plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "trials").exists() and not (tmp_path / "etc").exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test asks for the trial itself
def test_a_trial_whose_agent_died_is_not_running_forever(
    data_dir, space_file, tmp_path, monkeypatch
):
    """An agent killed with -9 leaves its trial RUNNING with a last heartbeat; once the grace
    period passes, `sweep best` counts it failed (and queues its retry), as an agent would."""
    import time

    monkeypatch.setattr(sweep, "HEARTBEAT_S", 1)
    monkeypatch.setattr(sweep, "GRACE_S", 1)
    storage = f"sqlite:///{tmp_path}/s.db"
    fixed = [x for kv in [*FIXED, f"data_dir={data_dir}"] for x in ("--set", kv)]
    args = ["--model", "encoder-only", "--space", str(space_file), *fixed, "--storage", storage]
    out = ["--out-dir", str(tmp_path / "trials")]
    assert main(["sweep", "run", *args, "--name", "s", "--count", "1", *out, "--seed", "0"]) == 0
    study = optuna.load_study(study_name="s", storage=sweep._storage(storage))
    dead = study.ask()  # what a killed agent leaves: a running trial, heard from once
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    rows, summary = sweep.best("s", storage)
    assert "running" not in summary["trials"] and summary["trials"]["fail"] == 1
    assert study.get_trials()[dead.number].state.name == "FAIL"
