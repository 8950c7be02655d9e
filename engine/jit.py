"""The engine's one Numba entry point: the import, AVAILABLE, and the `kernel` decorator.

Numba is a dependency, but a platform may lack a wheel: then AVAILABLE is False, `kernel`
returns the plain Python function, and each caller keeps its NumPy passes (which remain the
reference the tests compare against). Every compiled loop of the project (pooling, the
row-folded convolution's data movement, the solvers' update, the ziggurat sampler) is made by
`kernel`, so they share one set of options: no GIL (the engine's threads run them side by
side) and Numba's on-disk cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba has no wheel
    numba = None

AVAILABLE = numba is not None

F = TypeVar("F", bound=Callable[..., Any])


def kernel(fn: F) -> F:
    """`fn` compiled by Numba (nogil, cached on disk) where Numba is installed, else `fn`."""
    return numba.njit(nogil=True, cache=True)(fn) if AVAILABLE else fn


__all__ = ["AVAILABLE", "kernel", "numba"]
