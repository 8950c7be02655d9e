"""Caffe's weight fillers (constant, uniform, gaussian, positive_unitball, xavier, msra, bilinear).

Each filler draws from Caffe's CPU stream (engine.boost_random.CaffeRNG) exactly as filler.hpp
does, in float32 (Caffe's Dtype), and returns a host array; the caller copies it to the device.
So a net built from random_seed S starts from Caffe's weights for S bit for bit. Fan rules follow
Caffe: fan_in = count / shape[0] and fan_out = count / shape[1] (integer division; the count for
a 1-axis blob), whatever the layer's actual connectivity. Constant and bilinear draw nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.boost_random import CaffeRNG

FAN_IN, FAN_OUT, AVERAGE = 0, 1, 2  # FillerParameter.VarianceNorm values in caffe.proto
F32 = np.float32


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


def _fan_norm(param: Any, shape: tuple[int, ...], kind: str) -> np.float32:
    """Caffe's n as a float: fan_in, fan_out, or float(fan_in + fan_out) / 2 (AVERAGE)."""
    fan_in, fan_out = fan_in_out(shape)
    norm = int(param.variance_norm)
    if norm == AVERAGE:
        n = F32(fan_in + fan_out) / F32(2)
    elif norm == FAN_OUT:
        n = F32(fan_out)
    elif norm == FAN_IN:
        n = F32(fan_in)
    else:
        raise ValueError(f"filler '{kind}': unknown variance_norm {norm}")
    if n <= 0:
        raise ValueError(f"filler '{kind}': fan of shape {shape} is zero")
    return n


def _constant(p: Any, shape: tuple[int, ...], rng: CaffeRNG) -> np.ndarray:
    _no_sparse(p, "constant")
    return np.full(shape, p.value, dtype=F32)


def _uniform(p: Any, shape: tuple[int, ...], rng: CaffeRNG) -> np.ndarray:
    _no_sparse(p, "uniform")
    if p.min > p.max:
        raise ValueError(f"filler 'uniform': min ({p.min}) > max ({p.max})")
    return rng.uniform(_count(shape), p.min, p.max).reshape(shape)


def _gaussian(p: Any, shape: tuple[int, ...], rng: CaffeRNG) -> np.ndarray:
    """All the normals of the blob, then (sparse >= 0) one float Bernoulli per value, each value
    multiplied by its 0/1 mask: a masked negative value becomes -0.0, as in Caffe."""
    if p.std <= 0:
        raise ValueError(f"filler 'gaussian': std must be > 0, got {p.std}")
    if p.sparse < -1:
        raise ValueError(f"filler 'gaussian': sparse must be >= -1, got {p.sparse}")
    count = _count(shape)
    out = rng.gaussian(count, p.mean, p.std)
    if p.sparse >= 0:
        if len(shape) < 1:
            raise ValueError("filler 'gaussian': sparse filling needs a blob with >= 1 axis")
        keep = F32(p.sparse) / F32(shape[0])  # Caffe: Dtype(sparse) / Dtype(num_outputs)
        if keep > 1:
            raise ValueError(
                f"filler 'gaussian': sparse ({p.sparse}) exceeds the blob's num_outputs "
                f"({shape[0]}): Caffe requires a keep probability <= 1"
            )
        out *= rng.bernoulli_float(count, keep).astype(F32)
    return out.reshape(shape)


def _positive_unitball(p: Any, shape: tuple[int, ...], rng: CaffeRNG) -> np.ndarray:
    """U[0, 1], then each of the shape[0] rows divided by its float32 sum taken in order."""
    _no_sparse(p, "positive_unitball")
    out = rng.uniform(_count(shape), 0.0, 1.0)
    num = shape[0] if shape else 1
    rows = out.reshape(num, -1)
    sums = np.add.accumulate(rows, axis=1, dtype=F32)[:, -1:]  # sequential, as Caffe's loop
    rows /= sums
    return out.reshape(shape)


def _xavier(p: Any, shape: tuple[int, ...], rng: CaffeRNG) -> np.ndarray:
    _no_sparse(p, "xavier")
    scale = np.sqrt(F32(3) / _fan_norm(p, shape, "xavier"))
    return rng.uniform(_count(shape), -scale, scale).reshape(shape)


def _msra(p: Any, shape: tuple[int, ...], rng: CaffeRNG) -> np.ndarray:
    _no_sparse(p, "msra")
    std = np.sqrt(F32(2) / _fan_norm(p, shape, "msra"))
    return rng.gaussian(_count(shape), 0.0, std).reshape(shape)


def _bilinear(p: Any, shape: tuple[int, ...], rng: CaffeRNG) -> np.ndarray:
    """Upsampling kernel for Deconvolution: separable triangle of width 2f, computed in float32
    as Caffe's BilinearFiller does; the same K x K kernel for every channel."""
    _no_sparse(p, "bilinear")
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"filler 'bilinear': needs a 4-axis blob with square kernels, got {shape}")
    k = shape[3]
    f = math.ceil(k / 2.0)
    c = F32((2 * f - 1 - f % 2) / (2.0 * f))
    line = F32(1) - np.abs(np.arange(k, dtype=F32) / F32(f) - c)
    kernel = line[:, None] * line[None, :]  # (1 - |y/f - c|) * (1 - |x/f - c|), y the row
    return np.broadcast_to(kernel, shape).copy()


_FILLERS: dict[str, Callable[[Any, tuple[int, ...], CaffeRNG], np.ndarray]] = {
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


def fill(filler_param: Any, shape: tuple[int, ...], rng: CaffeRNG, dtype: Any = F32) -> np.ndarray:
    """A host array of `shape` filled by the FillerParameter's rule, drawn from Caffe's stream
    `rng` (computed in float32 as Caffe's float nets are, then cast to `dtype`)."""
    kind = filler_param.type
    try:
        rule = _FILLERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown filler type {kind!r} (known: {', '.join(filler_types())})"
        ) from None
    if not isinstance(rng, CaffeRNG):
        raise TypeError(f"fill needs Caffe's stream (a CaffeRNG), got {type(rng).__name__}")
    shape = tuple(int(d) for d in shape)
    if _count(shape) == 0:
        raise ValueError(f"filler '{kind}': cannot fill an empty blob of shape {shape}")
    return np.asarray(rule(filler_param, shape, rng), dtype=dtype)
