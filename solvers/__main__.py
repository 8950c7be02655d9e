"""`python -m solvers <command> ...`: the same command line as the `isgd` script."""

import sys

from solvers.cli import main

sys.exit(main())
