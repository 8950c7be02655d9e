"""Launch a script under mpiexec with a hard timeout, one BLAS thread per rank, repo importable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = Path(__file__).resolve().parent


def mpiexec_path() -> str | None:
    """mpiexec from PATH, else from this interpreter's bin/ (where the mpich wheel puts it)."""
    found = shutil.which("mpiexec")
    if found:
        return found
    candidate = Path(sys.prefix) / "bin" / "mpiexec"
    return str(candidate) if candidate.exists() else None


def have_mpi() -> tuple[bool, str]:
    """Whether MPI tests can run here, and why not."""
    if mpiexec_path() is None:
        return False, "mpiexec not found on PATH or in sys.prefix/bin (pip install mpich)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False, "mpi4py is not installed (pip install mpi4py)"
    return True, ""


@dataclass
class MpiResult:
    returncode: int
    output: str
    seconds: float


def run_mpi(
    n: int,
    script: str | Path,
    *args: str,
    timeout: float = 60.0,
    use_mpi4py_runner: bool = True,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> MpiResult:
    """Run `python [-m mpi4py] script args` on n ranks; kill the job after `timeout` seconds."""
    exe = mpiexec_path()
    assert exe is not None, "mpiexec missing (callers skip first)"
    runner = ["-m", "mpi4py"] if use_mpi4py_runner else []
    if str(script) == "-m":  # run_mpi(n, "-m", "solvers", ...): a module, as `python -m`
        target, name = list(args[:1]), f"-m {args[0]}"
        args = args[1:]
        target.insert(0, "-m")
    else:
        path = Path(script) if Path(script).is_absolute() else SCRIPTS / script
        target, name = [str(path)], path.name
    cmd = [exe, "-n", str(n), sys.executable, *runner, *target, *args]
    return run_command(cmd, f"mpiexec -n {n} {name}", timeout, cwd, env)


def run_command(
    cmd: list[str],
    name: str,
    timeout: float = 60.0,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> MpiResult:
    """Run a full mpiexec command line (e.g. MPMD `-n 1 a : -n 1 b`) with the test environment."""
    full_env = dict(os.environ)
    full_env.update(
        {
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
            ),
        }
    )
    full_env.update(env or {})
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=str(cwd or REPO),
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        raise AssertionError(
            f"{name} did not finish within {timeout} s (hang):\n{out[-4000:]}"
        ) from None
    return MpiResult(proc.returncode, out, time.monotonic() - start)
