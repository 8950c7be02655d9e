"""The CuPy stand-in is strict (what CuPy refuses, it refuses) and engine.backend works on it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine import backend
from tests.cupy_standin import fakecupy as cp

STANDIN = cp._standin


# ------------------------------------------------------------------------------ strictness
@pytest.mark.parametrize(
    "convert",
    [
        np.asarray,
        np.array,
        np.float32,
        lambda a: np.sum(a),
        lambda a: np.concatenate([a, a]),
        lambda a: np.add(np.zeros(3), a),
        lambda a: np.zeros(3) + a,
        lambda a: np.testing.assert_allclose(a, 0),
    ],
)
def test_implicit_conversion_to_numpy_raises(convert) -> None:
    a = cp.asarray(np.arange(3.0))
    with pytest.raises(TypeError):
        convert(a)


def test_numpy_arrays_are_refused_where_cupy_refuses_them() -> None:
    a = cp.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.multiply(a, np.ones((2, 3)), out=a)
    with pytest.raises(TypeError, match="Output argument"):
        cp.multiply(a, 2, out=np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        a[...] = np.ones((2, 3))
    a[...] = np.float32(2)  # numpy scalars are scalars
    a[np.array([0, 1]), 0] = 5  # host index arrays are copied to the device, as CuPy does
    assert float(a.sum()) == 2 * 4 + 5 * 2


@pytest.mark.parametrize(
    "call",
    [
        lambda a: cp.sum(a, initial=0),
        lambda a: cp.add(a, a, where=True),
        lambda a: cp.exp(a, order="C"),
        lambda a: cp.lib.stride_tricks.as_strided(a, (2,), (8,), writeable=False),
        lambda a: cp.einsum("i->", a, out=cp.zeros(())),
        lambda a: cp.matmul(a[:, None], a[None, :], axes=None, bogus=1),
        lambda a: cp.zeros_like(a, fill=1),
    ],
)
def test_unknown_keyword_raises(call) -> None:
    with pytest.raises((TypeError, RuntimeError)):
        call(cp.arange(4, dtype=np.float64))


def test_unknown_names_raise() -> None:
    with pytest.raises(AttributeError, match="not wrapped"):
        cp.polyfit  # noqa: B018
    with pytest.raises(AttributeError):
        cp.add.at  # noqa: B018 - cupyx.scatter_add is the portable spelling
    with pytest.raises(AttributeError):
        cp.random.seed  # noqa: B018 - the engine must not use a global generator


def test_cupy_generators_have_no_numpy_state() -> None:
    """CuPy's bit generator `state` is a method (a device pointer), not a settable dict."""
    gen = cp.random.default_rng(3)
    assert callable(gen.bit_generator.state)
    with pytest.raises(TypeError):
        gen.bit_generator.state["state"]  # noqa: B018
    with pytest.raises(TypeError, match="safe"):
        cp.random.RandomState(5)  # CuPy casts seeds to uint64 "safe": a Python int is refused
    x = cp.random.RandomState(np.uint64(5)).random_sample((3,), dtype=np.float32)
    assert isinstance(x, cp.ndarray) and x.dtype == np.float32


def test_one_element_is_a_view_and_reductions_are_arrays() -> None:
    a = cp.asarray(np.arange(4.0))
    first = a[0]
    assert isinstance(first, cp.ndarray) and first.shape == ()
    a[0] = 7.0
    assert float(first) == 7.0  # a view, unlike NumPy's scalar copy
    total = a.sum()
    assert isinstance(total, cp.ndarray) and float(total) == 13.0


def test_device_arrays_are_checked_against_the_threads_current_device() -> None:
    """CUDA's current device is per host thread: work handed to a thread runs on device 0."""
    with cp.cuda.Device(1):
        a = cp.ones(3)
        assert float(a.sum()) == 3.0
        errors: list[Exception] = []

        def worker() -> None:
            try:
                a * 2
            except ValueError as exc:
                errors.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert errors and "current device" in str(errors[0])
    with pytest.raises(ValueError, match="array device = 1 while current = 0"):
        a + 1
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
        cp.cuda.Device(STANDIN.DEVICE_COUNT).use()


# ------------------------------------------------------------------------------ engine.backend
def test_backend_helpers_on_both_modules(xp) -> None:
    STANDIN.reset()
    a = xp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert np.array_equal(backend.to_numpy(a), np.arange(12).reshape(3, 4))
    backend.copy_to_device(a, np.ones((3, 4), np.float32))
    assert float(a.sum()) == 12
    if xp is cp:
        assert STANDIN.counters.h2d == 2  # the asarray above and exactly one copy here
    # a read-only strided view: rows of 2 overlapping windows
    flat = xp.asarray(np.arange(6, dtype=np.float64))
    view = backend.as_strided(xp, flat, (5, 2), (8, 8))
    assert np.array_equal(backend.to_numpy(view)[:, 1], np.arange(1, 6))
    # scatter-add counts repeated indices
    acc = xp.zeros(3, np.float32)
    backend.scatter_add(xp, acc, xp.asarray(np.array([0, 2, 0])), xp.ones(3, np.float32))
    assert backend.to_numpy(acc).tolist() == [2.0, 0.0, 1.0]
    # a pinned staging buffer on a device module
    buf = backend.pinned_empty(xp, (4, 2), np.float32)
    assert isinstance(buf, np.ndarray) and buf.shape == (4, 2)
    assert STANDIN.is_pinned(buf) == (xp is cp)
    assert backend.module_of(a) is xp
    backend.synchronize(xp)


def test_rng_state_round_trip_is_exact_and_json(xp) -> None:
    import json

    rng = backend.make_rng(xp, 42)
    rng.random((5,), dtype=np.float32)
    state = json.loads(json.dumps(backend.rng_state(rng)))
    expected = backend.to_numpy(rng.random((7,), dtype=np.float32))
    other = backend.make_rng(xp, 1)
    backend.set_rng_state(other, state)
    assert np.array_equal(backend.to_numpy(other.random((7,), dtype=np.float32)), expected)


def test_device_and_host_states_are_not_mixed() -> None:
    host, device = backend.make_rng(np, 1), backend.make_rng(cp, 1)
    with pytest.raises(ValueError, match="device"):
        backend.set_rng_state(host, backend.rng_state(device))
    with pytest.raises(ValueError, match="host"):
        backend.set_rng_state(device, backend.rng_state(host))


def test_use_device_checks_the_id() -> None:
    backend.use_device(np, 5)  # no devices on the host: nothing to do
    try:
        backend.use_device(cp, 1)
        assert backend.current_device(cp) == 1
        with pytest.raises(backend.BackendError, match="does not exist"):
            backend.use_device(cp, 7)
    finally:
        backend.use_device(cp, 0)


def test_missing_cupy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(backend.BackendError, match="CuPy is not installed"):
        backend.get_array_module("cupy")
