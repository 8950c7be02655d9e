"""`python -m solvers <command> ...`: the same command line as the `isgd` script."""

import sys

from solvers.cli import main
from solvers.launch import run_guarded

# Under mpiexec a failing rank ends the whole job (MPI_Abort) instead of leaving the others waiting.
sys.exit(run_guarded(main))
