"""boost 1.74's normal_distribution<float> (a 128-layer ziggurat) over a buffer of mt19937 outputs.

A value takes one 32-bit draw most of the time and more in a wedge or the tail, so values are
made one at a time in a compiled loop (Numba; plain Python where Numba has no wheel). The loop
reads a buffer of raw draws and says how many the finished values used, so the caller carries
the rest (a value cut off by the buffer's end) into the next buffer. Arithmetic follows the
boost headers: float32 throughout, table entries rounded to float where boost writes
RealType(table[i]), table differences taken in double and rounded once, and the first layer test
`x < table_x[i + 1]` made in double for the normal and in float for the exponential. exp is
float32(exp(double)).
"""

from __future__ import annotations

import math

import numpy as np

from engine.jit import AVAILABLE, kernel
from engine.ziggurat_tables import EXP_X, EXP_Y, NORMAL_X, NORMAL_Y

__all__ = ["AVAILABLE", "normals_from"]

F32 = np.float32
TWO_M24 = F32(2.0**-24)  # generate_int_float_pair<float, 8>: 24 fraction bits
TWO_M32 = F32(2.0**-32)  # uniform_01<float>: 1 / (float(2^32 - 1) + 1)

# Normal: X, Y as double (the first test) and as float; differences rounded once to float.
NX = NORMAL_X
NX32 = NORMAL_X.astype(F32)
NY32 = NORMAL_Y.astype(F32)
NDX32 = (NORMAL_X[:-1] - NORMAL_X[1:]).astype(F32)  # RealType(x[i] - x[i+1])
NDY32 = (NORMAL_Y[1:] - NORMAL_Y[:-1]).astype(F32)  # RealType(y[i+1] - y[i])
# Exponential (used by the normal's tail).
EX32 = EXP_X.astype(F32)
EY32 = EXP_Y.astype(F32)
EDX32 = (EXP_X[:-1] - EXP_X[1:]).astype(F32)
EDY32 = (EXP_Y[1:] - EXP_Y[:-1]).astype(F32)


@kernel
def _uniform01(raw: np.ndarray, pos: int) -> tuple[np.float32, int]:
    """uniform_01<float>: float(u) * 2^-32, drawn again if it rounds to 1; pos -1: buffer out."""
    while pos < raw.shape[0]:
        v = F32(raw[pos]) * TWO_M32
        pos += 1
        if v < F32(1.0):
            return v, pos
    return F32(0.0), -1


@kernel
def _unit_exponential(raw: np.ndarray, pos: int) -> tuple[np.float32, int]:
    """boost's unit_exponential_distribution<float>: 256-layer ziggurat, tail by shifting."""
    shift = F32(0.0)
    while pos < raw.shape[0]:
        u = raw[pos]
        pos += 1
        i = int(u & 0xFF)
        x = F32(u >> 8) * TWO_M24 * EX32[i]
        if x < EX32[i + 1]:
            return shift + x, pos
        if i == 0:
            shift += EX32[1]
            continue
        v, pos = _uniform01(raw, pos)
        if pos < 0:
            return F32(0.0), -1
        y = EY32[i] + v * EDY32[i]
        above_upper = EDX32[i] * v - (EX32[i] - x)
        above_lower = y - (EY32[i + 1] + (EX32[i + 1] - x) * EY32[i + 1])
        if above_upper < F32(0.0) and (
            above_lower <= F32(0.0) or y < F32(math.exp(float(-x)))
        ):
            return x + shift, pos
    return F32(0.0), -1


@kernel
def _normal_tail(raw: np.ndarray, pos: int) -> tuple[np.float32, int]:
    """The tail beyond x[1]: x ~ Exp(x[1]), y ~ Exp(1) until 2y > x^2; returns x + x[1]."""
    start = NX32[1]
    while True:
        e, pos = _unit_exponential(raw, pos)
        if pos < 0:
            return F32(0.0), -1
        x = e / start
        y, pos = _unit_exponential(raw, pos)
        if pos < 0:
            return F32(0.0), -1
        if F32(2.0) * y > x * x:
            return x + start, pos


@kernel
def _unit_normal(raw: np.ndarray, pos: int) -> tuple[np.float32, int]:
    """boost 1.74's unit_normal_distribution<float>; pos -1 when the buffer ran out."""
    while pos < raw.shape[0]:
        u = raw[pos]
        pos += 1
        i = int(u & 0xFF)
        sign = F32((i & 1) * 2 - 1)
        i >>= 1
        x = F32(u >> 8) * TWO_M24 * NX32[i]
        if float(x) < NX[i + 1]:
            return x * sign, pos
        if i == 0:
            t, pos = _normal_tail(raw, pos)
            return t * sign, pos
        v, pos = _uniform01(raw, pos)
        if pos < 0:
            return F32(0.0), -1
        y = NY32[i] + v * NDY32[i]
        chord = NDX32[i] * v - (NX32[i] - x)
        tangent = y - (NY32[i] + (NX32[i] - x) * NY32[i] * NX32[i])
        if NX[i] >= 1.0:  # convex layer (and the one with the inflection point)
            above_upper, above_lower = chord, tangent
        else:
            above_upper, above_lower = tangent, chord
        if above_upper < F32(0.0) and (
            above_lower < F32(0.0) or y < F32(math.exp(float(-(x * x / F32(2.0)))))
        ):
            return x * sign, pos
    return F32(0.0), -1


@kernel
def normals_from(
    raw: np.ndarray, out: np.ndarray, mean: np.float32, std: np.float32
) -> tuple[int, int]:
    """Fill out[k] = z_k * std + mean (float32) from the draws in `raw`, in order, until out is
    full or the draws run out. Returns (values made, draws used by those values)."""
    pos, end = 0, raw.shape[0]
    for k in range(out.shape[0]):
        if pos < end:  # the first layer test passes for ~98% of draws: kept inline, no call
            u = raw[pos]
            i = int(u & 0xFF)
            layer = i >> 1
            x = F32(u >> 8) * TWO_M24 * NX32[layer]
            if float(x) < NX[layer + 1]:
                out[k] = x * F32((i & 1) * 2 - 1) * std + mean
                pos += 1
                continue
        z, nxt = _unit_normal(raw, pos)  # from the same draw: wedge, tail or buffer end
        if nxt < 0:
            return k, pos
        out[k] = z * std + mean
        pos = nxt
    return out.shape[0], pos
