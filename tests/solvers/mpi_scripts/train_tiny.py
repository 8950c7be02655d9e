"""Trains a solver file on n ranks, one or more runs per launch; rank 0 saves each run's results.

argv: mode JOBS, JOBS a JSON list of {"solver", "out", "max_iter", "resume"?, "backend"?,
"mode"? (mw or allreduce: a job's own, else argv's)}: the runs share one mpiexec start-up (which
costs more than a tiny run). Writes under each `out`: log.jsonl (rank 0's JSON log), final.npy
(rank 0's weights after training) and
hashes.json (a digest of every rank's weights, to check that allreduce ranks agree bit for bit).
With backend "standin" the ranks train on the strict CuPy stand-in, installed as `cupy` (so put
such runs last), each on its device as `-gpu all` chooses (devices.json: every rank's device).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engine.backend import current_device, to_numpy
from solvers import startup
from solvers.launch import abort_on_error, get_comm
from solvers.solver import Solver, load_solver_param
from solvers.train_log import TrainLog


def run(
    solver_file: str,
    out: str,
    mode: str,
    max_iter: int,
    resume: str | None,
    comm: Any,
    backend: str = "numpy",
) -> None:
    """One training run with `comm`; the same code serves the serial baseline and the MPI ranks."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    param, _ = load_solver_param(solver_file)
    param.snapshot_prefix = str(folder / "snap")
    param.max_iter = max_iter
    writer = comm.rank == 0
    log = TrainLog(
        stream=io.StringIO(), json_path=folder / "log.jsonl" if writer else None, progress=False
    )
    gpu = None
    if backend == "standin":
        from tests.cupy_standin import fakecupy

        sys.modules["cupy"], sys.modules["cupyx"] = fakecupy, fakecupy.cupyx
        gpu = "all"
    try:
        xp = startup.array_module(gpu, comm, log)
        solver = Solver(param, comm=comm, log=log, xp=xp, allreduce=mode == "allreduce")
        solver.solve(resume)
    finally:
        log.close()
    weights = to_numpy(solver.net.flat_data)
    digest = hashlib.sha256(weights.tobytes()).hexdigest()
    gather = getattr(comm, "allgather_object", None)
    everyone = gather(digest) if gather is not None else [digest]
    devices = gather(current_device(xp)) if gather is not None else [current_device(xp)]
    if writer:
        np.save(folder / "final.npy", weights)
        (folder / "hashes.json").write_text(json.dumps(everyone))
        (folder / "devices.json").write_text(json.dumps(devices))


if __name__ == "__main__":
    with abort_on_error():
        mode, jobs = sys.argv[1], json.loads(sys.argv[2])
        comm = get_comm()
        for job in jobs:
            run(
                job["solver"],
                job["out"],
                job.get("mode", mode),
                int(job["max_iter"]),
                job.get("resume"),
                comm,
                job.get("backend", "numpy"),
            )
