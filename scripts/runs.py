"""One experiment run: its folder, its generated net and solver files, and running it to the end.

A run lives in results/runs/<profile>/<group>/<dataset>/<name>/ with `net.prototxt` and
`solver.prototxt` (made from prototxt/ with the profile's batch, budget, test cadence and seed),
`log.jsonl` (the run's JSON log, the only input of tables and figures), `train.log` (Caffe's text
log) and snapshots. `isgd train` runs in a child process from the repository root; a finished run
is skipped, an interrupted one resumes from its newest readable snapshot.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from engine.lmdb_reader import LmdbReader
from engine.proto import caffe_pb2
from engine.proto_io import message_to_text, read_net_param, read_solver_param
from scripts.profiles import ROOT, Plan, Profile, ProfileError, results_dir
from scripts.run_identity import (
    IDENTITY_FILE,
    first_difference,
    read_identity,
    source_fingerprint,
    text_digest,
    write_identity,
)
from scripts.run_identity import VERSION as IDENTITY_VERSION
from solvers.launch import visible_gpu_count
from solvers.run_log import RunLog, RunLogError, read_run_log
from solvers.signals import process_alive, set_parent_death_signal
from solvers.snapshot import verify as verify_snapshot

RUNS_DIR = Path(os.environ.get("ISGD_RUNS_DIR") or ROOT / "results" / "runs")  # where runs live
TEST_BATCH = 100  # the largest test batch; test_iter * batch covers the whole test set
_TRAIN, _TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


IMAGENET_ENV = ("IMAGENET_TRAIN", "IMAGENET_VAL", "IMAGENET_MEAN")


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
    test_interval_evals: int | None = None
    isgd: dict[str, Any] = field(default_factory=dict)
    lr_scale: float | None = None  # base_lr (and loss-band lrs) times this (the lr sweep)
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
        seconds, evals = test_cadence(spec)  # exactly one cadence, whatever the solver file had
        solver.test_interval_grad_evals = evals
        solver.test_interval_seconds = seconds
        solver.test_initialization = True
    else:
        solver.test_interval_seconds = 0
    solver.display = spec.plan.display
    solver.snapshot = spec.plan.snapshot_every
    solver.snapshot_prefix = _relative(spec.folder / "snap")
    solver.solver_mode = caffe_pb2.SolverParameter.CPU
    for key, value in spec.isgd.items():
        setattr(solver.isgd_param, key, value)
    if spec.lr_scale is not None:
        solver.base_lr = solver.base_lr * spec.lr_scale
        bands = list(solver.loss_bands.lr)
        if bands:
            del solver.loss_bands.lr[:]
            solver.loss_bands.lr.extend(v * spec.lr_scale for v in bands)
    header = (
        f"# Generated by scripts/runs.py for profile '{spec.profile}', {spec.label}, from "
        f"{solver_file}.\n"
    )
    return message_to_text(net), header + message_to_text(solver)


def test_cadence(spec: RunSpec) -> tuple[float, int]:
    """(seconds, gradient evaluations) between tests: the spec's own, else its plan's; one is 0."""
    if spec.test_interval_evals:
        return 0.0, int(spec.test_interval_evals)
    if spec.test_interval_seconds:
        return float(spec.test_interval_seconds), 0
    if spec.plan.test_interval_evals:
        return 0.0, int(spec.plan.test_interval_evals)
    return float(spec.plan.test_interval_seconds), 0


def data_sources(net_text: str) -> list[str]:
    """The LMDBs and mean files a generated net reads (paths as written in it)."""
    net = caffe_pb2.NetParameter()
    text_format.Parse(net_text, net)
    found = []
    for layer in net.layer:
        if layer.HasField("data_param") and layer.data_param.source:
            found.append(layer.data_param.source)
        if layer.transform_param.mean_file:
            found.append(layer.transform_param.mean_file)
    return list(dict.fromkeys(found))


def run_identity(spec: RunSpec, net_text: str, solver_text: str) -> dict[str, Any]:
    """Everything that defines the run (see scripts/run_identity.py)."""
    seconds, evals = test_cadence(spec)
    data = {}
    for source in data_sources(net_text):
        path = Path(source) if Path(source).is_absolute() else ROOT / source
        data[source] = source_fingerprint(path)
    return {
        "version": IDENTITY_VERSION,
        "profile": spec.profile,
        "group": spec.group,
        "dataset": spec.dataset,
        "arm": spec.arm,
        "solver_arm": spec.solver_arm or spec.arm,
        "tag": spec.tag,
        "seed": spec.seed,
        "ranks": spec.ranks,
        "settings": {
            **spec.plan.identity(),
            "batch_size": spec.batch,
            "budget_grad_evals": spec.budget,
            "test_interval_seconds": seconds,
            "test_interval_evals": evals,
            "test": spec.test,
            "isgd": dict(sorted(spec.isgd.items())),
            **({} if spec.lr_scale is None else {"lr_scale": spec.lr_scale}),
        },
        "solver_sha256": text_digest(solver_text),
        "net_sha256": text_digest(net_text),
        "data": data,
    }


def _first_text_difference(old: str, new: str) -> str:
    for a, b in zip(old.splitlines(), new.splitlines(), strict=False):
        if a != b:
            return f"'{a.strip()}' now '{b.strip()}'"
    return "a different length"


def _holds_a_run(folder: Path) -> bool:
    """A folder with a snapshot or a finished log: something a reuse or resume would build on
    (a started log without a snapshot is trained again from the start)."""
    if any(folder.glob("snap_iter_*")):
        return True
    try:
        return read_run_log(folder / "log.jsonl").finished
    except RunLogError:
        return False


def move_aside(spec: RunSpec) -> Path:
    """Move a run folder to results/runs/<profile>/stale/ (never deleted), stamped with the time."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = RUNS_DIR / spec.profile / "stale" / spec.group / spec.dataset / f"{spec.name}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(spec.folder), str(target))
    return target


def stale_problem(spec: RunSpec) -> str | None:
    """Why the run folder cannot be reused or resumed under the current profile and data (its
    first differing line), or None when it matches (or holds no run yet)."""
    if not (spec.folder.exists() and _holds_a_run(spec.folder)):
        return None
    net_text, solver_text = render_run_files(spec)
    return _problem(spec, net_text, solver_text, run_identity(spec, net_text, solver_text))


def _problem(
    spec: RunSpec, net_text: str, solver_text: str, identity: dict[str, Any]
) -> str | None:
    """The first line where a folder holding a run differs from what the profile makes now."""
    for name, text in (("net.prototxt", net_text), ("solver.prototxt", solver_text)):
        path = spec.folder / name
        if path.exists() and path.read_text() != text:
            return f"{name}: {_first_text_difference(path.read_text(), text)}"
    recorded = read_identity(spec.folder)
    if recorded is None:
        return "it was made before run identities were recorded (no identity.json)"
    difference = first_difference(recorded, identity)
    return None if difference is None else f"{IDENTITY_FILE}: {difference}"


def write_run_files(
    spec: RunSpec, redo_changed: bool = False, say: Callable[[str], None] = print
) -> tuple[Path, Path]:
    """Write net.prototxt, solver.prototxt and identity.json. A folder made with other settings
    or data is refused, naming its first differing line (with `redo_changed`, moved aside to
    results/runs/<profile>/stale/ and started afresh)."""
    net_text, solver_text = render_run_files(spec)
    identity = run_identity(spec, net_text, solver_text)
    holds = spec.folder.exists() and _holds_a_run(spec.folder)
    problem = _problem(spec, net_text, solver_text, identity) if holds else None
    if problem is not None:
        if not redo_changed:
            raise RunError(
                f"{_relative(spec.folder)} was made with other settings or data ({problem}); it "
                "cannot be continued or reused under the current profile. Move the folder away, "
                "or run again with --redo-changed (make ... REDO=1) to move it to "
                f"{_relative(RUNS_DIR / spec.profile / 'stale')}/ and train it afresh."
            )
        moved = move_aside(spec)
        say(
            f"{spec.label}: made with other settings or data ({problem}); moved to "
            f"{_relative(moved)}, training it afresh"
        )
    spec.folder.mkdir(parents=True, exist_ok=True)
    paths = (spec.folder / "net.prototxt", spec.folder / "solver.prototxt")
    for path, text in zip(paths, (net_text, solver_text), strict=True):
        path.write_text(text)
    write_identity(spec.folder, identity)
    return paths


def sessions_file(profile: str) -> Path:
    """Where each command that trained a profile's runs notes its session (wall time, load):
    beside the profile's tables, so it is committed with them and outlives the run folders."""
    return results_dir(profile) / "sessions.jsonl"


def legacy_sessions_file(profile: str) -> Path:
    """Where sessions of Table 1 were noted before (inside the untracked run folders)."""
    return RUNS_DIR / profile / "table1" / "sessions.jsonl"


def arm_spec(
    profile: Profile,
    plan: Plan,
    arm: str,
    seed: int,
    group: str = "table1",
    **settings: Any,
) -> RunSpec:
    """The one way a run is specified: `arm` (by name, from the profiles file's [arms]: its
    prototxt/ solver and isgd_param switches) on `plan` with `seed`, in `group`; `settings` are
    RunSpec fields (tag, batch_size, budget_grad_evals, train_source, test, ...; `isgd` adds to
    the arm's switches). Ranks: the profile's unless given."""
    chosen = profile.arm(arm)
    isgd = {**chosen.isgd, **settings.pop("isgd", {})}
    settings.setdefault("ranks", profile.ranks)
    return RunSpec(
        profile=profile.name,
        group=group,
        plan=plan,
        arm=arm,
        seed=seed,
        solver_arm="" if chosen.solver == arm else chosen.solver,
        isgd=isgd,
        **settings,
    )


def table1_spec(
    profile: Profile, plan: Plan, arm: str, seed: int, sources: dict[str, str]
) -> RunSpec:
    """The Table 1 run of one arm and seed (sources: ImageNet's LMDBs from the environment)."""
    return arm_spec(profile, plan, arm, seed, **sources)


def table1_specs(
    profile: Profile, sources: dict[str, dict[str, str]] | None = None
) -> dict[str, list[RunSpec]]:
    """The profile's Table 1 runs per dataset: per seed, each of its arms (the order in which
    they train alternates with the seed, so slow drifts of the machine hit every arm alike)."""
    sources = sources or {}
    return {
        name: [
            table1_spec(profile, plan, arm, seed, sources.get(name, {}))
            for seed in profile.seeds_of(name)
            for arm in (profile.arms if seed % 2 else tuple(reversed(profile.arms)))
        ]
        for name, plan in profile.plans.items()
    }


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
            verify_snapshot(str(state_path))  # parses both files and checks their checksums
        except Exception as exc:  # any unreadable snapshot is skipped, named
            say(f"{_relative(state_path)}: unreadable snapshot ({exc}); trying an older one")
            continue
        return state_path
    return None


def status(spec: RunSpec) -> tuple[str, RunLog | None]:
    """("done", log) for a finished run, ("partial", log|None) for a started one, ("new", None).

    A folder whose log is missing or empty but which holds snapshots, or whose log says it
    finished with no gradient evaluation, is refused (RunError) with what to do."""
    has_snapshots = spec.folder.exists() and any(spec.folder.glob("snap_iter_*"))
    log = None
    if spec.log_path.exists():
        log = read_run_log(spec.log_path)
    if log is None or not log.events:
        if has_snapshots:
            what = "has no log.jsonl" if log is None else "has an empty log.jsonl"
            raise RunError(
                f"{_relative(spec.folder)} {what} but holds snapshots: its results cannot be "
                "rebuilt. Run again with --redo-changed (make ... REDO=1) to move it to "
                f"{_relative(RUNS_DIR / spec.profile / 'stale')}/ and train it afresh"
            )
        return "new", None
    if log.finished and not any(int(e.get("grad_evals") or 0) > 0 for e in log.of("iter")):
        raise RunError(
            f"{_relative(spec.log_path)} says the run finished without a gradient evaluation; "
            "run again with --redo-changed (make ... REDO=1) to train it afresh"
        )
    return ("done" if log.finished else "partial"), log


def imagenet_sources(mean_default: str | None = None) -> dict[str, str] | None:
    """LMDB paths for the ImageNet row from IMAGENET_TRAIN / IMAGENET_VAL (/ IMAGENET_MEAN),
    checked at start-up: each an LMDB holding records, the mean file present (the variable's,
    else `mean_default` under the repository)."""
    train, val, mean = (os.environ.get(k, "") for k in IMAGENET_ENV)
    if not train and not val:
        return None
    if not (train and val):
        raise ProfileError("ImageNet needs both IMAGENET_TRAIN and IMAGENET_VAL (LMDB folders)")
    for name, path in (("IMAGENET_TRAIN", train), ("IMAGENET_VAL", val)):
        if not Path(path).is_dir():
            raise ProfileError(f"{name}={path}: not an LMDB folder")
        if not (Path(path) / "data.mdb").is_file():
            raise ProfileError(
                f"{name}={path}: no data.mdb in it (make one with isgd data convert_imageset)"
            )
        try:
            records = _lmdb_records(path)
        except Exception as exc:  # lmdb's errors vary by version; name the variable
            raise ProfileError(f"{name}={path}: not a readable LMDB ({exc})") from None
        if records == 0:
            raise ProfileError(f"{name}={path}: the LMDB holds no records")
    sources = {"train_source": train, "test_source": val}
    if mean:
        if not Path(mean).is_file():
            raise ProfileError(f"IMAGENET_MEAN={mean}: no such file")
        sources["mean_file"] = mean
    elif mean_default and not (ROOT / mean_default).is_file():
        raise ProfileError(
            f"IMAGENET_MEAN is not set and the default mean {mean_default} does not exist: "
            "make it with isgd data compute_image_mean and set IMAGENET_MEAN"
        )
    return sources


def _lmdb_records(path: str) -> int:
    import lmdb

    env = lmdb.open(path, readonly=True, lock=False, subdir=True)
    try:
        return int(env.stat()["entries"])
    finally:
        env.close()


@contextmanager
def table_lock(profile: str) -> Iterator[None]:
    """One table writer per profile at a time (a second waits): tables are rebuilt whole."""
    folder = RUNS_DIR / profile
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".tables.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def finished_log(spec: RunSpec) -> RunLog | None:
    """The log of a finished run that still matches the profile and its data; None when not
    finished; RunError when the folder was made with other settings or data (never reused)."""
    state, log = status(spec)
    if state != "done" or log is None:
        return None
    refuse_if_stale(spec)
    return log


def refuse_if_stale(spec: RunSpec) -> None:
    """RunError when a finished run's folder was made with other settings or data."""
    problem = stale_problem(spec)
    if problem is not None:
        raise RunError(
            f"{_relative(spec.folder)} was made with other settings or data ({problem}): "
            "refused. Rerun with REDO=1 (--redo-changed) to move it to stale/ and train it afresh."
        )


# ------------------------------------------------------------------ one trainer per folder


class RunBusy(RunError):
    """The run folder is being trained by another live process."""


class RunLock:
    """An exclusive lock on a run folder (flock on `.lock`), held by the runner and inherited
    by the trainer it starts, so a folder is never trained by two processes at once. The file
    names the holder; the kernel drops the lock when every holder has exited."""

    def __init__(self, folder: Path, say: Callable[[str], None], wait: bool = False) -> None:
        self.folder, self.say, self.wait = folder, say, wait
        self.path = folder / ".lock"
        self.fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, json.JSONDecodeError):
            return {}
        return value if isinstance(value, dict) else {}

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            who = f"pid {holder.get('pid', '?')}"
            if holder.get("trainer_pid"):
                who += f" (trainer pid {holder['trainer_pid']})"
            if not self.wait:
                os.close(fd)
                raise RunBusy(
                    f"{_relative(self.folder)} is being trained by {who} since "
                    f"{holder.get('since', '?')}; wait for it to end or stop it (--wait waits)"
                ) from None
            self.say(f"{_relative(self.folder)} is being trained by {who}: waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        previous = self._holder()
        if previous.get("pid") and not process_alive(int(previous["pid"])):
            self.say(
                f"{_relative(self.folder)}: taking over the lock left by pid {previous['pid']} "
                "(no longer running)"
            )
        self.fd = fd
        self.note()
        return self

    def note(self, trainer_pid: int | None = None) -> None:
        """Write who holds the lock (the runner, and its trainer once started)."""
        assert self.fd is not None
        value = {"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        if trainer_pid:
            value["trainer_pid"] = trainer_pid
        data = json.dumps(value).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the trainer's inherited copy (if still running) keeps it held
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


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


# What the trainer is told so that it never outlives its runner: SIGHUP and SIGTERM stop it at a
# snapshot as Ctrl-C does, and so does the death of its parent.
TRAINER_SAFETY = [
    "-sigint_effect",
    "stop",
    "-sighup_effect",
    "stop",
    "-sigterm_effect",
    "stop",
    "-stop_with_parent",
]
INTERRUPTED = 130  # the trainer's (and the runner's) exit status after a stop on a signal


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
        *TRAINER_SAFETY,
        "-parent_pid",  # the runner, also under mpiexec (whose ranks' parent is its proxy)
        str(os.getpid()),
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


class Interrupted(KeyboardInterrupt):
    """The runner was asked to stop (Ctrl-C, SIGTERM, SIGHUP): runs stop at a snapshot."""


class TrainingJob:
    """One run's trainer as a child process: started, polled for progress, then finished."""

    def __init__(
        self,
        spec: RunSpec,
        say: Callable[[str], None],
        threads: int | None = None,
        core: int | None = None,
        redo_changed: bool = False,
        wait: bool = False,
    ) -> None:
        self.spec, self.say, self.threads, self.core = spec, say, threads, core
        self.redo_changed, self.wait = redo_changed, wait
        self.child: subprocess.Popen[bytes] | None = None
        self.lock: RunLock | None = None
        self.log: RunLog | None = None  # set when the run is already done
        self.follower = LogFollower(spec.log_path, spec.plan.dataset.metric)
        self.cmd: list[str] = []

    def start(self) -> bool:
        """Lock the folder, check it, and start the trainer; False when the run is already done
        (its log in `self.log`)."""
        spec = self.spec
        self.lock = RunLock(spec.folder, self.say, self.wait).acquire()
        try:
            _, solver_path = write_run_files(spec, self.redo_changed, self.say)
            try:
                state, log = status(spec)
            except RunError:
                if not self.redo_changed:
                    raise
                self.say(f"{spec.label}: moved to {_relative(move_aside(spec))}; training afresh")
                self.lock.release()
                self.lock = RunLock(spec.folder, self.say, self.wait).acquire()
                _, solver_path = write_run_files(spec, False, self.say)
                state, log = "new", None
            if state == "done":
                self.log = log
                self.lock.release()
                return False
            resume = newest_snapshot(spec.folder, self.say) if state == "partial" else None
            if state == "partial":
                if resume is None:
                    self.say(
                        f"{spec.label}: started before but left no readable snapshot; "
                        "starting it again"
                    )
                else:
                    self.say(f"{spec.label}: resuming from {_relative(resume)}")
            self.cmd = command(spec, solver_path, resume, fresh=resume is None)
            self.follower = LogFollower(spec.log_path, spec.plan.dataset.metric)
            env = dict(os.environ)
            env.setdefault("OMP_NUM_THREADS", str(self.threads or (1 if spec.ranks > 1 else 2)))
            if self.threads:
                env["OMP_NUM_THREADS"] = str(self.threads)
            if spec.ranks > 1:
                env["OMP_NUM_THREADS"] = "1"
            core = self.core

            under_mpi = spec.ranks > 1

            def prepare_child() -> None:
                if core is not None and hasattr(os, "sched_setaffinity"):
                    cores = sorted(os.sched_getaffinity(0))  # one core per trainer side by side
                    os.sched_setaffinity(0, {cores[core % len(cores)]})
                if under_mpi:  # mpiexec gets SIGTERM (which it forwards) when the runner dies
                    set_parent_death_signal(signal.SIGTERM)

            with open(spec.folder / "train.log", "a", encoding="utf-8") as text:
                self.child = subprocess.Popen(
                    self.cmd,
                    cwd=ROOT,
                    env=env,
                    stdout=text,
                    stderr=subprocess.STDOUT,
                    pass_fds=(self.lock.fd,) if self.lock.fd is not None else (),
                    preexec_fn=prepare_child if (core is not None or under_mpi) else None,
                    # mpiexec (Hydra) does not catch SIGHUP: in a session of its own a closed
                    # terminal reaches it only through the runner, which stops it with SIGTERM
                    start_new_session=under_mpi,
                )
            self.lock.note(self.child.pid)
            return True
        except BaseException:
            if self.child is None and self.lock is not None:
                self.lock.release()
            raise

    def poll(self) -> Progress:
        return self.follower.poll()

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def stop(self, timeout: float = 120.0) -> None:
        """Ask the trainer to stop at a snapshot (SIGTERM; a signal to the terminal's group has
        already reached it) and wait; kill it only if it does not stop in `timeout` seconds."""
        if self.child is None:
            return
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                self.child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        if self.lock is not None:
            self.lock.release()

    def finish(self) -> RunLog:
        """The finished run's log; Interrupted when its trainer stopped on a signal, RunError
        (naming the folder and the text log) when training failed."""
        spec = self.spec
        if self.log is not None:
            return self.log
        assert self.child is not None
        code = self.child.wait()
        self.poll()
        if self.lock is not None:
            self.lock.release()
        if code in (INTERRUPTED, -signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP):
            raise Interrupted(f"{spec.label}: its trainer was stopped by a signal")
        if code != 0:
            raise RunError(
                f"{spec.label}: `{' '.join(self.cmd)}` failed with status {code}; see "
                f"{_relative(spec.folder / 'train.log')} (the run resumes from its last "
                "snapshot when you start the command again)"
            )
        try:
            log = read_run_log(spec.log_path)
        except RunLogError as exc:
            raise RunError(str(exc)) from None
        if not log.finished:
            raise RunError(f"{spec.label}: training stopped before its budget; see train.log")
        return log


def wait_for_any(jobs: Iterable[TrainingJob], seconds: float) -> None:
    """Wait up to `seconds`, less when one of `jobs` ends first (the runner goes on at once)."""
    jobs = list(jobs)
    end = time.monotonic() + seconds
    while all(job.running for job in jobs) and time.monotonic() < end:
        time.sleep(0.02)


def run(
    spec: RunSpec,
    say: Callable[[str], None],
    show: Callable[[Progress], None],
    threads: int | None = None,
    redo_changed: bool = False,
) -> RunLog:
    """Bring the run to its end: skip it when done, resume it when started, else start it.

    Returns its log. Raises RunError (naming the folder and the text log) when training fails,
    Interrupted (a KeyboardInterrupt) after the child has stopped and snapshotted on a signal.
    """
    job = TrainingJob(spec, say, threads, redo_changed=redo_changed)
    if not job.start():
        assert job.log is not None
        return job.log
    try:
        while job.running:
            show(job.poll())
            wait_for_any([job], 0.5)
    except KeyboardInterrupt:
        job.stop()
        raise
    show(job.poll())
    return job.finish()
