"""`make reproduce-table1`: prepare the data, run every seed of a profile's arms, build Table 1.

    python -m scripts.reproduce [--profile default] [--datasets mnist,cifar10] [--runs N]

Runs go to results/runs/<profile>/table1/<dataset>/<arm>-seed<k>/, one per seed and arm of the
profile (`arms`, default SGD and ISGD; see scripts/profiles.toml). A finished run is never
redone; an interrupted one resumes from its newest snapshot; Ctrl-C leaves everything resumable
(run the same command again). Progress: runs done / total, the current run's position and last
test accuracy, and an ETA for the whole profile.
"""

from __future__ import annotations

import argparse
import sys
import time

from scripts.profiles import load_profile
from scripts.runner import (
    Display,
    TrainingSession,
    add_runner_arguments,
    ensure_data,
    guarded,
    runner_options,
)
from scripts.runs import table1_specs
from scripts.table1_report import build as build_table1


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
        specs = [spec for group in table1_specs(profile, overrides).values() for spec in group]
        with TrainingSession(profile.name, "table1", display, runner_options(args, profile)) as s:
            s.run(specs)
        build_table1(profile.name, list(profile.plans), say=display.say)
        display.say(f"profile {profile.name} done in {(time.monotonic() - started) / 60:.1f} min")
        return 0

    return guarded("reproduce-table1", body)


if __name__ == "__main__":
    sys.exit(main())
