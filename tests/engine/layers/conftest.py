"""Every layer test here runs under each backend (NumPy and the CuPy stand-in, see
tests/conftest.py); the helpers that build layers and blobs read it from tests.backends."""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.fixture(autouse=True)
def _backend(xp: ModuleType) -> ModuleType:
    return xp
