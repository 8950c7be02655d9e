"""Training under mpiexec matches one process: the global batch and the update do not depend on n.

Issue 9's acceptance, on a tiny net (SGD+momentum and ISGD with Alg. 2 forced), n = 1, 2, 4,
master/worker and allreduce. Float sums ordered differently drift chaotically over many iterations,
so we test what rounding cannot hide: one step from the same weights and history gives the same loss
(1e-6) and weight update (1e-5 relative); over 50 iterations the first 5 losses agree to 1e-5 and
the mean loss to 1 %.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from solvers.comm import SerialComm
from tests.solvers.conftest import NET, write_lmdb
from tests.solvers.mpi_scripts.runner import have_mpi, mpiexec_path, run_command, run_mpi
from tests.solvers.mpi_scripts.train_tiny import run as train_serial

MPI_OK, MPI_WHY = have_mpi()
pytestmark = [pytest.mark.mpi, pytest.mark.skipif(not MPI_OK, reason=MPI_WHY)]

GLOBAL_BATCH = 8  # divisible by 1, 2 and 4 ranks
RANKS = (1, 2, 4)  # mpiexec -n 1 too: one rank under MPI must equal plain python
MODES = ("mw", "allreduce")
ITERS = 50
SOLVER = """net: "{net}"
base_lr: 0.1
momentum: 0.9
weight_decay: 0.01
lr_policy: "fixed"
display: 0
max_iter: {iters}
random_seed: 7
snapshot_after_train: true
"""
# Alg. 2 forced: limit = mean - 1 sigma, a queue of 2 batches, so most batches after the first
# two are "above the limit" and the inner loop runs.
ISGD = "isgd_param { control_limit: -1 queue_size: 2 stop: 3 }\n"


def losses(folder: Path) -> list[dict]:
    lines = (folder / "log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == "iter"]


def make_problem(kind: str, root: Path) -> dict:
    """A tiny LMDB + net + solver, the serial 50-iteration baseline and a 3-iteration snapshot."""
    write_lmdb(root / "train_lmdb", 1, records=48)
    write_lmdb(root / "test_lmdb", 2, records=8)
    net = root / "net.prototxt"
    net.write_text(
        NET.format(
            train=root / "train_lmdb", test=root / "test_lmdb", batch=GLOBAL_BATCH, classes=3
        )
    )
    solver = root / "solver.prototxt"
    solver.write_text(SOLVER.format(net=net, iters=ITERS) + (ISGD if kind == "isgd" else ""))
    serial = SerialComm()
    train_serial(str(solver), str(root / "serial"), "mw", ITERS, None, serial)
    # The one-step check resumes at an iteration where the serial run took Alg. 2's inner steps.
    alg2 = [e["iter"] for e in losses(root / "serial") if e["alg2_inner_steps"] > 0]
    k = alg2[0] if kind == "isgd" else 3
    train_serial(str(solver), str(root / "base"), "mw", k, None, serial)
    state = root / "base" / f"snap_iter_{k}.solverstate"
    train_serial(str(solver), str(root / "serial_step"), "mw", k + 1, str(state), serial)
    return {"kind": kind, "root": root, "solver": solver, "state": state, "k": k}


@pytest.fixture(scope="module")
def problems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Both problems (SGD+momentum, ISGD with Alg. 2 forced), built once for the module."""
    return {kind: make_problem(kind, tmp_path_factory.mktemp(kind)) for kind in ("sgd", "isgd")}


@pytest.fixture(params=["sgd", "isgd"])
def problem(request: pytest.FixtureRequest, problems: dict[str, dict]) -> dict:
    return problems[request.param]


def check_hashes(out: Path, mode: str) -> Path:
    """Under allreduce every rank applied the same update: weights agree bit for bit."""
    hashes = json.loads((out / "hashes.json").read_text())
    if mode == "allreduce":
        assert len(set(hashes)) == 1, f"allreduce ranks hold different weights: {hashes}"
    return out


@pytest.fixture(scope="module")
def launched(problems: dict[str, dict]) -> Callable[[dict, int, str], dict[str, Path]]:
    """One mpiexec launch per rank count, made on first use and read by every test of it: for
    each mode and problem the one-step resume, the 50-iteration run and (n = 2) 10 iterations
    on the CuPy stand-in. An mpiexec start-up costs more than these tiny runs."""
    cache: dict[int, dict[tuple[str, str], dict[str, Path]]] = {}

    def get(problem: dict, n: int, mode: str) -> dict[str, Path]:
        if n not in cache:
            jobs: list[dict] = []
            standin: list[dict] = []
            outs: dict[tuple[str, str], dict[str, Path]] = {}
            for each_mode in MODES:
                for kind, p in problems.items():
                    mine = {
                        "step": {"max_iter": p["k"] + 1, "resume": str(p["state"])},
                        "fifty": {"max_iter": ITERS},
                    }
                    if n == 2:
                        mine["standin"] = {"max_iter": 10, "backend": "standin"}
                    for name, job in mine.items():
                        out = p["root"] / f"{each_mode}_n{n}_{name}"
                        job.update(solver=str(p["solver"]), out=str(out), mode=each_mode)
                        (standin if name == "standin" else jobs).append(job)
                    outs[(each_mode, kind)] = {name: Path(j["out"]) for name, j in mine.items()}
            jobs += standin  # the stand-in installs itself as `cupy` for the rest of the process
            result = run_mpi(n, "train_tiny.py", MODES[0], json.dumps(jobs), timeout=300)
            assert result.returncode == 0, result.output[-4000:]
            cache[n] = outs
        return cache[n][(mode, problem["kind"])]

    return get


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", RANKS)
def test_one_step_from_same_state_gives_same_loss_and_update(
    problem: dict, launched: Callable, n: int, mode: str
) -> None:
    """Resume every rank from the same .solverstate (weights, momentum history, ISGD queue, data
    cursor) and take one step: loss to 1e-6 and w_{k+1} - w_k to 1e-5 relative, as n = 1."""
    root = problem["root"]
    k = problem["k"]
    out = check_hashes(launched(problem, n, mode)["step"], mode)
    serial_events, events = losses(root / "serial_step"), losses(out)
    assert [e["iter"] for e in events] == [k], f"resumed at iteration {k}, one step"
    assert events[0]["loss"] == pytest.approx(serial_events[0]["loss"], rel=1e-6, abs=0)
    if problem["kind"] == "isgd":
        assert serial_events[0]["alg2_inner_steps"] > 0, "Alg. 2 was meant to run in this step"
        assert events[0]["alg2_inner_steps"] == serial_events[0]["alg2_inner_steps"]
    before = np.load(root / "base" / "final.npy").astype(np.float64)
    step_1 = np.load(root / "serial_step" / "final.npy") - before
    step_n = np.load(out / "final.npy") - before
    rel = np.linalg.norm(step_n - step_1) / np.linalg.norm(step_1)
    assert rel < 1e-5, f"weight update differs from n = 1 by {rel:.2e} (relative)"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", RANKS)
def test_fifty_iterations_track_the_single_process_run(
    problem: dict, launched: Callable, n: int, mode: str
) -> None:
    """Same global batches, same updates: first 5 losses to 1e-5, mean loss over 50 to 1 %."""
    serial = [e["loss"] for e in losses(problem["root"] / "serial")]
    events = losses(check_hashes(launched(problem, n, mode)["fifty"], mode))
    ours = [e["loss"] for e in events]
    assert len(ours) == len(serial) == ITERS
    np.testing.assert_allclose(ours[:5], serial[:5], rtol=1e-5, atol=0)
    assert np.mean(ours) == pytest.approx(np.mean(serial), rel=0.01)
    if problem["kind"] == "isgd":
        assert sum(e["alg2_inner_steps"] for e in events) > 0, "Alg. 2 never ran"
    assert all("t_comp" in e and "t_comm" in e for e in events), "Eq. 21 timing missing"
    if n > 1:  # one rank needs no collective (the serial Comm): its t_comm is 0
        assert sum(e["t_comm"] for e in events) > 0


@pytest.mark.parametrize("mode", MODES)
def test_ranks_on_two_devices_track_the_cpu_run(
    problem: dict, launched: Callable, mode: str
) -> None:
    """mpiexec -n 2 with -gpu all on the strict CuPy stand-in: rank r on device r, collectives
    staged through pinned host memory, and the losses of the one-process NumPy run."""
    serial = [e["loss"] for e in losses(problem["root"] / "serial")][:10]
    out = check_hashes(launched(problem, 2, mode)["standin"], mode)
    assert json.loads((out / "devices.json").read_text()) == [0, 1]
    ours = [e["loss"] for e in losses(out)]
    np.testing.assert_allclose(ours[:5], serial[:5], rtol=1e-5, atol=0)
    assert np.mean(ours) == pytest.approx(np.mean(serial), rel=0.01)


def write_cli_run(folder: Path, name: str = "solver.prototxt", base_lr: str = "0.1") -> None:
    """A tiny net, data and a 6-iteration solver (snapshots every 3) in `folder`, relative paths."""
    if not (folder / "train_lmdb").exists():
        write_lmdb(folder / "train_lmdb", 1, records=16)
        write_lmdb(folder / "test_lmdb", 2, records=8)
        (folder / "net.prototxt").write_text(
            NET.format(train="train_lmdb", test="test_lmdb", batch=GLOBAL_BATCH, classes=3)
        )
        (folder / "snap").mkdir()
    text = SOLVER.format(net="net.prototxt", iters=6).replace("0.1", base_lr, 1)
    (folder / name).write_text(text + 'snapshot_prefix: "snap/run"\nsnapshot: 3\n')


def test_cli_under_mpiexec_writes_once_from_rank_0(tmp_path: Path) -> None:
    """`mpiexec -n 2 python -m mpi4py -m solvers train -solver S --allreduce`: rank 0 alone logs
    and snapshots; the JSON log carries t_comp / t_comm per iteration and a timing summary."""
    write_cli_run(tmp_path)
    result = run_mpi(
        2,
        "-m",
        "solvers",
        "train",
        "-solver",
        "solver.prototxt",
        "--no-progress",
        "--allreduce",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.output[-4000:]
    assert len(re.findall(r"Optimization Done", result.output)) >= 1
    assert result.output.count("Snapshotting solver state") == 2, result.output[-3000:]
    assert sorted(p.name for p in (tmp_path / "snap").glob("*.solverstate")) == [
        "run_iter_3.solverstate",
        "run_iter_6.solverstate",
    ]
    events = [json.loads(line) for line in (tmp_path / "snap" / "run_log.jsonl").open()]
    iters = [e for e in events if e.get("event") == "iter"]
    assert [e["iter"] for e in iters] == list(range(6)), "one JSON line per iteration, rank 0"
    assert all(e["t_comp"] >= 0 and e["t_comm"] >= 0 for e in iters)
    assert "MPI: 2 ranks, allreduce; ranks: 0 = pid" in result.output
    summary = [e for e in events if e.get("event") == "timing"]
    assert len(summary) == 1 and summary[0]["ranks"] == 2 and summary[0]["iterations"] == 6
    assert 0 < summary[0]["comm_fraction"] < 1
    assert "t_comm/(t_comp+t_comm)" in result.output


def test_cli_refuses_ranks_started_with_different_solver_files(tmp_path: Path) -> None:
    """MPMD launch, rank 1 with another base_lr: refused before training, naming rank 1 and the
    file; the job ends non-zero within seconds and writes no snapshot."""
    write_cli_run(tmp_path, "a.prototxt")
    write_cli_run(tmp_path, "b.prototxt", base_lr="0.2")
    exe = mpiexec_path()
    assert exe is not None
    python = [sys.executable, "-m", "mpi4py", "-m", "solvers", "train", "--no-progress"]
    cmd = [exe, "-n", "1", *python, "-solver", "a.prototxt", ":"]
    cmd += ["-n", "1", *python, "-solver", "b.prototxt"]
    result = run_command(cmd, "mpiexec MPMD", timeout=60, cwd=tmp_path)
    assert result.returncode != 0 and result.seconds < 30
    assert "refusing to train" in result.output
    assert "rank 1: solver file b.prototxt differs from rank 0's a.prototxt" in result.output
    assert not list((tmp_path / "snap").glob("*.caffemodel"))
