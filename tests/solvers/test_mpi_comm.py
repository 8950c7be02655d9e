"""MPIComm and launch helpers: collectives under mpiexec -n 2/4, Comm choice, devices, failures."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from solvers import launch, startup
from solvers.comm import SerialComm
from tests.solvers.mpi_scripts.runner import have_mpi, run_mpi

MPI_OK, MPI_WHY = have_mpi()
needs_mpi = pytest.mark.skipif(not MPI_OK, reason=MPI_WHY)


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in launch._SIZE_VARS:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------ choosing the Comm


def test_plain_python_gets_serial_comm_without_initializing_mpi(
    no_launcher: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain `python` (no launcher in the environment) trains alone and never touches MPI."""
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    comm = launch.get_comm()
    assert isinstance(comm, SerialComm) and comm.size == 1 and comm.is_master
    assert "mpi4py.MPI" not in sys.modules


def test_launcher_without_mpi4py_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under mpiexec -n 4 with no mpi4py, each rank would silently train alone: refuse instead."""
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(RuntimeError, match="4 ranks but mpi4py is not installed"):
        launch.get_comm()


def test_serial_flag_forces_serial_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMI_SIZE", "4")
    assert isinstance(launch.get_comm(serial=True), SerialComm)


@pytest.mark.parametrize(
    ("env", "size"),
    [({}, 1), ({"PMI_SIZE": "4"}, 4), ({"OMPI_COMM_WORLD_SIZE": "2"}, 2), ({"PMI_SIZE": "x"}, 1)],
)
def test_launcher_world_size_reads_launcher_variables(env: dict[str, str], size: int) -> None:
    assert launch.launcher_world_size(env) == size


# ------------------------------------------------------------------------ devices


@pytest.mark.parametrize(
    ("flag", "n_visible", "expected"),
    [
        (None, 2, [None, None, None, None]),  # no -gpu: CPU ranks
        ("all", 2, [0, 1, 0, 1]),  # device r mod visible
        ("all", 3, [0, 1, 2, 0]),
        ("1,3", 4, [1, 3, 1, 3]),  # a list: list[r mod len]
        ("2", 4, [2, 2, 2, 2]),  # one id: every rank on it
    ],
)
def test_rank_r_uses_device_r_mod_visible(
    flag: str | None, n_visible: int, expected: list[int | None]
) -> None:
    assert [launch.select_device(flag, r, n_visible) for r in range(4)] == expected


@pytest.mark.parametrize(
    ("flag", "n_visible", "message"),
    [("gpu0", 2, "expected 'all' or device ids"), ("all", 0, "no CUDA device"), ("5", 2, "5")],
)
def test_bad_gpu_flag_is_a_clear_error(flag: str, n_visible: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        launch.select_device(flag, 0, n_visible)


# ------------------------------------------------------------------------ start-up check


class GatherComm:
    """A Comm stand-in whose allgather returns what given ranks would have sent."""

    def __init__(self, everyone: list[object]) -> None:
        self.everyone, self.rank, self.size = everyone, 0, len(everyone)

    def allgather_object(self, obj: object) -> list[object]:
        return self.everyone


def write_run(folder: Path, records: list[bytes], base_lr: str = "0.01") -> Path:
    """A solver, a net with a Data layer and an LMDB holding `records` under `folder`."""
    import lmdb

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.prototxt").write_text(
        'name: "t" layer { name: "data" type: "Data" top: "data" top: "label" '
        'data_param { source: "db" batch_size: 4 } }\n'
    )
    (folder / "solver.prototxt").write_text(f'net: "net.prototxt" base_lr: {base_lr}\n')
    env = lmdb.open(str(folder / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for i, value in enumerate(records):
            txn.put(f"{i:08d}".encode(), value)
    env.close()
    return folder / "solver.prototxt"


def fingerprints_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, str]]:
    monkeypatch.chdir(folder)  # Caffe resolves prototxt paths against the working directory
    return launch.input_fingerprints("solver.prototxt")


def test_identical_inputs_pass_the_startup_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same contents under different folders are the same run: ranks may see other mount points."""
    write_run(tmp_path / "a", [b"x", b"y"])
    write_run(tmp_path / "b", [b"x", b"y"])
    items_a = fingerprints_in(tmp_path / "a", monkeypatch)
    items_b = fingerprints_in(tmp_path / "b", monkeypatch)
    assert set(items_a) == {"solver file", "net file", "net: data source of layer 'data'"}
    launch.check_same_inputs(GatherComm([items_a, items_b, items_a]), items_a)


def test_different_solver_file_is_refused_naming_the_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(tmp_path / "a", [b"x"])
    write_run(tmp_path / "b", [b"x"], base_lr="0.02")
    items_a = fingerprints_in(tmp_path / "a", monkeypatch)
    items_b = fingerprints_in(tmp_path / "b", monkeypatch)
    with pytest.raises(launch.StartupMismatchError) as info:
        launch.check_same_inputs(GatherComm([items_a, items_a, items_b]), items_a)
    text = str(info.value)
    assert "rank 2: solver file" in text and "rank 1" not in text
    assert "data source" not in text


def test_different_data_is_refused_naming_the_rank_and_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same solver and net, but the LMDB differs in one record: refused, naming the Data layer."""
    write_run(tmp_path / "a", [b"x", b"y", b"z"])
    write_run(tmp_path / "b", [b"x", b"y", b"Z"])
    items_a = fingerprints_in(tmp_path / "a", monkeypatch)
    items_b = fingerprints_in(tmp_path / "b", monkeypatch)
    with pytest.raises(
        launch.StartupMismatchError, match=r"rank 1: net: data source of layer 'data'"
    ):
        launch.check_same_inputs(GatherComm([items_a, items_b]), items_a)


def test_serial_run_needs_no_startup_check() -> None:
    launch.check_same_inputs(SerialComm(), {"solver file": ("h", "p")})


# ------------------------------------------------------------------------ timing, errors


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.lines: list[str] = []

    def event(self, record: dict) -> None:
        self.events.append(record)

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_timing_log_totals_eq21_split_for_the_summary() -> None:
    """The end-of-run summary sums each iteration's t_comp / t_comm; other events pass through."""
    inner = RecordingLog()
    log = startup.TimingLog(inner)
    for t_comp, t_comm in [(0.3, 0.1), (0.5, 0.1)]:
        log.event({"event": "iter", "t_comp": t_comp, "t_comm": t_comm})
    log.event({"event": "test", "outputs": {}})
    log.info("passes through")
    summary = log.write_summary(CommOf(2), allreduce=True)
    assert summary["iterations"] == 2 and summary["mode"] == "allreduce"
    assert summary["t_comp"] == pytest.approx(0.8) and summary["t_comm"] == pytest.approx(0.2)
    assert summary["comm_fraction"] == pytest.approx(0.2)
    assert summary["iter_per_s"] == pytest.approx(2.0)
    assert inner.events[-1]["event"] == "timing"
    assert len(inner.events) == 4 and "passes through" in inner.lines
    assert "t_comm/(t_comp+t_comm) = 0.200" in inner.lines[-1]


class CommOf:
    def __init__(self, size: int) -> None:
        self.rank, self.size = 0, size


def test_serial_helpers_need_no_mpi(tmp_path: Path) -> None:
    """One process: no start-up check, CPU array module, no MPI line in the log."""
    log = RecordingLog()
    startup.check_inputs(SerialComm(), str(tmp_path / "absent.prototxt"), None, None)
    assert startup.array_module("", SerialComm(), log) is np
    startup.announce(SerialComm(), log, allreduce=False)
    assert log.lines == ["Use CPU."]


def test_abort_on_error_outside_mpi_reraises_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    with pytest.raises(KeyError, match="unchanged"), launch.abort_on_error():
        raise KeyError("unchanged")


# ------------------------------------------------------------------------ under mpiexec


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 4])
def test_collectives_under_mpiexec(n: int) -> None:
    """Bcast/Reduce/Allreduce/bcast_object in float32 and float64, device staging, timing."""
    result = run_mpi(n, "collectives.py", str(n), timeout=60)
    assert result.returncode == 0, result.output[-4000:]
    assert sorted(re.findall(r"OK rank (\d+)", result.output)) == [str(r) for r in range(n)]


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("raise", r"rank 2: ValueError: injected failure on purpose"),
        ("exit", r"rank 2: SystemExit: 3"),
        ("kill", r"Killed \(signal 9\)"),
    ],
)
def test_a_failing_rank_ends_the_job_within_seconds(mode: str, message: str) -> None:
    """Rank 2 of 4 raises / exits / is killed while the others wait in a collective: no hang."""
    result = run_mpi(4, "failure.py", mode, "2", timeout=30, use_mpi4py_runner=False)
    assert result.returncode != 0, result.output[-4000:]
    assert result.seconds < 20, f"took {result.seconds:.1f} s to end the job"
    assert re.search(message, result.output), result.output[-4000:]
    assert "finished" not in result.output
    if mode == "kill":  # SIGKILL cannot be caught: the launcher reports the signal, not the rank
        assert "ranks: 0 = pid" in result.output, "the rank table maps pids to ranks in the log"


@needs_mpi
@pytest.mark.mpi
def test_ranks_with_different_solver_files_are_refused(tmp_path: Path) -> None:
    for rank in range(2):
        write_run(tmp_path / f"r{rank}", [b"x"], base_lr="0.01" if rank == 0 else "0.5")
    pattern = str(tmp_path / "r{rank}" / "solver.prototxt")
    result = run_mpi(2, "failure.py", "mismatch", "1", pattern, timeout=30)
    assert result.returncode != 0, result.output[-4000:]
    assert "rank 1: solver file" in result.output and "refusing to train" in result.output
    assert "inputs agree" not in result.output
