"""Timing of a Net: whole passes and Caffe's per-layer loop (`caffe time`), shared by `isgd time`
and scripts/bench.py so both measure the same thing the same way."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.backend import synchronize


def device_sync(xp: Any) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on NumPy): timers need it."""
    return lambda: synchronize(xp)


@dataclass
class PassTimes:
    """Per-iteration whole-pass times in ms (backward empty when not timed)."""

    forward_ms: list[float] = field(default_factory=list)
    backward_ms: list[float] = field(default_factory=list)

    @property
    def iteration_ms(self) -> list[float]:
        """Forward + backward of each iteration."""
        if not self.backward_ms:
            return list(self.forward_ms)
        return [f + b for f, b in zip(self.forward_ms, self.backward_ms, strict=True)]


@dataclass
class LayerTimes:
    """Caffe's per-layer timing: mean ms per layer and pass, and each iteration's total."""

    names: list[str]
    types: list[str]
    forward_ms: list[float]
    backward_ms: list[float]
    forward_pass_ms: float
    backward_pass_ms: float
    iteration_ms: list[float]
    total_ms: float


def time_passes(net: Any, iterations: int, warmup: int = 5, backward: bool = True) -> PassTimes:
    """Steady-state forward (and backward) pass times of `net`, after `warmup` untimed iterations
    (buffers allocated, thread pools started, pages touched)."""
    sync = device_sync(net.xp)
    for _ in range(warmup):
        net.forward_loss()
        if backward:
            net.backward()
    sync()
    out = PassTimes()
    for _ in range(iterations):
        t = time.perf_counter()
        net.forward_loss()
        sync()
        out.forward_ms.append(1e3 * (time.perf_counter() - t))
        if backward:
            t = time.perf_counter()
            net.backward()
            sync()
            out.backward_ms.append(1e3 * (time.perf_counter() - t))
    return out


def time_layers(
    net: Any,
    iterations: int,
    backward: bool = True,
    on_iteration: Callable[[int, float], None] | None = None,
) -> LayerTimes:
    """Caffe's time(): per iteration, each layer's reshape + forward, then (if `backward`) each
    layer's backward in reverse, timed one by one with a device sync after each.

    Layers that need no backward are skipped there. `on_iteration(j, ms)` is called after
    iteration j (1-based) with its forward-backward time, as Caffe logs it.
    """
    sync = device_sync(net.xp)
    n = len(net.layers)
    fwd, bwd = [0.0] * n, [0.0] * n
    forward_total = backward_total = 0.0
    per_iter = []
    total_start = time.perf_counter()
    for j in range(iterations):
        iter_start = time.perf_counter()
        for i, layer in enumerate(net.layers):
            t = time.perf_counter()
            layer.reshape(net.bottom_vecs[i], net.top_vecs[i])
            layer.forward(net.bottom_vecs[i], net.top_vecs[i])
            sync()
            fwd[i] += time.perf_counter() - t
        forward_total += time.perf_counter() - iter_start
        back_start = time.perf_counter()
        for i in range(n - 1, -1, -1) if backward else ():
            if not net.layer_need_backward[i]:
                continue
            t = time.perf_counter()
            net.layers[i].backward(net.top_vecs[i], net.bottom_need_backward[i], net.bottom_vecs[i])
            sync()
            bwd[i] += time.perf_counter() - t
        backward_total += time.perf_counter() - back_start
        ms = (time.perf_counter() - iter_start) * 1e3
        per_iter.append(ms)
        if on_iteration is not None:
            on_iteration(j + 1, ms)
    total_ms = (time.perf_counter() - total_start) * 1e3
    k = max(iterations, 1)
    return LayerTimes(
        names=list(net.layer_names),
        types=[layer.type_name for layer in net.layers],
        forward_ms=[1e3 * t / k for t in fwd],
        backward_ms=[1e3 * t / k for t in bwd],
        forward_pass_ms=1e3 * forward_total / k,
        backward_pass_ms=1e3 * backward_total / k,
        iteration_ms=per_iter,
        total_ms=total_ms,
    )
