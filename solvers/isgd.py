"""Inconsistent SGD (paper section 4): loss-queue statistics (Alg. 1), subproblem step (Alg. 2).

Readings of the paper where its pseudo-code is ambiguous (each next to the line it implements):
- Alg. 1 lines 16-19 dequeue without enqueuing, yet line 19's mean adds the new loss: we read it as
  "replace the oldest loss with the new one", a window of the last n losses.
- Eq. 13-16 define the mean and sigma over the n losses *before* the current batch (i = 1..n) and
  test the current loss against that limit; Alg. 1 line 19 folds the current loss in first. Both are
  defensible, so `limit_includes_current` selects (default False: the equations' reading).
- w_{t-1} in Eq. 17/18 is the weight vector the batch's loss was measured at (Eq. 16 writes the
  loss as psi_{w_{t-1}}(d_t)), i.e. before Alg. 1 line 21's update; `anchor_after_update`
  selects the other reading (the weights Alg. 2 starts from).
- zeta = 0 means "the current learning rate", scaled by each param's lr_mult (`use_lr_mult`, so
  frozen params stay frozen); weight decay and momentum stay out of Eq. 17 (Alg. 2 is unchanged
  for the momentum variants, section 4.3).
- Alg. 2 line 3 tests psi > limit on the fresh loss of each inner pass before stepping, so a batch
  already under the limit is never pushed back up toward it.
The three switches are IsgdParameter fields 6-8 (limit_includes_current, anchor_after_update,
use_lr_mult).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class IsgdConfig:
    """ISGD's knobs, from SolverParameter.isgd_param (defaults as the paper recommends)."""

    control_limit: float = 3.0
    epsilon: float = 0.1
    stop: int = 5
    zeta: float = 0.0
    queue_size: int = 0
    limit_includes_current: bool = False
    anchor_after_update: bool = False
    use_lr_mult: bool = True

    @classmethod
    def from_proto(cls, p: Any) -> IsgdConfig:
        """Read an IsgdParameter; optional extension fields are used when the proto has them."""
        cfg = cls(
            control_limit=float(p.control_limit),
            epsilon=float(p.epsilon),
            stop=int(p.stop),
            zeta=float(p.zeta),
            queue_size=int(p.queue_size),
        )
        for name in ("limit_includes_current", "anchor_after_update", "use_lr_mult"):
            if hasattr(p, name) and p.HasField(name):
                setattr(cfg, name, bool(getattr(p, name)))
        if cfg.stop < 0:
            raise ValueError(f"isgd_param.stop must be >= 0, got {cfg.stop}")
        if cfg.queue_size < 0:
            raise ValueError(f"isgd_param.queue_size must be >= 0, got {cfg.queue_size}")
        return cfg


class LossQueue:
    """The last n batch losses with O(1) running mean and standard deviation (Eq. 13, 14).

    Sums are kept in float64 and recomputed exactly once per full turn of the ring (amortized O(1)),
    so rounding cannot drift over long runs.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"ISGD loss queue size must be >= 1, got {size}")
        self.size = int(size)
        self.values = np.zeros(self.size, np.float64)
        self.head = 0  # next slot to overwrite once full
        self.seen = 0  # losses pushed so far
        self.loss_sum = 0.0
        self.loss_sq_sum = 0.0

    @property
    def count(self) -> int:
        return min(self.seen, self.size)

    @property
    def full(self) -> bool:
        return self.seen >= self.size

    def push(self, loss: float) -> None:
        """Alg. 1 lines 13-19: append during the first epoch, then replace the oldest loss."""
        loss = float(loss)
        if self.full:
            old = self.values[self.head]
            self.loss_sum += loss - old
            self.loss_sq_sum += loss * loss - old * old
        else:
            self.loss_sum += loss
            self.loss_sq_sum += loss * loss
        self.values[self.head] = loss
        self.head = (self.head + 1) % self.size
        self.seen += 1
        if self.head == 0:  # one full turn: refresh the sums exactly
            self.loss_sum = float(self.values.sum())
            self.loss_sq_sum = float(np.dot(self.values, self.values))

    def mean(self) -> float:
        """Eq. 13: the average loss over the queue (0 while empty)."""
        n = self.count
        return self.loss_sum / n if n else 0.0

    def std(self) -> float:
        """Eq. 14: the population standard deviation over the queue."""
        n = self.count
        if n == 0:
            return 0.0
        mean = self.loss_sum / n
        return math.sqrt(max(self.loss_sq_sum / n - mean * mean, 0.0))

    def limit(self, k: float) -> float:
        """Eq. 15: the upper control limit mean + k * sigma."""
        return self.mean() + k * self.std()

    def to_proto(self, state: Any) -> None:
        """Write the queue into an IsgdState message."""
        state.Clear()
        state.loss_queue.extend(self.values[: self.count].tolist())
        state.queue_head = self.head
        state.loss_sum = self.loss_sum
        state.loss_sq_sum = self.loss_sq_sum
        state.seen = self.seen

    def from_proto(self, state: Any) -> None:
        """Restore from an IsgdState; a different queue size is an error (the epoch changed)."""
        stored = np.asarray(state.loss_queue, np.float64)
        seen, head = int(state.seen), int(state.queue_head)
        partial_ok = len(stored) == seen and head == seen % self.size
        if (seen < self.size and not partial_ok) or (
            seen >= self.size and len(stored) != self.size
        ):
            raise ValueError(
                f"ISGD state holds {len(stored)} losses but the queue size is {self.size} "
                "(batch size or data source changed since the snapshot)"
            )
        self.values[:] = 0.0
        self.values[: len(stored)] = stored
        self.head = int(state.queue_head)
        self.seen = int(state.seen)
        self.loss_sum = float(state.loss_sum)
        self.loss_sq_sum = float(state.loss_sq_sum)


def is_under_trained(loss: float, limit: float, it: int, n: int, queue_full: bool) -> bool:
    """Alg. 1 line 22: `loss > limit and iter > n` (and a full queue, e.g. after a Caffe resume)."""
    return queue_full and it > n and loss > limit


def subproblem_step(
    data: Any,
    diff: Any,
    anchor: Any,
    loss: float,
    limit: float,
    step: float,
    epsilon: float,
    n_weights: int,
) -> None:
    """Alg. 2 line 7 / Eq. 18 on one array: w -= step*((loss - limit)*grad + eps/n_w*(w - w0))."""
    scale = data.dtype.type(loss - limit)
    pull = data.dtype.type(epsilon / n_weights)
    grad = diff * scale
    grad += pull * (data - anchor)
    grad *= data.dtype.type(step)
    data -= grad
