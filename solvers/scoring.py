"""Scoring a net over test batches: the one routine behind Caffe's Solver::Test (during training)
and caffe.cpp's test() (`isgd test`): each output element's mean over the batches, in Dtype;
and the Solver's testing around it (its log lines, when it is due)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.backend import to_numpy
from solvers.train_log import TrainLog

f32 = np.float32


@dataclass
class Scores:
    """Every output element's name and float32 mean over the batches, and the mean loss."""

    names: list[str]
    means: np.ndarray
    loss: np.float32


def output_values(net: Any) -> tuple[list[str], np.ndarray]:
    """The net's output blobs flattened in Caffe's order: one name per element, float32 values."""
    names: list[str] = []
    values = []
    for name in net.output_blob_names:
        flat = np.asarray(to_numpy(net.blobs[name].data), f32).reshape(-1)
        values.append(flat)
        names.extend([name] * flat.size)
    return names, np.concatenate(values) if values else np.zeros(0, f32)


def loss_weights(net: Any) -> dict[str, float]:
    """Loss weight of each output blob by name (0 for non-loss outputs), as blob_loss_weights."""
    by_id = {id(blob): float(w) for blob, w in net.loss_tops}
    return {name: by_id.get(id(net.blobs[name]), 0.0) for name in net.output_blob_names}


def score(
    net: Any,
    iterations: int,
    on_batch: Callable[[int, list[str], np.ndarray], None] | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> Scores | None:
    """Forward `iterations` batches summing each output element in float32, as Caffe does;
    None when `interrupted()` (asked before each batch) says to stop."""
    total: np.ndarray | None = None
    names: list[str] = []
    loss = f32(0.0)
    for i in range(iterations):
        if interrupted is not None and interrupted():
            return None
        loss = f32(loss + f32(net.forward_loss()))
        names, batch = output_values(net)
        if on_batch is not None:
            on_batch(i, names, batch)
        total = batch.copy() if total is None else (total + batch).astype(f32)
    count = f32(max(iterations, 1))
    means = (total / count).astype(f32) if total is not None else np.zeros(0, f32)
    return Scores(names=names, means=means, loss=f32(loss / count))


def log_outputs(log: TrainLog, net: Any, kind: str, values: Sequence[float]) -> None:
    """Caffe's "<kind> net output #k: name = v" lines for the flat output `values`."""
    weights = loss_weights(net)
    index = 0
    for name in net.output_blob_names:
        for _ in range(int(net.blobs[name].count)):
            log.output(kind, index, name, float(values[index]), weights.get(name, 0.0))
            index += 1


def log_test_scores(
    net: Any,
    iterations: int,
    log: TrainLog,
    compute_loss: bool = False,
    interrupted: Callable[[], bool] | None = None,
) -> Scores | None:
    """Caffe's Solver::Test after "Testing net": score `net`, log the loss (`compute_loss`)
    and each output's mean with its loss weight; None (logged) when interrupted."""
    scores = score(net, iterations, interrupted=interrupted)
    if scores is None:
        log.info("Test interrupted.")
        return None
    if compute_loss:
        log.info(f"Test loss: {float(scores.loss):g}")
    weights = loss_weights(net)
    for k, (name, value) in enumerate(zip(scores.names, scores.means, strict=True)):
        log.output("Test", k, name, float(value), weights.get(name, 0.0))
    return scores


class Cadence:
    """When the Solver tests: Caffe's test_interval (iterations), and this project's cadences
    on the training clock (test_interval_seconds) and in gradient evaluations
    (test_interval_grad_evals), whose next due points a snapshot keeps (RunProgress)."""

    def __init__(self, param: Any) -> None:
        self.param = param
        self.next_seconds = float(param.test_interval_seconds)
        self.next_grad_evals = int(param.test_interval_grad_evals)  # 0: no cadence in evaluations

    def due(self, it: int, train_seconds: float, grad_evals: int) -> bool:
        """Whether iteration `it` tests first; a cadence that fires moves to its next point."""
        p = self.param
        by_iter = bool(
            p.test_interval and it % p.test_interval == 0 and (it > 0 or p.test_initialization)
        )
        by_time = False
        if p.test_interval_seconds > 0 and train_seconds >= self.next_seconds:
            by_time = True
            interval = float(p.test_interval_seconds)
            self.next_seconds = (math.floor(train_seconds / interval) + 1) * interval
        if p.test_interval_seconds > 0 and it == 0 and p.test_initialization:
            by_time = True
        by_evals = False
        every = int(p.test_interval_grad_evals)
        if every > 0 and grad_evals >= self.next_grad_evals:
            by_evals = True
            self.next_grad_evals = (grad_evals // every + 1) * every
        if every > 0 and it == 0 and p.test_initialization:
            by_evals = True
        return by_iter or by_time or by_evals

    def resume(self, progress: Any, grad_evals: int) -> None:
        """Continue the cadences of a snapshot's RunProgress (`grad_evals`: the restored count)."""
        if progress.HasField("next_test_seconds"):
            self.next_seconds = float(progress.next_test_seconds)
        every = int(self.param.test_interval_grad_evals)
        if progress.HasField("next_test_grad_evals") and every > 0:
            self.next_grad_evals = int(progress.next_test_grad_evals)
        elif every > 0:  # no record: the next multiple after the evaluations done
            self.next_grad_evals = (grad_evals // every + 1) * every
