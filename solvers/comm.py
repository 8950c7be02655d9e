"""The collectives of Alg. 1/2 behind one small protocol, so MPI plugs in unchanged."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Comm(Protocol):
    """Collectives the solver calls on every step, whatever the number of ranks.

    Array arguments are contiguous 1-D buffers modified in place; decisions travel as small objects
    chosen by the root (the master), so workers never decide alone.
    """

    rank: int
    size: int
    elapsed: float  # seconds spent inside collectives (Eq. 21's t_comm, control messages too)

    @property
    def is_master(self) -> bool: ...

    def bcast(self, array: Any, root: int = 0) -> None: ...

    def reduce_sum(self, array: Any, root: int = 0) -> None: ...

    def allreduce_sum(self, array: Any) -> None: ...

    def bcast_object(self, obj: T, root: int = 0) -> T: ...

    def barrier(self) -> None: ...


class SerialComm:
    """One process: every collective is the identity."""

    rank = 0
    size = 1
    elapsed = 0.0

    @property
    def is_master(self) -> bool:
        return True

    def bcast(self, array: Any, root: int = 0) -> None:
        """Broadcast `array` from root in place (nothing to do alone)."""

    def reduce_sum(self, array: Any, root: int = 0) -> None:
        """Sum `array` over ranks onto root in place (nothing to do alone)."""

    def allreduce_sum(self, array: Any) -> None:
        """Sum `array` over ranks on every rank in place (nothing to do alone)."""

    def bcast_object(self, obj: T, root: int = 0) -> T:
        """Root's `obj` on every rank."""
        return obj

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for)."""
