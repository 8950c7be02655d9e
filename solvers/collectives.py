"""The Solver's collectives over ranks (Alg. 1 lines 9 and 11-12, the control messages) and its
side of Alg. 2 (`BatchRerun`, the `solvers.isgd.Alg2Ops` protocol) on top of them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from solvers.comm import Comm
from solvers.update_rules import normalize, param_views

f32 = np.float32


class Collectives:
    """One rank's collectives. Master/worker: the master broadcasts w and the gradient is
    reduced onto it; `allreduce`: every rank sums the gradient and applies the same update."""

    def __init__(self, comm: Comm, allreduce: bool = False) -> None:
        self.comm = comm
        self.allreduce = bool(allreduce) and comm.size > 1
        self.applies_updates = comm.is_master or self.allreduce
        self.control_seconds = 0.0  # time in control messages (apart from Eq. 21's t_comm)

    @property
    def elapsed(self) -> float:
        """Seconds spent in collectives so far, control messages included (0 for one rank)."""
        return float(self.comm.elapsed)

    def share_weights(self, flat_data: Any) -> None:
        """Alg. 1 line 9 (Alg. 2 line 8): the master's w on every rank; with allreduce every
        rank already holds the same w."""
        if not self.allreduce:
            self.comm.bcast(flat_data)

    def reduce(self, loss: np.float32, flat_diff: Any) -> np.float32:
        """Alg. 1 lines 11-12: reduce loss and gradient onto the ranks that update, as means
        over ranks."""
        if self.comm.size == 1:
            return loss
        buf = np.array([loss], np.float64)
        if self.allreduce:
            self.comm.allreduce_sum(buf)
            self.comm.allreduce_sum(flat_diff)
        else:
            self.comm.reduce_sum(buf)
            self.comm.reduce_sum(flat_diff)
        if self.applies_updates:
            flat_diff /= flat_diff.dtype.type(self.comm.size)
        return f32(buf[0] / self.comm.size)

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Float64 host `values` as their mean over ranks, in place (a collective when n > 1;
        the result is the global one on the ranks the reduction reaches)."""
        if self.comm.size > 1:
            if self.allreduce:
                self.comm.allreduce_sum(values)
            else:
                self.comm.reduce_sum(values)
            values /= self.comm.size
        return values

    def agree(self, value: Any) -> Any:
        """The master's `value` on every rank (a control message, timed apart from t_comm);
        what other ranks pass is ignored."""
        start = time.perf_counter()
        value = self.comm.bcast_object(value if self.comm.is_master else None)
        self.control_seconds += time.perf_counter() - start
        return value


class BatchRerun:
    """The Solver's side of Alg. 2 (solvers.isgd.Alg2Ops): re-run batch d_t with Alg. 1's
    collectives, agree on the master's flag, hand over the params."""

    def __init__(
        self,
        net: Any,
        collectives: Collectives,
        cursors: list[dict[str, Any]],
        passes: Callable[[], np.float32],
        iter_size: int,
    ) -> None:
        """`cursors`: where batch d_t starts; `passes`: the Solver's iter_size forward/backward
        passes on param diffs just cleared (counted as one gradient evaluation)."""
        self.net = net
        self.collectives = collectives
        self.cursors = cursors
        self.passes = passes
        self.iter_size = int(iter_size)
        self.updates = collectives.applies_updates

    def rerun_batch(self) -> float:
        self.collectives.share_weights(self.net.flat_data)  # Alg. 2 line 8 (last step's w)
        self.net.set_data_cursors(self.cursors)  # the same batch d_t (reading 12)
        self.net.clear_param_diffs()
        return float(self.collectives.reduce(self.passes(), self.net.flat_diff))  # lines 4-6

    def agree(self, flag: bool) -> bool:
        return bool(self.collectives.agree(bool(flag)))

    def params(self, anchor: Any) -> list[tuple[Any, Any, Any, float]]:
        normalize(self.net.flat_diff, self.iter_size)
        anchors = param_views(anchor, self.net)
        return [
            (blob.data, blob.diff, anchors[i], float(self.net.params_lr[i]))
            for i, blob in enumerate(self.net.learnable_params)
        ]
