"""Scoring a net over test batches: the one routine behind Caffe's Solver::Test (during training)
and caffe.cpp's test() (`isgd test`): each output element's mean over the batches, in Dtype."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.backend import to_numpy

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
