"""ISGD_JIT: the switch between the compiled loops and the NumPy passes (engine/jit.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.jit import JIT_ENV, jit_wanted


@pytest.mark.parametrize(("value", "wanted"), [(None, True), ("", True), ("1", True), ("0", False)])
def test_isgd_jit_values(value: str | None, wanted: bool) -> None:
    assert jit_wanted(value) is wanted


def test_another_isgd_jit_value_warns_by_name_and_keeps_the_compiled_loops() -> None:
    with pytest.warns(UserWarning, match=r"ISGD_JIT='yes' is neither 0 .* nor 1"):
        assert jit_wanted("yes") is True


def test_isgd_jit_0_starts_the_cli_without_numba() -> None:
    """The whole command-line stack imports with every kernel module, none of them Numba."""
    code = (
        "import sys, solvers.cli, engine.layers, solvers.update_kernels\n"
        "from engine import jit\n"
        "print(jit.AVAILABLE, 'numba' in sys.modules)\n"
    )
    env = dict(os.environ, **{JIT_ENV: "0"})
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["False", "False"]
