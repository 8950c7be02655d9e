"""The experiment scripts' import graph: commands build on library modules, never on each other
(scripts/runner.py and scripts/runs.py hold what reproduce, figures and the sweeps share), and no
two modules import each other (bench.py and gpu_bench.py share scripts/bench_nets.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from scripts.profiles import ROOT

SCRIPTS = ROOT / "scripts"
COMMANDS = ("reproduce", "figures", "sweep", "sweep_lr", "table1")  # each a `make` target


def _imports(path: Path) -> set[str]:
    """The scripts.* modules a file imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "scripts":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("scripts."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("scripts.")}
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in SCRIPTS.glob("*.py")}


def test_no_command_module_is_imported_by_another_module() -> None:
    graph = _graph()
    for command in COMMANDS:
        importers = sorted(name for name, deps in graph.items() if command in deps)
        assert not importers, f"scripts/{command}.py is a command, imported by {importers}"


def test_the_scripts_import_graph_has_no_cycle() -> None:
    """bench.py imported gpu_bench.py and gpu_bench.py imported bench.py; no such circle is left."""
    graph = _graph()
    for start in graph:
        stack, seen = [start], set()
        while stack:
            for dep in graph.get(stack.pop(), ()):
                assert dep != start, f"scripts/{start}.py imports itself through scripts/{dep}.py"
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
