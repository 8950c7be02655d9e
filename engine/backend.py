"""Array-module selection: NumPy by default, CuPy on request; chosen once per Net."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def get_array_module(name: str | ModuleType | None = None) -> ModuleType:
    """Return the array module for `name` ("numpy", "cupy", a module, or None for NumPy)."""
    if name is None:
        return np
    if isinstance(name, ModuleType):
        return name
    if name in ("numpy", "np", "cpu"):
        return np
    if name in ("cupy", "cp", "gpu"):
        try:
            import cupy  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError(
                "the CuPy backend was requested but cupy is not installed "
                "(pip install cupy-cuda12x)"
            ) from exc
        return cupy
    raise ValueError(f"unknown array module {name!r}: use 'numpy' or 'cupy'")


def to_numpy(array: Any) -> np.ndarray:
    """Copy any backend array to a host NumPy array (no copy for NumPy input)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if get is not None:
        return get()
    return np.asarray(array)


def make_rng(xp: ModuleType, seed: int | None) -> Any:
    """A seeded random Generator living on the same device as `xp` arrays."""
    if xp is np:
        return np.random.default_rng(seed)
    return xp.random.default_rng(seed)  # pragma: no cover - GPU only


def as_strided(xp: ModuleType, array: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """A strided view of `array` (read it, never write through it): NumPy's and CuPy's
    as_strided differ in keywords (CuPy has no `writeable`), so layers call this one."""
    if xp is np:
        return np.lib.stride_tricks.as_strided(array, shape, strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def rng_state(rng: Any) -> Any:
    """A JSON-serializable state of a generator made by `make_rng` (restored by set_rng_state)."""
    return rng.bit_generator.state


def set_rng_state(rng: Any, state: Any) -> None:
    """Put a generator made by `make_rng` back into a state taken by `rng_state`."""
    rng.bit_generator.state = state
