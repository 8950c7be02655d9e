"""Running a list of experiment runs to their end: data, options, progress, ETA, concurrency,
signals.

The library of `make reproduce-table1`, `make figures` and the sweeps (no command imports
another). Runs train one at a time on all
cores, or `jobs` at a time with one core each (each trainer pinned to its own core with
OMP_NUM_THREADS=1). SIGTERM and SIGHUP stop the runner as Ctrl-C does: every trainer stops at a
snapshot and the same command continues later.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from data_tools.prepare import check_known_lmdb, prepare
from engine.errors import DataError, EngineError
from scripts.profiles import ROOT, Profile, ProfileError
from scripts.runs import (
    INTERRUPTED,
    Interrupted,
    Progress,
    RunError,
    RunSpec,
    TrainingJob,
    imagenet_sources,
    sessions_file,
    status,
    wait_for_any,
)
from solvers.run_log import RunLog, RunLogError


def ensure_data(
    profile: Profile, say: Callable[[str], None], extra: dict[str, tuple[str, ...]] | None = None
) -> dict[str, dict[str, str]]:
    """Build missing LMDBs (MNIST, CIFAR-10, and `extra`: data-tools set -> the paths it writes,
    e.g. Fig. 1's controlled sets) from the originals in $ISGD_DATA_DIR (downloaded with
    checksums when missing, unless ISGD_OFFLINE=1); ImageNet comes from the environment or its
    row is skipped. Returns per-dataset source overrides."""
    overrides: dict[str, dict[str, str]] = {}
    missing = [
        name
        for name, paths in (extra or {}).items()
        if not all((ROOT / path).exists() for path in paths)
    ]
    for name, plan in list(profile.plans.items()):
        if name == "imagenet":
            means = [p for p in plan.dataset.lmdbs if p.endswith(".binaryproto")]
            sources = imagenet_sources(means[0] if means else None)
            if sources is None:
                say(
                    "ImageNet row skipped: set IMAGENET_TRAIN and IMAGENET_VAL to LMDBs of "
                    "ILSVRC2012 (isgd data convert_imageset makes them from an image folder) "
                    "and IMAGENET_MEAN to its mean (isgd data compute_image_mean)"
                )
                del profile.plans[name]
                continue
            overrides[name] = sources
            continue
        for path in plan.dataset.lmdbs:
            full = ROOT / path
            check_known_lmdb(full)
            if not full.exists():
                missing.append(name)
                break
    if missing:
        say(f"preparing {', '.join(missing)} (data tools; originals from $ISGD_DATA_DIR)")
        online = os.environ.get("ISGD_OFFLINE", "").lower() not in ("1", "true", "yes")
        prepare(out=str(ROOT / "data"), only=tuple(missing), download=online, progress=False)
    return overrides


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options shared by reproduce-table1, figures and the sweeps."""
    parser.add_argument(
        "--jobs", type=int, default=None, help="runs at a time, one core each (default: profile's)"
    )
    parser.add_argument(
        "--redo-changed",
        action="store_true",
        help="move run folders made with other settings or data to results/runs/<profile>/stale/ "
        "and train them afresh (default: refuse them)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for a run another process is training"
    )


def runner_options(args: argparse.Namespace, profile: Profile) -> dict[str, object]:
    """run_all's keyword arguments from the command line and the profile."""
    jobs = profile.jobs if args.jobs is None else args.jobs
    if jobs < 1:
        raise ProfileError(f"--jobs {jobs}: must be >= 1")
    return {"jobs": jobs, "redo_changed": args.redo_changed, "wait": args.wait}


class Display:
    """One status line on a terminal (rewritten in place), else a line every 30 s."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_print = 0.0
        self.shown = False

    def say(self, message: str) -> None:
        self.clear()
        self.stream.write(message + "\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self.shown = True
        elif now - self.last_print >= 30.0:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_print = now

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.shown = False


def _images(spec: RunSpec, grad_evals: int) -> int:
    """Training images behind `grad_evals` passes of the run (all ranks)."""
    return grad_evals * spec.batch * max(spec.ranks, 1)


class Eta:
    """Wall seconds per training image, per dataset, learned from the runs as they go (per
    image, not per pass, so a run at batch 1000 does not inflate the estimate of one at 100)."""

    def __init__(self) -> None:
        self.rate: dict[str, float] = {}

    def learn(self, spec: RunSpec, wall_s: float, grad_evals: int) -> None:
        if grad_evals > 0 and wall_s > 0:
            self.rate[spec.dataset] = wall_s / _images(spec, grad_evals)

    def remaining(
        self, pending: list[RunSpec], current: RunSpec | None, done_evals: int, jobs: int = 1
    ) -> str:
        total = 0.0
        for spec in pending:
            rate = self.rate.get(spec.dataset)
            if rate is None:
                return f"ETA after the first {spec.dataset} run"
            evals = spec.budget - (done_evals if spec is current else 0)
            total += _images(spec, max(evals, 0)) * rate
        total /= max(jobs, 1)  # the rate was learned with the same number of runs side by side
        minutes = total / 60
        return f"ETA {minutes:.0f} min" if minutes >= 1 else f"ETA {total:.0f} s"


def _last_grad_evals(log: RunLog) -> int:
    """Gradient evaluations of a run's last iteration."""
    iters = log.of("iter")
    return int(iters[-1].get("grad_evals", 0)) if iters else 0


def progress_text(spec: RunSpec, p: Progress) -> str | None:
    """One run's part of the status line; None before its trainer has said anything (a resumed
    run starts past iteration 0, so no "iter 0" is shown for it)."""
    if p.started_at_evals is None:
        return None
    acc = "—" if p.last_accuracy is None else f"{100 * p.last_accuracy:.2f} %"
    return (
        f"{spec.label}: iter {p.iteration}, {p.grad_evals}/{spec.budget} grad evals, "
        f"{p.train_s:.0f} s trained, last test {acc}"
    )


@contextmanager
def stop_on_hangup_and_term() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Interrupted in the runner, as Ctrl-C raises KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_all(
    specs: list[RunSpec],
    display: Display,
    eta: Eta | None = None,
    jobs: int = 1,
    redo_changed: bool = False,
    wait: bool = False,
) -> int:
    """Run every spec to its end, in order, `jobs` at a time, with progress and an ETA.
    Returns how many runs this call trained (started or resumed)."""
    eta = eta or Eta()
    total = len(specs)
    finished = []
    for spec in specs:  # each log read once; what is already done teaches the ETA
        try:
            state, log = status(spec)
        except RunError:
            state, log = "partial", None  # refused or redone when its turn comes
        finished.append(state == "done")
        if state == "done" and log is not None and log.of("iter"):
            eta.learn(spec, log.wall_s, _last_grad_evals(log))
    done = sum(finished)
    queue = [i for i, f in enumerate(finished) if not f]
    cores = min(jobs, os.cpu_count() or 1)
    active: dict[int, tuple[TrainingJob, float, int]] = {}  # slot -> job, start, spec index
    trained = 0
    with stop_on_hangup_and_term():
        try:
            while queue or active:
                while queue and len(active) < max(cores, 1):
                    index = queue.pop(0)
                    spec = specs[index]
                    slot = next(s for s in range(max(cores, 1)) if s not in active)
                    job = TrainingJob(
                        spec,
                        display.say,
                        threads=1 if cores > 1 else None,
                        core=slot if cores > 1 else None,
                        redo_changed=redo_changed,
                        wait=wait,
                    )
                    if not job.start():  # finished meanwhile (another runner)
                        finished[index] = True
                        done += 1
                        continue
                    display.say(
                        f"[{done + len(active) + 1}/{total}] {spec.label}: training "
                        f"(log {spec.log_path.parent})"
                    )
                    active[slot] = (job, time.monotonic(), index)
                    trained += 1
                wait_for_any([job for job, _, _ in active.values()], 0.5)
                parts = []
                for slot, (job, started, index) in list(active.items()):
                    p = job.poll()
                    spec = job.spec
                    if p.started_at_evals is not None and p.evals_this_process:
                        eta.learn(spec, (time.monotonic() - started), p.evals_this_process)
                    text = progress_text(spec, p)
                    if text:
                        parts.append(text)
                    if job.running:
                        continue
                    log = job.finish()
                    del active[slot]
                    finished[index] = True
                    done += 1
                    eta.learn(spec, log.wall_s, _last_grad_evals(log))
                    display.say(
                        f"[{done}/{total}] {spec.label}: done in {log.wall_s:.0f} s of wall time"
                    )
                if parts:
                    pending = [specs[i] for i in queue] + [j.spec for j, _, _ in active.values()]
                    current = next(iter(active.values()))[0] if active else None
                    evals = current.poll().grad_evals if current else 0
                    ahead = eta.remaining(pending, current.spec if current else None, evals, cores)
                    display.status(f"[{done}/{total} done] " + " | ".join(parts) + f" | {ahead}")
        except BaseException:
            for job, _, _ in active.values():
                job.stop()
            raise
    return trained


def record_session(
    path: Path,
    started: float,
    load_before: float,
    trained: int,
    jobs: int,
    group: str = "table1",
) -> None:
    """Append one line on a runner session that trained runs of `group` (table1, figures,
    sweep, sweep_lr: when, wall time, machine load before and after, runs side by side) to
    `path` (JSON lines), for results/README.md."""
    if trained <= 0:
        return
    entry = {
        "group": group,
        "ended": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": round(time.monotonic() - started, 1),
        "runs_trained": trained,
        "jobs": jobs,
        "cores": os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


class TrainingSession:
    """One command's training of a profile's runs: says the machine's load first, counts the
    runs trained through it, and when it ends (`close`, or leaving its `with` block normally)
    notes the session (its group, wall time, load before and after) in the profile's sessions
    file, committed beside its tables."""

    def __init__(
        self, profile: str, group: str, display: Display, options: dict[str, Any]
    ) -> None:
        self.profile, self.group, self.display, self.options = profile, group, display, options
        self.jobs = int(options["jobs"])
        self.trained = 0
        self.load_before, self.began = os.getloadavg()[0], time.monotonic()
        display.say(
            f"machine load before training: {self.load_before:.2f} (1-min average, "
            f"{os.cpu_count()} cores); committed results are measured with nothing else running"
        )

    def run(self, specs: list[RunSpec]) -> int:
        """run_all with the command's options; returns how many runs it trained."""
        trained = run_all(specs, self.display, **self.options)
        self.trained += trained
        return trained

    def close(self) -> None:
        record_session(
            sessions_file(self.profile),
            self.began,
            self.load_before,
            self.trained,
            self.jobs,
            self.group,
        )

    def __enter__(self) -> TrainingSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:  # an interrupted or failed session is not noted (as before)
            self.close()


EXPECTED_ERRORS = (ProfileError, DataError, RunError, RunLogError, EngineError, OSError)


def guarded(command: str, body: Callable[[Display], int]) -> int:
    """Run an experiment command: bad input is one line naming the thing at fault; Ctrl-C,
    SIGTERM or SIGHUP one line saying that everything finished is kept and the same command
    continues (exit 130)."""
    display = Display()
    try:
        return body(display)
    except KeyboardInterrupt:
        display.say(
            "interrupted: finished runs are kept and the current one stopped at a snapshot; "
            "run the same command again to resume"
        )
        return INTERRUPTED
    except EXPECTED_ERRORS as exc:
        display.say(f"{command}: {exc}")
        return 1
