"""Per-iteration split of wall time into computation and communication (t_comp, t_comm of Eq. 21).

t_comm is what the Comm spent inside collectives during the iteration (its `elapsed` counter, which
includes waiting for slower ranks); t_comp is the rest of the iteration's wall time.
"""

from __future__ import annotations

import time
from typing import Any


def comm_seconds(comm: Any) -> float:
    """Seconds the Comm has spent in collectives so far (0 for a Comm that does not count)."""
    return float(getattr(comm, "elapsed", 0.0))


class StepTimer:
    """Times iterations: `start()` before, `stop()` after; keeps totals for the run's summary."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.iterations = 0
        self.total_comp = 0.0
        self.total_comm = 0.0
        self._wall0 = 0.0
        self._comm0 = 0.0

    def start(self) -> None:
        """Mark the beginning of an iteration."""
        self._wall0 = time.perf_counter()
        self._comm0 = comm_seconds(self.comm)

    def stop(self) -> tuple[float, float]:
        """End the iteration; return its (t_comp, t_comm) in seconds."""
        wall = time.perf_counter() - self._wall0
        t_comm = min(max(comm_seconds(self.comm) - self._comm0, 0.0), wall)
        t_comp = wall - t_comm
        self.iterations += 1
        self.total_comp += t_comp
        self.total_comm += t_comm
        return t_comp, t_comm

    def summary(self) -> dict[str, float]:
        """Totals over the timed iterations: seconds, iterations/s, communication fraction."""
        total = self.total_comp + self.total_comm
        return {
            "iterations": self.iterations,
            "t_comp": self.total_comp,
            "t_comm": self.total_comm,
            "iter_per_s": self.iterations / total if total > 0 else 0.0,
            "comm_fraction": self.total_comm / total if total > 0 else 0.0,
        }

    def summary_line(self) -> str:
        """One human-readable line for the end of the log."""
        s = self.summary()
        return (
            f"Timing over {s['iterations']} iterations on {getattr(self.comm, 'size', 1)} rank(s): "
            f"t_comp = {s['t_comp']:.3f} s, t_comm = {s['t_comm']:.3f} s "
            f"({100 * s['comm_fraction']:.1f} % communication), {s['iter_per_s']:.3f} iter/s"
        )
