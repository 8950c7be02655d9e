"""Backend parametrization: tests using the `xp` fixture run under NumPy and the CuPy stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests import backends

# Test modules that run under NumPy only: the own tests of Convolution, Deconvolution, Pooling and
# InnerProduct. They pass on the stand-in as well, but every path they would add there is held
# already: Caffe's loops on both backends (tests/engine/test_caffe_reference.py and
# test_caffe_reference_conv.py), finite-difference gradients and CPU == device at the CPU path's thread and chunk sizes
# (test_standin_conv.py), and no host threads on device 1 (test_standin_second_device.py).
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
