"""A trainer that cannot outlive its runner (issue 25): SIGTERM / SIGHUP (with their -*_effect
flags) and the end of the parent process stop `isgd train` at a snapshot with status 130 and one
"interrupted:" line; the log stays whole and the run resumes from that snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from solvers.run_log import read_run_log
from solvers.signals import SignalHandler, process_alive

from .conftest import Tiny

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _train_args(solver: Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "solvers",
        "train",
        "-solver",
        str(solver),
        "-no_progress",
        *flags,
    ]


def _solver(tiny: Tiny, max_iter: int) -> Path:
    """The tiny problem without tests."""
    path = tiny.solver(max_iter=max_iter, test_interval=0, snapshot=0, display=0)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    return path


def _long_solver(tiny: Tiny) -> Path:
    """A run far longer than any test waits: only a stop ends it."""
    return _solver(tiny, 10_000_000)


def _wait_for_iterations(log: Path, child: subprocess.Popen, count: int = 3) -> None:
    """Until the trainer has logged `count` iterations (its handlers are in place by then)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if log.is_file() and log.read_text().count('"event":"iter"') >= count:
            return
        if child.poll() is not None:
            raise AssertionError(f"the trainer ended early ({child.returncode})")
        time.sleep(0.05)
    raise AssertionError(f"the trainer logged no {count} iterations in {TIMEOUT} s")


def _json_log(tiny: Tiny) -> Path:
    return tiny.root / "snap" / "solver_log.jsonl"


def _stop_with(tiny: Tiny, signum: int, *flags: str) -> tuple[int, str]:
    """Start a long run, send `signum` once it trains, return (status, stderr)."""
    solver = _long_solver(tiny)
    child = subprocess.Popen(
        _train_args(solver, *flags),
        cwd=tiny.root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_iterations(_json_log(tiny), child)
        child.send_signal(signum)
        _, err = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
    return child.returncode, err


def _interrupted_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _resume_finishes(tiny: Tiny, state: Path) -> None:
    """The stopped run resumes from `state` and its log reads as one run."""
    stopped_at = int(state.stem.rsplit("_", 1)[1])
    solver = _solver(tiny, stopped_at + 3)
    result = subprocess.run(
        _train_args(solver, "-snapshot", str(state)),
        cwd=tiny.root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_run_log(_json_log(tiny))
    assert [e["iter"] for e in log.of("iter")] == list(range(stopped_at + 3))
    assert log.finished and not log.skipped_lines


@pytest.mark.parametrize(
    "signum, flags",
    [
        (signal.SIGTERM, ["-sigterm_effect", "stop"]),
        (signal.SIGHUP, ["-sighup_effect", "stop"]),
        (signal.SIGINT, []),  # Caffe's default -sigint_effect stop
    ],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_a_stop_signal_ends_at_a_snapshot_with_status_130_and_resumes(
    tiny: Tiny, signum: int, flags: list[str]
) -> None:
    """Caffe's "stop" effect: finish the iteration, snapshot (snapshot_after_train), end. Ours
    also ends with 130 so that a runner tells a stop from a finished run."""
    status, err = _stop_with(tiny, signum, *flags)
    assert status == 130, err[-3000:]
    line = _interrupted_line(err)
    assert signal.Signals(signum).name in line and "-snapshot" in line
    states = sorted((tiny.root / "snap").glob("solver_iter_*.solverstate"))
    assert len(states) == 1 and str(states[0].name) in line
    log = read_run_log(_json_log(tiny))
    assert not log.finished and not log.skipped_lines
    assert log.of("iter")[-1]["iter"] == int(states[0].stem.rsplit("_", 1)[1]) - 1
    _resume_finishes(tiny, states[0])


def test_sigterm_without_its_flag_ends_the_process_at_once_as_caffe(tiny: Tiny) -> None:
    """Caffe does not catch SIGTERM: without -sigterm_effect the system ends the process."""
    status, _ = _stop_with(tiny, signal.SIGTERM)
    assert status == -signal.SIGTERM
    assert not list((tiny.root / "snap").glob("*.solverstate"))


def test_sighup_keeps_caffes_default_snapshot_and_goes_on(tiny: Tiny) -> None:
    """Without -sighup_effect, SIGHUP snapshots and training goes on (Caffe's default)."""
    solver = _long_solver(tiny)
    child = subprocess.Popen(
        _train_args(solver, "-sigterm_effect", "stop"),
        cwd=tiny.root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_iterations(_json_log(tiny), child)
        child.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT
        while not list((tiny.root / "snap").glob("*.solverstate")):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        assert child.poll() is None, "SIGHUP must not end the run by default"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err[-3000:]
    assert len(list((tiny.root / "snap").glob("*.solverstate"))) == 2


PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL,
                             stderr=open(sys.argv[1], "w"))
    print(child.pid, flush=True)
    time.sleep(3600)  # the test kills this parent with SIGKILL
    """
)


def test_the_trainer_stops_at_a_snapshot_when_its_parent_is_killed(tiny: Tiny) -> None:
    """-stop_with_parent: a parent killed with SIGKILL (no chance to pass anything on) leaves no
    orphan training on; the trainer stops at a snapshot within seconds."""
    err_path = tiny.root / "trainer.err"
    trainer = _train_args(_long_solver(tiny), "-stop_with_parent")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(err_path), *trainer],
        cwd=tiny.root,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    try:
        _wait_for_iterations(_json_log(tiny), parent)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while process_alive(pid):
            assert time.monotonic() < deadline, "the orphaned trainer kept running"
            time.sleep(0.05)
    finally:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    line = _interrupted_line(err_path.read_text())
    assert f"(parent process pid {parent.pid} ended)" in line
    states = sorted((tiny.root / "snap").glob("solver_iter_*.solverstate"))
    assert len(states) == 1 and states[0].name in line
    _resume_finishes(tiny, states[0])


def test_parent_pid_watch_sees_a_process_end_without_the_kernel_signal() -> None:
    """The polled fallback (for -parent_pid, e.g. the runner above mpiexec): once the watched
    process ends, the next poll asks to stop, once."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with SignalHandler(stop_with_parent=True, parent_pid=other.pid) as handler:
            assert handler.requested_action() == "none"
            other.kill()
            other.wait()
            deadline = time.monotonic() + 5
            action = "none"
            while action == "none" and time.monotonic() < deadline:
                action = handler.requested_action()
                time.sleep(0.05)
            assert action == "stop" and f"pid {other.pid}" in str(handler.stop_reason)
            assert handler.requested_action() == "none"
    finally:
        if other.poll() is None:
            other.kill()


def test_sigterm_is_caught_only_when_asked() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with SignalHandler():
        assert signal.getsignal(signal.SIGTERM) == before
    with SignalHandler(sigterm_effect="snapshot") as handler:
        os.kill(os.getpid(), signal.SIGTERM)
        assert handler.requested_action() == "snapshot"
        assert handler.requested_action() == "none"
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(ValueError, match="invalid sigterm_effect 'halt'"):
        SignalHandler(sigterm_effect="halt")


def test_parent_pid_alone_is_refused(capsys) -> None:
    from solvers.cli import main

    assert main(["train", "-solver", "s.prototxt", "-parent_pid", "5"]) == 1
    assert "-parent_pid is read only with -stop_with_parent" in capsys.readouterr().err
