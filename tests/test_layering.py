"""The package's import graph points one way: each layer imports only what is below it.

Read from the source with `ast` (imports inside functions included), so a new upward import
fails here before anyone has to notice it in review.
"""

import ast
from pathlib import Path

import pytest

import digitformer
from digitformer.cli import _tasks
from digitformer.tasks import TASKS

PACKAGE = Path(digitformer.__file__).parent

# Lowest first. A module may import modules of its own unit and of lower layers only.
LAYERS = [
    {"errors"},
    {"defaults", "fileio", "runtime", "tensors", "hub"},  # the foundation: torch and the error type
    {"data", "models", "metrics", "display", "logger", "prepare"},
    {"augment", "settings", "checkpoint"},
    {"tasks"},
    {"train", "ensemble", "predict", "export"},
    {"evaluate", "viz", "sweep", "reader"},
    {"serve"},
    {"cli"},
    {"__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# Inference (and what is built on it) never imports the training loop.
INFERENCE = {"ensemble", "predict", "evaluate", "export", "viz", "serve", "reader"}


def unit_of(module: str) -> str:
    """digitformer.models.layers -> models; digitformer.cli -> cli."""
    return module.split(".")[1]


def is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()


def our_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("digitformer.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("digitformer"):
            if node.module == "digitformer":  # from digitformer import sweep (not __version__)
                found |= {f"digitformer.{a.name}" for a in node.names if is_module(a.name)}
            else:
                found.add(node.module)
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name != "digitformer":
            yield name, path


@pytest.mark.parametrize("name, path", list(modules()), ids=[name for name, _ in modules()])
def test_imports_point_down(name, path):
    unit = unit_of(name)
    assert unit in RANK, f"{name}: place its unit {unit!r} in LAYERS"
    for imported in our_imports(path):
        target = unit_of(imported)
        if target == unit:
            continue
        assert target in RANK, f"{name} imports {imported}, which no layer holds"
        assert RANK[target] < RANK[unit], f"{name} imports {imported}: an upward import"
        if unit in INFERENCE:
            assert target != "train", f"{name} (inference) imports the training loop"


def test_models_import_only_their_layers_and_the_bottom():
    for name, path in modules():
        if unit_of(name) == "models":
            for imported in our_imports(path):
                allowed = {"models", *LAYERS[0], *LAYERS[1]}
                assert unit_of(imported) in allowed, f"{name} imports {imported}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The walker finds imports at any depth, so the test above cannot pass vacuously."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from digitformer.train import train\n")
    assert our_imports(source) == {"digitformer.train"}
    assert our_imports(PACKAGE / "evaluate.py") >= {"digitformer.tasks", "digitformer.ensemble"}


def test_the_cli_offers_the_registered_tasks():
    assert _tasks() == list(TASKS)
