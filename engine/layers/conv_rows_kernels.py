"""The data movement around the row-folded convolution's GEMMs (conv_rows), compiled by Numba.

With NumPy alone each of these is several strided passes: a transposing copy of the input into
a padded channels-last buffer then kw copies into row patches; a bias fill, kh adds and a
transposing write for the output; a gather of the top diff then kh copies into D; a zero fill,
kw adds, a crop and a transposing write for the bottom diff. Each kernel below is one pass that
reads the NCHW blob (or writes it) directly, for one chunk of samples, and runs on the engine's
threads (nogil). The float sums run in the NumPy passes' order (bias, then kernel rows in
order; kernel columns in order), so both paths agree to rounding. AVAILABLE as in engine.jit.
"""

from __future__ import annotations

import numpy as np

from engine.jit import AVAILABLE, kernel

__all__ = ["AVAILABLE", "fold_input_diff", "fold_output", "row_patches", "unfold_top_diff"]


@kernel
def row_patches(x, cols, lo, pw, sw, dw):  # noqa: ANN001, ANN201
    """cols[r, s, ox, g, j, c] = x[lo + s, g*Cg + c, r, ox*sw + j*dw - pw] (0 in the padding);
    x is the NCHW bottom, cols one chunk's (rows, S, OW, g, kw, Cg) row patches. Each image row
    goes through a small channels-last line (padded), then whole patch rows are copied."""
    rows, size, ow, groups, kw, cg = cols.shape
    c_all, width = x.shape[1], x.shape[3]
    line = np.zeros((width + 2 * pw + sw + (kw - 1) * dw, c_all), cols.dtype)
    for s in range(size):
        for r in range(rows):
            for c in range(c_all):
                for col in range(width):
                    line[col + pw, c] = x[lo + s, c, r, col]
            for ox in range(ow):
                for j in range(kw):
                    at = ox * sw + j * dw
                    for g in range(groups):
                        for c in range(cg):
                            cols[r, s, ox, g, j, c] = line[at, g * cg + c]


@kernel
def fold_output(z, bias, out, lo, ph, sh, dh):  # noqa: ANN001, ANN201
    """out[lo + s, g*Og + o, y, x] = bias[g, o] + sum over kernel rows i (in order) of
    z[y*sh + i*dh - ph, s, x, g, i, o] for the rows inside z; z is (rows, S, OW, g, kh, Og).
    Each output row is summed channels last in a small line, then written channel by channel."""
    rows, size, ow, groups, kh, og = z.shape
    oh = out.shape[2]
    line = np.empty((ow, groups * og), z.dtype)
    for s in range(size):
        for y in range(oh):
            for ox in range(ow):
                for g in range(groups):
                    for o in range(og):
                        line[ox, g * og + o] = bias[g, o]
            for i in range(kh):
                r = y * sh + i * dh - ph
                if 0 <= r < rows:
                    for ox in range(ow):
                        for g in range(groups):
                            for o in range(og):
                                line[ox, g * og + o] += z[r, s, ox, g, i, o]
            for k in range(groups * og):
                for ox in range(ow):
                    out[lo + s, k, y, ox] = line[ox, k]


@kernel
def unfold_top_diff(dy, d, lo, ph, sh, dh):  # noqa: ANN001, ANN201
    """d[r, s, x, g, i, o] = dy[lo + s, g*Og + o, y, x] for the output row y that reads input
    row r through kernel row i (r = y*sh + i*dh - ph), else 0; d is (rows, S, OW, g, kh, Og).
    Each top-diff row goes through a small channels-last line, then into its kh places."""
    rows, size, ow, groups, kh, og = d.shape
    oh = dy.shape[2]
    zero = d.dtype.type(0)
    line = np.empty((ow, groups * og), d.dtype)
    for s in range(size):
        for r in range(rows):  # the (r, i) that no output row reaches hold zeros
            for i in range(kh):
                t = r + ph - i * dh
                y = t // sh
                if not (t >= 0 and t - y * sh == 0 and y < oh):
                    for ox in range(ow):
                        for g in range(groups):
                            for o in range(og):
                                d[r, s, ox, g, i, o] = zero
        for y in range(oh):
            for k in range(groups * og):
                for ox in range(ow):
                    line[ox, k] = dy[lo + s, k, y, ox]
            for i in range(kh):
                r = y * sh + i * dh - ph
                if 0 <= r < rows:
                    for ox in range(ow):
                        for g in range(groups):
                            for o in range(og):
                                d[r, s, ox, g, i, o] = line[ox, g * og + o]


@kernel
def fold_input_diff(dr, dx, lo, pw, sw, dw):  # noqa: ANN001, ANN201
    """dx[lo + s, g*Cg + c, r, col] = sum over kernel columns j (in order) of dr[r, s, x, g, j,
    c] with col = x*sw + j*dw - pw, for the rows r of dr (rows, S, OW, g, kw, Cg); dx is NCHW.
    Each row is summed channels last in a small line, then written channel by channel."""
    rows, size, ow, groups, kw, cg = dr.shape
    width = dx.shape[3]
    span = (ow - 1) * sw + (kw - 1) * dw + 1
    line = np.empty((max(span, width + pw), groups * cg), dr.dtype)
    for s in range(size):
        for r in range(rows):
            line[:] = 0
            for j in range(kw):
                for ox in range(ow):
                    at = ox * sw + j * dw
                    for g in range(groups):
                        for c in range(cg):
                            line[at, g * cg + c] += dr[r, s, ox, g, j, c]
            for k in range(groups * cg):
                for col in range(width):
                    dx[lo + s, k, r, col] = line[col + pw, k]


def warm_up(dtype: object) -> None:
    """Compile (or load from Numba's disk cache) the four kernels for `dtype` on tiny arrays,
    so the first training iteration does not pay for it."""
    four = np.zeros((1, 1, 1, 1), dtype)
    six = np.zeros((1, 1, 1, 1, 1, 1), dtype)
    row_patches(four, six, 0, 0, 1, 1)
    fold_output(six, np.zeros((1, 1), dtype), four, 0, 0, 1, 1)
    unfold_top_diff(four, six, 0, 0, 1, 1)
    fold_input_diff(six, four, 0, 0, 1, 1)
