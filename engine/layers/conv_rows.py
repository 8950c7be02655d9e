"""Convolution with the kernel rows folded into the GEMM's output side (channels last, NumPy).

An im2col GEMM multiplies (pixels x kh*kw*C) columns by (kh*kw*C x O) weights. When O is
small (CIFAR-10 quick: 32-64) that N side is skinny and OpenBLAS runs below its peak, while the
column matrix costs kh*kw copies of the input. Here each input row r of the image gives "row
patches" R[r, x] = the kw*C inputs that output column x reads along one row, and one GEMM

    Z[r, x, (i, o)] = R[r, x, (j, c)] . Wf[(j, c), (i, o)],   Wf[(j, c), (i, o)] = W[o, c, i, j]

computes every kernel row's contribution at once: K = kw*C and N = kh*O are both wide (160 x 160
for CIFAR-10 quick's conv2, where OpenBLAS measured ~1.4x the GFLOP/s of K = 800, N = 32), and R
is kw, not kh*kw, copies of the input. Output row y then sums Z over its kernel rows,
out[y] = sum_i Z[y*s_h + i*d_h - p_h, (i, .)]: kh strided adds of output-sized blocks.

Backward is the same fold run the other way: D[r, x, (i, o)] = dy[y, x, o] for the output row y
that reads input row r through kernel row i (kh shifted copies of the top diff), then

    dWf = D^T R   (weight gradient, K = pixels, M x N = kh*O x kw*C)
    dR  = D Wf^T  (row patches' gradient), summed back along the width into the bottom diff.

Rows of zero padding are never computed (their row patches are zero), so for stride 1 the
FLOPs equal im2col's; a vertical stride or rows that no window reads waste some.
Work runs in chunks of samples on the engine's threads, like the other channels-last passes.
"""

from __future__ import annotations

from typing import Any

from engine.backend import as_strided
from engine.im2col import NCHW_TO_NHWC


def read_rows(h: int, oh: int, kh: int, ph: int, sh: int, dh: int) -> int:
    """Input rows (from the top, unpadded) that some window reads, at least one."""
    return max(1, min(h, (oh - 1) * sh + (kh - 1) * dh + 1 - ph))


def kernel_row_span(i: int, rows: int, oh: int, ph: int, sh: int, dh: int) -> tuple[int, int, int]:
    """(y_lo, y_hi, r_lo): the output rows y in [y_lo, y_hi) whose kernel row i reads an input
    row r = y*s + i*d - p inside [0, rows), and the first such r."""
    first = ph - i * dh  # y*s >= first
    y_lo = max(0, -(-first // sh))
    y_hi = min(oh, (rows - 1 + first) // sh + 1)
    return y_lo, max(y_lo, y_hi), y_lo * sh - first


def row_patches_view(xp: Any, img: Any, layer: Any, ow: int) -> Any:
    """Every row patch of a channels-last image (N, rows, Wp, C) as one read-only view
    (N, rows, OW, group, kw, C/group)."""
    g, kw = layer.group, layer.kw
    n, rows, _, c = img.shape
    s_n, s_h, s_w, s_c = img.strides
    shape = (n, rows, ow, g, kw, c // g)
    strides = (s_n, s_h, s_w * layer.sw, s_c * (c // g), s_w * layer.dw, s_c)
    return as_strided(xp, img, shape, strides)


def folded_weights(layer: Any, ws: Any) -> Any:
    """The weights as Wf (group, kw*C/g, kh*O/g), Wf[g, (j, c), (i, o)] = W[g*O/g + o, c, i, j]."""
    g, o, cg = layer.group, layer.num_output, layer.channels // layer.group
    kh, kw = layer.kh, layer.kw
    w5 = layer.weight.data.reshape(g, o // g, cg, kh, kw)
    wf = layer._array(ws, "rows_wf", (g, kw, cg, kh, o // g))
    wf[...] = w5.transpose(0, 4, 2, 3, 1)
    return wf.reshape(g, kw * cg, kh * (o // g))


def _product(xp: Any, a: Any, b: Any, out: Any) -> None:
    """out (P, g, N) = a (P, g, K) times b (g, K, N), group by group (one GEMM when g == 1)."""
    if a.shape[1] == 1:
        xp.matmul(a[:, 0], b[0], out=out[:, 0])
    else:
        xp.matmul(a.transpose(1, 0, 2), b, out=out.transpose(1, 0, 2))


def rows_forward(layer: Any, ws: Any, bottom: Any, top: Any) -> None:
    """top = W * bottom + b through row patches: per chunk of samples one copy of the row
    patches, one GEMM (per group) into Z, kh shifted adds into the output."""
    xp, plan = layer.xp, ws.plan
    g, o, c = layer.group, layer.num_output, layer.channels
    og, cg, kh, kw = o // g, c // g, layer.kh, layer.kw
    oh, ow, rows = plan.oh, plan.ow, ws.xpad.shape[1]
    layer._copy_in(ws, ws.xpad[:, :, layer.pw : layer.pw + plan.w], _rows_of(bottom.data, rows))
    wf = folded_weights(layer, ws)
    whole = row_patches_view(xp, ws.xpad, layer, ow)
    per_sample = rows * ow * kw * c
    sched = layer._schedule(plan, plan.n, per_sample)
    step = max(hi - lo for part in sched for _, lo, hi in part)
    if plan.keep_columns:
        count = sum(len(part) for part in sched)
        if ws.kept is None or ws.kept.shape != (count, step * per_sample):
            ws.kept = xp.empty((count, step * per_sample), layer.dtype)
        cols = ws.kept
    else:
        cols = layer._scratch(ws, "rows_col", step * per_sample)
    zs = layer._scratch(ws, "rows_z", step * rows * ow * kh * o)
    accs = layer._scratch(ws, "rows_acc", step * oh * ow * o)
    out_v = top.data.transpose(NCHW_TO_NHWC)
    bias = None if layer.bias is None else layer.bias.data.reshape(g, og)
    spans = [kernel_row_span(i, rows, oh, layer.ph, layer.sh, layer.dh) for i in range(kh)]

    def work(t: int) -> None:
        for idx, lo, hi in sched[t]:
            size = hi - lo
            npix = size * rows * ow
            col = (cols[idx] if plan.keep_columns else cols[t])[: size * per_sample]
            col.reshape(size, *whole.shape[1:])[...] = whole[lo:hi]
            z = zs[t][: npix * kh * o].reshape(npix, g, kh * og)
            _product(xp, col.reshape(npix, g, kw * cg), wf, z)
            z6 = z.reshape(size, rows, ow, g, kh, og)
            acc = accs[t][: size * oh * ow * o].reshape(size, oh, ow, g, og)
            if bias is None:
                acc.fill(0)
            else:
                acc[...] = bias
            for i, (y_lo, y_hi, r_lo) in enumerate(spans):
                if y_hi > y_lo:
                    r_hi = r_lo + (y_hi - y_lo - 1) * layer.sh + 1
                    acc[:, y_lo:y_hi] += z6[:, r_lo : r_hi : layer.sh, :, :, i]
            out_v[lo:hi] = acc.reshape(size, oh, ow, o)

    layer._threads.run(work, plan.parts, threaded=plan.threaded)
    ws.kept_ready = plan.keep_columns


def rows_backward(layer: Any, ws: Any, top: Any, bottom: Any, propagate: bool) -> None:
    """Weight and bias gradients (accumulated) and, if asked, the bottom diff (overwritten)."""
    xp, plan = layer.xp, ws.plan
    g, o, c = layer.group, layer.num_output, layer.channels
    og, cg, kh, kw = o // g, c // g, layer.kh, layer.kw
    oh, ow, rows = plan.oh, plan.ow, ws.xpad.shape[1]
    wp = ws.xpad.shape[2]
    sh, sw, dw, pw = layer.sh, layer.sw, layer.dw, layer.pw
    wf = folded_weights(layer, ws) if propagate else None
    whole = row_patches_view(xp, ws.xpad, layer, ow)
    per_sample = rows * ow * kw * c
    sched = layer._schedule(plan, plan.n, per_sample)
    step = max(hi - lo for part in sched for _, lo, hi in part)
    keep = plan.keep_columns and ws.kept_ready
    cols = ws.kept if keep else layer._scratch(ws, "rows_col", step * per_sample)
    dys = layer._scratch(ws, "rows_dy", step * oh * ow * o)
    ds = layer._scratch(ws, "rows_d", step * rows * ow * kh * o)
    drs = layer._scratch(ws, "rows_dr", step * per_sample) if propagate else None
    dxs = layer._scratch(ws, "rows_dx", step * rows * wp * c) if propagate else None
    dwx = layer._scratch(ws, "rows_dw", g * kh * og * kw * cg)
    tmps = layer._scratch(ws, "rows_tmp", g * kh * og * kw * cg)
    dbx = layer._scratch(ws, "rows_db", o)
    ones = layer._scratch(ws, "rows_ones", step * oh * ow)
    dy_v = top.diff.transpose(NCHW_TO_NHWC)
    dx_v = bottom.diff.transpose(NCHW_TO_NHWC)
    spans = [kernel_row_span(i, rows, oh, layer.ph, sh, layer.dh) for i in range(kh)]
    with_bias = layer.bias is not None
    h, w = plan.h, plan.w

    def work(t: int) -> None:
        dw3 = dwx[t][: g * kh * og * kw * cg].reshape(g, kh * og, kw * cg)
        tmp = tmps[t][: dw3.size].reshape(dw3.shape)
        db = dbx[t][:o]
        dw3.fill(0)
        db.fill(0)
        ones[t].fill(1)
        for idx, lo, hi in sched[t]:
            size = hi - lo
            npix = size * rows * ow
            col = (cols[idx] if keep else cols[t])[: size * per_sample]
            if not keep:
                col.reshape(size, *whole.shape[1:])[...] = whole[lo:hi]
            dyc = dys[t][: size * oh * ow * o].reshape(size, oh, ow, g, og)
            dyc.reshape(size, oh, ow, o)[...] = dy_v[lo:hi]
            if with_bias:
                db += xp.matmul(ones[t][: size * oh * ow], dyc.reshape(-1, o))
            d6 = ds[t][: npix * kh * o].reshape(size, rows, ow, g, kh, og)
            if sh != 1:
                d6.fill(0)
            for i, (y_lo, y_hi, r_lo) in enumerate(spans):
                r_hi = r_lo + (y_hi - y_lo - 1) * sh + 1 if y_hi > y_lo else r_lo
                if sh == 1:  # rows outside the span read no output row through kernel row i
                    d6[:, :r_lo, :, :, i] = 0
                    d6[:, r_hi:, :, :, i] = 0
                if y_hi > y_lo:
                    d6[:, r_lo:r_hi:sh, :, :, i] = dyc[:, y_lo:y_hi]
            d3 = d6.reshape(npix, g, kh * og)
            r3 = col.reshape(npix, g, kw * cg)
            xp.matmul(d3.transpose(1, 2, 0), r3.transpose(1, 0, 2), out=tmp)
            dw3 += tmp
            if not propagate:
                continue
            dr = drs[t][: size * per_sample].reshape(npix, g, kw * cg)
            _product(xp, d3, wf.transpose(0, 2, 1), dr)
            dr6 = dr.reshape(size, rows, ow, g, kw, cg)
            img = dxs[t][: size * rows * wp * c].reshape(size, rows, wp, g, cg)
            img.fill(0)
            for j in range(kw):
                img[:, :, j * dw : j * dw + (ow - 1) * sw + 1 : sw] += dr6[:, :, :, :, j]
            dx_v[lo:hi, :rows] = img[:, :, pw : pw + w].reshape(size, rows, w, c)
            if rows < h:
                dx_v[lo:hi, rows:] = 0

    layer._threads.run(work, plan.parts, threaded=plan.threaded)
    total = dwx[0][: g * kh * og * kw * cg].reshape(g, kh, og, kw, cg)
    for t in range(1, plan.parts):
        total += dwx[t][: total.size].reshape(total.shape)
    layer.weight.diff.reshape(g, og, cg, kh, kw)[...] += total.transpose(0, 2, 4, 1, 3)
    if with_bias:
        db = dbx[0][:o]
        for t in range(1, plan.parts):
            db += dbx[t][:o]
        layer.bias.diff += db


def _rows_of(x: Any, rows: int) -> Any:
    """The first `rows` rows of an NCHW batch, channels last."""
    return x[:, :, :rows].transpose(NCHW_TO_NHWC)


def rows_buffer_shape(layer: Any, plan: Any) -> tuple[int, int, int, int]:
    """(N, rows read, W + 2 p_w, C): the input buffer, padded along the width only."""
    rows = read_rows(plan.h, plan.oh, layer.kh, layer.ph, layer.sh, layer.dh)
    return (plan.n, rows, plan.w + 2 * layer.pw, layer.channels)


def rows_flops(layer: Any, plan: Any) -> float:
    """Multiply-adds x 2 of one row-folded GEMM pass (forward; each backward GEMM the same)."""
    rows = read_rows(plan.h, plan.oh, layer.kh, layer.ph, layer.sh, layer.dh)
    return (
        2.0
        * plan.n
        * rows
        * plan.ow
        * layer.kw
        * layer.channels
        * layer.kh
        * (layer.num_output // layer.group)
    )
