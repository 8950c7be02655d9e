"""Trains a solver file on n ranks (argv: solver out mode max_iter [resume]); rank 0 saves results.

Writes under `out`: log.jsonl (rank 0's JSON log), final.npy (rank 0's weights after training) and
hashes.json (a digest of every rank's weights, to check that allreduce ranks agree bit for bit).
With ISGD_TEST_BACKEND=standin the ranks train on the strict CuPy stand-in, installed as `cupy`,
each on its device as `-gpu all` chooses (devices.json: every rank's device).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
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
    solver_file: str, out: str, mode: str, max_iter: int, resume: str | None, comm: Any
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
    if os.environ.get("ISGD_TEST_BACKEND") == "standin":
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
        argv = sys.argv[1:]
        run(argv[0], argv[1], argv[2], int(argv[3]), argv[4] if len(argv) > 4 else None, get_comm())
