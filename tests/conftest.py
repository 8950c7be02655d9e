"""Backend parametrization: tests using the `xp` fixture run under NumPy and the CuPy stand-in.
Processes the tests start run without Numba (see `processes_start_without_numba`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType

import pytest

from engine.jit import JIT_ENV
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


@pytest.fixture(autouse=True, scope="session")
def processes_start_without_numba() -> Iterator[None]:
    """Trainers, MPI ranks and runners that tests start get ISGD_JIT=0 (engine/jit.py): they
    check process behaviour (signals, locks, ranks, resumes), and Numba's start-up would be most
    of each one's time (0.8 s of 1.2 s). The compiled loops are checked in this process against
    the NumPy passes; a test that needs them in a child sets ISGD_JIT=1 itself."""
    previous = os.environ.get(JIT_ENV)
    os.environ[JIT_ENV] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(JIT_ENV, None)
        else:
            os.environ[JIT_ENV] = previous
