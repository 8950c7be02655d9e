"""Fails on purpose on one rank (argv: mode, failing rank[, solver pattern]); the job must end.

Modes: raise (an exception while the others wait in a collective), exit (sys.exit(3)), kill
(SIGKILL, as the OOM killer would), mismatch (rank's solver file differs: refused at start-up).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from solvers.launch import (
    abort_on_error,
    check_same_inputs,
    get_comm,
    input_fingerprints,
    rank_table,
)


def main() -> None:
    mode, bad = sys.argv[1], int(sys.argv[2])
    comm = get_comm()
    if mode == "mismatch":
        solver = sys.argv[3].format(rank=comm.rank)
        check_same_inputs(comm, input_fingerprints(solver))
        print(f"rank {comm.rank}: inputs agree", flush=True)
        return
    table = rank_table(comm)
    if comm.is_master:
        print(table, flush=True)
    grads = np.ones(1 << 12, np.float32)
    for _ in range(3):
        comm.bcast(grads)
        comm.reduce_sum(grads)
    if comm.rank == bad:
        time.sleep(0.2)  # let the others block in the next collective first
        if mode == "raise":
            raise ValueError("injected failure on purpose")
        if mode == "exit":
            sys.exit(3)
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
    comm.reduce_sum(grads)
    comm.bcast(grads)
    print(f"rank {comm.rank}: finished (the failing rank did not fail?)", flush=True)


if __name__ == "__main__":
    with abort_on_error():
        main()
