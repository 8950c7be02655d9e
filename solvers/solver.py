"""The training loop: Caffe's Solver::Step/Solve semantics, with ISGD (solvers/isgd.py) called at
Caffe's callback seams: on_start (where the batch begins), gradients ready (Alg. 1's decision),
after ApplyUpdate (Alg. 2).

Its parts live beside it, as in Caffe and PyTorch: the update rules and their state
(update_rules.py; the flat fast path, flat_update.py), the collectives over ranks and Alg. 2's
re-runs (collectives.py), snapshot and restore (solver_state.py), testing (scoring.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engine.backend import get_array_module, to_numpy
from engine.errors import EngineError, PrototxtError
from engine.proto import caffe_pb2
from engine.proto_io import read_solver_param
from solvers import lr_policy, snapshot, solver_state
from solvers.collectives import BatchRerun, Collectives
from solvers.comm import Comm, SerialComm
from solvers.flat_update import FlatUpdate
from solvers.isgd import Alg2Result, Decision, Isgd, IsgdConfig
from solvers.scoring import Cadence, log_outputs, log_test_scores
from solvers.train_log import TrainLog, fmt
from solvers.train_test_nets import batches_per_epoch, build_net, test_net_params, train_net_param
from solvers.update_rules import clip_gradients, make_rule, normalize, regularize

f32 = np.float32


class NonFiniteLossError(EngineError):
    """Training produced a NaN or infinite loss; the last snapshot on disk is the last good one."""


@dataclass(frozen=True)
class Control:
    """The master's word on one iteration: the one control message every rank receives.

    `stop`: a signal or an interrupted test asked to stop before this iteration (its pass is
    undone); `nonfinite`: the loss is NaN or inf; `decision`: Alg. 1's verdict (None without
    ISGD statistics); `evals_left`: the gradient evaluations max_grad_evals still allows after
    this iteration's pass (None: no budget), which bounds Alg. 2's inner passes."""

    stop: bool = False
    nonfinite: bool = False
    last_snapshot: str | None = None
    decision: Decision | None = None
    evals_left: int | None = None

    @property
    def alg2(self) -> bool:
        return self.decision is not None and self.decision.under_trained


@dataclass(frozen=True)
class BatchStart:
    """Where batch d_t starts (Caffe's on_start): every data layer's cursor and the layers'
    random streams, so Alg. 2 can re-read the batch and a stop can undo the pass."""

    cursors: list[dict[str, Any]]
    rng: dict[str, Any]


def load_solver_param(source: Any) -> tuple[Any, str | None]:
    """A SolverParameter (upgraded, snapshot_prefix defaulted as Caffe) and its file path."""
    path = None if isinstance(source, caffe_pb2.SolverParameter) else str(source)
    param = read_solver_param(source)
    prefix = snapshot.default_snapshot_prefix(
        path, param.snapshot_prefix if param.HasField("snapshot_prefix") else None
    )
    if prefix is not None:
        param.snapshot_prefix = prefix
    return param, path


def default_json_log_path(param: Any, solver_path: str | None) -> str:
    """The JSON log lives beside the snapshots: <snapshot_prefix>_log.jsonl."""
    prefix = param.snapshot_prefix if param.snapshot_prefix else None
    if prefix is None:
        prefix = str(Path(solver_path).with_suffix("")) if solver_path else "solver"
    return f"{prefix}_log.jsonl"


class Solver:
    """Trains a Net from a SolverParameter exactly as Caffe's SGDSolver family, plus ISGD.

    Every step runs Alg. 1's collectives through `comm` (broadcast weights, reduce loss and
    gradient); the master alone computes the statistics and updates, and tells every rank its
    decisions in one typed message per iteration (`Control`).
    """

    def __init__(
        self,
        source: Any,
        comm: Comm | None = None,
        xp: ModuleType | str | None = None,
        log: TrainLog | None = None,
        action: Callable[[], str] | None = None,
        train_net: Any | None = None,
        test_nets: list[Any] | None = None,
        allreduce: bool = False,
        clock: Callable[[], float] | None = None,
        compiled_update: bool = True,
    ) -> None:
        """`allreduce`: every rank sums the gradient and applies the same update (no weight
        broadcast); `clock`: the training clock's time source (tests pass a fake one);
        `compiled_update`: the SGD/Nesterov flat update's Numba loop where Numba is present
        (False: its NumPy passes, the same numbers)."""
        self.param, self.solver_path = load_solver_param(source)
        self.clock = clock if clock is not None else time.perf_counter
        self.comm = comm if comm is not None else SerialComm()
        self.collectives = Collectives(self.comm, allreduce)
        self.xp = get_array_module(xp)
        self.log = log if log is not None else TrainLog(json_path=None)
        self.action = action if action is not None else (lambda: "none")
        p = self.param
        self._validate()
        # Caffe's stream: one boost mt19937 seeded with random_seed before any net is built; the
        # train net draws from it first (fillers layer by layer, Data-layer transformer seeds),
        # then each test net, then training (Dropout masks). Every rank uses the same seed (not
        # Caffe's seed + rank) and draws the global batch's crops and masks, so n ranks see the
        # one-process stream. Caffe's random_seed -1 seeds from entropy: the master picks a seed
        # and tells the workers.
        if p.random_seed >= 0:
            self.seed = int(p.random_seed)
        else:
            self.seed = self.comm.bcast_object(int(np.random.SeedSequence().entropy % 2**31))
        self.net = train_net or build_net(train_net_param(p), "TRAIN", self.xp, self.seed)
        if test_nets is None:
            test_nets = []
            if self.comm.is_master:
                for i, (where, net_param) in enumerate(test_net_params(p)):
                    self.log.info(f"Creating test net (#{i}) specified by {where}")
                    test_nets.append(
                        build_net(net_param, "TEST", self.xp, self.seed, self.net.stream)
                    )
            if self.comm.size > 1:  # workers build no test nets: they take the stream after them
                state = self.net.rng_state() if self.comm.is_master else None
                self.net.set_rng_state(self.comm.bcast_object(state))
        self.test_nets = test_nets
        for spec in p.weights:  # Caffe's solver `weights` field, as the -weights flag
            self.load_weights(spec)
        # This rank's slice of every global batch, and its own Dropout stream.
        self.net.set_rank(self.comm.rank, self.comm.size)

        self.rule = make_rule(p)
        self.iter = 0
        self.current_step = 0
        self.history = self.rule.make_history(self.net, self.xp)
        self._flat_update = FlatUpdate.make(
            self.net, self.history.flat[0], self.rule, p, self.xp, compiled_update
        )
        self.isgd = self._make_isgd()
        self.requested_early_exit = False
        self._stop_pending = False  # master: a signal or a test asked to stop; told next iteration
        self.rate = f32(0.0)
        self.smoothed_loss = f32(0.0)
        self._losses: list[np.float32] = []
        self._average_loss: float | None = None  # what the loss-driven lr reads (the limit's mean)
        self.train_seconds = 0.0  # the training clock: test time excluded; kept in snapshots
        self.grad_evals = 0  # forward+backward passes over training batches (Alg. 2's included)
        self.alg2_triggers = 0  # iterations on which Alg. 2 ran
        self.alg2_inner_steps = 0  # Alg. 2 updates taken in all
        self.test_seconds = 0.0
        self.tests = Cadence(p)
        self._lap = (time.perf_counter(), 0)  # Caffe's display timer: (start, iteration)
        if self.isgd is not None and self.isgd.enabled and self.comm.is_master:
            self.log.info(self.isgd.describe(p.type))
        self.last_snapshot: str | None = None
        self.mean_scores: list[list[float]] = [[] for _ in self.test_nets]
        self.log.info("Solver scaffolding done.")

    # ------------------------------------------------------------------ setup helpers
    def _validate(self) -> None:
        p = self.param
        if p.average_loss < 1:
            raise PrototxtError("solver: average_loss should be >= 1")
        if p.iter_size < 1:
            raise PrototxtError("solver: iter_size must be >= 1")
        if p.snapshot < 0:
            raise PrototxtError("solver: snapshot must be >= 0")
        if p.snapshot and not p.snapshot_prefix:
            raise PrototxtError("solver: snapshot is specified but snapshot_prefix is not")
        if p.snapshot and self.comm.is_master:
            snapshot.check_writable(p.snapshot_prefix)
        try:
            lr_policy.validate(p)
        except ValueError as exc:
            raise PrototxtError(f"solver: {exc}") from None

    def _make_isgd(self) -> Isgd | None:
        """ISGD's state; without isgd_param, its statistics alone when a Data layer (or the
        loss-driven lr) gives them a window (logged mean, sigma and limit; the lr's average)."""
        p = self.param
        config = IsgdConfig.from_proto(p.isgd_param) if p.HasField("isgd_param") else None
        needed = config is not None or p.lr_policy == "loss_bands"
        n = config.queue_size if config is not None else 0
        if not n:
            n = batches_per_epoch(self.net, int(p.iter_size)) or 0
        if not n and not needed:
            return None  # plain Caffe run without a Data layer: no running statistics to log
        if not n:
            raise PrototxtError(
                "solver: cannot size the ISGD loss queue: the train net has no Data layer to count "
                "batches per epoch; set isgd_param { queue_size: N }"
            )
        return Isgd(config, n, int(self.net.flat_data.size))

    def load_weights(self, spec: str) -> None:
        """Caffe's CopyLayers for -weights: each comma-separated file into the train and test
        nets (test-only layers with params get their weights too)."""
        files = [w for w in spec.split(",") if w]
        left: list[str] | None = None
        for weights in files:
            self.log.info(f"Finetuning from {weights}")
            for net in self.test_nets:
                net.copy_from(weights)
            missing = self.net.copy_from(weights)
            left = missing if left is None else [name for name in left if name in missing]
        if left and self.comm.is_master:
            self.log.warning(weights_warning(", ".join(files), left))

    # ------------------------------------------------------------------ one pass
    def _forward_backward(self) -> np.float32:
        """iter_size forward/backward passes on param diffs just cleared (the first pass may
        write them, Net.forward_backward's diffs_zero; the others accumulate, as Caffe's);
        the mean loss in Dtype. One call is one gradient evaluation on the (global) batch,
        counted in `grad_evals`."""
        self.grad_evals += 1
        loss = f32(0.0)
        for k in range(self.param.iter_size):
            loss = f32(loss + f32(self.net.forward_backward(diffs_zero=k == 0)))
        return f32(loss / f32(self.param.iter_size))

    def _update_smoothed_loss(self, loss: np.float32, start_iter: int) -> None:
        """Caffe's UpdateSmoothedLoss: the mean of the last `average_loss` losses, in Dtype."""
        average = int(self.param.average_loss)
        if len(self._losses) < average:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = f32(f32(self.smoothed_loss * f32(size - 1) + loss) / f32(size))
        else:
            idx = (self.iter - start_iter) % average
            self.smoothed_loss = f32(
                self.smoothed_loss + f32(f32(loss - self._losses[idx]) / f32(average))
            )
            self._losses[idx] = loss

    # ------------------------------------------------------------------ update (master)
    def learning_rate(self) -> np.float32:
        """GetLearningRate at the current iteration (multistep advances current_step)."""
        result = lr_policy.learning_rate(
            self.param, self.iter, self.current_step, self._average_loss
        )
        self.current_step = result.current_step
        if result.message:
            self.log.info(result.message)
        return result.rate

    def apply_update(self, display: bool) -> tuple[np.float32, bool]:
        """Caffe's ApplyUpdate: rate, clip, normalize, regularize, update rule, then w -= step.
        Returns the rate and whether every param diff was left at zero (the flat update does
        the next ClearParamDiffs on the way, see FlatUpdate.apply)."""
        p = self.param
        rate = self.learning_rate()
        if display:
            self.log.lr(self.iter, rate)
        blobs = self.net.learnable_params
        clipped = clip_gradients([b.diff for b in blobs], float(p.clip_gradients), self.xp)
        if clipped is not None:
            norm, scale = clipped
            self.log.info(
                f"Gradient clipping: scaling down gradients (L2 norm {norm:g} > "
                f"{float(f32(p.clip_gradients)):g}) by scale factor {scale:g}"
            )
        if self._flat_update is not None:  # the update below, on the flat buffers at once
            return rate, self._flat_update.apply(rate)
        weight_decay = f32(p.weight_decay)
        for i, blob in enumerate(blobs):
            normalize(blob.diff, int(p.iter_size))
            local_decay = f32(weight_decay * f32(self.net.params_weight_decay[i]))
            regularize(blob.data, blob.diff, float(local_decay), p.regularization_type, self.xp)
            local_rate = f32(rate * f32(self.net.params_lr[i]))
            self.rule.compute(i, blob.diff, self.history[i], local_rate, self.iter)
        self.net.flat_data -= self.net.flat_diff
        return rate, False

    # ------------------------------------------------------------------ Caffe's seams, ISGD
    def _on_start(self) -> BatchStart:
        """Caffe's on_start(): remember where batch d_t starts (Alg. 2 re-reads it)."""
        return BatchStart(self.net.data_cursors(), self.net.forward_rng_state())

    def _control(self, loss: np.float32) -> Control:
        """On gradients ready: the master's decision on this batch (Alg. 1 lines 13-22), sent
        to every rank with the stop requests gathered since the last iteration."""
        master, stats = self.comm.is_master, self.isgd
        finite = math.isfinite(float(loss))
        decision = None
        if master and stats is not None and finite and not self._stop_pending:
            decision = stats.observe(float(loss), self.iter)
        mine = Control(
            self._stop_pending, not finite, self.last_snapshot, decision, self._evals_left()
        )
        control = self.collectives.agree(mine if master else None)
        updates = self.collectives.applies_updates
        if control.stop or control.nonfinite or stats is None or not updates:
            return control
        if not master:  # allreduce: every rank keeps the same statistics for its own update
            decision = stats.observe(float(loss), self.iter)
        assert decision is not None
        self._average_loss = decision.average_loss
        if control.alg2 and not stats.config.anchor_after_update:
            stats.keep_anchor(self.net.flat_data)  # w_{t-1}: psi was measured here
        return control

    def _evals_left(self) -> int | None:
        """Gradient evaluations that max_grad_evals still allows (None without a budget)."""
        budget = int(self.param.max_grad_evals)
        return max(budget - self.grad_evals, 0) if budget else None

    def _after_update(
        self, control: Control, loss: np.float32, rate: np.float32, batch: BatchStart
    ) -> Alg2Result | None:
        """After ApplyUpdate: Alg. 2 on batch d_t when Alg. 1 found it under-trained (line 23)."""
        if not control.alg2:
            return None
        assert self.isgd is not None and control.decision is not None
        if self.collectives.applies_updates and self.isgd.config.anchor_after_update:
            self.isgd.keep_anchor(self.net.flat_data)
        limit = control.decision.limit
        result = self._alg2(limit, rate, batch.cursors, control.evals_left)
        self.alg2_triggers += 1
        self.alg2_inner_steps += result.steps
        if self.comm.is_master:
            d = control.decision
            self.log.info(
                f"Iteration {self.iter}, ISGD: loss = {fmt(loss)} > limit = "
                f"{fmt(limit)} (mean {fmt(d.mean)} + {self.isgd.k:g} x std {fmt(d.std)}); "
                f"Alg. 2: {result.describe(limit)}"
            )
        return result

    def _alg2(
        self,
        limit: float,
        rate: np.float32,
        cursors: list[dict[str, Any]],
        evals_left: int | None = None,
    ) -> Alg2Result:
        """Alg. 2 on the batch that starts at `cursors`; the data go on from where they were."""
        assert self.isgd is not None
        after = self.net.data_cursors()
        try:
            ops = BatchRerun(
                self.net, self.collectives, cursors, self._forward_backward, self.param.iter_size
            )
            return self.isgd.accelerate(ops, limit, float(rate), evals_left)
        finally:
            self.net.set_data_cursors(after)

    # ------------------------------------------------------------------ the loop
    def _test_due(self) -> bool:
        """Whether to test before this iteration (Caffe's test_interval, or our cadences)."""
        return self.tests.due(self.iter, self.train_seconds, self.grad_evals)

    def _train_outputs(self) -> np.ndarray:
        """The train net's output values, each the global value under MPI (mean over ranks, as
        the loss: every rank holds an equal slice of the batch). A collective when n > 1."""
        values = [
            to_numpy(self.net.blobs[name].data).astype(np.float64).reshape(-1)
            for name in self.net.output_blob_names
        ]
        flat = np.concatenate(values) if values else np.zeros(0, np.float64)
        return self.collectives.mean(flat).astype(np.float32)

    def step(self, iters: int) -> None:
        """Caffe's Solver::Step, ISGD at its seams, one control message per iteration."""
        p, master = self.param, self.comm.is_master
        start_iter, stop_iter = self.iter, self.iter + iters
        self._losses, self.smoothed_loss = [], f32(0.0)
        self._lap = (time.perf_counter(), self.iter)
        diffs_zero = False  # the last update left every param diff at zero
        while self.iter < stop_iter and not self.budget_spent:
            if not diffs_zero:
                self.net.clear_param_diffs()  # Caffe's ClearParamDiffs
            if master and self.test_nets and not self._stop_pending and self._test_due():
                self.test_all()
            clock, comm_start = self.clock(), (self.comm_elapsed, self.collectives.control_seconds)
            batch = self._on_start()
            self.collectives.share_weights(self.net.flat_data)  # Alg. 1 line 9
            loss = self._forward_backward()  # line 10
            loss = self.collectives.reduce(loss, self.net.flat_diff)  # lines 11-12
            display = bool(p.display and self.iter % p.display == 0)
            outputs = self._train_outputs() if display else None
            control = self._control(loss)
            if control.stop:  # asked before this iteration: undo its pass, as if never run
                self._undo_pass(batch)
                self.requested_early_exit = True
                break
            if control.nonfinite:
                self._diverged(loss, control.last_snapshot)
            if master:
                self._display(loss, start_iter, outputs)
            rate, diffs_zero = f32(0.0), False
            if self.collectives.applies_updates:
                rate, diffs_zero = self.apply_update(display and master)  # Alg. 1 line 21
            inner = self._after_update(control, loss, rate, batch)  # Alg. 1 lines 22-23
            diffs_zero = diffs_zero and inner is None  # Alg. 2's passes leave their gradients
            self._log_iteration(loss, rate, control, inner, clock, comm_start)
            self.iter += 1
            self._at_iteration_end()
        stop = self.requested_early_exit or self._stop_pending
        self.requested_early_exit = self.collectives.agree(stop)

    def _undo_pass(self, batch: BatchStart) -> None:
        """Put data cursors and random streams back to where this iteration started."""
        self.net.set_data_cursors(batch.cursors)
        self.net.set_rng_state(batch.rng)
        self.grad_evals -= 1
        self.net.clear_param_diffs()

    def _display(self, loss: np.float32, start_iter: int, outputs: np.ndarray | None) -> None:
        """Caffe's smoothed loss, and every `display` iterations its speed and output lines."""
        self._update_smoothed_loss(loss, start_iter)
        if outputs is None:
            return
        lap_start, iterations_last = self._lap
        lapse = time.perf_counter() - lap_start
        per_s = (self.iter - iterations_last) / (lapse if lapse else 1.0)
        self.log.iteration(self.iter, per_s, lapse, self.param.display, self.smoothed_loss)
        self._lap = (time.perf_counter(), self.iter)
        log_outputs(self.log, self.net, "Train", outputs)

    def _log_iteration(
        self,
        loss: np.float32,
        rate: np.float32,
        control: Control,
        inner: Alg2Result | None,
        clock: float,
        comm_start: tuple[float, float],
    ) -> None:
        """Advance the training clock; the master writes the iteration's JSON event."""
        spent = self.clock() - clock
        self.train_seconds += spent
        if not self.comm.is_master:
            return
        self.rate = rate
        # Eq. 21's split: compute vs the gradient and weight collectives (control messages apart)
        t_ctrl = self.collectives.control_seconds - comm_start[1]
        t_comm = max(self.comm_elapsed - comm_start[0] - t_ctrl, 0.0)
        d = control.decision
        event = {
            "event": "iter",
            "iter": self.iter,
            "train_s": self.train_seconds,
            "grad_evals": self.grad_evals,
            "loss": _shortest_decimal(loss),
            "smoothed_loss": _shortest_decimal(self.smoothed_loss),
            "lr": _shortest_decimal(rate),
            "mean": None if d is None else d.mean,
            "std": None if d is None else d.std,
            "limit": None if d is None else d.limit,
            "under_trained": control.alg2,
            "alg2_inner_steps": 0 if inner is None else inner.steps,
            "alg2_end": None if inner is None else inner.end,
            "t_comp": max(spent - t_comm - t_ctrl, 0.0),
            "t_comm": t_comm,
        }
        if self.comm.size > 1:
            event["t_ctrl"] = t_ctrl
        self.log.event(event)
        self.log.progress(self.iter + 1, int(self.param.max_iter), float(loss), self.train_seconds)

    def _at_iteration_end(self) -> None:
        """After ++iter (master): the periodic or requested snapshot; a stop request waits for
        the next control message."""
        if not self.comm.is_master:
            return
        p = self.param
        request = self.action()
        if (p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot":
            self.snapshot()
        if request == "stop":
            self._stop_pending = True

    @property
    def comm_elapsed(self) -> float:
        """Seconds spent in collectives so far (0 for one process)."""
        return self.collectives.elapsed

    @property
    def budget_spent(self) -> bool:
        """max_grad_evals reached (every rank counts the same passes, so all agree)."""
        budget = int(self.param.max_grad_evals)
        return bool(budget) and self.grad_evals >= budget

    @property
    def completed(self) -> bool:
        """The run did what its solver asked: max_iter or max_grad_evals, no early stop."""
        done = self.iter >= int(self.param.max_iter) or self.budget_spent
        return done and not self.requested_early_exit

    def _diverged(self, loss: np.float32, last_snapshot: str | None) -> None:
        last = last_snapshot or "none written in this run"
        message = (
            f"Iteration {self.iter}: loss = {float(loss)} is not finite; training stopped. "
            f"The last good snapshot is: {last}"
        )
        if self.comm.is_master:
            self.log.error(message)
            self.log.flush()
        raise NonFiniteLossError(message)

    def solve(self, resume_file: str | None = None) -> None:
        """Caffe's Solve: optional restore, Step to max_iter, final snapshot, display and test."""
        p = self.param
        master = self.comm.is_master
        if master:
            self.log.info(f"Solving {self.net.name}")
            self.log.info(f"Learning Rate Policy: {p.lr_policy}")
        self.requested_early_exit = False
        self._stop_pending = False
        if resume_file:
            if master:
                self.log.info(f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        if self.collectives.allreduce:  # weights are never broadcast in this mode: agree on w_0
            self.comm.bcast(self.net.flat_data)
        start_iter = self.iter
        try:
            # A diverging run overflows long before its loss is NaN: the NaN stop below gives
            # the one clear message instead of NumPy's overflow warnings.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self.step(int(p.max_iter) - self.iter)
        finally:
            self.log.flush()
        if master and p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            if master:
                self.log.info("Optimization stopped early.")
            return
        if master and p.display and self.iter % p.display == 0:
            loss = f32(self.net.forward_loss())
            self._update_smoothed_loss(loss, start_iter)
            self.log.info(f"Iteration {self.iter}, loss = {float(self.smoothed_loss):g}")
        # Caffe tests after the last iteration when test_interval divides it; a run testing on
        # the training clock always gets a last test (its final accuracy).
        final_test = (p.test_interval and self.iter % p.test_interval == 0) or (
            p.test_interval_seconds > 0 or p.test_interval_grad_evals > 0
        )
        if master and self.test_nets and final_test:
            self.test_all()
        if master:
            self.log.info("Optimization Done.")
        self.log.flush()

    # ------------------------------------------------------------------ testing
    def test_all(self) -> None:
        """Run every test net (Caffe's TestAll); time spent here is off the training clock."""
        start = time.perf_counter()
        for i in range(len(self.test_nets)):
            if self._stop_pending:
                break
            self.test(i)
        self.test_seconds += time.perf_counter() - start

    def _interrupted(self) -> bool:
        """Signals during a test: a snapshot is taken at once, a stop ends the test."""
        request = self.action()
        while request != "none":
            if request == "snapshot":
                self.snapshot()
            elif request == "stop":
                self._stop_pending = True
            request = self.action()
        return self._stop_pending

    def test(self, index: int) -> list[float]:
        """Caffe's Solver::Test: each output's mean over test_iter batches, logged as Caffe."""
        p = self.param
        net = self.test_nets[index]
        self.log.info(f"Iteration {self.iter}, Testing net (#{index})")
        net.share_weights_with(self.net)
        scores = log_test_scores(
            net, int(p.test_iter[index]), self.log, p.test_compute_loss, self._interrupted
        )
        if scores is None:
            return []
        means: list[float] = []
        outputs: dict[str, Any] = {}
        for name, value in zip(scores.names, scores.means, strict=True):
            means.append(float(value))
            short = _shortest_decimal(value)
            if name in outputs:
                prev = outputs[name]
                outputs[name] = (prev if isinstance(prev, list) else [prev]) + [short]
            else:
                outputs[name] = short
        self.mean_scores[index] = means
        self.log.event(
            {
                "event": "test",
                "iter": self.iter,
                "train_s": self.train_seconds,
                "grad_evals": self.grad_evals,
                "net": index,
                "outputs": outputs,
            }
        )
        self.log.flush()
        return means

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> str:
        """Caffe's Snapshot: <prefix>_iter_N.caffemodel and .solverstate (solver_state.py)."""
        progress = caffe_pb2.RunProgress(
            train_seconds=self.train_seconds,
            grad_evals=self.grad_evals,
            next_test_seconds=self.tests.next_seconds,
            next_test_grad_evals=self.tests.next_grad_evals,
            alg2_triggers=self.alg2_triggers,
            alg2_inner_steps=self.alg2_inner_steps,
        )
        self.last_snapshot = solver_state.save(
            self.param,
            self.iter,
            self.current_step,
            self.net,
            self.history,
            self.isgd,
            progress,
            self.log,
        )
        return self.last_snapshot

    def restore(self, path: str) -> None:
        """Caffe's Restore from a .solverstate (Caffe's or ours): weights, iter, current_step,
        history, and when present the ISGD queue, data cursors and the run's clock."""
        log = self.log if self.comm.is_master else None
        resumed = solver_state.restore(path, self.net, self.history, self.isgd, log)
        self.iter, self.current_step = resumed.iter, resumed.current_step
        if resumed.progress is not None:
            progress = resumed.progress
            self.train_seconds = float(progress.train_seconds)
            self.grad_evals = int(progress.grad_evals)
            self.alg2_triggers = int(progress.alg2_triggers)
            self.alg2_inner_steps = int(progress.alg2_inner_steps)
            self.tests.resume(progress, self.grad_evals)


def weights_warning(source: str, layers: list[str]) -> str:
    """The one warning for weights files that leave some layers with params at their fillers."""
    return (
        f"{source} gives no weights to {len(layers)} layer(s) with params: "
        f"{', '.join(layers)}; they keep their fillers' initial values (a truncated file, or "
        "weights from a different net?)"
    )


def _shortest_decimal(value: Any) -> float:
    """A float32 as the shortest decimal that reads back to it (0.1, not 0.10000000149)."""
    return float(str(np.float32(value)))
