"""One experiment run: its folder, its generated net and solver files, and running it to the end.

A run lives in results/runs/<profile>/<group>/<dataset>/<name>/ with `net.prototxt` and
`solver.prototxt` (made from prototxt/ with the profile's batch, budget, test cadence and seed),
`log.jsonl` (the run's JSON log, the only input of tables and figures), `train.log` (Caffe's text
log) and snapshots. `isgd train` runs in a child process from the repository root; a finished run
is skipped, an interrupted one resumes from its newest readable snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.lmdb_reader import LmdbReader
from engine.proto import caffe_pb2
from engine.proto_io import message_to_text, read_net_param, read_solver_param
from scripts.profiles import ROOT, Plan
from solvers.launch import visible_gpu_count
from solvers.run_log import RunLog, RunLogError, read_run_log

RUNS_DIR = ROOT / "results" / "runs"
TEST_BATCH = 100  # the largest test batch; test_iter * batch covers the whole test set
_TRAIN, _TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


class RunError(RuntimeError):
    """A run that could not be started or finished; the message names its folder."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that makes one run: what to train, how, and where its files go.

    `solver_arm` picks the prototxt/ solver (sgd, isgd, nesterov, isgd_nesterov); `isgd`
    overrides isgd_param fields (the sweep); `train_source` replaces the training LMDB (Fig. 1).
    """

    profile: str
    group: str
    plan: Plan
    arm: str
    seed: int
    tag: str = ""
    solver_arm: str = ""
    ranks: int = 1
    batch_size: int | None = None
    budget_grad_evals: int | None = None
    test_interval_seconds: float | None = None
    isgd: dict[str, Any] = field(default_factory=dict)
    train_source: str | None = None
    test_source: str | None = None
    mean_file: str | None = None
    test: bool = True

    @property
    def dataset(self) -> str:
        return self.plan.dataset.name

    @property
    def name(self) -> str:
        return f"{self.arm}{'-' + self.tag if self.tag else ''}-seed{self.seed}"

    @property
    def folder(self) -> Path:
        return RUNS_DIR / self.profile / self.group / self.dataset / self.name

    @property
    def log_path(self) -> Path:
        return self.folder / "log.jsonl"

    @property
    def batch(self) -> int:
        return self.batch_size or self.plan.batch_size

    @property
    def budget(self) -> int:
        return self.budget_grad_evals or self.plan.budget_grad_evals

    @property
    def label(self) -> str:
        tag = f" {self.tag}" if self.tag else ""
        return f"{self.group} {self.dataset} {self.arm}{tag} seed {self.seed}"


# ------------------------------------------------------------------ files


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def render_run_files(spec: RunSpec) -> tuple[str, str]:
    """The text of the run's net.prototxt and solver.prototxt (they are derived files)."""
    ds = spec.plan.dataset
    net = read_net_param(str(ROOT / ds.net))
    test_records = ds.test_records
    for layer in net.layer:
        if not layer.HasField("data_param"):
            continue
        phases = {rule.phase for rule in layer.include}
        if spec.mean_file and layer.transform_param.mean_file:
            layer.transform_param.mean_file = spec.mean_file
        if _TRAIN in phases:
            layer.data_param.batch_size = spec.batch
            if spec.train_source:
                layer.data_param.source = spec.train_source
        elif _TEST in phases:
            if spec.test_source:
                layer.data_param.source = spec.test_source
            if spec.test:
                test_records = _records(layer.data_param.source)
            layer.data_param.batch_size = full_test_batch(test_records)
    solver_file = ds.solver_file(spec.solver_arm or spec.arm)
    solver = read_solver_param(str(ROOT / solver_file))
    solver.net = _relative(spec.folder / "net.prototxt")
    solver.random_seed = spec.seed
    solver.max_iter = 2**31 - 1  # the budget below ends the run
    solver.max_grad_evals = spec.budget
    solver.test_interval = 0
    del solver.test_iter[:]
    if spec.test:
        solver.test_iter.append(test_records // full_test_batch(test_records))
        solver.test_interval_seconds = spec.test_interval_seconds or spec.plan.test_interval_seconds
        solver.test_initialization = True
    else:
        solver.test_interval_seconds = 0
    solver.display = spec.plan.display
    solver.snapshot = spec.plan.snapshot_every
    solver.snapshot_prefix = _relative(spec.folder / "snap")
    solver.solver_mode = caffe_pb2.SolverParameter.CPU
    for key, value in spec.isgd.items():
        setattr(solver.isgd_param, key, value)
    header = (
        f"# Generated by scripts/runs.py for profile '{spec.profile}', {spec.label}, from "
        f"{solver_file}.\n"
    )
    return message_to_text(net), header + message_to_text(solver)


def write_run_files(spec: RunSpec) -> tuple[Path, Path]:
    """Write net.prototxt and solver.prototxt; a folder made with other settings is refused
    (its runs would not be comparable), naming the first differing line."""
    net_text, solver_text = render_run_files(spec)
    spec.folder.mkdir(parents=True, exist_ok=True)
    paths = (spec.folder / "net.prototxt", spec.folder / "solver.prototxt")
    for path, text in zip(paths, (net_text, solver_text), strict=True):
        if path.exists() and path.read_text() != text:
            old, new = path.read_text().splitlines(), text.splitlines()
            diff = next(
                (
                    f"'{a.strip()}' now '{b.strip()}'"
                    for a, b in zip(old, new, strict=False)
                    if a != b
                ),
                "a different length",
            )
            raise RunError(
                f"{_relative(path)} was made with other settings ({diff}); its run cannot be "
                "continued or reused under the current profile. Move the folder away (or delete "
                "it) to run it again with the current settings."
            )
    for path, text in zip(paths, (net_text, solver_text), strict=True):
        path.write_text(text)
    return paths


def _records(source: str) -> int:
    """Records in an LMDB (relative paths from the repository root, as the runs see them)."""
    path = Path(source) if Path(source).is_absolute() else ROOT / source
    reader = LmdbReader(str(path))
    try:
        return len(reader)
    finally:
        reader.close()


def full_test_batch(records: int) -> int:
    """The largest batch <= 100 dividing the test set, so test_iter batches cover it exactly."""
    return next(b for b in range(min(TEST_BATCH, records), 0, -1) if records % b == 0)


def newest_snapshot(folder: Path, say: Callable[[str], None]) -> Path | None:
    """The newest .solverstate in `folder` that reads back and whose weights file exists."""
    states = sorted(
        folder.glob("snap_iter_*.solverstate"),
        key=lambda p: int(p.stem.rsplit("_", 1)[-1]),
        reverse=True,
    )
    for state_path in states:
        try:
            state = caffe_pb2.SolverState()
            state.ParseFromString(state_path.read_bytes())
            weights = folder / Path(state.learned_net).name
            if not weights.is_file():
                raise ValueError(f"its weights {weights.name} are missing")
            net = caffe_pb2.NetParameter()
            net.ParseFromString(weights.read_bytes())
        except Exception as exc:  # any unreadable snapshot is skipped, named
            say(f"{_relative(state_path)}: unreadable snapshot ({exc}); trying an older one")
            continue
        return state_path
    return None


def status(spec: RunSpec) -> tuple[str, RunLog | None]:
    """("done", log) for a finished run, ("partial", log|None) for a started one, ("new", None)."""
    if not spec.log_path.exists():
        started = spec.folder.exists() and any(spec.folder.glob("snap_iter_*"))
        return ("partial" if started else "new"), None
    log = read_run_log(spec.log_path)
    return ("done" if log.finished else "partial"), log


# ------------------------------------------------------------------ running


@dataclass
class Progress:
    """What the driver shows while a run trains: its position and its last test."""

    grad_evals: int = 0
    iteration: int = 0
    train_s: float = 0.0
    last_accuracy: float | None = None
    started_at_evals: int | None = None  # where this process began (a resume's snapshot)

    @property
    def evals_this_process(self) -> int:
        """Gradient evaluations done since the child started: what its wall time paid for."""
        return self.grad_evals - (self.started_at_evals or 0)


class LogFollower:
    """Reads the JSON lines a running child appends, for the progress display."""

    def __init__(self, path: Path, metric: str) -> None:
        self.path, self.metric = path, metric
        self.offset = path.stat().st_size if path.exists() else 0
        self.progress = Progress()

    def poll(self) -> Progress:
        if not self.path.exists():
            return self.progress
        with open(self.path, encoding="utf-8") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete, _, _ = chunk.rpartition("\n")
        if not complete:
            return self.progress
        self.offset += len(complete.encode("utf-8")) + 1
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") in ("iter", "start"):
                self.progress.grad_evals = int(event.get("grad_evals") or 0)
                if event.get("event") == "start":
                    self.progress.started_at_evals = self.progress.grad_evals
                self.progress.iteration = int(event.get("iter") or 0)
                self.progress.train_s = float(event.get("train_s") or 0.0)
            elif event.get("event") == "test":
                value = event.get("outputs", {}).get(self.metric)
                if isinstance(value, (int, float)):
                    self.progress.last_accuracy = float(value)
        return self.progress


def command(spec: RunSpec, solver_path: Path, resume: Path | None, fresh: bool) -> list[str]:
    """The `isgd train` command line of the run (under mpiexec when it has several ranks)."""
    args = [
        "-m",
        "solvers",
        "train",
        "-solver",
        _relative(solver_path),
        "-json_log",
        _relative(spec.log_path),
        "-no_progress",
        "-sigint_effect",
        "stop",
    ]
    if resume is not None:
        args += ["-snapshot", _relative(resume)]
    elif fresh:
        args.append("-overwrite_log")
    if spec.ranks <= 1:
        return [sys.executable, *args]
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    gpu = ["-gpu", "all"] if _gpus_visible() else []
    return [mpiexec, "-n", str(spec.ranks), sys.executable, "-m", "mpi4py", *args, *gpu]


def _gpus_visible() -> bool:

    return visible_gpu_count() > 0


def run(
    spec: RunSpec,
    say: Callable[[str], None],
    show: Callable[[Progress], None],
    threads: int | None = None,
) -> RunLog:
    """Bring the run to its end: skip it when done, resume it when started, else start it.

    Returns its log. Raises RunError (naming the folder and the text log) when training fails,
    KeyboardInterrupt after the child has stopped and snapshotted on Ctrl-C.
    """
    _, solver_path = write_run_files(spec)  # refuses a folder made with other settings
    state, log = status(spec)
    if state == "done":
        assert log is not None
        return log
    resume = newest_snapshot(spec.folder, say) if state == "partial" else None
    if state == "partial":
        if resume is None:
            say(f"{spec.label}: started before but left no readable snapshot; starting it again")
        else:
            say(f"{spec.label}: resuming from {_relative(resume)}")
    cmd = command(spec, solver_path, resume, fresh=resume is None)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads or (1 if spec.ranks > 1 else 2)))
    if spec.ranks > 1:
        env["OMP_NUM_THREADS"] = "1"
    follower = LogFollower(spec.log_path, spec.plan.dataset.metric)
    with open(spec.folder / "train.log", "a", encoding="utf-8") as text:
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=text, stderr=subprocess.STDOUT)
        try:
            while child.poll() is None:
                show(follower.poll())
                time.sleep(0.5)
        except KeyboardInterrupt:
            # The child got the same SIGINT: it snapshots and stops (-sigint_effect stop).
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGTERM)
                child.wait()
            raise
    show(follower.poll())
    if child.returncode != 0:
        raise RunError(
            f"{spec.label}: `{' '.join(cmd)}` failed with status {child.returncode}; see "
            f"{_relative(spec.folder / 'train.log')} (the run resumes from its last snapshot "
            "when you start the command again)"
        )
    try:
        log = read_run_log(spec.log_path)
    except RunLogError as exc:
        raise RunError(str(exc)) from None
    if not log.finished:
        raise RunError(f"{spec.label}: training stopped before its budget; see train.log")
    return log
