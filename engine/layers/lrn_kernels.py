"""Caffe's LRN across channels as compiled loops (Numba), for the LRN layer on NumPy.

The NumPy passes of engine.layers.lrn square into a zero-padded buffer, add `size` shifted
slices of it and scale the sum: about ten passes over the blob, and as many again backward. Here
one loop per sample reads each channel's window from cache and writes the scale (forward) or the
bottom diff (backward) once. The arithmetic is the NumPy passes' own, in the same order and
precision (window sums in channel order, padding added as 0, no fused multiply-add), so both
give identical bits; x**-beta stays NumPy's (np.power), called by the layer on the same slices.
"""

from __future__ import annotations

import numpy as np

from engine.jit import AVAILABLE, kernel

__all__ = ["AVAILABLE", "across_backward", "across_scale"]


@kernel
def across_scale(x, scale, size, sum_mult, shift):  # noqa: ANN001, ANN201
    """scale = shift + sum_mult * (sum of x^2 over the `size` channels centred on each channel,
    zero padded), for every sample of x (N, C, H, W); sum_mult, shift in x's precision."""
    n, c, h, w = x.shape
    pad = (size - 1) // 2
    hw = h * w
    acc = np.empty(hw, x.dtype)
    zero = x.dtype.type(0)
    for a in range(n):
        xa = x[a].reshape(c, hw)
        sa = scale[a].reshape(c, hw)
        for ch in range(c):
            for d in range(size):
                j = ch - pad + d
                if 0 <= j < c:
                    row = xa[j]
                    if d == 0:
                        for i in range(hw):
                            acc[i] = row[i] * row[i]
                    else:
                        for i in range(hw):
                            acc[i] += row[i] * row[i]
                elif d == 0:
                    acc[:] = zero
                else:
                    for i in range(hw):
                        acc[i] += zero
            out = sa[ch]
            for i in range(hw):
                out[i] = acc[i] * sum_mult + shift


@kernel
def across_backward(x, y, dy, scale, scale_pow, ratio, dx, size, grad_mult):  # noqa: ANN001, ANN201
    """dx = dy * scale_pow - grad_mult * x * (sum of dy * y / scale over each channel's window,
    zero padded); `ratio` (N, C, H, W) is scratch for dy * y / scale."""
    n, c, h, w = x.shape
    pad = (size - 1) // 2
    hw = h * w
    acc = np.empty(hw, x.dtype)
    zero = x.dtype.type(0)
    for a in range(n):
        t = ratio[a].reshape(c, hw)
        ya, dya, sca = y[a].reshape(c, hw), dy[a].reshape(c, hw), scale[a].reshape(c, hw)
        for ch in range(c):
            for i in range(hw):
                t[ch, i] = dya[ch, i] * ya[ch, i] / sca[ch, i]
        xa, spa, dxa = x[a].reshape(c, hw), scale_pow[a].reshape(c, hw), dx[a].reshape(c, hw)
        for ch in range(c):
            for d in range(size):
                j = ch - pad + d
                if 0 <= j < c:
                    row = t[j]
                    if d == 0:
                        acc[:] = row
                    else:
                        for i in range(hw):
                            acc[i] += row[i]
                elif d == 0:
                    acc[:] = zero
                else:
                    for i in range(hw):
                        acc[i] += zero
            for i in range(hw):
                dxa[ch, i] = dya[ch, i] * spa[ch, i] - acc[i] * xa[ch, i] * grad_mult
