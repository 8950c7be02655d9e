"""Fixtures shared by the engine's stand-in (CuPy) tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cupy_standin import fakecupy


@pytest.fixture
def on_device_1() -> Iterator[None]:
    """Device 1 current in this thread (a rank r > 0 under -gpu all); worker threads see 0."""
    fakecupy.cuda.Device(1).use()
    try:
        yield
    finally:
        fakecupy.cuda.Device(0).use()
