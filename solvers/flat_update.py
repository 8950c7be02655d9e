"""Caffe's SGD/Nesterov ApplyUpdate over a net's flat buffers at once (the fast path beside the
per-param loop in Solver.apply_update; update_kernels.py holds its compiled form)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.backend import host_threads_allowed
from engine.threads import EngineThreads
from solvers import update_kernels
from solvers.update_kernels import sgd_segment
from solvers.update_rules import UpdateRule, normalize

f32 = np.float32


class FlatUpdate:
    """Caffe's Normalize, L2 Regularize, SGD/Nesterov ComputeUpdateValue and Update over the
    net's flat buffers: each param in cache-sized segments with its own scalar rate and decay,
    so element by element the float32 arithmetic of the per-blob loop, in one pass over memory
    split over the engine's threads (the update is bound by memory bandwidth)."""

    BLOCK = 16384  # elements per segment: its arrays stay in cache between the operations

    def __init__(
        self,
        net: Any,
        history: Any,
        rule: UpdateRule,
        param: Any,
        xp: Any,
        compiled: bool = True,
    ) -> None:
        """`history`: the rule's flat buffer (set 0); `param`: the SolverParameter (weight_decay,
        iter_size, snapshot_diff); `compiled`: use the Numba loop on NumPy where available."""
        self.net, self.history, self.xp = net, history, xp
        self.iter_size = int(param.iter_size)
        # The diff keeps the update value (Caffe's diff after Update) only when snapshot_diff
        # will write it; otherwise it is zeroed on the way (see apply).
        self.keep_diff = bool(param.snapshot_diff)
        weight_decay = f32(param.weight_decay)
        block = self.BLOCK if host_threads_allowed(xp) else None  # a device takes a param whole
        segments = []  # (slice, lr_mult, local decay)
        for offset, blob, lr_mult, decay_mult in zip(
            net.param_offsets,
            net.learnable_params,
            net.params_lr,
            net.params_weight_decay,
            strict=True,
        ):
            offset, count = int(offset), int(blob.count)
            step = block or max(count, 1)
            decay = f32(weight_decay * f32(decay_mult))
            for a in range(offset, offset + count, step):
                segments.append((slice(a, min(a + step, offset + count)), f32(lr_mult), decay))
        self.nesterov = rule.name == "Nesterov"
        self.momentum = rule.momentum
        self.scratch = xp.empty_like(net.flat_data)
        self.previous = xp.empty_like(net.flat_data) if self.nesterov else None
        self.threads = EngineThreads(xp, "update")
        # On NumPy one compiled loop per segment (same float operations, one pass over memory).
        self.compiled = xp is np and update_kernels.AVAILABLE and compiled
        if self.compiled:  # compile before the training clock starts
            update_kernels.warm_up(net.flat_data.dtype)
        parts = max(1, min(self.threads.count, len(segments)))
        total = sum(sl.stop - sl.start for sl, _, _ in segments)
        self.parts: list[list[tuple[slice, np.float32, np.float32]]] = [[] for _ in range(parts)]
        done = 0
        for seg in segments:  # contiguous parts of about equal size
            self.parts[min(parts - 1, done * parts // max(total, 1))].append(seg)
            done += seg[0].stop - seg[0].start

    @classmethod
    def make(
        cls, net: Any, history: Any, rule: UpdateRule, param: Any, xp: Any, compiled: bool = True
    ) -> FlatUpdate | None:
        """The flat path where it is exact: SGD or Nesterov with L2 (or no) weight decay."""
        elementwise = rule.name in ("SGD", "Nesterov")
        if not elementwise or param.regularization_type != "L2" or net.flat_data.size == 0:
            return None
        return cls(net, history, rule, param, xp, compiled)

    def apply(self, rate: np.float32) -> bool:
        """w -= this iteration's update. Returns True when it left every param diff at zero
        (no snapshot_diff): the next iteration's ClearParamDiffs is then already done, while
        each segment was in cache."""
        normalize(self.net.flat_diff, self.iter_size)
        keep = self.keep_diff
        self.threads.run(lambda k: self._update(self.parts[k], rate, keep), len(self.parts))
        return not keep

    def _update(self, segments: list, rate: np.float32, keep_diff: bool) -> None:
        data, diff, history = self.net.flat_data, self.net.flat_diff, self.history
        if self.compiled:
            m, nesterov = self.momentum, self.nesterov
            for b, lr_mult, decay in segments:
                local_rate = f32(rate * lr_mult)
                sgd_segment(data[b], diff[b], history[b], local_rate, decay, m, nesterov, keep_diff)
            return
        m, minus_m = self.momentum, -self.momentum
        one_plus_m = f32(f32(1.0) + self.momentum)
        multiply = self.xp.multiply
        for b, lr_mult, decay in segments:
            w, g, h, tmp = data[b], diff[b], history[b], self.scratch[b]
            if decay:
                multiply(w, decay, out=tmp)  # Regularize: g += decay * w
                g += tmp
            if self.nesterov:
                step = self.previous[b]
                step[...] = h
            h *= m  # ComputeUpdateValue: h = momentum h + local_rate g
            multiply(g, f32(rate * lr_mult), out=tmp)
            h += tmp
            if self.nesterov:  # step = (1 + momentum) h - momentum h_prev
                step *= minus_m
                multiply(h, one_plus_m, out=tmp)
                step += tmp
            else:
                step = h
            w -= step  # Update
            if keep_diff:
                g[...] = step
            else:
                g.fill(0)  # the next iteration's ClearParamDiffs, while the segment is in cache
