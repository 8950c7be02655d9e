"""Backend parametrization: tests using the `xp` fixture run under NumPy and the CuPy stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests import backends

# Test modules that run under NumPy only, for now. TODO(merge): these are the own tests of
# Convolution, Deconvolution, Pooling and InnerProduct, which are being rewritten on another
# branch; parametrize them (drop them from this set) when that lands. Meanwhile those layers run on
# the stand-in in tests/engine/test_caffe_reference.py (Caffe's loops), test_standin_conv.py
# (gradients, CPU == device path) and test_standin_pending_device1.py (fails until Pooling stops
# using host threads off NumPy).
NUMPY_ONLY = {
    "tests/engine/layers/test_convolution.py",
    "tests/engine/layers/test_deconvolution.py",
    "tests/engine/layers/test_pooling.py",
    "tests/engine/layers/test_inner_product.py",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xp" not in metafunc.fixturenames:
        return
    path = metafunc.definition.nodeid.split("::")[0]
    names = ["numpy"] if path in NUMPY_ONLY else list(backends.BACKENDS)
    metafunc.parametrize("xp", names, indirect=True)


@pytest.fixture
def xp(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """The array module under test; also made current for the tests' helper functions."""
    module = backends.BACKENDS[getattr(request, "param", "numpy")]
    previous = backends.use(module)
    backends.fakecupy._standin.reset()
    try:
        yield module
    finally:
        backends.use(previous)
