"""The README's Python examples run exactly as written (a newcomer copies them first)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_a_readme_example_runs_as_written(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing it needs may come from the checkout's folder
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
