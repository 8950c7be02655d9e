"""Runs that cannot go stale, one trainer per run folder, and table writers that never destroy
(issue scenarios, on tiny generated MNIST-shaped data and real `isgd train` children)."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from scripts import table1, table1_report
from scripts.profiles import load_profile
from scripts.runs import (
    RunBusy,
    RunError,
    RunLock,
    RunSpec,
    finished_log,
    run,
    status,
    write_run_files,
)
from solvers.signals import process_alive
from tests.scripts.conftest import mnist_like
from tests.scripts.test_table1 import TESTS, write_log
from tests.solvers.mpi_scripts.runner import have_mpi

MPI_OK, MPI_WHY = have_mpi()


def quiet(_: object) -> None:
    return None


def test_a_finished_run_made_with_another_budget_is_refused_then_redone(spec: RunSpec) -> None:
    """A changed budget: the finished folder is refused before anything is skipped; with
    --redo-changed it moves to stale/ (never deleted) and the run is trained afresh."""
    run(spec, quiet, quiet)
    longer = replace(spec, budget_grad_evals=8)
    with pytest.raises(RunError, match=r"isgd-seed3 was made with other settings or data \(.*max_grad_evals: 6' now 'max_grad_evals: 8'.*--redo-changed"):
        run(longer, quiet, quiet)
    with pytest.raises(RunError, match="other settings or data"):
        finished_log(longer)
    said: list[str] = []
    log = run(longer, said.append, quiet, redo_changed=True)
    assert log.finished and log.of("iter")[-1]["grad_evals"] == 8
    stale = list((spec.folder.parents[3] / "t" / "stale" / "table1" / "mnist").iterdir())
    assert len(stale) == 1 and stale[0].name.startswith("isgd-seed3-")
    assert read_last_evals(stale[0] / "log.jsonl") == 6, "the old log is kept, not deleted"
    assert any("moved to" in m for m in said)


def read_last_evals(path: Path) -> int:
    events = [json.loads(x) for x in path.read_text().splitlines()]
    return [e for e in events if e["event"] == "iter"][-1]["grad_evals"]


def test_a_data_change_under_a_half_finished_run_is_refused(spec: RunSpec, tmp_path: Path) -> None:
    """make data DATA_SEED=2 under a started run: its data fingerprint no longer matches."""
    run(spec, quiet, quiet)
    lines = spec.log_path.read_text().splitlines()
    spec.log_path.write_text("\n".join(lines[:-1]) + "\n")  # no closing summary: half finished
    assert status(spec)[0] == "partial"
    import shutil

    shutil.rmtree(tmp_path / "train_lmdb")
    mnist_like(tmp_path / "train_lmdb", 40, 7)  # same size, other records
    with pytest.raises(RunError, match=r"identity\.json: data\..*train_lmdb\.(first|middle|last) was"):
        run(spec, quiet, quiet)


def test_an_identity_records_what_defines_the_run(spec: RunSpec) -> None:
    write_run_files(spec)
    identity = json.loads((spec.folder / "identity.json").read_text())
    assert identity["arm"] == "isgd" and identity["seed"] == 3
    assert identity["settings"]["budget_grad_evals"] == 6
    assert identity["settings"]["isgd"] == {"control_limit": 2.0}
    sources = identity["data"]
    assert any(k.endswith("train_lmdb") and v["records"] == 40 for k, v in sources.items())


def test_a_second_runner_on_a_busy_folder_is_told_who_holds_it(spec: RunSpec) -> None:
    """flock locks belong to an open file: a second open in this process conflicts like
    another process would."""
    holder = RunLock(spec.folder, quiet).acquire()
    try:
        with pytest.raises(RunBusy, match=rf"isgd-seed3 is being trained by pid {os.getpid()}"):
            run(spec, quiet, quiet)
    finally:
        holder.release()
    assert run(spec, quiet, quiet).finished


def test_a_lock_left_by_a_dead_process_is_taken_over(spec: RunSpec) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    spec.folder.mkdir(parents=True)
    (spec.folder / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "since": "then"}))
    said: list[str] = []
    with RunLock(spec.folder, said.append):
        pass
    assert len(said) == 1 and f"taking over the lock left by pid {int(dead.stdout)}" in said[0]


def test_the_trainer_holds_the_lock_while_it_runs(spec: RunSpec) -> None:
    """The lock is inherited by the trainer child: held by it even if the runner is gone."""
    from scripts.runs import TrainingJob

    job = TrainingJob(replace(spec, budget_grad_evals=100000), quiet)
    assert job.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.poll().iteration < 2:
        time.sleep(0.1)
    try:
        job.lock.release()  # the runner lets go; the child still holds it
        fd = os.open(spec.folder / ".lock", os.O_RDWR)
        try:
            if job.running:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder = json.loads((spec.folder / ".lock").read_text())
            assert holder["trainer_pid"] == job.child.pid
        finally:
            os.close(fd)
    finally:
        job.stop()
    assert job.child.returncode == 130, "stopped at a snapshot on SIGTERM"
    assert any(spec.folder.glob("snap_iter_*.solverstate"))


def test_a_log_missing_beside_snapshots_is_one_line_with_what_to_do(spec: RunSpec) -> None:
    run(spec, quiet, quiet)
    spec.log_path.unlink()
    with pytest.raises(RunError, match=r"isgd-seed3 has no log\.jsonl but holds snapshots.*--redo-changed"):
        run(spec, quiet, quiet)
    spec.log_path.write_text("")
    with pytest.raises(RunError, match="has an empty log.jsonl but holds snapshots"):
        status(spec)
    log = run(spec, quiet, quiet, redo_changed=True)
    assert log.finished and log.of("iter")[-1]["grad_evals"] == 6


@pytest.mark.parametrize(
    "how",
    [
        "sigterm-runner",
        "sighup-group",
        "sigkill-runner",
        pytest.param(
            "sighup-group-mpi",
            marks=[pytest.mark.mpi, pytest.mark.skipif(not MPI_OK, reason=MPI_WHY)],
        ),
        pytest.param(
            "sigkill-runner-mpi",
            marks=[pytest.mark.mpi, pytest.mark.skipif(not MPI_OK, reason=MPI_WHY)],
        ),
    ],
)
def test_no_trainer_outlives_its_runner(spec: RunSpec, tmp_path: Path, how: str) -> None:
    """SIGTERM to the runner, or SIGHUP to its whole group (a closed terminal): the runner stops
    every trainer at a snapshot and exits 130. SIGKILL to the runner: the trainer notices its
    parent is gone and stops at a snapshot by itself. No trainer is left running."""
    script = tmp_path / "runner.py"
    script.write_text(
        "import sys, pickle\n"
        "from scripts.runner import Display, guarded, run_all\n"
        "spec = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "sys.exit(guarded('t', lambda d: run_all([spec], d) or 0))\n"
    )
    import pickle

    long = replace(spec, budget_grad_evals=100000, plan=replace(spec.plan, snapshot_every=50))
    if how.endswith("-mpi"):  # under mpiexec -n 2 (master/worker), the same guarantees
        long = replace(long, ranks=2)
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps(long))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env["ISGD_RUNS_DIR"] = str(spec.folder.parents[3])
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "spec.pkl")],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(long.folder.glob("snap_iter_*.solverstate")):
        time.sleep(0.2)
    assert any(long.folder.glob("snap_iter_*.solverstate")), "the run meant to be under way"
    holder = json.loads((long.folder / ".lock").read_text())
    trainer = int(holder["trainer_pid"])
    if how == "sigterm-runner":
        child.send_signal(signal.SIGTERM)
    elif how.startswith("sighup-group"):
        os.killpg(child.pid, signal.SIGHUP)
    else:
        child.send_signal(signal.SIGKILL)
    _, err = child.communicate(timeout=120)
    if how.startswith("sigkill-runner"):
        assert child.returncode == -signal.SIGKILL
    else:
        assert child.returncode == 130, err
        assert "interrupted" in err and "run the same command again to resume" in err
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process_alive(trainer):
        time.sleep(0.2)
    assert not process_alive(trainer), "the trainer outlived its runner"
    assert status(long)[0] == "partial"
    text_log = (long.folder / "train.log").read_text()
    assert "interrupted" in text_log and "Snapshotting" in text_log.split("interrupted")[0][-2000:]
    fd = os.open(long.folder / ".lock", os.O_RDWR)
    try:  # released once the trainer's exit is complete (allow the kernel a moment under load)
        deadline = time.monotonic() + 15
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a rerun may resume it
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ tables


def test_runs_outside_the_profile_are_noted_never_tabulated(synthetic_runs: Path, tmp_path: Path) -> None:
    """RUNS=2 then RUNS=1: the table holds seed 1 only and names the other folders."""
    for (seed, arm), tests in TESTS.items():
        write_log(synthetic_runs / "default" / "table1" / "mnist" / f"{arm}-seed{seed}", seed, arm, tests)
    profile = load_profile("default", ["mnist"], runs=1)
    rows, notes = table1_report.collect(profile)
    assert {(r.seed, r.arm) for r in rows} == {(1, "sgd"), (1, "isgd")}
    assert any("not in profile 'default'" in n and "isgd-seed2" in n and "sgd-seed3" in n for n in notes)


def test_a_table_without_runs_writes_nothing(synthetic_runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "table1.md").write_text("committed\n")
    with pytest.raises(table1_report.TableError, match="no finished Table 1 runs of profile 'default'.*nothing written"):
        table1_report.build("default", say=quiet, out=out)
    assert (out / "table1.md").read_text() == "committed\n"
    assert table1.main(["--profile", "paper"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished Table 1 runs of profile 'paper'" in err[0]


def test_a_datasets_subset_keeps_the_other_rows(synthetic_runs: Path, tmp_path: Path) -> None:
    for (seed, arm), tests in TESTS.items():
        write_log(synthetic_runs / "default" / "table1" / "mnist" / f"{arm}-seed{seed}", seed, arm, tests)
    for arm in ("sgd", "isgd"):
        write_log(synthetic_runs / "default" / "table1" / "cifar10" / f"{arm}-seed1", 1, arm, [(5, 100, 0.7)])
    out = tmp_path / "out"
    table1_report.build("default", ["mnist"], say=quiet, out=out)
    datasets = [r["dataset"] for r in csv.DictReader(open(out / "table1.csv"))]
    assert datasets == ["mnist", "cifar10"]


def test_an_unwritable_results_folder_is_one_line(synthetic_runs: Path, monkeypatch, capsys) -> None:
    for (seed, arm), tests in TESTS.items():
        write_log(synthetic_runs / "default" / "table1" / "mnist" / f"{arm}-seed{seed}", seed, arm, tests)

    def refuse(path: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("scripts.table1_report.write_atomic", refuse)
    assert table1.main(["--profile", "default", "--datasets", "mnist"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the tables" in err[0] and "Permission denied" in err[0]


def test_a_row_without_gradient_evaluations_never_enters_the_table(synthetic_runs: Path) -> None:
    folder = synthetic_runs / "default" / "table1" / "mnist" / "sgd-seed1"
    write_log(folder, 1, "sgd", [(1, 0, 0.5)])
    rows, notes = table1_report.collect(load_profile("default", ["mnist"], runs=1))
    assert rows == [] and any("without a gradient evaluation" in n for n in notes)
