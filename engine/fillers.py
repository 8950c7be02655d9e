"""Caffe's weight fillers (constant, uniform, gaussian, positive_unitball, xavier, msra, bilinear).

Each filler draws on the host from an explicit NumPy Generator and returns a host array; the
caller copies it to the device. Fan rules follow Caffe: fan_in = count / shape[0] and
fan_out = count / shape[1] (integer division), whatever the layer's actual connectivity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

FAN_IN, FAN_OUT, AVERAGE = 0, 1, 2  # FillerParameter.VarianceNorm values in caffe.proto


def _count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _no_sparse(param: Any, kind: str) -> None:
    if param.sparse != -1:
        raise ValueError(
            f"filler '{kind}': sparsity (sparse={param.sparse}) is only supported by "
            "the gaussian filler"
        )


def fan_in_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """Caffe's fans: count / shape[0] and count / shape[1] (the count itself for <2 axes)."""
    count = _count(shape)
    fan_in = count // shape[0] if len(shape) >= 1 and shape[0] else count
    fan_out = count // shape[1] if len(shape) >= 2 and shape[1] else count
    return fan_in, fan_out


def _fan_norm(param: Any, shape: tuple[int, ...], kind: str) -> float:
    fan_in, fan_out = fan_in_out(shape)
    norm = int(param.variance_norm)
    if norm == AVERAGE:
        n = (fan_in + fan_out) / 2.0
    elif norm == FAN_OUT:
        n = float(fan_out)
    elif norm == FAN_IN:
        n = float(fan_in)
    else:
        raise ValueError(f"filler '{kind}': unknown variance_norm {norm}")
    if n <= 0:
        raise ValueError(f"filler '{kind}': fan of shape {shape} is zero")
    return n


def _constant(p: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    _no_sparse(p, "constant")
    return np.full(shape, p.value, dtype=np.float64)


def _uniform(p: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    _no_sparse(p, "uniform")
    if p.min > p.max:
        raise ValueError(f"filler 'uniform': min ({p.min}) > max ({p.max})")
    return rng.uniform(p.min, p.max, size=shape)


def _gaussian(p: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if p.std <= 0:
        raise ValueError(f"filler 'gaussian': std must be > 0, got {p.std}")
    if p.sparse < -1:
        raise ValueError(f"filler 'gaussian': sparse must be >= -1, got {p.sparse}")
    out = rng.normal(p.mean, p.std, size=shape)
    if p.sparse >= 0:
        # Caffe keeps each weight with probability sparse / num_outputs (num_outputs = shape[0]).
        if len(shape) < 1:
            raise ValueError("filler 'gaussian': sparse filling needs a blob with >= 1 axis")
        keep = min(1.0, p.sparse / shape[0])
        out *= rng.random(size=shape) < keep
    return out


def _positive_unitball(p: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    _no_sparse(p, "positive_unitball")
    out = rng.uniform(0.0, 1.0, size=shape)
    num = shape[0] if shape else 1
    rows = out.reshape(num, -1)
    rows /= rows.sum(axis=1, keepdims=True)
    return out


def _xavier(p: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    _no_sparse(p, "xavier")
    scale = math.sqrt(3.0 / _fan_norm(p, shape, "xavier"))
    return rng.uniform(-scale, scale, size=shape)


def _msra(p: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    _no_sparse(p, "msra")
    std = math.sqrt(2.0 / _fan_norm(p, shape, "msra"))
    return rng.normal(0.0, std, size=shape)


def _bilinear(p: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Upsampling kernel for Deconvolution: separable triangle of width 2f, as Caffe builds it."""
    _no_sparse(p, "bilinear")
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"filler 'bilinear': needs a 4-axis blob with square kernels, got {shape}")
    k = shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    line = 1.0 - np.abs(np.arange(k) / f - c)
    kernel = np.outer(line, line)
    return np.broadcast_to(kernel, shape).copy()


_FILLERS: dict[str, Callable[[Any, tuple[int, ...], np.random.Generator], np.ndarray]] = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def filler_types() -> list[str]:
    return sorted(_FILLERS)


def fill(
    filler_param: Any, shape: tuple[int, ...], rng: np.random.Generator, dtype: Any = np.float32
) -> np.ndarray:
    """A host array of `shape` filled by the FillerParameter's rule, drawn from `rng`."""
    kind = filler_param.type
    try:
        rule = _FILLERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown filler type {kind!r} (known: {', '.join(filler_types())})"
        ) from None
    shape = tuple(int(d) for d in shape)
    if _count(shape) == 0:
        raise ValueError(f"filler '{kind}': cannot fill an empty blob of shape {shape}")
    return np.asarray(rule(filler_param, shape, rng), dtype=dtype)
