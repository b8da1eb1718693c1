"""The package's folders are its layers, and imports point down them.

Read from the source with `ast` (imports inside functions included), so a new upward import,
a module outside the folders, or a module or function grown too long fails here before anyone
has to notice it in review.
"""

import ast
from pathlib import Path

import pytest

import digitformer

PACKAGE = Path(digitformer.__file__).parent

# Lowest first. A module may import its own folder and the folders of lower layers only; the
# folders of one layer do not import each other.
LAYERS = [
    {"utils"},  # errors, paths, devices and threads, file writing, the hub: no torch models
    {"data", "models", "display"},  # MNIST and its numbers; the networks; Braille pictures
    {"inference"},  # checkpoints, preparing pictures, the readers' table, predict, export
    {"training"},  # settings, tasks, optimizers, the loop, evaluation, sweeps
    {"apps"},  # the command line, the server and its page, the visualizations
    {"__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 70


def unit_of(module: str) -> str:
    """digitformer.models.layers -> models; digitformer.apps.cli.train -> apps."""
    return module.split(".")[1]


def our_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("digitformer.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("digitformer"):
            if node.module == "digitformer":  # from digitformer import training (a folder)
                found |= {f"digitformer.{a.name}" for a in node.names if a.name in RANK}
            else:
                found.add(node.module)
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name != "digitformer":  # the package's own lazy `load`, above every layer
            yield name, path


MODULES = list(modules())


@pytest.mark.parametrize("name, path", MODULES, ids=[name for name, _ in MODULES])
def test_imports_point_down(name, path):
    unit = unit_of(name)
    assert unit in RANK, f"{name}: a module lives in one of the folders {sorted(RANK)}"
    for imported in our_imports(path):
        target = unit_of(imported)
        if target == unit:
            continue
        assert target in RANK, f"{name} imports {imported}, which no layer holds"
        assert RANK[target] < RANK[unit], f"{name} imports {imported}: not a lower layer"


def test_models_import_only_their_folder_and_utils():
    for name, path in MODULES:
        if unit_of(name) == "models":
            for imported in our_imports(path):
                assert unit_of(imported) in {"models", "utils"}, f"{name} imports {imported}"


def test_modules_and_functions_stay_short():
    too_long = []
    for name, path in MODULES:
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, "split these: " + "; ".join(too_long)


def test_the_checks_see_what_they_forbid(tmp_path):
    """The walker finds imports at any depth, and the rules refuse an upward import and a
    module outside the folders, so the tests above cannot pass vacuously."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from digitformer.training.train import train\n")
    assert our_imports(source) == {"digitformer.training.train"}
    with pytest.raises(AssertionError, match="not a lower layer"):
        test_imports_point_down("digitformer.inference.m", source)
    with pytest.raises(AssertionError, match="lives in one of the folders"):
        test_imports_point_down("digitformer.flat", source)
    evaluate = PACKAGE / "training" / "evaluate.py"
    assert "digitformer.inference.checkpoint" in our_imports(evaluate)
