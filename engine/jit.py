"""The engine's one Numba entry point: the import, AVAILABLE, and the `kernel` decorator.

Numba is a dependency, but a platform may lack a wheel: then AVAILABLE is False, `kernel`
returns the plain Python function, and each caller keeps its NumPy passes (which remain the
reference the tests compare against). Every compiled loop of the project (pooling, the
row-folded convolution's data movement, the solvers' update, the ziggurat sampler) is made by
`kernel`, so they share one set of options: no GIL (the engine's threads run them side by
side) and Numba's on-disk cache.

`ISGD_JIT=0` in the environment chooses the NumPy passes without importing Numba at all, as a
platform without it would: a process starts about 0.8 s sooner (Numba's import and its
compiler's set-up on the first cached kernel), which is what a short run or a test's trainer
spends most of its time on. The numbers agree with the compiled paths to rounding (the folded
convolution sums its rows in another order); big Gaussian fills (AlexNet's) are slow there.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

JIT_ENV = "ISGD_JIT"


def jit_wanted(value: str | None) -> bool:
    """Whether ISGD_JIT's value asks for compiled loops: unset, empty or 1 yes, 0 no; any other
    value warns (naming the variable) and keeps the default, compiled loops."""
    text = (value or "").strip()
    if text == "0":
        return False
    if text not in ("", "1"):
        warnings.warn(
            f"{JIT_ENV}={value!r} is neither 0 (NumPy passes only) nor 1; compiled loops stay on",
            stacklevel=2,
        )
    return True


numba: Any = None
if jit_wanted(os.environ.get(JIT_ENV)):
    try:
        import numba
    except ImportError:  # pragma: no cover - exercised only where numba has no wheel
        numba = None

AVAILABLE = numba is not None

F = TypeVar("F", bound=Callable[..., Any])


def kernel(fn: F) -> F:
    """`fn` compiled by Numba (nogil, cached on disk) where Numba is installed, else `fn`."""
    return numba.njit(nogil=True, cache=True)(fn) if AVAILABLE else fn


__all__ = ["AVAILABLE", "JIT_ENV", "jit_wanted", "kernel", "numba"]
