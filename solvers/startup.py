"""Start-up of `isgd train`, `test` and `time`: the ranks agree on their inputs, each takes its
device, the job announces its layout; and the timing summary at the end.

Each helper is a no-op (or the serial behaviour) for one process, so the CLI calls them always.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from engine.backend import device_count, get_array_module, use_device
from solvers import launch
from solvers.comm import Comm


def check_inputs(comm: Comm, solver: str, weights: str | None, snapshot: str | None) -> None:
    """Refuse to start when ranks read different solver/net/data/weights files (raised on all)."""
    if comm.size == 1:
        return
    extra = {"-weights": weights, "-snapshot": snapshot}
    launch.check_same_inputs(comm, launch.input_fingerprints(solver, extra))


def array_module(gpu: str | None, comm: Comm, log: Any) -> ModuleType:
    """The array module of `isgd train`, `test` and `time` (one meaning of -gpu for all three).

    No -gpu: NumPy. Otherwise CuPy on this rank's device, made current for this thread: node rank
    r takes device r mod (visible GPUs) for "all", list[r mod len] for a list of ids, the id
    itself for one id; a single process is rank 0. Without CuPy: a clear error saying so.
    """
    if launch.parse_gpu_flag(gpu) is None:
        log.info("Use CPU.")
        return np
    xp = get_array_module("cupy")  # BackendError: CuPy is not installed
    device = launch.select_device(gpu, launch.local_rank(comm), device_count(xp))
    assert device is not None
    use_device(xp, device)
    if comm.size > 1:  # a collective: every rank reports its device, rank 0 logs the map
        devices = comm.allgather_object(device)
        log.info(f"MPI: {comm.size} ranks use GPUs {devices} (by rank; -gpu {gpu})")
    else:
        log.info(f"Use GPU with device ID {device}")
    return xp


def announce(comm: Comm, log: Any, allreduce: bool) -> None:
    """Log the job's layout once; the pids let a launcher's "PID n killed" be traced to a rank."""
    table = launch.rank_table(comm)  # a collective: every rank calls it
    if comm.size > 1:
        mode = "allreduce" if allreduce else "master/worker"
        log.info(f"MPI: {comm.size} ranks, {mode}; {table}")


class TimingLog:
    """A TrainLog wrapper that totals the t_comp / t_comm of "iter" events for the final summary."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self.iterations = 0
        self.t_comp = 0.0
        self.t_comm = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def event(self, record: dict[str, Any]) -> None:
        if record.get("event") == "iter":
            self.iterations += 1
            self.t_comp += float(record.get("t_comp") or 0.0)
            self.t_comm += float(record.get("t_comm") or 0.0)
        self._log.event(record)

    def summary(self, ranks: int, mode: str) -> dict[str, Any]:
        total = self.t_comp + self.t_comm
        return {
            "event": "timing",
            "ranks": ranks,
            "mode": mode,
            "iterations": self.iterations,
            "t_comp": self.t_comp,
            "t_comm": self.t_comm,
            "iter_per_s": self.iterations / total if total > 0 else 0.0,
            "comm_fraction": self.t_comm / total if total > 0 else 0.0,
        }

    def write_summary(
        self, comm: Comm, allreduce: bool, solver: Any = None, wall_s: float | None = None
    ) -> dict[str, Any]:
        """The final text lines and one {"event": "timing"} JSON line (call on rank 0): time
        split, and with a solver its training clock, gradient evaluations and ISGD's work."""
        mode = "allreduce" if allreduce and comm.size > 1 else "master/worker"
        s = self.summary(comm.size, mode if comm.size > 1 else "serial")
        self._log.info(
            f"Timing ({s['mode']}, {s['ranks']} rank(s), {s['iterations']} iterations): "
            f"t_comp = {s['t_comp']:.4g} s, t_comm = {s['t_comm']:.4g} s, "
            f"t_comm/(t_comp+t_comm) = {s['comm_fraction']:.3f}, {s['iter_per_s']:.4g} iter/s"
        )
        if solver is not None:
            s.update(
                iter=solver.iter,
                train_s=solver.train_seconds,
                grad_evals=solver.grad_evals,
                alg2_triggers=solver.alg2_triggers,
                alg2_inner_steps=solver.alg2_inner_steps,
                completed=solver.completed,
                test_s=solver.test_seconds,
            )
        if wall_s is not None:
            s["wall_s"] = wall_s
            wall = f", wall time of this start {wall_s:.4g} s" if wall_s is not None else ""
            self._log.info(
                f"Training clock {solver.train_seconds:.4g} s (tests excluded) for "
                f"{solver.iter} iterations, {solver.grad_evals} gradient evaluations, tests "
                f"{solver.test_seconds:.4g} s{wall}"
            )
            if solver.isgd is not None and solver.isgd.enabled:
                extra = solver.grad_evals - solver.iter
                share = extra / solver.grad_evals if solver.grad_evals else 0.0
                rate = solver.alg2_triggers / solver.iter if solver.iter else 0.0
                self._log.info(
                    f"ISGD: Alg. 2 ran on {solver.alg2_triggers} of {solver.iter} iterations "
                    f"({100 * rate:.2f} %), {solver.alg2_inner_steps} inner steps, {extra} "
                    f"extra gradient evaluations ({100 * share:.2f} % of all)"
                )
        self._log.event(s)
        return s
