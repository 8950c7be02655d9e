"""SerialComm: the one-process Comm every solver step goes through."""

from __future__ import annotations

import numpy as np

from solvers.comm import Comm, SerialComm


def test_serial_comm_is_a_comm_and_every_collective_is_identity() -> None:
    comm = SerialComm()
    assert isinstance(comm, Comm)
    assert (comm.rank, comm.size, comm.is_master) == (0, 1, True)
    a = np.arange(4, dtype=np.float32)
    comm.bcast(a)
    comm.reduce_sum(a)
    comm.allreduce_sum(a)
    np.testing.assert_array_equal(a, [0, 1, 2, 3])
    decision = {"alg2": True}
    assert comm.bcast_object(decision) is decision
    comm.barrier()
