"""Inconsistent SGD (Wang et al., section 4) in one place: Alg. 1's control limit and Alg. 2.

`Isgd.observe(loss, iter)` is Alg. 1 lines 13-22 and returns the decision; `Isgd.accelerate(ops,
...)` is Alg. 2 over a small protocol the Solver provides (`Alg2Ops`: re-run the batch with its
collectives, agree on a flag, the parameters). The Solver's step stays Caffe's Step (Alg. 1
lines 8-12 and 21 are Caffe's own forward/backward, reduce and update) and calls these at Caffe's
seams. Paper line numbers are marked where each line is implemented, in the paper's order.

Readings of the lines the paper leaves ambiguous (switches are IsgdParameter fields 6-8):
 1. Queue window (Alg. 1 lines 13-19): line 17 dequeues without enqueuing, yet line 19's mean
    adds the new loss; read as "replace the oldest loss by the new one", a window of the last n
    losses, n = batches per epoch (line 3; `queue_size` overrides).
 2. Which losses make the limit: Eq. 13-16 use the n losses *before* the batch and test the new
    one against them; Alg. 1 line 19 folds the new loss in first. `limit_includes_current`
    (default false: the equations' reading).
 3. Sigma is the population standard deviation (divide by n, Eq. 14), not n - 1.
 4. First epoch (lines 13-15): mean and sigma are over the losses so far; Alg. 2 never runs then
    (line 22: iter > n). A resume that lacks the queue (a Caffe state) also waits for a full one.
 5. The loss tested (Eq. 16) is psi_{w_{t-1}}(d_t): this iteration's reduced batch loss, measured
    before line 21's update.
 6. The anchor w_{t-1} of Eq. 17/18 is the weights that loss was measured at, i.e. before line
    21's update; `anchor_after_update` takes the weights Alg. 2 starts from instead.
 7. zeta (Alg. 2 line 7) is "a constant learning rate" of unstated value: `zeta` > 0 sets it,
    0 means the current learning rate; it is scaled by each param's lr_mult (`use_lr_mult`), so
    frozen params stay frozen.
 8. What Alg. 2 leaves out: momentum, weight decay, gradient clipping and the lr policy; a plain
    Eq. 18 step (section 4.3: "The Alg.2 remains the same" for the momentum variants).
 9. Over n ranks, psi and grad psi are the means of the ranks' sub-batch values (the global
    batch's values); the master alone decides and every rank follows (one flag per decision).
10. n_w (Eq. 17) counts every learnable value, frozen ones included.
11. Alg. 2 line 3 tests psi > limit on the fresh loss of each inner pass, before stepping, so a
    batch already under the limit is never pushed back toward it; the first inner pass measures
    the loss after line 21's update. A non-finite loss ends the inner loop without a step.
12. Inner passes re-run the same batch d_t (the data cursor is rewound) and do not advance iter;
    each counts as a gradient evaluation.
13. The loss-driven learning rate (section 4.2, AlexNet's loss bands) reads the same mean as the
    limit (reading 2's window; in the first iteration, with an empty window, the batch loss).
14. A compute budget (max_grad_evals, ours) also ends line 3's loop: no inner pass runs once the
    budget is spent, so SGD and ISGD stop at exactly the same number of gradient evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from solvers.train_log import fmt


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
        """Read an IsgdParameter (unset fields take the proto's defaults)."""
        cfg = cls(
            control_limit=float(p.control_limit),
            epsilon=float(p.epsilon),
            stop=int(p.stop),
            zeta=float(p.zeta),
            queue_size=int(p.queue_size),
            limit_includes_current=bool(p.limit_includes_current),
            anchor_after_update=bool(p.anchor_after_update),
            use_lr_mult=bool(p.use_lr_mult),
        )
        if cfg.stop < 0:
            raise ValueError(f"isgd_param.stop must be >= 0, got {cfg.stop}")
        if cfg.queue_size < 0:
            raise ValueError(f"isgd_param.queue_size must be >= 0, got {cfg.queue_size}")
        return cfg


class LossQueue:
    """The last n batch losses with O(1) running mean and standard deviation (Eq. 13, 14).

    Sums are kept in float64 and recomputed exactly once per full turn of the ring (amortized O(1)),
    so rounding cannot drift over long runs. Not np.mean/np.std of the window: they cost O(n) an
    iteration and round differently from the sums a snapshot stores (IsgdState.loss_sum).
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
        """Append during the first epoch (line 14), then replace the oldest loss (lines 17-19)."""
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
        """Eq. 14: the population standard deviation over the queue (reading 3)."""
        n = self.count
        if n == 0:
            return 0.0
        mean = self.loss_sum / n
        return math.sqrt(max(self.loss_sq_sum / n - mean * mean, 0.0))

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
        self.head = head
        self.seen = seen
        self.loss_sum = float(state.loss_sum)
        self.loss_sq_sum = float(state.loss_sq_sum)


@dataclass(frozen=True)
class Decision:
    """Alg. 1's verdict on one batch: the statistics the limit came from, and whether Alg. 2
    runs. `average_loss` is what the loss-driven lr policy reads (reading 13)."""

    mean: float
    std: float
    limit: float
    under_trained: bool
    average_loss: float


@dataclass
class Alg2Result:
    """What one run of Alg. 2 did: updates taken, the loss of each inner pass (in order), and why
    the inner loop ended: "limit" (psi <= limit), "stop" (stop passes), "budget" (max_grad_evals
    spent) or "nonfinite" (psi NaN or inf)."""

    steps: int
    losses: list[float] = field(default_factory=list)
    stop: int = 0
    end: str = "stop"

    def describe(self, limit: float) -> str:
        """Caffe-style summary: steps taken, why it ended, the inner losses measured."""
        if self.end == "budget":
            end = f"max_grad_evals spent: budget spent after {len(self.losses)} inner pass(es)"
        elif not self.losses:
            return "0 inner steps (stop = 0)"
        elif self.end == "nonfinite":
            end = f"loss {self.losses[-1]} is not finite: stopped"
        elif self.end == "limit":
            end = f"loss {fmt(self.losses[-1])} <= limit {fmt(limit)} after {self.steps} step(s)"
        else:
            end = f"stop = {self.stop} reached (last loss measured before the last step)"
        trail = " -> ".join(fmt(v) for v in self.losses) or "none"
        return f"{self.steps} inner step(s), inner losses {trail}; {end}"


class Alg2Ops(Protocol):
    """What Alg. 2 needs from the Solver; every rank calls these in the same order."""

    @property
    def updates(self) -> bool:
        """True on the ranks that apply updates (the master, or every rank with allreduce)."""
        ...

    def rerun_batch(self) -> float:
        """Lines 8 and 4-6: broadcast w, forward-backward on the same batch d_t again, reduce
        loss and gradient; the global loss psi on every rank."""
        ...

    def agree(self, flag: bool) -> bool:
        """The master's `flag`, on every rank."""
        ...

    def params(self, anchor: Any) -> Sequence[tuple[Any, Any, Any, float]]:
        """(w, grad psi, w_{t-1}, lr_mult) per learnable param, gradients normalized as the
        solver's update normalizes them (iter_size); `anchor` is a flat copy of the weights."""
        ...


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
    """Alg. 2 line 7 / Eq. 18 on one array: w -= step*((loss - limit)*grad + eps/n_w (w - w0))."""
    scale = data.dtype.type(loss - limit)
    pull = data.dtype.type(epsilon / n_weights)
    grad = diff * scale
    grad += pull * (data - anchor)
    grad *= data.dtype.type(step)
    data -= grad


class Isgd:
    """ISGD's state and its two algorithms: the loss queue, the limit, the anchor w_{t-1}.

    With `config` None the object only keeps the statistics (a plain SGD run logs the same mean,
    sigma and limit, and a loss-driven lr reads the same window) and never triggers Alg. 2.
    """

    def __init__(self, config: IsgdConfig | None, queue_size: int, n_weights: int) -> None:
        self.config = config
        self.enabled = config is not None
        self.queue = LossQueue(queue_size)  # Alg. 1 lines 3-7: n, psi-bar, sigma, limit, queue
        self.n_weights = int(n_weights)  # n_w of Eq. 17 (reading 10)
        self.anchor: Any = None

    @property
    def k(self) -> float:
        return self.config.control_limit if self.config is not None else 3.0

    def describe(self, base_type: str) -> str:
        """The log line that says ISGD is on, with its settings as resolved."""
        cfg = self.config
        assert cfg is not None
        zeta = f"{cfg.zeta:g}" if cfg.zeta > 0 else "the current lr"
        return (
            f"ISGD on {base_type} (isgd_param): limit = mean + {cfg.control_limit:g} sigma of the "
            f"last n = {self.queue.size} batch losses (one epoch); Alg. 2: epsilon = "
            f"{cfg.epsilon:g}, stop = {cfg.stop}, zeta = {zeta}"
            f"{' x lr_mult' if cfg.use_lr_mult else ''}; Alg. 2 waits one epoch (iter > "
            f"{self.queue.size}); limit_includes_current = "
            f"{str(cfg.limit_includes_current).lower()}, anchor_after_update = "
            f"{str(cfg.anchor_after_update).lower()}"
        )

    # ---------------------------------------------------------------- Alg. 1, lines 13-22
    def observe(self, loss: float, it: int) -> Decision:
        """Alg. 1 lines 13-22 on the reduced batch loss psi of iteration `it` (reading 5)."""
        q, loss = self.queue, float(loss)
        includes_current = self.config is not None and self.config.limit_includes_current
        if includes_current:
            q.push(loss)  # lines 14 / 17-19: the mean already holds this loss (reading 2)
        mean, std = q.mean(), q.std()  # lines 15 / 18-19: Eq. 13, Eq. 14
        limit = mean + self.k * std  # line 20: Eq. 15
        # line 22: psi > limit and iter > n (and a full queue, reading 4)
        under = self.enabled and q.full and it > q.size and loss > limit
        average = mean if q.count else loss  # reading 13
        if not includes_current:
            q.push(loss)  # lines 14 / 17-19: the window now ends at this batch
        return Decision(mean, std, limit, bool(under), average)

    def keep_anchor(self, flat_weights: Any) -> None:
        """Remember w_{t-1} (reading 6): called before line 21's update, or after it."""
        self.anchor = flat_weights.copy()

    # ---------------------------------------------------------------- Alg. 2
    def accelerate(
        self, ops: Alg2Ops, limit: float, lr: float, evals_left: int | None = None
    ) -> Alg2Result:
        """Alg. 2 on the under-trained batch d_t: minimize Eq. 17 by at most `stop` steps of
        Eq. 18 while its loss exceeds the limit (Alg. 1 line 23). `evals_left`: the gradient
        evaluations max_grad_evals still allows (the master's count, told to every rank in the
        iteration's control message; None = no budget): the loop ends when they are spent."""
        cfg = self.config
        assert cfg is not None
        zeta = float(cfg.zeta) if cfg.zeta > 0 else float(lr)  # reading 7
        result = Alg2Result(steps=0, stop=int(cfg.stop))
        for _ in range(cfg.stop):  # line 3: iter < stop ...
            if evals_left is not None and len(result.losses) >= evals_left:  # reading 14
                result.end = "budget"
                break
            psi = ops.rerun_batch()  # lines 8, 4-6 (reading 12)
            result.losses.append(psi)
            if not ops.agree(math.isfinite(psi) and psi > limit):  # line 3: ... and psi > limit
                result.end = "limit" if math.isfinite(psi) else "nonfinite"
                break
            if ops.updates:
                for data, diff, anchor, mult in ops.params(self.anchor):  # line 7: Eq. 18
                    mult = mult if cfg.use_lr_mult else 1.0
                    if mult == 0:
                        continue
                    subproblem_step(
                        data, diff, anchor, psi, limit, zeta * mult, cfg.epsilon, self.n_weights
                    )
            result.steps += 1  # line 9
        return result
