"""The packages stack engine -> data_tools -> solvers -> scripts: no module imports a package
above its own (the Datum codec and the LMDB reader live in the engine, as in Caffe's util)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["engine", "data_tools", "solvers", "scripts"]


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ORDER)
def test_no_package_imports_one_above_it(package: str) -> None:
    above = set(ORDER[ORDER.index(package) + 1 :])
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & above)
        for path in (ROOT / package).rglob("*.py")
        if imported_packages(path) & above
    }
    assert not offenders, f"{package} imports from above it: {offenders}"
