"""The wheel is complete: installed into a fresh virtual environment and run from an empty
folder, it finds its profiles, sweep spaces and web page (no source checkout to lean on)."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
from pathlib import Path

import digitformer
from digitformer.training.settings import PROFILE_DIR, resolve_settings
from digitformer.training.sweep import load_space, space_path
from digitformer.training.tasks import TASKS

assert Path(digitformer.__file__).resolve().is_relative_to(Path(sys.prefix).resolve())
for task in TASKS:
    for path in PROFILE_DIR.glob(f"{task}-*.yaml"):
        resolve_settings(task, path.stem.removeprefix(f"{task}-"), env_file=None)
    for space in ("default", "cpu"):
        load_space(space_path(space, task))
assert (Path(digitformer.__file__).parent / "apps" / "serve" / "index.html").is_file()
print("ok", digitformer.__file__)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--disable-pip-version-check", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("digitformer-*.whl")
    return found


def test_wheel_holds_the_package_data_and_the_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "digitformer/profiles/encoder-only-default.yaml",
        "digitformer/profiles/encoder-decoder-from-vit.yaml",
        "digitformer/sweeps/encoder-only.yaml",
        "digitformer/sweeps/encoder-decoder-cpu.yaml",
        "digitformer/apps/serve/index.html",
    ):
        assert expected in names
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_installed_wheel_runs_from_an_empty_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        + ["--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
    )
    # The dependencies (torch, numpy, ...) come from this environment, read-only; the package
    # itself only from the wheel: the new environment's own site-packages come first.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()

    def run(*args):
        return subprocess.run(
            [python, *args], cwd=empty, capture_output=True, text=True, timeout=120
        )

    check = run("-c", CHECK)
    assert check.returncode == 0, check.stderr
    assert str(venv.resolve()) in check.stdout
    for command in (["sweep", "run", "--help"], ["train", "--help"]):
        result = run("-m", "digitformer", *command)
        assert result.returncode == 0, result.stderr
    created = run(
        "-m",
        "digitformer",
        "sweep",
        "create",
        "--model",
        "encoder-only",
        "--space",
        "cpu",
        "--name",
        "s",
        "--storage",
        f"sqlite:///{tmp_path / 's.db'}",
    )
    assert created.returncode == 0 and created.stdout.strip() == "s", created.stderr
    assert not list(empty.iterdir())  # nothing written where it was run
