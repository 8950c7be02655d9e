"""The engine's worker threads and OpenBLAS thread control (convolution, pooling, inner product).

Plain matmul with out= into preallocated buffers. SciPy's BLAS (which has beta = 1) is not
used on purpose: it loads a second OpenBLAS whose thread pool fights NumPy's for the cores,
which made some GEMMs 10-40x slower in measurements.

Work is split by hand over THREADS threads (NumPy releases the GIL in copies and matmul) with
NumPy's OpenBLAS held to one thread meanwhile: OpenBLAS's own workers busy-wait after each
call and measurably slowed the threaded copies and pooling passes that followed a GEMM.
The hand-off to the worker is a pair of locks (about 13 us, a futures pool took about 30).
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one (the runner pins
    each of two side-by-side trainers to one core; taskset does the same), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def engine_threads() -> int:
    """Threads the engine's layers split work over: OMP_NUM_THREADS when set (MPI ranks run
    with 1), else 2, at most the cores this process may use (more only oversubscribes)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    try:
        wanted = int(value) if value.strip() else 2
    except ValueError:
        wanted = 2
    return max(1, min(wanted, usable_cores()))


THREADS = engine_threads()


def loader_has_a_core(xp: ModuleType) -> bool:
    """Whether a background data-loading thread gets a core of its own: always when the layers
    compute on a device; on the host only when the process may use more cores than the
    engine's threads. Where every core computes, the loader takes CPU from the layers instead (LeNet
    b64 on 2 cores: an iteration ~3 % slower than reading the batch in forward; a LeNet
    trainer pinned to one core beside another: 5-9 % slower). Cores are counted from the
    process's affinity: a trainer pinned to one core of two has no core to spare."""
    return xp is not np or usable_cores() > THREADS


# Below these sizes the thread hand-off costs more than it saves (measured on LeNet batch 64).
MIN_THREADED_MACS = 1 << 22
MIN_THREADED_BYTES = 2 << 20


@cache
def _openblas_setter() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """NumPy's bundled OpenBLAS thread-count setter/getter, or None if not found."""
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "libscipy_openblas*")):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                s = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                g = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if s is not None and g is not None:
                    g.restype = ctypes.c_int
                    return s, g
    return None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold NumPy's OpenBLAS to one thread inside the block (restored after)."""
    fns = _openblas_setter()
    if fns is None:
        yield
        return
    setter, getter = fns
    before = getter()
    setter(1)
    try:
        yield
    finally:
        setter(before)


class _Worker:
    """One persistent daemon thread fed through two locks: a hand-off costs a few microseconds
    where a ThreadPoolExecutor future cost about 30 (measured), which tiny layers felt."""

    def __init__(self, name: str) -> None:
        self._go = threading.Lock()
        self._done = threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._job: tuple[Callable[[int], None], list[int]] | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            assert self._job is not None
            fn, ks = self._job
            try:
                for k in ks:
                    fn(k)
            except BaseException as e:  # handed to the caller in wait()
                self._error = e
            self._job = None
            self._done.release()

    def start(self, fn: Callable[[int], None], ks: list[int]) -> None:
        self._job = (fn, ks)
        self._go.release()

    def wait(self) -> None:
        """Block until the job ends; re-raise its error."""
        self._done.acquire()
        error, self._error = self._error, None
        if error is not None:
            raise error


class EngineThreads:
    """Runs a function over parts of the work, one in the caller and the rest in worker threads.

    On NumPy the parts run concurrently on THREADS threads (OMP_NUM_THREADS, default 2) with
    OpenBLAS at one thread; on other array modules (CuPy, whose current device is per thread)
    they run one after another in the caller, with no BLAS thread control.
    """

    def __init__(self, xp: ModuleType, name: str) -> None:
        self.xp = xp
        self.parallel = xp is np
        self.count = THREADS if self.parallel else 1  # parts worth splitting work into
        self.name = name
        self._workers: list[_Worker] = []

    def run(
        self, fn: Callable[[int], None], parts: int | None = None, threaded: bool = True
    ) -> None:
        """Call fn(0), ..., fn(parts - 1) (default: one part per thread), concurrently where
        possible; re-raise errors.

        threaded=False (work too small to pay for the hand-off) calls them in turn in the
        caller, still with OpenBLAS at one thread so that its workers never wake up to spin.
        Part 0 runs in the caller; parts 1.. go round-robin to THREADS - 1 threads.
        """
        parts = self.count if parts is None else parts
        if not threaded or not self.parallel or parts == 1 or THREADS == 1:
            with single_threaded_blas() if self.parallel else _null():
                for k in range(parts):
                    fn(k)
            return
        if not self._workers:
            self._workers = [_Worker(f"{self.name}-{i}") for i in range(THREADS - 1)]
        nw = len(self._workers)
        started, errors = [], []
        with single_threaded_blas():
            try:
                for i, worker in enumerate(self._workers):
                    ks = list(range(1 + i, parts, nw))
                    if ks:
                        worker.start(fn, ks)
                        started.append(worker)
                fn(0)
            finally:  # always wait: the workers write into the caller's buffers
                for worker in started:
                    try:
                        worker.wait()
                    except BaseException as e:
                        errors.append(e)
        if errors:
            raise errors[0]


@contextmanager
def _null() -> Iterator[None]:
    yield


def split(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into `parts` near-equal ranges (empty ones possible)."""
    n = hi - lo
    return [(lo + n * k // parts, lo + n * (k + 1) // parts) for k in range(parts)]


def chunks(lo: int, hi: int, step: int) -> Sequence[tuple[int, int]]:
    """[lo, hi) in consecutive ranges of at most `step`."""
    return [(a, min(a + step, hi)) for a in range(lo, hi, max(step, 1))]


def parallel_matmul(workers: EngineThreads, a: Any, b: Any, out: Any) -> None:
    """out = a @ b with the rows of a (or, when a has few rows, the columns of b) split over
    the engine's threads; small products, and any on a device, are one matmul."""
    mm = workers.xp.matmul
    if workers.count == 1 or a.shape[0] * a.shape[1] * b.shape[1] < MIN_THREADED_MACS:
        workers.run(lambda k: mm(a, b, out=out), parts=1)
    elif a.shape[0] >= b.shape[1]:
        parts = split(0, a.shape[0], THREADS)
        workers.run(lambda k: mm(a[slice(*parts[k])], b, out=out[slice(*parts[k])]))
    else:
        parts = split(0, b.shape[1], THREADS)
        workers.run(lambda k: mm(a, b[:, slice(*parts[k])], out=out[:, slice(*parts[k])]))
