"""One module per concept (docs/architecture.md): every module of the package opens with a
docstring whose first line says what it owns, and none grows past 400 lines, the size at which a
module holds two concepts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tusingest

PACKAGE = Path(tusingest.__file__).parent
MAX_LINES = 400

MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_a_module_opens_with_a_docstring_of_what_it_owns(path: Path) -> None:
    if path.name == "__init__.py" and not path.read_text().strip():
        return  # a package marker
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring, f"{_name(path)} opens with no docstring"
    assert docstring.splitlines()[0].strip(), f"{_name(path)}: its docstring's first line is empty"


def test_no_module_holds_two_concepts() -> None:
    too_long = {
        _name(path): lines
        for path in MODULES
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}


def test_the_layout_check_sees_the_whole_package() -> None:
    names = {_name(path) for path in MODULES}
    assert {"app.py", "ports/__init__.py", "pipeline/runner.py", "store/sqlite.py"} <= names
    assert len(names) > 100
