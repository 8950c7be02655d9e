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

from data_tools.prepare import check_known_lmdb, prepare
from scripts.profiles import ROOT, Profile, ProfileError, load_profile
from scripts.runner import Display, Eta, guarded, record_session, run_all
from scripts.runs import RunSpec, imagenet_sources, sessions_file, table1_spec
from scripts.table1 import build as build_table1

__all__ = ["Display", "Eta", "guarded", "run_all", "main", "plan_runs", "table1_spec"]

ARMS = ("sgd", "isgd")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default", help="smoke, default or paper")
    parser.add_argument("--datasets", default="", help="comma-separated (default: the profile's)")
    parser.add_argument("--runs", type=int, default=None, help="pairs per dataset")
    add_runner_arguments(parser)
    args = parser.parse_args(argv)
    started = time.monotonic()

    def body(display: Display) -> int:
        profile = load_profile(
            args.profile, [d for d in args.datasets.split(",") if d] or None, args.runs
        )
        display.say(f"profile {profile.name}: {profile.about}")
        overrides = ensure_data(profile, display.say)
        options = runner_options(args, profile)
        load_before, began = os.getloadavg()[0], time.monotonic()
        display.say(
            f"machine load before training: {load_before:.2f} (1-min average, {os.cpu_count()} "
            "cores); committed results are measured with nothing else running"
        )
        trained = run_all(plan_runs(profile, overrides), display, **options)
        record_session(
            sessions_file(profile.name), began, load_before, trained, int(options["jobs"])
        )
        build_table1(profile.name, list(profile.plans), say=display.say)
        display.say(f"profile {profile.name} done in {(time.monotonic() - started) / 60:.1f} min")
        return 0

    return guarded("reproduce-table1", body)


if __name__ == "__main__":
    sys.exit(main())
