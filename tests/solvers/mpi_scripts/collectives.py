"""Checks every MPIComm collective on n ranks; prints "OK rank r" when all hold on this rank."""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from engine.backend import use_device
from solvers.launch import abort_on_error, get_comm, local_rank
from solvers.mpi_comm import MPIComm
from tests.cupy_standin import fakecupy


def assert_sum(actual: np.ndarray, parts: list[np.ndarray], what: str) -> None:
    """`actual` equals the sum of `parts` up to float rounding of n terms (bounded by sum |x|)."""
    stacked = np.stack(parts).astype(np.float64)
    bound = len(parts) * np.finfo(actual.dtype).eps * np.sum(np.abs(stacked), axis=0)
    err = np.abs(actual.astype(np.float64) - stacked.sum(axis=0))
    assert np.all(err <= bound), f"{what}: max error {err.max()} above rounding bound"


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def main() -> None:
    comm = get_comm()
    n, r = int(sys.argv[1]), None
    assert isinstance(comm, MPIComm), f"get_comm under mpiexec -n {n} gave {comm!r}"
    r = comm.rank
    assert comm.size == n and comm.is_master == (r == 0)
    assert local_rank(comm) == r, "one machine: the node-local rank is the rank"
    rng = np.random.default_rng(1234 + r)

    for dtype in (np.float32, np.float64):
        # bcast from every root overwrites every rank's buffer with the root's values, bit for bit.
        for root in range(n):
            mine = rng.standard_normal(1001).astype(dtype)
            ref = comm.bcast_object(mine.copy() if r == root else None, root=root)
            comm.bcast(mine, root=root)
            assert mine.dtype == dtype and np.array_equal(mine, ref), f"bcast root {root} {dtype}"

        # reduce_sum: root gets the sum of all ranks' arrays; the others keep their own.
        mine = rng.standard_normal(777).astype(dtype)
        everyone = comm.allgather_object(mine.copy())
        kept = mine.copy()
        comm.reduce_sum(mine, root=0)
        if r == 0:
            assert_sum(mine, everyone, f"reduce_sum {dtype}")
        else:
            assert np.array_equal(mine, kept), "reduce_sum changed a non-root buffer"

        # allreduce_sum: same sum, bit-identical on every rank (else ranks' weights would drift).
        mine = rng.standard_normal(4099).astype(dtype)
        everyone = comm.allgather_object(mine.copy())
        comm.allreduce_sum(mine)
        assert_sum(mine, everyone, f"allreduce_sum {dtype}")
        hashes = comm.allgather_object(digest(mine))
        assert len(set(hashes)) == 1, f"allreduce results differ between ranks: {hashes}"

    # Small integers sum exactly: reduce/allreduce equal the plain sum bit for bit.
    ints = np.full(10, r + 1, np.float32)
    comm.allreduce_sum(ints)
    assert np.all(ints == n * (n + 1) / 2)

    # Decisions travel from the root and every rank receives the root's object.
    decision = comm.bcast_object({"above_limit": r == 0, "rank": r})
    assert decision == {"above_limit": True, "rank": 0}
    comm.barrier()

    # A non-contiguous view cannot be updated in place: clear error, not silent no-op.
    strided = np.zeros(20, np.float32)[::2]
    try:
        comm.bcast(strided)
    except ValueError as exc:
        assert "contiguous" in str(exc)
    else:
        raise AssertionError("bcast accepted a non-contiguous buffer")

    # Time accounting: every collective counted, the clock only moves forward.
    before, calls = comm.elapsed, comm.calls
    comm.allreduce_sum(np.ones(1 << 16, np.float32))
    assert comm.elapsed > before and comm.calls == calls + 1
    spent = comm.reset_elapsed()
    assert spent >= before and comm.elapsed == 0.0

    # Device arrays (the strict CuPy stand-in, each rank on its own device as with -gpu all) are
    # synchronized and staged through one reused pinned host buffer: one copy each way.
    use_device(fakecupy, r % fakecupy._standin.DEVICE_COUNT)
    counters = fakecupy._standin.counters
    dev = fakecupy.asarray(np.full(64, float(r), np.float32))
    syncs, h2d, d2h = counters.syncs, counters.h2d, counters.d2h
    comm.allreduce_sum(dev)
    assert np.all(dev.get() == sum(range(n))), "staged allreduce"
    assert counters.syncs == syncs + 1, "device stream not synchronized before the collective"
    assert (counters.h2d, counters.d2h) == (h2d + 1, d2h + 2), "one copy each way (+ the check)"
    staging = comm._host_buffer(dev)
    assert fakecupy._standin.is_pinned(staging), "the staging buffer is not pinned host memory"
    dev2 = fakecupy.asarray(np.full(64, float(r), np.float32))
    comm.bcast(dev2, root=n - 1)
    assert np.all(dev2.get() == n - 1), "staged bcast"
    comm.reduce_sum(dev2, root=0)
    assert np.all(dev2.get() == (n * (n - 1) if r == 0 else n - 1)), "staged reduce"
    assert comm._host_buffer(dev2).base is staging.base or comm._host_buffer(dev2) is staging
    assert len(comm._staging) == 1 and counters.pinned == 1, "staging buffer not reused"

    print(f"OK rank {r}", flush=True)


if __name__ == "__main__":
    with abort_on_error():
        main()
