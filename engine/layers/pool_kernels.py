"""Caffe's CPU pooling loops compiled with Numba, for the Pooling layer on NumPy.

The vectorized NumPy passes in engine.layers.pooling make one strided pass per kernel offset
(and, for MAX, several more to track the argmax); a compiled loop reads each window once:
measured 1.7-2.4x faster forward and 3-6x faster backward on CIFAR-10 quick's and LeNet's
pools (scripts/bench.py). The loops follow pooling_layer.cpp: MAX starts each window at
-FLT_MAX with mask -1 and keeps the first strict maximum in (h, w) scan order, its mask being
h * W + w; AVE divides by the window clipped to [-pad, size + pad) and sums over the part
inside the image. Each call takes a batch slice, so the engine's threads run slices side by
side (the kernels release the GIL).

Without Numba (engine.jit.AVAILABLE False) the layer keeps its NumPy passes, which remain the
reference the tests compare against.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace
from typing import Any

import numpy as np

from engine.jit import AVAILABLE, kernel

__all__ = ["AVAILABLE", "max_backward", "warm_up", "window_kernels"]

LOWEST = -float(np.finfo(np.float32).max)  # Caffe's -FLT_MAX, for float and double alike


@cache
def window_kernels(kh: int, kw: int) -> SimpleNamespace:
    """max_forward, ave_forward and ave_backward for (kh, kw) windows, compiled on first use
    (and cached on disk by Numba, one entry per window size)."""

    def max_forward(x, out, mask, sh, sw, ph, pw):  # noqa: ANN001, ANN202
        """out = max over each window, mask = its first argmax h * W + w (or -1): Caffe's
        strict > from -FLT_MAX in (h, w) scan order. The update is written as selects, not a
        branch: on real activations which value wins is unpredictable."""
        n, c, h, w = x.shape
        oh, ow = out.shape[2], out.shape[3]
        for a in range(n):
            for b in range(c):
                plane = x[a, b]
                for i in range(oh):
                    hs = i * sh - ph
                    for j in range(ow):
                        ws = j * sw - pw
                        best = LOWEST
                        where = -1
                        if hs >= 0 and ws >= 0 and hs + kh <= h and ws + kw <= w:
                            for y in range(kh):
                                row = (hs + y) * w + ws
                                for z in range(kw):
                                    v = plane[hs + y, ws + z]
                                    gt = v > best
                                    where = row + z if gt else where
                                    best = v if gt else best
                        else:
                            for y in range(max(hs, 0), min(hs + kh, h)):
                                for z in range(max(ws, 0), min(ws + kw, w)):
                                    v = plane[y, z]
                                    gt = v > best
                                    where = y * w + z if gt else where
                                    best = v if gt else best
                        out[a, b, i, j] = best
                        mask[a, b, i, j] = where

    def max_values(x, out, sh, sw, ph, pw):  # noqa: ANN001, ANN202
        """out as max_forward makes it, without the argmax (a test pass needs only values)."""
        n, c, h, w = x.shape
        oh, ow = out.shape[2], out.shape[3]
        for a in range(n):
            for b in range(c):
                plane = x[a, b]
                for i in range(oh):
                    hs = i * sh - ph
                    for j in range(ow):
                        ws = j * sw - pw
                        best = LOWEST
                        if hs >= 0 and ws >= 0 and hs + kh <= h and ws + kw <= w:
                            for y in range(kh):
                                for z in range(kw):
                                    v = plane[hs + y, ws + z]
                                    best = v if v > best else best
                        else:
                            for y in range(max(hs, 0), min(hs + kh, h)):
                                for z in range(max(ws, 0), min(ws + kw, w)):
                                    v = plane[y, z]
                                    best = v if v > best else best
                        out[a, b, i, j] = best

    def ave_forward(x, out, sh, sw, ph, pw):  # noqa: ANN001, ANN202
        """out = the window's sum inside the image (in the blob's precision, scan order) over
        the size of the window clipped to [-pad, size + pad)."""
        n, c, h, w = x.shape
        oh, ow = out.shape[2], out.shape[3]
        for a in range(n):
            for b in range(c):
                plane = x[a, b]
                for i in range(oh):
                    hs = i * sh - ph
                    he = min(hs + kh, h + ph)
                    for j in range(ow):
                        ws = j * sw - pw
                        we = min(ws + kw, w + pw)
                        total = x.dtype.type(0)
                        if hs >= 0 and ws >= 0 and hs + kh <= h and ws + kw <= w:
                            for y in range(kh):
                                for z in range(kw):
                                    total += plane[hs + y, ws + z]
                        else:
                            for y in range(max(hs, 0), min(he, h)):
                                for z in range(max(ws, 0), min(we, w)):
                                    total += plane[y, z]
                        out[a, b, i, j] = total / x.dtype.type((he - hs) * (we - ws))

    def ave_backward(dy, dx, sh, sw, ph, pw):  # noqa: ANN001, ANN202
        """dx = 0, then every input of a window += its output's diff / the window's size (the
        quotient rounded to the blob's precision first, as Caffe)."""
        n, c, h, w = dx.shape
        oh, ow = dy.shape[2], dy.shape[3]
        for a in range(n):
            for b in range(c):
                plane = dx[a, b]
                plane[:, :] = 0
                for i in range(oh):
                    hs = i * sh - ph
                    he = min(hs + kh, h + ph)
                    for j in range(ow):
                        ws = j * sw - pw
                        we = min(ws + kw, w + pw)
                        share = dy[a, b, i, j] / dx.dtype.type((he - hs) * (we - ws))
                        if hs >= 0 and ws >= 0 and hs + kh <= h and ws + kw <= w:
                            for y in range(kh):
                                for z in range(kw):
                                    plane[hs + y, ws + z] += share
                        else:
                            for y in range(max(hs, 0), min(he, h)):
                                for z in range(max(ws, 0), min(we, w)):
                                    plane[y, z] += share

    return SimpleNamespace(
        max_forward=kernel(max_forward),
        max_values=kernel(max_values),
        ave_forward=kernel(ave_forward),
        ave_backward=kernel(ave_backward),
    )


@kernel
def max_backward(dy, mask, dx):  # noqa: ANN001, ANN201
    """dx = 0, then dx[mask] += dy in output scan order (float sums in Caffe's order)."""
    n, c, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for a in range(n):
        for b in range(c):
            plane = dx[a, b].reshape(h * w)  # the mask is a flat index: no division by w
            plane[:] = 0
            for i in range(oh):
                for j in range(ow):
                    k = mask[a, b, i, j]
                    if k >= 0:
                        plane[k] += dy[a, b, i, j]


def warm_up(kh: int, kw: int, dtype: Any, method_max: bool, mask_dtype: Any) -> None:
    """Compile (or load from Numba's disk cache) the kernels a (kh, kw) layer will call, on
    tiny arrays of the same types, so the first training iteration does not pay for it."""
    x = np.zeros((1, 1, kh, kw), dtype)
    out = np.zeros((1, 1, 1, 1), dtype)
    kernels = window_kernels(kh, kw)
    if method_max:
        mask = np.zeros((1, 1, 1, 1), mask_dtype)
        kernels.max_forward(x, out, mask, 1, 1, 0, 0)
        kernels.max_values(x, out, 1, 1, 0, 0)
        max_backward(out, mask, x)
    else:
        kernels.ave_forward(x, out, 1, 1, 0, 0)
        kernels.ave_backward(out, x, 1, 1, 0, 0)
