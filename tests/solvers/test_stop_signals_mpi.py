"""Issue 25 under mpiexec: a stop (SIGTERM forwarded by mpiexec, or the end of the process that
runs mpiexec) is decided once by rank 0 and told to every rank; the job writes one snapshot,
prints one "interrupted:" line and mpiexec returns 130 (every rank exits 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solvers.run_log import read_run_log
from tests.solvers.mpi_scripts.runner import REPO, have_mpi, mpiexec_path
from tests.solvers.test_mpi_training import write_cli_run

MPI_OK, MPI_WHY = have_mpi()
pytestmark = [pytest.mark.mpi, pytest.mark.skipif(not MPI_OK, reason=MPI_WHY)]
TIMEOUT = 120.0


def _start(folder: Path, *flags: str) -> subprocess.Popen:
    """A 2-rank run far longer than the test waits, in its own session."""
    write_cli_run(folder)
    solver = folder / "solver.prototxt"
    solver.write_text(
        solver.read_text()
        .replace("max_iter: 6", "max_iter: 10000000")
        .replace("snapshot: 3", "snapshot: 0")
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    exe = mpiexec_path()
    assert exe is not None
    cmd = [exe, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "solvers", "train"]
    cmd += ["-solver", "solver.prototxt", "-no_progress", *flags]
    return subprocess.Popen(
        cmd,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for_iterations(folder: Path, job: subprocess.Popen, count: int = 5) -> None:
    log = folder / "snap" / "run_log.jsonl"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if log.is_file() and log.read_text().count('"event":"iter"') >= count:
            return
        assert job.poll() is None, job.communicate()[0][-4000:]
        time.sleep(0.1)
    raise AssertionError("the job logged no iterations in time")


def _finish(job: subprocess.Popen) -> str:
    try:
        out, _ = job.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        raise AssertionError(f"the job did not stop: {job.communicate()[0][-4000:]}") from None
    return out


def _check_stopped(folder: Path, out: str, reason: str) -> None:
    lines = [x for x in out.splitlines() if x.startswith("interrupted:")]
    assert len(lines) == 1 and reason in lines[0], out[-4000:]
    states = list((folder / "snap").glob("run_iter_*.solverstate"))
    assert any(s.name in lines[0] for s in states), out[-4000:]
    log = read_run_log(folder / "snap" / "run_log.jsonl")
    assert not log.finished and not log.skipped_lines
    assert "MPI_Abort" not in out and "Traceback" not in out, out[-6000:]


def test_sigterm_to_mpiexec_stops_every_rank_at_a_snapshot_with_status_130(
    tmp_path: Path,
) -> None:
    job = _start(tmp_path, "-sigterm_effect", "stop")
    _wait_for_iterations(tmp_path, job)
    job.send_signal(signal.SIGTERM)  # Hydra's mpiexec forwards SIGTERM to the ranks
    out = _finish(job)
    assert job.returncode == 130, out[-4000:]
    _check_stopped(tmp_path, out, "SIGTERM")


def test_the_end_of_the_process_running_mpiexec_stops_the_job(tmp_path: Path) -> None:
    """-stop_with_parent -parent_pid P: the ranks' parent is Hydra's proxy, so the runner names
    itself; when it is killed, rank 0 sees it at the next iteration and the job stops."""
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        job = _start(tmp_path, "-stop_with_parent", "-parent_pid", str(runner.pid))
        _wait_for_iterations(tmp_path, job)
        runner.kill()
        runner.wait()
        out = _finish(job)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert job.returncode == 130, out[-4000:]
    _check_stopped(tmp_path, out, f"pid {runner.pid}")
