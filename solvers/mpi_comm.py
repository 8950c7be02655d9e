"""MPIComm: the Comm protocol over mpi4py's buffer collectives, counting time spent communicating.

One call per collective on one flat contiguous buffer (the net's flat_data / flat_diff), as Caffe's
multi-GPU code does. Device (CuPy) arrays are synchronized and staged through a reused pinned
(page-locked) host buffer unless the MPI library is declared CUDA-aware, since MPI wheels from PyPI
are not: one device-to-host and one host-to-device copy per collective, at full bus speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from engine.backend import copy_to_device, module_of, pinned_empty, synchronize_array

T = TypeVar("T")


def _is_host_array(array: Any) -> bool:
    return isinstance(array, np.ndarray)


def _check_buffer(array: Any, what: str) -> None:
    """Refuse buffers a collective could not update in place (non-contiguous, object dtype)."""
    flags = getattr(array, "flags", None)
    if flags is None or not bool(flags.c_contiguous):
        raise ValueError(
            f"MPIComm.{what}: the buffer must be a C-contiguous array (got {type(array).__name__}"
            f"{'' if flags is None else ' that is not contiguous'}); pass net.flat_data/flat_diff"
        )
    kind = np.dtype(array.dtype).kind
    if kind not in "fiub":
        raise ValueError(f"MPIComm.{what}: unsupported dtype {array.dtype} (numeric arrays only)")


class MPIComm:
    """Comm over an mpi4py communicator (COMM_WORLD by default).

    `elapsed` is the wall time, in seconds, spent inside collectives since creation (or the last
    `reset_elapsed`); it includes waiting for slower ranks, as t_comm of the paper's Eq. 21 does.
    """

    def __init__(self, comm: Any = None, cuda_aware: bool = False) -> None:
        from mpi4py import MPI  # optional dependency

        self._mpi = MPI
        self._comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = int(self._comm.Get_rank())
        self.size = int(self._comm.Get_size())
        self.cuda_aware = bool(cuda_aware)
        self.elapsed = 0.0
        self.calls = 0
        self._staging: dict[tuple[str, int], np.ndarray] = {}

    # ------------------------------------------------------------------ bookkeeping
    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def mpi_comm(self) -> Any:
        """The underlying mpi4py communicator (for start-up checks and Abort)."""
        return self._comm

    def reset_elapsed(self) -> float:
        """Return the communication time counted so far and start counting from zero."""
        spent, self.elapsed = self.elapsed, 0.0
        return spent

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count the time spent in the body as communication time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.elapsed += time.perf_counter() - start
            self.calls += 1

    def _host_buffer(self, array: Any) -> np.ndarray:
        """A reused pinned host array with the shape and dtype of the device array `array`."""
        key = (np.dtype(array.dtype).str, int(array.size))
        buf = self._staging.get(key)
        if buf is None:
            buf = pinned_empty(module_of(array), int(array.size), array.dtype)
            self._staging[key] = buf
        return buf.reshape(array.shape)

    def _stage_in(self, array: Any) -> np.ndarray:
        host = self._host_buffer(array)
        array.get(out=host)
        return host

    @staticmethod
    def _stage_out(host: np.ndarray, array: Any) -> None:
        copy_to_device(array, host)

    def _direct(self, array: Any) -> bool:
        """True when MPI may use `array` itself (host array, or any array with CUDA-aware MPI)."""
        return _is_host_array(array) or self.cuda_aware

    # ------------------------------------------------------------------ collectives
    def bcast(self, array: Any, root: int = 0) -> None:
        """Overwrite `array` on every rank with root's `array` (one Bcast)."""
        _check_buffer(array, "bcast")
        with self.timed():
            synchronize_array(array)
            if self._direct(array):
                self._comm.Bcast(array, root=root)
                return
            host = self._stage_in(array) if self.rank == root else self._host_buffer(array)
            self._comm.Bcast(host, root=root)
            if self.rank != root:
                self._stage_out(host, array)

    def reduce_sum(self, array: Any, root: int = 0) -> None:
        """Sum `array` over all ranks into root's `array` (one Reduce); other ranks keep theirs."""
        _check_buffer(array, "reduce_sum")
        with self.timed():
            synchronize_array(array)
            buf = array if self._direct(array) else self._stage_in(array)
            if self.rank == root:
                self._comm.Reduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM, root=root)
                if buf is not array:
                    self._stage_out(buf, array)
            else:
                self._comm.Reduce(buf, None, op=self._mpi.SUM, root=root)

    def allreduce_sum(self, array: Any) -> None:
        """Sum `array` over all ranks into every rank's `array` (one Allreduce)."""
        _check_buffer(array, "allreduce_sum")
        with self.timed():
            synchronize_array(array)
            buf = array if self._direct(array) else self._stage_in(array)
            self._comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
            if buf is not array:
                self._stage_out(buf, array)

    def bcast_object(self, obj: T, root: int = 0) -> T:
        """Root's `obj` on every rank (pickled; for small control decisions only)."""
        with self.timed():
            return self._comm.bcast(obj, root=root)

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (pickled; start-up checks)."""
        with self.timed():
            return self._comm.allgather(obj)

    def barrier(self) -> None:
        """Wait until every rank arrives."""
        with self.timed():
            self._comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (MPI_Abort); used when one rank fails."""
        self._comm.Abort(code)

    def __repr__(self) -> str:
        return f"MPIComm(rank={self.rank}, size={self.size}, cuda_aware={self.cuda_aware})"
