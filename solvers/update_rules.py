"""Caffe's per-parameter update rules on plain arrays: Normalize, Regularize, ComputeUpdateValue.

Each rule turns a param's diff (the gradient) into the step Caffe subtracts from its data, in place,
with the arithmetic order of Caffe's CPU path (float32 where Caffe uses Dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np

f32 = np.float32


def normalize(diff: Any, iter_size: int) -> None:
    """Scale an accumulated gradient by 1/iter_size (Caffe's Normalize; no-op for 1)."""
    if iter_size != 1:
        diff *= diff.dtype.type(1.0 / iter_size) if diff.dtype != f32 else f32(f32(1.0) / iter_size)


def regularize(data: Any, diff: Any, local_decay: float, kind: str, xp: Any = np) -> None:
    """Weight decay into the gradient: L2 adds decay*w, L1 decay*sign(w) (Caffe's Regularize)."""
    if not local_decay:
        return
    decay = diff.dtype.type(local_decay)
    if kind == "L2":
        diff += decay * data
    elif kind == "L1":
        diff += decay * xp.sign(data)
    else:
        raise ValueError(f"unknown regularization_type '{kind}' (use L2 or L1)")


def clip_gradients(diffs: list[Any], clip: float, xp: Any = np) -> tuple[float, float] | None:
    """Scale all diffs by clip/||g|| when the global L2 norm exceeds `clip` (< 0 = off).

    Returns (norm, scale) when clipping happened, for Caffe's log line.
    """
    if clip < 0:
        return None
    sumsq = f32(0.0)  # Caffe's order: a float32 sum of per-blob dots (np.linalg.norm rounds apart)
    for d in diffs:
        sumsq = f32(sumsq + f32(float(xp.dot(d.reshape(-1), d.reshape(-1)))))
    norm = f32(np.sqrt(sumsq))
    if norm > f32(clip):
        scale = f32(f32(clip) / norm)
        for d in diffs:
            d *= scale
        return float(norm), float(scale)
    return None


def param_views(flat: Any, net: Any) -> list[Any]:
    """One view per learnable param of a buffer laid out as `net.flat_data`, in its shape."""
    return [
        flat[int(o) : int(o) + b.count].reshape(b.shape)
        for o, b in zip(net.param_offsets, net.learnable_params, strict=True)
    ]


class History:
    """An update rule's state (Caffe's history_, PyTorch's state[p]): `sets` flat buffers laid
    out as the net's flat params; `history[i]` is param i's buffers (views), `flat[s]` set s."""

    def __init__(self, sets: int, net: Any, xp: Any = np) -> None:
        self.flat = [xp.zeros_like(net.flat_data) for _ in range(sets)]
        views = [param_views(h, net) for h in self.flat]
        count = len(net.learnable_params)
        self._params = [[views[s][i] for s in range(sets)] for i in range(count)]

    def __getitem__(self, i: int) -> list[Any]:
        return self._params[i]

    def __len__(self) -> int:
        return len(self._params)

    def caffe_order(self) -> list[Any]:
        """The buffers in a .solverstate's history order: set 0 for every param, then set 1
        (AdaDelta, Adam) for every param, as Caffe's SGDSolver lays out history_."""
        return [params[s] for s in range(len(self.flat)) for params in self._params]


class UpdateRule:
    """Base: turns diffs into update steps in place, reading and writing its History."""

    name = ""
    history_sets = 1  # how many history blobs per learnable param (Caffe's history_ layout)

    def __init__(self, param: Any) -> None:
        self.momentum = f32(param.momentum)
        self.momentum2 = f32(param.momentum2)
        self.delta = f32(param.delta)
        self.rms_decay = f32(param.rms_decay)

    def make_history(self, net: Any, xp: Any = np) -> History:
        """This rule's zeroed state for `net`'s learnable params (flat, viewed per param)."""
        return History(self.history_sets, net, xp)

    def compute(self, i: int, diff: Any, history: list[Any], local_rate: Any, it: int) -> None:
        """Overwrite `diff` with the update value of learnable param i; `history` is its buffers."""
        raise NotImplementedError


class SGD(UpdateRule):
    """Momentum SGD: h = momentum*h + lr*g; step = h."""

    name = "SGD"

    def compute(self, i: int, diff: Any, history: list[Any], local_rate: Any, it: int) -> None:
        h = history[0]
        h *= self.momentum
        h += local_rate * diff
        diff[...] = h


class Nesterov(UpdateRule):
    """Caffe's Nesterov: h' = momentum*h + lr*g; step = (1+momentum)*h' - momentum*h."""

    name = "Nesterov"

    def compute(self, i: int, diff: Any, history: list[Any], local_rate: Any, it: int) -> None:
        h = history[0]
        previous = h.copy()
        h *= self.momentum
        h += local_rate * diff
        previous *= -self.momentum
        previous += f32(f32(1.0) + self.momentum) * h
        diff[...] = previous


def _divide_by_root(diff: Any, h: Any, delta: Any, local_rate: Any) -> None:
    """AdaGrad's and RMSProp's step in Caffe's order: diff = lr * diff / (sqrt(h) + delta)."""
    denom = h**0.5
    denom += delta
    diff /= denom
    diff *= local_rate


class AdaGrad(UpdateRule):
    """Caffe's AdaGrad: h += g^2; step = lr * g / (sqrt(h) + delta)."""

    name = "AdaGrad"

    def compute(self, i: int, diff: Any, history: list[Any], local_rate: Any, it: int) -> None:
        h = history[0]
        h += diff * diff
        _divide_by_root(diff, h, self.delta, local_rate)


class RMSProp(UpdateRule):
    """Caffe's RMSProp: h = d*h + (1-d)*g^2; step = lr * g / (sqrt(h) + delta)."""

    name = "RMSProp"

    def compute(self, i: int, diff: Any, history: list[Any], local_rate: Any, it: int) -> None:
        h = history[0]
        h *= self.rms_decay
        h += f32(f32(1.0) - self.rms_decay) * (diff * diff)
        _divide_by_root(diff, h, self.delta, local_rate)


class AdaDelta(UpdateRule):
    """Caffe's AdaDelta: gradient and update second moments with decay `momentum`."""

    name = "AdaDelta"
    history_sets = 2

    def compute(self, i: int, diff: Any, history: list[Any], local_rate: Any, it: int) -> None:
        h_grad, h_update = history
        one_minus = f32(f32(1.0) - self.momentum)
        h_grad *= self.momentum
        h_grad += one_minus * (diff * diff)
        ratio = (h_update + self.delta) / (h_grad + self.delta)
        update = diff * ratio**0.5
        h_update *= self.momentum
        h_update += one_minus * (update * update)
        diff[...] = local_rate * update


class Adam(UpdateRule):
    """Caffe's Adam: bias-corrected first/second moments (beta1 = momentum, beta2 = momentum2)."""

    name = "Adam"
    history_sets = 2

    def compute(self, i: int, diff: Any, history: list[Any], local_rate: Any, it: int) -> None:
        m, v = history
        b1, b2 = self.momentum, self.momentum2
        t = it + 1
        correction = f32(np.sqrt(1.0 - np.power(float(b2), t)) / (1.0 - np.power(float(b1), t)))
        m *= b1
        m += f32(f32(1.0) - b1) * diff
        v *= b2
        v += f32(f32(1.0) - b2) * (diff * diff)
        denom = v**0.5
        denom += self.delta
        diff[...] = f32(local_rate * correction) * (m / denom)


RULES: dict[str, type[UpdateRule]] = {
    cls.name: cls for cls in (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)
}
SOLVER_TYPE_ENUM = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def make_rule(param: Any) -> UpdateRule:
    """The update rule named by SolverParameter.type (or the deprecated solver_type enum)."""
    name = param.type
    if not param.HasField("type") and param.HasField("solver_type"):
        name = SOLVER_TYPE_ENUM[int(param.solver_type)]
    try:
        cls = RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown solver type '{name}' (known: {', '.join(sorted(RULES))})"
        ) from None
    if cls in (AdaGrad, RMSProp) and param.momentum != 0:
        raise ValueError(f"solver type {name}: momentum must be 0 (Caffe's check)")
    if cls is RMSProp and not 0 <= param.rms_decay < 1:
        raise ValueError(f"solver type RMSProp: rms_decay {param.rms_decay:g} must lie in [0, 1)")
    return cls(param)
