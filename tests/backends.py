"""The array modules the engine is tested under: NumPy, and the strict CuPy stand-in.

Tests that take the `xp` fixture (tests/conftest.py) run once per backend; helpers that build
layers and blobs read the backend of the running test from `current()`. Assertions compare host
copies (`host`), since the stand-in, like CuPy, refuses implicit conversion to NumPy.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

from engine.backend import to_numpy
from engine.blob import Blob as EngineBlob
from tests.cupy_standin import fakecupy

BACKENDS: dict[str, ModuleType] = {"numpy": np, "standin": fakecupy}
if os.environ.get("ISGD_TEST_REAL_CUPY") == "1":  # on a GPU machine: CuPy itself as a third
    import cupy

    BACKENDS["cupy"] = cupy
_current: list[ModuleType] = [np]


def current() -> ModuleType:
    """The array module of the running test (NumPy outside backend-parametrized tests)."""
    return _current[0]


def use(xp: ModuleType) -> ModuleType:
    """Make `xp` the current backend; returns the previous one."""
    previous, _current[0] = _current[0], xp
    return previous


def host(value: Any) -> Any:
    """A NumPy copy of a device array; anything else unchanged."""
    if isinstance(value, (list, tuple)):
        return type(value)(host(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic, int, float, bool)) or value is None:
        return value
    return to_numpy(value)


def dev(values: Any, dtype: Any = None) -> Any:
    """`values` as an array of the current backend."""
    return current().asarray(np.asarray(values) if dtype is None else np.asarray(values, dtype))


def assert_allclose(actual: Any, desired: Any, *args: Any, **kwargs: Any) -> None:
    np.testing.assert_allclose(host(actual), host(desired), *args, **kwargs)


def assert_array_equal(actual: Any, desired: Any, *args: Any, **kwargs: Any) -> None:
    np.testing.assert_array_equal(host(actual), host(desired), *args, **kwargs)


def assert_equal(actual: Any, desired: Any, *args: Any, **kwargs: Any) -> None:
    np.testing.assert_equal(host(actual), host(desired), *args, **kwargs)


def Blob(shape: Any = (), xp: ModuleType | None = None, dtype: Any = np.float32) -> EngineBlob:
    """An engine Blob on the current backend unless `xp` is given (the layer tests' Blob)."""
    return EngineBlob(shape, current() if xp is None else xp, dtype)
