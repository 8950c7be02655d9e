"""Small programs the MPI tests run under mpiexec, and the helper that launches them."""
