"""The im2col + GEMM passes of Caffe's BaseConvolutionLayer, one function per pass and plan
family (engine.layers.conv_plan), for engine.layers.convolution's forward and backward.

Caffe's forward_cpu_gemm (+ bias) is `conv_pass` (channels first, tiled or not) or
`patch_pass` (channels last); its weight_cpu_gemm (+ bias) `weight_gradient`,
`patch_weight_gradient` or `weight_gradient_per_sample`; its backward_cpu_gemm
`data_gradient_full`, `data_gradient_col2im` or `patch_data_gradient`. Each takes the layer (its
geometry and parameter blobs) and the bottom's ConvWorkspace (the plan, buffers and threads).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.blob import Blob
from engine.im2col import NCHW_TO_NHWC, columns_view, patches_view, window
from engine.layers.conv_plan import extended_kernel, pass_geometry
from engine.layers.conv_workspace import ConvWorkspace
from engine.threads import chunks, split


def tile_view(a: Any, group: int, tile: tuple[int, int], batch_last: bool) -> Any:
    """An NCHW array (N, M, TY*p, TX*q) as the (group, p, q, M/group, *rest) view that a tiled
    GEMM's product fills, rest being (N, TY, TX), or (TY, TX, N) when batch_last."""
    n, m, hh, ww = a.shape
    p, q = tile
    v = a.reshape(n, group, m // group, hh // p, p, ww // q, q)  # n g mg ty a tx b
    if batch_last:
        return v.transpose(1, 4, 6, 2, 3, 5, 0)
    return v.transpose(1, 4, 6, 2, 0, 3, 5)


def full_pad(layer: Any) -> tuple[int, int]:
    """Zero border of the top diff for the full data gradient: d(k-1) - p per axis."""
    return layer.dh * (layer.kh - 1) - layer.ph, layer.dw * (layer.kw - 1) - layer.pw


def layer_input(layer: Any, ws: ConvWorkspace, x: Any) -> Any:
    """The input in internal layout, copied into the zero-padded buffer when there is one."""
    plan = ws.plan
    x_int = x.transpose(plan.to_internal)
    if ws.xpad is None:
        return x_int
    inner = ws.interior(layer.ph, layer.pw, plan.h, plan.w)
    ws.copy_in(ws.xpad[inner], x_int)
    return ws.xpad


def extended_weights(
    layer: Any,
    ws: ConvWorkspace,
    key: str,
    wbase: Any,
    geom: tuple[int, ...],
    tile: tuple[int, int],
) -> Any:
    """wbase (g, M, Cs, kh, kw) as the (g, p*q*M, Cs*KH*KW) matrix of a p x q output tile:
    for tile position (a, b) the weights sit at row offset a*s_h, column offset b*s_w."""
    g, m, cs, kh, kw = wbase.shape
    p, q = tile
    if tile == (1, 1):
        return wbase.reshape(g, m, cs * kh * kw)
    _, _, sh, sw, dh, dw = geom
    ekh, ekw = extended_kernel(kh, sh, dh, p), extended_kernel(kw, sw, dw, q)
    wext = ws.array("wext_" + key, (g, p, q, m, cs, ekh, ekw))
    for a in range(p):
        for b in range(q):
            rows = slice(a * sh, a * sh + (kh - 1) * dh + 1, dh)
            cols = slice(b * sw, b * sw + (kw - 1) * dw + 1, dw)
            wext[:, a, b, :, :, rows, cols] = wbase
    return wext.reshape(g, p * q * m, cs * ekh * ekw)


def conv_pass(
    layer: Any,
    ws: ConvWorkspace,
    key: str,
    src: Any,
    wbase: Any,
    geom: tuple[int, ...],
    tile: tuple[int, int],
    out: Any,
    bias: Any,
    keep: bool,
) -> None:
    """out (NCHW) = wbase (g, M, Cs, kh, kw) convolved with src (internal layout, padded),
    plus bias: per chunk a tiled im2col copy, one GEMM per group, one write into out."""
    xp, plan, g = layer.xp, ws.plan, layer.group
    p, q = tile
    m, cs = wbase.shape[1], src.shape[0]
    wext = extended_weights(layer, ws, key, wbase, geom, tile)
    pgeom = pass_geometry(geom, tile)
    ekh, ekw = pgeom[:2]
    out_hw = (out.shape[2] // p, out.shape[3] // q)
    whole = columns_view(xp, src, pgeom, out_hw, plan.spatial)
    rest = whole.shape[3:]
    row = rest[1] * rest[2]
    kdim = cs * ekh * ekw
    sched = ws.schedule(rest[0], kdim * row)
    step = max(hi - lo for part in sched for _, lo, hi in part) if rest[0] else 0
    if keep:
        cols = ws.kept_columns(sum(len(part) for part in sched), kdim * step * row)
    else:
        cols = ws.scratch(key + "_col", kdim * step * row)
    prods = ws.scratch(key + "_prod", g * p * q * m * step * row)
    out_t = tile_view(out, g, tile, plan.batch_last)
    bias_b = None if bias is None else bias.reshape(g, 1, 1, m, 1, 1, 1)

    def work(t: int) -> None:
        for idx, lo, hi in sched[t]:
            size = hi - lo
            col = (cols[idx] if keep else cols[t])[: kdim * size * row]
            col.reshape(cs, ekh, ekw, size, *rest[1:])[...] = whole[:, :, :, lo:hi]
            prod = prods[t][: g * p * q * m * size * row]
            xp.matmul(
                wext,
                col.reshape(g, kdim // g, size * row),
                out=prod.reshape(g, p * q * m, size * row),
            )
            prod7 = prod.reshape(g, p, q, m, size, *rest[1:])
            if bias_b is not None:
                prod7 += bias_b  # in cache; a ufunc writing a strided view is slow
            out_t[:, :, :, :, lo:hi] = prod7

    ws.run(work)
    if keep:
        ws.kept_ready = True


# --- channels-last passes: patch-major columns, GEMM (pixels x K) x (K x M) ---------------
def patch_pass(
    layer: Any,
    ws: ConvWorkspace,
    key: str,
    src: Any,
    wt3: Any,
    geom: tuple[int, ...],
    out: Any,
    bias: Any,
    keep: bool,
) -> None:
    """out (NCHW) = src (N, H, W, Cs, padded) convolved with wt3 (g, kh*kw*Cs/g, M/g),
    plus bias: per chunk of samples a patch-major im2col copy, one GEMM per group, one
    write into out."""
    xp, g = layer.xp, layer.group
    n, m, oh, ow = out.shape
    kdim = wt3.shape[1]
    whole = patches_view(xp, src, geom, (oh, ow), g)
    row = oh * ow
    sched = ws.schedule(n, g * kdim * row)
    step = max(hi - lo for part in sched for _, lo, hi in part) if n else 0
    if keep:
        cols = ws.kept_columns(sum(len(part) for part in sched), g * kdim * step * row)
    else:
        cols = ws.scratch(key + "_col", g * kdim * step * row)
    prods = ws.scratch(key + "_prod", m * step * row)
    out_v = out.transpose(NCHW_TO_NHWC)

    def work(t: int) -> None:
        for idx, lo, hi in sched[t]:
            rows = (hi - lo) * row
            col = (cols[idx] if keep else cols[t])[: g * kdim * rows]
            col.reshape(hi - lo, *whole.shape[1:])[...] = whole[lo:hi]
            prod = prods[t][: m * rows].reshape(rows, m)
            if g == 1:
                xp.matmul(col.reshape(rows, kdim), wt3[0], out=prod)
            else:
                xp.matmul(
                    col.reshape(rows, g, kdim).transpose(1, 0, 2),
                    wt3,
                    out=prod.reshape(rows, g, m // g).transpose(1, 0, 2),
                )
            if bias is not None:
                prod += bias
            out_v[lo:hi] = prod.reshape(hi - lo, oh, ow, m)

    ws.run(work)
    if keep:
        ws.kept_ready = True


def padded_top_diff(layer: Any, ws: ConvWorkspace, top: Blob) -> Any:
    """The top diff channels last, zero-padded by d(k-1)-p for the full data gradient."""
    plan = ws.plan
    qh, qw = full_pad(layer)
    o = layer.num_output
    dypad = ws.array("dypad", plan.internal_shape(o, plan.oh + 2 * qh, plan.ow + 2 * qw))
    inner = ws.interior(qh, qw, plan.oh, plan.ow)
    ws.copy_in(dypad[inner], top.diff.transpose(NCHW_TO_NHWC))
    return dypad


def patch_weight_gradient(layer: Any, ws: ConvWorkspace, top: Blob, dypad: Any = None) -> None:
    """dW^T += cols^T dy and db += 1^T dy per chunk of samples, summed over the parts;
    dy chunks from the padded channels-last top diff when given, else from the top."""
    xp, plan, g = layer.xp, ws.plan, layer.group
    o, c = layer.num_output, layer.channels
    og, cg = o // g, c // g
    kh, kw = layer.kh, layer.kw
    kdim = kh * kw * cg
    geom = (kh, kw, layer.sh, layer.sw, layer.dh, layer.dw)
    whole = patches_view(xp, ws.xpad, geom, (plan.oh, plan.ow), g)
    row = plan.oh * plan.ow
    sched = ws.schedule(plan.n, g * kdim * row)
    step = max(hi - lo for part in sched for _, lo, hi in part)
    keep = plan.keep_columns and ws.kept_ready
    cols = ws.kept if keep else ws.scratch("w_col", g * kdim * step * row)
    dys = ws.scratch("w_dy", o * step * row)
    ones = ws.scratch("w_ones", step * row)
    dwx = ws.scratch("w_dw", g * kdim * og)
    tmps = ws.scratch("w_tmp", g * kdim * og)
    dbx = ws.scratch("w_db", o)
    if dypad is None:
        dy_v = top.diff.transpose(NCHW_TO_NHWC)
    else:
        dy_v = dypad[ws.interior(*full_pad(layer), plan.oh, plan.ow)]
    with_bias = layer.bias is not None

    def work(t: int) -> None:
        dw3 = dwx[t][: g * kdim * og].reshape(g, kdim, og)
        tmp = tmps[t][: g * kdim * og].reshape(g, kdim, og)
        db = dbx[t][:o]
        dw3.fill(0)
        db.fill(0)
        ones[t].fill(1)
        for idx, lo, hi in sched[t]:
            rows = (hi - lo) * row
            col = (cols[idx] if keep else cols[t])[: g * kdim * rows]
            if not keep:
                col.reshape(hi - lo, *whole.shape[1:])[...] = whole[lo:hi]
            dyc = dys[t][: o * rows]
            dyc.reshape(hi - lo, plan.oh, plan.ow, o)[...] = dy_v[lo:hi]
            dy2 = dyc.reshape(rows, o)
            if with_bias:
                db += xp.matmul(ones[t][:rows], dy2)
            xp.matmul(
                col.reshape(rows, g, kdim).transpose(1, 2, 0),
                dy2.reshape(rows, g, og).transpose(1, 0, 2),
                out=tmp,
            )
            dw3 += tmp

    ws.run(work)
    total = ws.part_sum(dwx, g * kdim * og).reshape(g, kh, kw, cg, og)
    layer.weight.diff.reshape(g, og, cg, kh, kw)[...] += total.transpose(0, 4, 3, 1, 2)
    if with_bias:
        layer.bias.diff += ws.part_sum(dbx, o)


def patch_data_gradient(layer: Any, ws: ConvWorkspace, dypad: Any, bottom: Blob) -> None:
    """dx = (top diff zero-padded by d(k-1)-p, channels last) convolved with the flipped
    weights: a channels-last pass into the bottom diff."""
    g = layer.group
    o, c = layer.num_output, layer.channels
    wg = layer.weight.data.reshape(g, o // g, c // g, layer.kh, layer.kw)
    wf = ws.array("wflip_t", (g, layer.kh, layer.kw, o // g, c // g))
    wf[...] = wg[:, :, :, ::-1, ::-1].transpose(0, 3, 4, 1, 2)
    geom = (layer.kh, layer.kw, 1, 1, layer.dh, layer.dw)
    patch_pass(layer, ws, "d", dypad, wf.reshape(g, -1, c // g), geom, bottom.diff, None, False)


def weight_gradient(layer: Any, ws: ConvWorkspace, top: Blob, bottom: Blob, share: bool) -> None:
    """dW += dy col^T and db += dy 1 per chunk (tiled as forward), summed over the parts,
    then the extended kernel's p*q shifted copies folded back into the weight diff."""
    xp, plan, g = layer.xp, ws.plan, layer.group
    o, c = layer.num_output, layer.channels
    og, cg = o // g, c // g
    kh, kw, sh, sw, dh, dw = layer.kh, layer.kw, layer.sh, layer.sw, layer.dh, layer.dw
    p, q = plan.tile
    pgeom = pass_geometry((kh, kw, sh, sw, dh, dw), plan.tile)
    ekh, ekw = pgeom[:2]
    kdim = c * ekh * ekw
    m = p * q * og
    keep = plan.keep_columns and ws.kept_ready
    src = ws.xpad if ws.xpad is not None else bottom.data.transpose(plan.to_internal)
    out_hw = (plan.oh // p, plan.ow // q)
    whole = columns_view(xp, src, pgeom, out_hw, plan.spatial)
    rest = whole.shape[3:]
    row = rest[1] * rest[2]
    sched = ws.schedule(rest[0], kdim * row)
    step = max(hi - lo for part in sched for _, lo, hi in part)
    cols = ws.kept if keep else ws.scratch("w_col", kdim * step * row)
    dys = None if share else ws.scratch("w_dy", g * m * step * row)
    dy_int = ws.array("dy", plan.internal_shape(o, plan.oh, plan.ow)) if share else None
    ones = ws.scratch("w_ones", step * row)
    dwx = ws.scratch("w_dw", g * m * (kdim // g))
    tmps = ws.scratch("w_tmp", g * m * (kdim // g))
    dbx = ws.scratch("w_db", g * m)
    dy_t = tile_view(top.diff, g, plan.tile, plan.batch_last)
    with_bias = layer.bias is not None

    # The transposed product dW^T = col dy^T: OpenBLAS ran these long-K GEMMs 10-40 %
    # faster this way round than dy col^T (measured, one thread).
    def work(t: int) -> None:
        dw3 = dwx[t][: g * m * (kdim // g)].reshape(g, kdim // g, m)
        db2 = dbx[t][: g * m].reshape(g, m)
        tmp = tmps[t][: g * m * (kdim // g)].reshape(g, kdim // g, m)
        dw3.fill(0)
        db2.fill(0)
        ones[t].fill(1)
        for idx, lo, hi in sched[t]:
            size = hi - lo
            col = (cols[idx] if keep else cols[t])[: kdim * size * row]
            if not keep:
                col.reshape(c, ekh, ekw, size, *rest[1:])[...] = whole[:, :, :, lo:hi]
            if dy_int is not None:  # untiled: the chunk of the internal-layout top diff
                dy_int[:, lo:hi] = dy_t[:, 0, 0, :, lo:hi].reshape(o, size, *rest[1:])
                dy3 = dy_int[:, lo:hi].reshape(g, m, size * row)
            else:
                dyc = dys[t][: g * m * size * row]
                dyc.reshape(g, p, q, og, size, *rest[1:])[...] = dy_t[:, :, :, :, lo:hi]
                dy3 = dyc.reshape(g, m, size * row)
            if with_bias:
                db2 += xp.matmul(dy3, ones[t][: size * row])
            col3 = col.reshape(g, kdim // g, size * row)
            xp.matmul(col3, dy3.transpose(0, 2, 1), out=tmp)
            dw3 += tmp

    ws.run(work)
    dw_t = ws.part_sum(dwx, g * m * (kdim // g)).reshape(g, kdim // g, m)
    dw_ext = dw_t.transpose(0, 2, 1).reshape(g, p, q, og, cg, ekh, ekw)
    wdiff = layer.weight.diff.reshape(g, og, cg, kh, kw)
    if plan.tile == (1, 1):
        wdiff += dw_ext[:, 0, 0]
    for a in range(p) if plan.tile != (1, 1) else ():
        for b in range(q):
            rows = slice(a * sh, a * sh + (kh - 1) * dh + 1, dh)
            cols_ = slice(b * sw, b * sw + (kw - 1) * dw + 1, dw)
            wdiff += dw_ext[:, a, b, :, :, rows, cols_]
    if with_bias:
        db = ws.part_sum(dbx, g * m).reshape(g, p, q, og)
        layer.bias.diff += db.sum(axis=(1, 2)).reshape(o)


def weight_gradient_per_sample(layer: Any, ws: ConvWorkspace, top: Blob, bottom: Blob) -> None:
    """Batch-second layout, group 1, no tile: per sample dW += dy_n col_n^T as one batched
    GEMM over a chunk of samples, reading the NCHW top diff in place; columns kept or
    re-made."""
    xp, plan, o = layer.xp, ws.plan, layer.num_output
    ckk = layer.channels * layer.kh * layer.kw
    row = plan.oh * plan.ow
    geom = (layer.kh, layer.kw, layer.sh, layer.sw, layer.dh, layer.dw)
    src = ws.xpad if ws.xpad is not None else bottom.data.transpose(plan.to_internal)
    whole = columns_view(xp, src, geom, (plan.oh, plan.ow), plan.spatial)
    dy3 = top.diff.reshape(plan.n, o, row)
    sched = ws.schedule(plan.n, ckk * row)
    step = max(hi - lo for part in sched for _, lo, hi in part)
    keep = plan.keep_columns and ws.kept_ready
    cols = ws.kept if keep else ws.scratch("ps_col", ckk * step * row)
    prods = ws.scratch("ps_prod", step * o * ckk)
    ones = ws.scratch("ps_ones", row)
    dwx = ws.scratch("ps_dw", o * ckk)
    tmps = ws.scratch("ps_tmp", o * ckk)
    dbx = ws.scratch("ps_db", o)
    with_bias = layer.bias is not None

    def work(t: int) -> None:
        dw, tmp, db = dwx[t][: o * ckk], tmps[t][: o * ckk], dbx[t][:o]
        dw.fill(0)
        db.fill(0)
        ones[t].fill(1)
        for idx, lo, hi in sched[t]:
            size = hi - lo
            col = (cols[idx] if keep else cols[t])[: ckk * size * row]
            col5 = col.reshape(layer.channels, layer.kh, layer.kw, size, row)
            if not keep:
                col5[...] = whole[:, :, :, lo:hi].reshape(col5.shape)
            per = col.reshape(ckk, size, row).transpose(1, 2, 0)
            prod = prods[t][: size * o * ckk].reshape(size, o, ckk)
            xp.matmul(dy3[lo:hi], per, out=prod)
            dw += prod.sum(axis=0, out=tmp.reshape(o, ckk)).reshape(-1)
            if with_bias:
                db += xp.matmul(dy3[lo:hi], ones[t][:row]).sum(axis=0)

    ws.run(work)
    wdiff = layer.weight.diff.reshape(-1)
    for t in range(plan.parts):
        wdiff += dwx[t][: o * ckk]
        if with_bias:
            layer.bias.diff += dbx[t][:o]


def data_gradient_full(layer: Any, ws: ConvWorkspace, top: Blob, bottom: Blob) -> None:
    """Stride 1: dx = (top diff zero-padded by d(k-1)-p) convolved with the flipped weights."""
    plan, g = ws.plan, layer.group
    o, c = layer.num_output, layer.channels
    qh, qw = full_pad(layer)
    shape = plan.internal_shape(o, plan.oh + 2 * qh, plan.ow + 2 * qw)
    dypad = ws.array("dypad", shape)  # borders stay zero
    inner = ws.interior(qh, qw, plan.oh, plan.ow)
    ws.copy_in(dypad[inner], top.diff.transpose(plan.to_internal))
    wflip = ws.array("wflip", (g, c // g, o // g, layer.kh, layer.kw))
    wg = layer.weight.data.reshape(g, o // g, c // g, layer.kh, layer.kw)
    wflip[...] = wg[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    geom = (layer.kh, layer.kw, 1, 1, layer.dh, layer.dw)
    conv_pass(layer, ws, "d", dypad, wflip, geom, plan.dgrad_tile, bottom.diff, None, False)


def data_gradient_col2im(
    layer: Any, ws: ConvWorkspace, top: Blob, bottom: Blob, gathered: bool = False
) -> None:
    """Per part a share of the input channels: dcol = W^T dy in chunks, summed back into
    the padded image (col2im), then cropped into the bottom diff."""
    xp, plan, g = layer.xp, ws.plan, layer.group
    o, c = layer.num_output, layer.channels
    kh, kw, kk = layer.kh, layer.kw, layer.kh * layer.kw
    geom = (kh, kw, layer.sh, layer.sw, layer.dh, layer.dw)
    cg = c // g
    w3 = layer.weight.data.reshape(g, o // g, cg * kk)
    dy = ws.array("dy", plan.internal_shape(o, plan.oh, plan.ow))
    if not gathered:  # else the weight gradient left it there
        ws.copy_in(dy, top.diff.transpose(plan.to_internal))
    dyg = dy.reshape(g, o // g, *dy.shape[1:])
    rest = dy.shape[2:]
    total = dy.shape[1]
    hp, wp = plan.h + 2 * layer.ph, plan.w + 2 * layer.pw
    dxpad = ws.array("dxpad", plan.internal_shape(c, hp, wp))
    # Work items: (group, channel range in the group); channel halves when g == 1.
    per_group = max(1, plan.parts // g)
    items = [(gi, a, b) for gi in range(g) for a, b in split(0, cg, per_group) if b > a]
    cmax = max(b - a for _, a, b in items)
    item = np.dtype(layer.dtype).itemsize
    row = rest[0] * rest[1]
    step = total
    if plan.chunk_bytes:
        step = max(1, min(total, 2 * plan.chunk_bytes // max(1, cmax * kk * row * item)))
    cols = ws.scratch("d_col", cmax * kk * step * row)
    inner = ws.interior(layer.ph, layer.pw, plan.h, plan.w)
    dx_int = bottom.diff.transpose(plan.to_internal)
    nparts = min(plan.parts, len(items))

    def work(t: int) -> None:
        for gi, a, b in items[t::nparts]:
            ca, cb = gi * cg + a, gi * cg + b
            img = dxpad[ca:cb]
            img.fill(0)
            wt = w3[gi][:, a * kk : b * kk].T
            for lo, hi in chunks(0, total, step):
                size = (b - a) * kk * (hi - lo) * row
                col = cols[t][:size].reshape(b - a, kh, kw, hi - lo, *rest)
                xp.matmul(
                    wt,
                    dyg[gi][:, lo:hi].reshape(o // g, -1),
                    out=col.reshape((b - a) * kk, -1),
                )
                for i in range(kh):
                    for j in range(kw):
                        view = window(img, i, j, geom, (plan.oh, plan.ow), plan.spatial)
                        view[:, lo:hi] += col[:, i, j]
            dx_int[ca:cb] = img[(slice(None), *inner[1:])]

    ws.run(work, nparts)
