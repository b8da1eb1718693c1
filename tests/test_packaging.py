"""The wheel is complete: installed into a fresh virtual environment and run from an empty
folder, it finds its profiles, sweep spaces and web page (no source checkout to lean on); and
a core-only install (the wheel's own dependencies, none of its extras) reads a picture."""

import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ("optuna", "matplotlib", "sklearn", "fastapi", "uvicorn", "onnx", "wandb")

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

# Run in the core-only environment: the extras are not there at all, and the bundled digit
# reader reads the PNGs named on the command line all the same.
READ = """
import importlib.util
import sys

missing = [m for m in sys.argv[1].split(",") if importlib.util.find_spec(m) is not None]
assert not missing, f"an extra is importable in the core-only environment: {missing}"

import digitformer

print(*[r.digits[0] for r in digitformer.load("digit").predict(sys.argv[2:])])
assert not [m for m in sys.argv[1].split(",") if m in sys.modules]
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
        "digitformer/pretrained/digit.safetensors",
    ):
        assert expected in names
    assert any(n.endswith("licenses/LICENSE") for n in names)


def wheel_requirements(wheel: Path) -> tuple[list[Requirement], set[str]]:
    """The wheel's core dependencies (Requires-Dist without an extra) and its extras' names."""
    (metadata,) = [
        n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA")
    ]
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    requirements = [Requirement(r) for r in re.findall(r"^Requires-Dist: (.+)$", text, re.M)]
    core = [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]
    return core, set(re.findall(r"^Provides-Extra: (.+)$", text, re.M))


def core_distributions(requirements: list[Requirement]) -> list[importlib.metadata.Distribution]:
    """The installed distributions those requirements need, transitively (no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        dist = importlib.metadata.distribution(req.name)
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name not in found:
            found[name] = dist
            todo += [Requirement(r) for r in dist.requires or []]
    return list(found.values())


def link_distributions(dists, site: Path) -> None:
    """Each distribution's top-level files and folders (and its .dist-info), linked into
    `site`: the core dependencies of this environment, not copied (torch is gigabytes), and
    nothing else of it."""
    for dist in dists:
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists() and top != "__pycache__":
                (site / top).symlink_to(source)


def installed(wheel: Path, venv: Path, core_only: bool) -> Path:
    """A fresh virtual environment holding the wheel (installed without its dependencies) and
    either every package of this environment (read-only, through a .pth file) or only the
    wheel's core dependencies (linked one by one). Its python."""
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
    if core_only:
        # Not `--system-site-packages` nor this environment's .pth: both would bring Optuna,
        # matplotlib and scikit-learn along. Installing torch afresh needs the network and
        # minutes; linking the installed core distributions is offline and instant, and as
        # strict: what the wheel does not declare as core is not there to import.
        core, _ = wheel_requirements(wheel)
        link_distributions(core_distributions(core), site)
    else:
        # The package itself only from the wheel: the new environment's own site-packages
        # come first.
        (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def runner(python: Path, cwd: Path):
    # without PYTHONPATH: a source checkout on it would stand in for the installed wheel
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        return subprocess.run(
            [python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
        )

    return run


def test_installed_wheel_runs_from_an_empty_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    empty = tmp_path / "empty"
    empty.mkdir()
    run = runner(installed(wheel, venv, core_only=False), empty)
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


def test_a_core_only_install_reads_a_picture_without_the_extras(wheel, tmp_path, mnist_dir):
    from digitformer.data.mnist import load_split

    core, extras = wheel_requirements(wheel)
    assert {"sweep", "viz", "serve", "dev"} <= extras
    assert not {r.name.lower() for r in core} & {"optuna", "matplotlib", "scikit-learn"}
    digits = load_split(mnist_dir, "test")
    pictures = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(255 - digits.images[i]).save(path)  # dark ink on white paper
        pictures.append(str(path))
    venv = tmp_path / "venv"
    empty = tmp_path / "empty"
    empty.mkdir()
    run = runner(installed(wheel, venv, core_only=True), empty)

    read = run("-c", READ, ",".join(EXTRAS_ONLY), *pictures)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == [str(d) for d in np.asarray(digits.labels[:3])]
    check = run("-c", CHECK)  # profiles and sweep spaces resolve without Optuna
    assert check.returncode == 0, check.stderr
    predicted = run("-m", "digitformer", "predict", pictures[0])
    assert predicted.returncode == 0, predicted.stderr
    for command, line in (
        (["sweep", "best", "s"], "sweeps need the sweep extra: pip install 'digitformer[sweep]'"),
        (["viz", "x"], "pictures need the viz extra: pip install 'digitformer[viz]'"),
        (["serve"], "serving needs the serve extra: pip install 'digitformer[serve]'"),
    ):
        result = run("-m", "digitformer", *command)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"digitformer: error: {line}"), result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert not list(empty.iterdir())
