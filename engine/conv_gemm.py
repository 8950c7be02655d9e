"""GEMM helper for the convolution and inner-product layers: C = A @ B or C += A @ B.

Plain matmul with out= into preallocated buffers. SciPy's BLAS (which has beta = 1) is not
used on purpose: it loads a second OpenBLAS whose thread pool fights NumPy's for the cores,
which made some GEMMs 10-40x slower in measurements.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def gemm(
    xp: ModuleType, a: Any, b: Any, out: Any, accumulate: bool = False, scratch: Any = None
) -> Any:
    """out = a @ b, or out += a @ b when `accumulate` (then `scratch`, shaped like out, holds
    the product; one is allocated if not given)."""
    if not accumulate:
        xp.matmul(a, b, out=out)
        return out
    tmp = scratch if scratch is not None else xp.empty(out.shape, out.dtype)
    xp.matmul(a, b, out=tmp)
    out += tmp
    return out
