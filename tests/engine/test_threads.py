"""Engine threads: OpenBLAS thread limit is restored, split/chunk ranges cover the work."""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine.threads import (
    EngineThreads,
    _openblas_setter,
    chunks,
    parallel_matmul,
    single_threaded_blas,
    split,
)


def test_single_threaded_blas_restores_the_thread_count():
    fns = _openblas_setter()
    if fns is None:
        pytest.skip("NumPy's bundled OpenBLAS not found: nothing to limit")
    _, getter = fns
    before = getter()
    with single_threaded_blas():
        assert getter() == 1
    assert getter() == before


def test_split_and_chunks_cover_the_range_in_order():
    assert split(0, 7, 2) == [(0, 3), (3, 7)]
    assert split(2, 3, 2) == [(2, 2), (2, 3)]
    assert list(chunks(1, 8, 3)) == [(1, 4), (4, 7), (7, 8)]


@pytest.mark.parametrize("shape", [(300, 200, 180), (5, 400, 3000), (3000, 400, 5)])
def test_parallel_matmul_equals_matmul(shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    out = np.empty((m, n))
    parallel_matmul(EngineThreads(np, "t"), a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-10)


def test_worker_errors_reach_the_caller():
    def fail(k: int) -> None:
        if k == 1:
            raise ValueError("part 1 failed")

    with pytest.raises(ValueError, match="part 1"):
        EngineThreads(np, "t").run(fail, parts=2)


def test_engine_threads_follow_omp_num_threads(monkeypatch):
    """MPI ranks run with OMP_NUM_THREADS=1: the engine's own threads must not oversubscribe."""
    from engine.threads import engine_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert engine_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "bogus")
    assert engine_threads() == min(2, os.cpu_count() or 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert engine_threads() == min(2, os.cpu_count() or 1)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_a_process_pinned_to_one_core_counts_one_core(monkeypatch):
    """The runner pins each of two side-by-side trainers to one core (scripts/runs.py): the
    engine counts the cores it may run on, not the machine's, so no second engine thread and no
    data-loading thread shares that core (measured 6-9 % slower LeNet training when they did)."""
    from engine.threads import engine_threads, loader_has_a_core, usable_cores

    allowed = os.sched_getaffinity(0)
    assert usable_cores() == len(allowed)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        assert usable_cores() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert engine_threads() == 1
        assert not loader_has_a_core(np)
    finally:
        os.sched_setaffinity(0, allowed)
    assert usable_cores() == len(allowed)
