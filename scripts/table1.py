"""`make table1`: rebuild Table 1's files (table1.md, table1.csv, table1_runs.csv, ladder.csv,
their figures) from the logs of the profile's finished runs, without training.

    python -m scripts.table1 [--profile default] [--datasets mnist]     (also `make table1`)
"""

from __future__ import annotations

import argparse
import sys

from scripts.profiles import ProfileError
from scripts.runs import RunError
from scripts.table1_report import TableError, build
from solvers.run_log import RunLogError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument("--datasets", default="", help="comma-separated (default: the profile's)")
    args = parser.parse_args(argv)
    try:
        build(args.profile, [d for d in args.datasets.split(",") if d] or None)
    except (ProfileError, RunLogError, RunError, TableError) as exc:
        print(f"table1: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"table1: cannot write the tables: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
