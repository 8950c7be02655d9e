"""`make reproduce-table1`: prepare the data, run every SGD/ISGD pair of a profile, build Table 1.

    python -m scripts.reproduce [--profile default] [--datasets mnist,cifar10] [--runs N]

Runs go to results/runs/<profile>/table1/<dataset>/<arm>-seed<k>/. A finished run is never
redone; an interrupted one resumes from its newest snapshot; Ctrl-C leaves everything resumable
(run the same command again). Progress: runs done / total, the current run's position and last
test accuracy, and an ETA for the whole profile.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_tools.prepare import check_known_lmdb, prepare
from engine.errors import DataError, EngineError
from scripts.profiles import ROOT, Plan, Profile, ProfileError, load_profile
from scripts.runs import Progress, RunError, RunSpec, run, status
from scripts.table1 import build as build_table1
from solvers.run_log import RunLog, RunLogError

ARMS = ("sgd", "isgd")
IMAGENET_ENV = ("IMAGENET_TRAIN", "IMAGENET_VAL", "IMAGENET_MEAN")


class Display:
    """One status line on a terminal (rewritten in place), else a line every 30 s."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
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

    def remaining(self, pending: list[RunSpec], current: RunSpec | None, done_evals: int) -> str:
        total = 0.0
        for spec in pending:
            rate = self.rate.get(spec.dataset)
            if rate is None:
                return f"ETA after the first {spec.dataset} run"
            evals = spec.budget - (done_evals if spec is current else 0)
            total += _images(spec, max(evals, 0)) * rate
        minutes = total / 60
        return f"ETA {minutes:.0f} min" if minutes >= 1 else f"ETA {total:.0f} s"


def imagenet_sources() -> dict[str, str] | None:
    """LMDB paths for the ImageNet row from IMAGENET_TRAIN / IMAGENET_VAL (/ IMAGENET_MEAN)."""
    train, val, mean = (os.environ.get(k, "") for k in IMAGENET_ENV)
    if not train and not val:
        return None
    if not (train and val):
        raise ProfileError("ImageNet needs both IMAGENET_TRAIN and IMAGENET_VAL (LMDB folders)")
    for name, path in (("IMAGENET_TRAIN", train), ("IMAGENET_VAL", val)):
        if not Path(path).is_dir():
            raise ProfileError(f"{name}={path}: not an LMDB folder")
    sources = {"train_source": train, "test_source": val}
    if mean:
        sources["mean_file"] = mean
    return sources


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
            sources = imagenet_sources()
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


def plan_runs(profile: Profile, overrides: dict[str, dict[str, str]]) -> list[RunSpec]:
    """Every run of the profile's Table 1: per dataset, per seed, both arms; the arm that goes
    first alternates with the seed, so slow drifts of the machine hit both arms alike."""
    specs = []
    for name, plan in profile.plans.items():
        for seed in profile.seeds_of(name):
            arms = ARMS if seed % 2 else tuple(reversed(ARMS))
            for arm in arms:
                specs.append(table1_spec(profile, plan, arm, seed, overrides.get(name, {})))
    return specs


def table1_spec(
    profile: Profile, plan: Plan, arm: str, seed: int, sources: dict[str, str]
) -> RunSpec:
    return RunSpec(
        profile=profile.name,
        group="table1",
        plan=plan,
        arm=arm,
        seed=seed,
        ranks=profile.ranks,
        **sources,
    )


def _status_line(
    display: Display, eta: Eta, count: str, spec: RunSpec, pending: list[RunSpec], started: float
) -> Callable[[Progress], None]:
    """The progress callback of one run: position, last test, ETA of the whole profile."""

    def show(p: Progress) -> None:
        if p.started_at_evals is None:
            return  # nothing from the child yet (a resumed run starts past iteration 0)
        if p.evals_this_process:
            eta.learn(spec, time.monotonic() - started, p.evals_this_process)
        acc = "—" if p.last_accuracy is None else f"{100 * p.last_accuracy:.2f} %"
        display.status(
            f"{count} {spec.label}: iter {p.iteration}, {p.grad_evals}/{spec.budget} grad evals, "
            f"{p.train_s:.0f} s trained, last test {acc} | "
            f"{eta.remaining(pending, spec, p.grad_evals)}"
        )

    return show


def run_all(specs: list[RunSpec], display: Display, eta: Eta | None = None) -> None:
    """Run every spec to its end, in order, with progress and an ETA."""
    eta = eta or Eta()
    total = len(specs)
    finished = []
    for spec in specs:  # each log read once; what is already done teaches the ETA
        state, log = status(spec)
        finished.append(state == "done")
        if state == "done" and log is not None and log.of("iter"):
            eta.learn(spec, log.wall_s, _last_grad_evals(log))
    done = sum(finished)
    for index, spec in enumerate(specs):
        if finished[index]:
            continue
        display.say(f"[{done + 1}/{total}] {spec.label}: training (log {spec.log_path.parent})")
        started = time.monotonic()
        pending = [s for s, f in zip(specs[index:], finished[index:], strict=True) if not f]
        show = _status_line(display, eta, f"[{done + 1}/{total}]", spec, pending, started)
        log = run(spec, display.say, show)
        finished[index] = True
        done += 1
        eta.learn(spec, log.wall_s, _last_grad_evals(log))
        display.say(f"[{done}/{total}] {spec.label}: done in {log.wall_s:.0f} s of wall time")


def _last_grad_evals(log: RunLog) -> int:
    """Gradient evaluations of a run's last iteration."""
    return int(log.of("iter")[-1].get("grad_evals", 0))


EXPECTED_ERRORS = (ProfileError, DataError, RunError, RunLogError, EngineError, OSError)


def guarded(command: str, body: Callable[[Display], int]) -> int:
    """Run an experiment command: bad input is one line naming the thing at fault, Ctrl-C one
    line saying that everything finished is kept and the same command continues."""
    display = Display()
    try:
        return body(display)
    except KeyboardInterrupt:
        display.say(
            "interrupted: finished runs are kept and the current one stopped at a snapshot; "
            "run the same command again to continue"
        )
        return 130
    except EXPECTED_ERRORS as exc:
        display.say(f"{command}: {exc}")
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default", help="smoke, default or paper")
    parser.add_argument("--datasets", default="", help="comma-separated (default: the profile's)")
    parser.add_argument("--runs", type=int, default=None, help="pairs per dataset")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def body(display: Display) -> int:
        profile = load_profile(
            args.profile, [d for d in args.datasets.split(",") if d] or None, args.runs
        )
        display.say(f"profile {profile.name}: {profile.about}")
        overrides = ensure_data(profile, display.say)
        run_all(plan_runs(profile, overrides), display)
        build_table1(profile.name, list(profile.plans), say=display.say)
        display.say(f"profile {profile.name} done in {(time.monotonic() - started) / 60:.1f} min")
        return 0

    return guarded("reproduce-table1", body)


if __name__ == "__main__":
    sys.exit(main())
