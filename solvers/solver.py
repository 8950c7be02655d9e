"""The training loop: Caffe's Solver::Step/Solve semantics, with ISGD (Alg. 1, Alg. 2) on top."""

from __future__ import annotations

import json
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
from solvers import lr_policy, snapshot
from solvers.comm import Comm, SerialComm
from solvers.isgd import IsgdConfig, LossQueue, is_under_trained, subproblem_step
from solvers.nets import batches_per_epoch, build_net, test_net_params, train_net_param
from solvers.train_log import TrainLog, fmt
from solvers.update_rules import clip_gradients, make_rule, normalize, regularize

f32 = np.float32


class NonFiniteLossError(EngineError):
    """Training produced a NaN or infinite loss; the last snapshot on disk is the last good one."""


@dataclass
class Alg2Result:
    """What one run of Alg. 2 did: updates taken and the loss of each inner pass (in order)."""

    steps: int
    losses: list[float]
    stop: int

    def describe(self, limit: float) -> str:
        """Caffe-style summary: steps taken, why it ended, the inner losses measured."""
        if not self.losses:
            return "0 inner steps (stop = 0)"
        trail = " -> ".join(fmt(v) for v in self.losses)
        if self.steps < len(self.losses):
            end = f"loss {fmt(self.losses[-1])} <= limit {fmt(limit)} after {self.steps} step(s)"
            if not math.isfinite(self.losses[-1]):
                end = f"loss {self.losses[-1]} is not finite: stopped"
        else:
            end = f"stop = {self.stop} reached (last loss measured before the last step)"
        return f"{self.steps} inner step(s), inner losses {trail}; {end}"


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
    """Trains a Net from a SolverParameter exactly as Caffe's SGDSolver family (plus ISGD).

    Every step runs Alg. 1's collectives through `comm` (broadcast weights, reduce loss and
    gradient); the master alone computes statistics and updates, and broadcasts its decisions.
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
    ) -> None:
        self.param, self.solver_path = load_solver_param(source)
        # The training clock's time source (tests pass a fake one to check resume continuity).
        self.clock = clock if clock is not None else time.perf_counter
        self.comm = comm if comm is not None else SerialComm()
        self.xp = get_array_module(xp)
        self.log = log if log is not None else TrainLog(json_path=None)
        self.action = action if action is not None else (lambda: "none")
        # allreduce: every rank sums the gradient and applies the same update (no weight bcast).
        self.allreduce = bool(allreduce) and self.comm.size > 1
        self.updater = self.comm.is_master or self.allreduce
        p = self.param
        self._validate()
        # Every rank builds the same net from the same seed, so weights, Data-layer crop/mirror
        # draws (taken per global batch) and hence each rank's slice agree with a 1-rank run.
        # Caffe's random_seed -1 means "pick one": the master picks and tells the workers.
        if p.random_seed >= 0:
            seed = int(p.random_seed)
        else:
            seed = self.comm.bcast_object(int(np.random.SeedSequence().entropy % 2**31))
        self.seed = seed
        if train_net is None:
            train_net = build_net(train_net_param(p), "TRAIN", self.xp, seed)
        self.net = train_net
        if test_nets is None:
            test_nets = []
            if self.comm.is_master:
                for i, (where, net_param) in enumerate(test_net_params(p)):
                    self.log.info(f"Creating test net (#{i}) specified by {where}")
                    test_nets.append(build_net(net_param, "TEST", self.xp, seed))
        self.test_nets = test_nets
        for spec in p.weights:  # Caffe's solver `weights` field, as the -weights flag
            self.load_weights(spec)
        # This rank's slice of every global batch, and its own Dropout stream.
        self.net.set_rank(self.comm.rank, self.comm.size)

        self.rule = make_rule(p)
        self.iter = 0
        self.current_step = 0
        self.n_weights = int(self.net.flat_data.size)
        self._offsets = self._param_offsets()
        self.history_flat = [
            self.xp.zeros_like(self.net.flat_data) for _ in range(self.rule.history_sets)
        ]
        self.history = [
            [self._view(h, i) for h in self.history_flat] for i in range(len(self._offsets))
        ]
        self.isgd = IsgdConfig.from_proto(p.isgd_param) if p.HasField("isgd_param") else None
        self.queue = self._make_queue()
        self.requested_early_exit = False
        self.rate = f32(0.0)
        self.smoothed_loss = f32(0.0)
        self._losses: list[np.float32] = []
        self.train_seconds = 0.0  # the training clock: test time excluded; kept in snapshots
        self.grad_evals = 0  # forward+backward passes over training batches (Alg. 2's included)
        self.alg2_triggers = 0  # iterations on which Alg. 2 ran
        self.alg2_inner_steps = 0  # Alg. 2 updates taken in all
        self._test_seconds = 0.0
        self._next_time_test = float(p.test_interval_seconds) if p.test_interval_seconds else 0.0
        self._last_test_iter = -1
        if self.isgd is not None and self.comm.is_master:
            self._announce_isgd()
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

    def _param_offsets(self) -> list[tuple[int, int]]:
        offsets = getattr(self.net, "param_offsets", None)
        blobs = self.net.learnable_params
        if offsets is None:
            offsets, start = [], 0
            for blob in blobs:
                offsets.append(start)
                start += blob.count
        return [(int(o), int(b.count)) for o, b in zip(offsets, blobs, strict=True)]

    def _view(self, flat: Any, i: int) -> Any:
        start, count = self._offsets[i]
        return flat[start : start + count].reshape(self.net.learnable_params[i].shape)

    def _make_queue(self) -> LossQueue | None:
        """ISGD's loss queue, also kept for the loss-driven lr policy (its mean picks the band)."""
        needed = self.isgd is not None or self.param.lr_policy == "loss_bands"
        n = self.isgd.queue_size if self.isgd is not None else 0
        if not n:
            n = batches_per_epoch(self.net, int(self.param.iter_size)) or 0
        if not n and not needed:
            return None  # plain Caffe run without a Data layer: no running statistics to log
        if not n:
            raise PrototxtError(
                "solver: cannot size the ISGD loss queue: the train net has no Data layer to count "
                "batches per epoch; set isgd_param { queue_size: N }"
            )
        self.queue_n = n
        return LossQueue(n)

    # ------------------------------------------------------------------ one pass
    def _announce_isgd(self) -> None:
        """One log line at start saying ISGD is on, with its settings as resolved."""
        cfg = self.isgd
        assert cfg is not None and self.queue is not None
        zeta = f"{cfg.zeta:g}" if cfg.zeta > 0 else "the current lr"
        self.log.info(
            f"ISGD on {self.param.type} (isgd_param): limit = mean + {cfg.control_limit:g} sigma "
            f"of the last n = {self.queue_n} batch losses (one epoch); Alg. 2: epsilon = "
            f"{cfg.epsilon:g}, stop = {cfg.stop}, zeta = {zeta}"
            f"{' x lr_mult' if cfg.use_lr_mult else ''}; Alg. 2 waits one epoch (iter > "
            f"{self.queue_n}); limit_includes_current = {str(cfg.limit_includes_current).lower()}, "
            f"anchor_after_update = {str(cfg.anchor_after_update).lower()}"
        )

    def _forward_backward(self) -> np.float32:
        """iter_size forward/backward passes (diffs accumulate); the mean loss in Dtype.

        One call is one gradient evaluation on the (global) batch, counted in `grad_evals`."""
        self.grad_evals += 1
        loss = f32(0.0)
        for _ in range(self.param.iter_size):
            loss = f32(loss + f32(self.net.forward_backward()))
        return f32(loss / f32(self.param.iter_size))

    def _reduce(self, loss: np.float32) -> np.float32:
        """Alg. 1 lines 11-12: reduce loss and gradient onto the master, as means over ranks."""
        if self.comm.size == 1:
            return loss
        buf = np.array([loss], np.float64)
        if self.allreduce:
            self.comm.allreduce_sum(buf)
            self.comm.allreduce_sum(self.net.flat_diff)
        else:
            self.comm.reduce_sum(buf)
            self.comm.reduce_sum(self.net.flat_diff)
        if self.updater:
            self.net.flat_diff /= self.net.flat_diff.dtype.type(self.comm.size)
        return f32(buf[0] / self.comm.size)

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

    def _cursors(self) -> list[dict[str, Any]]:
        """Every data layer's record cursor and transform RNG state (Alg. 2 reruns a batch)."""
        return self.net.data_cursors()

    def _set_cursors(self, cursors: list[dict[str, Any]]) -> None:
        self.net.set_data_cursors(cursors)

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
        average = self.queue.mean() if self.queue is not None else None
        result = lr_policy.learning_rate(self.param, self.iter, self.current_step, average)
        self.current_step = result.current_step
        if result.message:
            self.log.info(result.message)
        return result.rate

    def apply_update(self, display: bool) -> np.float32:
        """Caffe's ApplyUpdate: rate, clip, normalize, regularize, update rule, then w -= step."""
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
        weight_decay = f32(p.weight_decay)
        for i, blob in enumerate(blobs):
            normalize(blob.diff, int(p.iter_size))
            local_decay = f32(weight_decay * f32(self.net.params_weight_decay[i]))
            regularize(blob.data, blob.diff, float(local_decay), p.regularization_type, self.xp)
            local_rate = f32(rate * f32(self.net.params_lr[i]))
            self.rule.compute(i, blob.diff, self.history[i], local_rate, self.iter)
        self.net.flat_data -= self.net.flat_diff
        return rate

    # ------------------------------------------------------------------ ISGD
    def _isgd_statistics(self, loss: np.float32) -> dict[str, Any]:
        """Alg. 1 lines 13-20 (master): the limit, the under-trained check, and the queue push."""
        q = self.queue
        assert q is not None
        k = self.isgd.control_limit if self.isgd is not None else 3.0
        if self.isgd is not None and self.isgd.limit_includes_current:
            q.push(float(loss))  # Alg. 1 line 19: the mean already holds the current loss
            mean, std = q.mean(), q.std()
        else:
            mean, std = q.mean(), q.std()  # Eq. 13-14: the n losses before this batch
        limit = mean + k * std  # Eq. 15 / Alg. 1 line 20
        under = self.isgd is not None and is_under_trained(
            float(loss), limit, self.iter, q.size, q.full
        )
        if self.isgd is None or not self.isgd.limit_includes_current:
            q.push(float(loss))  # Alg. 1 lines 14/17: the window now ends at this batch
        return {"mean": mean, "std": std, "limit": limit, "under_trained": under}

    def _subproblem(
        self, limit: float, rate: np.float32, anchor: Any, cursors: list[dict[str, Any]]
    ) -> Alg2Result:
        """Alg. 2 on the same batch: up to `stop` steps of Eq. 18 while the loss exceeds the limit.

        Each inner step re-runs the batch from its saved cursor (Alg. 2 line 4) and takes a step
        only while psi > limit (line 3's test, applied to the fresh loss so that a batch already
        under the limit is never pushed back up toward it).
        """
        cfg = self.isgd
        assert cfg is not None
        zeta = float(cfg.zeta) if cfg.zeta > 0 else float(rate)
        steps = 0
        losses: list[float] = []
        after = self._cursors()
        try:
            for _ in range(cfg.stop):
                if not self.allreduce:
                    self.comm.bcast(self.net.flat_data)  # Alg. 2 line 8 (before the next pass)
                self._set_cursors(cursors)
                self.net.clear_param_diffs()
                psi = self._reduce(self._forward_backward())  # Alg. 2 lines 4-6
                losses.append(float(psi))
                go = bool(math.isfinite(float(psi)) and float(psi) > limit)
                if not self.comm.bcast_object(go if self.comm.is_master else None):
                    break
                if self.updater:
                    self._subproblem_update(float(psi), limit, zeta, anchor)
                steps += 1
        finally:
            self._set_cursors(after)
        return Alg2Result(steps=steps, losses=losses, stop=int(cfg.stop))

    def _subproblem_update(self, psi: float, limit: float, zeta: float, anchor: Any) -> None:
        """Alg. 2 line 7 per param: w -= zeta*lr_mult * ((psi - limit) grad + eps/n_w (w - w0))."""
        cfg = self.isgd
        assert cfg is not None
        normalize(self.net.flat_diff, int(self.param.iter_size))
        for i, blob in enumerate(self.net.learnable_params):
            mult = float(self.net.params_lr[i]) if cfg.use_lr_mult else 1.0
            if mult == 0:
                continue
            subproblem_step(
                blob.data,
                blob.diff,
                self._view(anchor, i),
                psi,
                limit,
                zeta * mult,
                cfg.epsilon,
                self.n_weights,
            )

    # ------------------------------------------------------------------ the loop
    def _test_due(self) -> bool:
        p = self.param
        by_iter = bool(
            p.test_interval
            and self.iter % p.test_interval == 0
            and (self.iter > 0 or p.test_initialization)
        )
        by_time = False
        if p.test_interval_seconds > 0 and self.train_seconds >= self._next_time_test:
            by_time = True
            interval = float(p.test_interval_seconds)
            self._next_time_test = (math.floor(self.train_seconds / interval) + 1) * interval
        if p.test_interval_seconds > 0 and self.iter == 0 and p.test_initialization:
            by_time = True
        return by_iter or by_time

    def _train_outputs(self) -> np.ndarray:
        """The train net's output values, each the global value under MPI (mean over ranks, as
        the loss: every rank holds an equal slice of the batch). A collective when n > 1."""
        values = [
            to_numpy(self.net.blobs[name].data).astype(np.float64).reshape(-1)
            for name in self.net.output_blob_names
        ]
        flat = np.concatenate(values) if values else np.zeros(0, np.float64)
        if self.comm.size > 1:
            if self.allreduce:
                self.comm.allreduce_sum(flat)
            else:
                self.comm.reduce_sum(flat)
            flat /= self.comm.size
        return flat.astype(np.float32)

    def step(self, iters: int) -> None:
        """Caffe's Solver::Step: `iters` iterations of test, forward-backward, update, snapshot."""
        p = self.param
        master = self.comm.is_master
        start_iter = self.iter
        stop_iter = self.iter + iters
        self._losses = []
        self.smoothed_loss = f32(0.0)
        lap_start = time.perf_counter()
        iterations_last = self.iter
        while self.iter < stop_iter and not self.budget_spent:
            self.net.clear_param_diffs()
            if master and self.test_nets and self._test_due():
                self.test_all()
            clock = self.clock()  # the training clock excludes test time
            if self.comm.bcast_object(self.requested_early_exit if master else None):
                self.requested_early_exit = True
                break
            display = bool(p.display and self.iter % p.display == 0)
            comm_start = getattr(self.comm, "elapsed", 0.0)
            if not self.allreduce:
                self.comm.bcast(self.net.flat_data)  # Alg. 1 line 9
            cursors = self._cursors() if self.isgd is not None else []
            loss = self._reduce(self._forward_backward())  # Alg. 1 lines 10-12
            outputs = self._train_outputs() if display else None
            decision: dict[str, Any] = {"stop": False, "alg2": False}
            record: dict[str, Any] = {}
            if master:
                self._update_smoothed_loss(loss, start_iter)
                if display:
                    lapse = time.perf_counter() - lap_start
                    per_s = (self.iter - iterations_last) / (lapse if lapse else 1.0)
                    self.log.iteration(self.iter, per_s, lapse, p.display, self.smoothed_loss)
                    lap_start = time.perf_counter()
                    iterations_last = self.iter
                    self._log_outputs(self.net, "Train", outputs)
            if self.updater:
                if not math.isfinite(float(loss)):
                    decision["stop"] = True
                    decision["last_snapshot"] = self.last_snapshot  # one message on all ranks
                else:
                    stats = self._isgd_statistics(loss) if self.queue is not None else {}
                    record.update(stats)
                    decision["alg2"] = bool(stats.get("under_trained", False))
            decision = self.comm.bcast_object(decision if master else None)
            if decision["stop"]:
                self._diverged(loss, decision.get("last_snapshot"))
            anchor = None
            if decision["alg2"] and self.updater and not self.isgd.anchor_after_update:
                anchor = self.net.flat_data.copy()  # w_{t-1}: the weights psi was measured at
            rate = self.apply_update(display and master) if self.updater else f32(0.0)  # line 21
            inner = 0
            if decision["alg2"]:  # Alg. 1 lines 22-23
                if self.updater and anchor is None:
                    anchor = self.net.flat_data.copy()
                limit = float(record.get("limit", 0.0))
                result = self._subproblem(limit, rate, anchor, cursors)
                inner = result.steps
                self.alg2_triggers += 1
                self.alg2_inner_steps += inner
                if master:
                    self.log.info(
                        f"Iteration {self.iter}, ISGD: loss = {fmt(loss)} > limit = "
                        f"{fmt(limit)} (mean {fmt(record['mean'])} + "
                        f"{self.isgd.control_limit:g} x std {fmt(record['std'])}); Alg. 2: "
                        + result.describe(limit)
                    )
            spent = self.clock() - clock
            self.train_seconds += spent
            if master:
                self.rate = rate
                # Eq. 21's split: compute vs communication (a serial Comm communicates nothing)
                t_comm = float(getattr(self.comm, "elapsed", 0.0)) - comm_start
                record["t_comm"], record["t_comp"] = t_comm, max(spent - t_comm, 0.0)
                self.log.event(
                    {
                        "event": "iter",
                        "iter": self.iter,
                        "train_s": self.train_seconds,
                        "grad_evals": self.grad_evals,
                        "loss": _short(loss),
                        "smoothed_loss": _short(self.smoothed_loss),
                        "lr": _short(rate),
                        "mean": record.get("mean"),
                        "std": record.get("std"),
                        "limit": record.get("limit"),
                        "under_trained": bool(record.get("under_trained", False)),
                        "subproblem_iters": inner,
                        **{k: record[k] for k in ("t_comp", "t_comm") if k in record},
                    }
                )
                self.log.progress(self.iter + 1, int(p.max_iter), float(loss), self.train_seconds)
            self.iter += 1
            request = self.comm.bcast_object(self.action() if master else None)
            if master and ((p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot"):
                self.snapshot()
            if request == "stop":
                self.requested_early_exit = True
                break

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
        if resume_file:
            if master:
                self.log.info(f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        if self.allreduce:  # weights are never broadcast in this mode: agree on w_0 once
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
            p.test_interval_seconds > 0
        )
        if master and self.test_nets and final_test:
            self.test_all()
        if master:
            self.log.info("Optimization Done.")
        self.log.flush()

    # ------------------------------------------------------------------ testing
    def _log_outputs(self, net: Any, kind: str, values: np.ndarray) -> None:
        """Caffe's "<kind> net output #k: name = v" lines for the flat output `values`."""
        weights = _loss_weights(net)
        index = 0
        for name in net.output_blob_names:
            for _ in range(int(net.blobs[name].count)):
                self.log.output(kind, index, name, float(values[index]), weights.get(name, 0.0))
                index += 1

    def test_all(self) -> None:
        """Run every test net (Caffe's TestAll); time spent here is off the training clock."""
        start = time.perf_counter()
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)
        self._test_seconds += time.perf_counter() - start

    def test(self, index: int) -> list[float]:
        """Caffe's Solver::Test: each output's mean over test_iter batches, logged as Caffe."""
        p = self.param
        net = self.test_nets[index]
        self.log.info(f"Iteration {self.iter}, Testing net (#{index})")
        net.share_weights_with(self.net)
        scores: np.ndarray | None = None
        names: list[str] = []
        loss = f32(0.0)
        for _ in range(int(p.test_iter[index])):
            request = self.action()
            while request != "none":
                if request == "snapshot":
                    self.snapshot()
                elif request == "stop":
                    self.requested_early_exit = True
                request = self.action()
            if self.requested_early_exit:
                break
            iter_loss = f32(net.forward_loss())
            if p.test_compute_loss:
                loss = f32(loss + iter_loss)
            values = []
            names = []
            for name in net.output_blob_names:
                flat = np.asarray(to_numpy(net.blobs[name].data), np.float32).reshape(-1)
                values.append(flat)
                names.extend([name] * flat.size)
            batch = np.concatenate(values) if values else np.zeros(0, np.float32)
            scores = batch.copy() if scores is None else (scores + batch).astype(np.float32)
        if self.requested_early_exit:
            self.log.info("Test interrupted.")
            return []
        if p.test_compute_loss:
            self.log.info(f"Test loss: {float(f32(loss / f32(p.test_iter[index]))):g}")
        weights = _loss_weights(net)
        means: list[float] = []
        outputs: dict[str, Any] = {}
        if scores is not None:
            mean = (scores / np.float32(p.test_iter[index])).astype(np.float32)
            for k, (name, value) in enumerate(zip(names, mean, strict=True)):
                self.log.output("Test", k, name, float(value), weights.get(name, 0.0))
                means.append(float(value))
                if name in outputs:
                    prev = outputs[name]
                    outputs[name] = (prev if isinstance(prev, list) else [prev]) + [_short(value)]
                else:
                    outputs[name] = _short(value)
        self.mean_scores[index] = means
        self.log.event(
            {
                "event": "test",
                "iter": self.iter,
                "train_s": self.train_seconds,
                "net": index,
                "outputs": outputs,
            }
        )
        self.log.flush()
        return means

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> str:
        """Write <prefix>_iter_N.caffemodel and .solverstate (history, ISGD queue, data cursor)."""
        p = self.param
        if not p.snapshot_prefix:
            raise PrototxtError("solver: cannot snapshot: snapshot_prefix is not set")
        h5 = p.snapshot_format == caffe_pb2.SolverParameter.HDF5  # Caffe's names and log lines
        kind, ext = ("HDF5", ".h5") if h5 else ("binary proto", "")
        model = snapshot.snapshot_filename(p.snapshot_prefix, self.iter, ".caffemodel" + ext)
        self.log.info(f"Snapshotting to {kind} file {model}")
        self.net.save(model, write_diff=bool(p.snapshot_diff))
        state = caffe_pb2.SolverState()
        state.iter = self.iter
        state.learned_net = model
        state.current_step = self.current_step
        # Caffe's history_ order: set 0 for every param, then set 1 (AdaDelta/Adam) for every param.
        ordered = [
            self.history[i][s]
            for s in range(self.rule.history_sets)
            for i in range(len(self.history))
        ]
        snapshot.history_to_state(state, ordered)
        if self.queue is not None:
            self.queue.to_proto(state.isgd_state)
        cursors = self.net.data_cursors()
        if cursors:  # the first also in Caffe-era fields, which older readers know
            state.data_cursor = cursors[0]["cursor"]
            if cursors[0]["rng_state"] is not None:
                state.data_rng_state = json.dumps(cursors[0]["rng_state"])
            state.data_cursors = json.dumps(cursors)
        layer_rngs = self.net.rng_state()
        if layer_rngs:
            state.layer_rng_state = json.dumps(layer_rngs)
        progress = state.progress
        progress.train_seconds = self.train_seconds
        progress.grad_evals = self.grad_evals
        progress.next_test_seconds = self._next_time_test
        progress.alg2_triggers = self.alg2_triggers
        progress.alg2_inner_steps = self.alg2_inner_steps
        path = snapshot.snapshot_filename(p.snapshot_prefix, self.iter, ".solverstate" + ext)
        self.log.info(f"Snapshotting solver state to {kind} file {path}")
        snapshot.write_state(path, state)
        self.last_snapshot = path
        self.log.flush()
        return path

    def restore(self, path: str) -> None:
        """Resume from a .solverstate (Caffe's or ours): weights, iter, current_step, history,
        and when present the ISGD queue and data cursor (absent: data restarts at record 0)."""
        state = snapshot.load_state(path)
        if state.iter < 0:
            raise PrototxtError(f"{path}: solver state has iter = {state.iter} (must be >= 0)")
        if state.HasField("learned_net") and state.learned_net:
            self.net.copy_from(snapshot.resolve_learned_net(state.learned_net, path))
        self.iter = int(state.iter)
        self.current_step = int(state.current_step)
        ordered = [
            self.history[i][s]
            for s in range(self.rule.history_sets)
            for i in range(len(self.history))
        ]
        snapshot.history_from_state(state, ordered, path)
        if self.queue is not None and state.HasField("isgd_state"):
            self.queue.from_proto(state.isgd_state)
        if state.layer_rng_state:
            skipped = self.net.set_rng_state(json.loads(state.layer_rng_state))
            if skipped and self.comm.is_master:
                self.log.info(
                    f"Snapshot {path} holds the random streams of layers {', '.join(skipped)} "
                    "from the other backend (CPU vs GPU): they restart from their seeds"
                )
        if state.data_cursors:
            self.net.set_data_cursors(json.loads(state.data_cursors))
        else:  # Caffe's or an older snapshot: one cursor for all (none: from the first record)
            cursor = int(state.data_cursor) if state.HasField("data_cursor") else 0
            rng_state = json.loads(state.data_rng_state) if state.data_rng_state else None
            saved = {"cursor": cursor, "rng_state": rng_state}
            self.net.set_data_cursors([saved] * len(self.net.data_layers()))
        if state.HasField("progress"):
            progress = state.progress
            self.train_seconds = float(progress.train_seconds)
            self.grad_evals = int(progress.grad_evals)
            self.alg2_triggers = int(progress.alg2_triggers)
            self.alg2_inner_steps = int(progress.alg2_inner_steps)
            if progress.HasField("next_test_seconds"):
                self._next_time_test = float(progress.next_test_seconds)
        afresh = self._what_starts_afresh(state)
        if afresh and self.comm.is_master:
            self.log.info(
                f"{path} does not hold this project's full run state (written by Caffe, or "
                f"cut short?): {'; '.join(afresh)}"
            )

    def _what_starts_afresh(self, state: Any) -> list[str]:
        """What a resume from `state` cannot restore and therefore starts anew, in words."""
        afresh = []
        if self.net.data_layers() and not state.HasField("data_cursor"):
            afresh.append("the data cursor starts at record 0")
        if self.queue is not None and not state.HasField("isgd_state"):
            what = "ISGD's loss queue" if self.isgd is not None else "the average-loss window"
            afresh.append(f"{what} starts empty (one epoch to refill)")
        if self.net.rng_state() and not state.layer_rng_state:
            afresh.append("layer random streams (Dropout ...) restart from the seed")
        if not state.HasField("progress"):
            afresh.append(
                f"the training clock and grad_evals start at 0 (iteration {int(state.iter)})"
            )
        return afresh


def weights_warning(source: str, layers: list[str]) -> str:
    """The one warning for weights files that leave some layers with params at their fillers."""
    return (
        f"{source} gives no weights to {len(layers)} layer(s) with params: "
        f"{', '.join(layers)}; they keep their fillers' initial values (a truncated file, or "
        "weights from a different net?)"
    )


def _short(value: Any) -> float:
    """A float32 as the shortest decimal that reads back to it (0.1, not 0.10000000149)."""
    return float(str(np.float32(value)))


def _loss_weights(net: Any) -> dict[str, float]:
    """Loss weight of each output blob by name (0 for non-loss outputs), as blob_loss_weights."""
    by_id = {id(blob): float(w) for blob, w in getattr(net, "loss_tops", [])}
    return {name: by_id.get(id(net.blobs[name]), 0.0) for name in net.output_blob_names}
