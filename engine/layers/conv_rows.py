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

Rows of zero padding are never computed (their row patches are zero), and input rows are
grouped into bands that serve the same kernel rows: the top rows of an unpadded image feed only
the first kernel rows, so a band's GEMM takes only those columns of Wf. For stride 1 the FLOPs
are then exactly im2col's; a vertical stride multiplies some zeros (a band takes the span of
the kernel rows its rows serve). Work runs in chunks of samples on the engine's threads, like
the other channels-last passes; within a chunk the arrays are row-major over the input rows,
(rows, samples, OW, ...), so that each band is one contiguous block of GEMM rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.backend import as_strided
from engine.im2col import NCHW_TO_NHWC
from engine.layers import conv_rows_kernels as kernels

if TYPE_CHECKING:  # conv_workspace imports conv_plan, which imports this module
    from engine.layers.conv_workspace import ConvWorkspace


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


def row_bands(rows: int, oh: int, kh: int, ph: int, sh: int, dh: int) -> list[tuple[int, ...]]:
    """Consecutive input rows [r_a, r_b) that serve the same kernel rows, as (r_a, r_b, i_lo,
    i_hi): row r serves kernel row i when r = y*s + i*d - p for an output row y; a band's GEMM
    covers kernel rows i_lo..i_hi - 1 (all of them for stride 1; their span otherwise). Rows
    that serve none are left out."""
    bands: list[tuple[int, ...]] = []
    for r in range(rows):
        served = [i for i in range(kh) if _output_row(r, i, oh, ph, sh, dh) is not None]
        if not served:
            continue
        span = (served[0], served[-1] + 1)
        if bands and bands[-1][1] == r and bands[-1][2:] == span:
            bands[-1] = (bands[-1][0], r + 1, *span)
        else:
            bands.append((r, r + 1, *span))
    return bands


def _output_row(r: int, i: int, oh: int, ph: int, sh: int, dh: int) -> int | None:
    y, rest = divmod(r + ph - i * dh, sh)
    return y if rest == 0 and 0 <= y < oh else None


def row_patches_view(xp: Any, img: Any, layer: Any, ow: int) -> Any:
    """Every row patch of a channels-last image (N, rows, Wp, C) as one read-only view
    (N, rows, OW, group, kw, C/group)."""
    g, kw = layer.group, layer.kw
    n, rows, _, c = img.shape
    s_n, s_h, s_w, s_c = img.strides
    shape = (n, rows, ow, g, kw, c // g)
    strides = (s_n, s_h, s_w * layer.sw, s_c * (c // g), s_w * layer.dw, s_c)
    return as_strided(xp, img, shape, strides)


def folded_weights(layer: Any, ws: ConvWorkspace) -> Any:
    """The weights as Wf (group, kw*C/g, kh*O/g), Wf[g, (j, c), (i, o)] = W[g*O/g + o, c, i, j]."""
    g, o, cg = layer.group, layer.num_output, layer.channels // layer.group
    kh, kw = layer.kh, layer.kw
    w5 = layer.weight.data.reshape(g, o // g, cg, kh, kw)
    wf = ws.array("rows_wf", (g, kw, cg, kh, o // g))
    wf[...] = w5.transpose(0, 4, 2, 3, 1)
    return wf.reshape(g, kw * cg, kh * (o // g))


def _product(xp: Any, a: Any, b: Any, out: Any) -> None:
    """out (P, g, N) = a (P, g, K) times b (g, K, N), group by group (one GEMM when g == 1)."""
    if a.shape[1] == 1:
        xp.matmul(a[:, 0], b[0], out=out[:, 0])
    else:
        xp.matmul(a.transpose(1, 0, 2), b, out=out.transpose(1, 0, 2))


class _Geometry:
    """What both passes need of the layer and plan: sizes, spans of the kernel rows, bands."""

    def __init__(self, layer: Any, ws: ConvWorkspace) -> None:
        plan = ws.plan
        self.g, self.o, self.c = layer.group, layer.num_output, layer.channels
        self.og, self.cg = self.o // self.g, self.c // self.g
        self.kh, self.kw = layer.kh, layer.kw
        self.oh, self.ow, self.rows, self.wp = plan.oh, plan.ow, ws.xpad.shape[1], ws.xpad.shape[2]
        self.spans = [
            kernel_row_span(i, self.rows, self.oh, layer.ph, layer.sh, layer.dh)
            for i in range(self.kh)
        ]
        self.bands = row_bands(self.rows, self.oh, self.kh, layer.ph, layer.sh, layer.dh)
        self.per_sample = self.rows * self.ow * self.kw * self.c  # row patches of one sample
        served = {r for r_a, r_b, _, _ in self.bands for r in range(r_a, r_b)}
        self.idle_rows = [r for r in range(self.rows) if r not in served]  # no window reads


def _geometry(layer: Any, ws: ConvWorkspace) -> _Geometry:
    """The workspace's geometry, made once per plan (its bands are a Python loop)."""
    if ws.rows_geometry is None:
        ws.rows_geometry = _Geometry(layer, ws)
    return ws.rows_geometry


def _columns(ws: ConvWorkspace, sched: list, per_sample: int, step: int, keep: bool) -> Any:
    """Forward's row-patch chunks: kept for backward (one per chunk) or per-part scratch."""
    if not keep:
        return ws.scratch("rows_col", step * per_sample)
    return ws.kept_columns(sum(len(part) for part in sched), step * per_sample)


def rows_forward(layer: Any, ws: ConvWorkspace, bottom: Any, top: Any) -> None:
    """top = W * bottom + b through row patches: per chunk of samples one copy of the row
    patches, one GEMM (per group) per band into Z, kh shifted adds into the output."""
    xp, plan, geo = layer.xp, ws.plan, _geometry(layer, ws)
    g, o, og, cg, kh, kw = geo.g, geo.o, geo.og, geo.cg, geo.kh, geo.kw
    oh, ow, rows = geo.oh, geo.ow, geo.rows
    compiled = plan.jit
    if not compiled:
        inner = ws.xpad[:, :, layer.pw : layer.pw + plan.w]
        ws.copy_in(inner, _rows_of(bottom.data, rows))
    wf = folded_weights(layer, ws)
    whole = row_patches_view(xp, ws.xpad, layer, ow)
    sched = ws.schedule(plan.n, geo.per_sample)
    step = max(hi - lo for part in sched for _, lo, hi in part)
    cols = _columns(ws, sched, geo.per_sample, step, plan.keep_columns)
    zs = ws.scratch("rows_z", step * rows * ow * kh * o)
    accs = None if compiled else ws.scratch("rows_acc", step * oh * ow * o)
    out_v = top.data.transpose(NCHW_TO_NHWC)
    bias = None if layer.bias is None else layer.bias.data.reshape(g, og)
    if compiled and bias is None:
        bias = ws.array("rows_nobias", (g, og))  # zeros
    moves = (layer.ph, layer.sh, layer.dh), (layer.pw, layer.sw, layer.dw)

    def work(t: int) -> None:
        for idx, lo, hi in sched[t]:
            size = hi - lo
            col = (cols[idx] if plan.keep_columns else cols[t])[: size * geo.per_sample]
            col6 = col.reshape(rows, size, ow, g, kw, cg)
            if compiled:
                kernels.row_patches(bottom.data, col6, lo, *moves[1])
            else:
                col6[...] = whole[lo:hi].transpose(1, 0, 2, 3, 4, 5)
            z = zs[t][: rows * size * ow * kh * o].reshape(rows, size * ow, g, kh * og)
            r3 = col.reshape(rows, size * ow, g, kw * cg)
            for r_a, r_b, i_lo, i_hi in geo.bands:
                m = (r_b - r_a) * size * ow
                _product(
                    xp,
                    r3[r_a:r_b].reshape(m, g, kw * cg),
                    wf[:, :, i_lo * og : i_hi * og],
                    z[r_a:r_b].reshape(m, g, kh * og)[:, :, i_lo * og : i_hi * og],
                )
            z6 = z.reshape(rows, size, ow, g, kh, og)
            if compiled:
                kernels.fold_output(z6, bias, top.data, lo, *moves[0])
                continue
            acc = accs[t][: size * oh * ow * o].reshape(size, oh, ow, g, og)
            if bias is None:
                acc.fill(0)
            else:
                acc[...] = bias
            for i, (y_lo, y_hi, r_lo) in enumerate(geo.spans):
                if y_hi > y_lo:
                    r_hi = r_lo + (y_hi - y_lo - 1) * layer.sh + 1
                    acc[:, y_lo:y_hi] += z6[r_lo : r_hi : layer.sh, :, :, :, i].transpose(
                        1, 0, 2, 3, 4
                    )
            out_v[lo:hi] = acc.reshape(size, oh, ow, o)

    ws.run(work)
    ws.kept_ready = plan.keep_columns


def rows_backward(layer: Any, ws: ConvWorkspace, top: Any, bottom: Any, propagate: bool) -> None:
    """Weight and bias gradients (accumulated) and, if asked, the bottom diff (overwritten)."""
    xp, plan, geo = layer.xp, ws.plan, _geometry(layer, ws)
    g, o, og, cg, kh, kw = geo.g, geo.o, geo.og, geo.cg, geo.kh, geo.kw
    oh, ow, rows, wp = geo.oh, geo.ow, geo.rows, geo.wp
    sh, sw, dw, pw = layer.sh, layer.sw, layer.dw, layer.pw
    compiled = plan.jit
    wf = folded_weights(layer, ws) if propagate else None
    whole = row_patches_view(xp, ws.xpad, layer, ow)
    sched = ws.schedule(plan.n, geo.per_sample)
    step = max(hi - lo for part in sched for _, lo, hi in part)
    keep = plan.keep_columns and ws.kept_ready
    cols = ws.kept if keep else ws.scratch("rows_col", step * geo.per_sample)
    dys = None if compiled else ws.scratch("rows_dy", step * oh * ow * o)
    ds = ws.scratch("rows_d", step * rows * ow * kh * o)
    drs = ws.scratch("rows_dr", step * geo.per_sample) if propagate else None
    dxs = ws.scratch("rows_dx", step * rows * wp * geo.c) if propagate else None
    dwx = ws.scratch("rows_dw", g * kh * og * kw * cg)
    tmps = ws.scratch("rows_tmp", g * kh * og * kw * cg)
    dbx = ws.scratch("rows_db", o)
    ones = ws.scratch("rows_ones", step * oh * ow)
    dy_v = top.diff.transpose(NCHW_TO_NHWC)
    dx_v = bottom.diff.transpose(NCHW_TO_NHWC)
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
            col = (cols[idx] if keep else cols[t])[: size * geo.per_sample]
            col6 = col.reshape(rows, size, ow, g, kw, cg)
            d6 = ds[t][: rows * size * ow * kh * o].reshape(rows, size, ow, g, kh, og)
            if compiled:
                if not keep:
                    kernels.row_patches(bottom.data, col6, lo, pw, sw, dw)
                if with_bias:
                    dy3 = top.diff[lo:hi].reshape(size, o, oh * ow)
                    db += xp.matmul(dy3, ones[t][: oh * ow]).sum(axis=0)
                kernels.unfold_top_diff(top.diff, d6, lo, layer.ph, sh, layer.dh)
            else:
                if not keep:
                    col6[...] = whole[lo:hi].transpose(1, 0, 2, 3, 4, 5)
                dyc = dys[t][: size * oh * ow * o].reshape(size, oh, ow, g, og)
                dyc.reshape(size, oh, ow, o)[...] = dy_v[lo:hi]
                if with_bias:
                    db += xp.matmul(ones[t][: size * oh * ow], dyc.reshape(-1, o))
                if sh != 1:  # a band's span may hold kernel rows some of its rows do not serve
                    d6.fill(0)
                for i, (y_lo, y_hi, r_lo) in enumerate(geo.spans):
                    if y_hi > y_lo:
                        r_hi = r_lo + (y_hi - y_lo - 1) * sh + 1
                        d6[r_lo:r_hi:sh, :, :, :, i] = dyc[:, y_lo:y_hi].transpose(1, 0, 2, 3, 4)
            d4 = d6.reshape(rows, size * ow, g, kh * og)
            r4 = col.reshape(rows, size * ow, g, kw * cg)
            dr4 = None
            if propagate:
                dr4 = drs[t][: size * geo.per_sample].reshape(rows, size * ow, g, kw * cg)
                for r in geo.idle_rows:
                    dr4[r] = 0
            for r_a, r_b, i_lo, i_hi in geo.bands:
                m = (r_b - r_a) * size * ow
                block = slice(i_lo * og, i_hi * og)
                d3 = d4[r_a:r_b].reshape(m, g, kh * og)[:, :, block]
                r3 = r4[r_a:r_b].reshape(m, g, kw * cg)
                part = tmp[:, block]
                xp.matmul(d3.transpose(1, 2, 0), r3.transpose(1, 0, 2), out=part)
                dw3[:, block] += part
                if dr4 is not None:
                    dr3 = dr4[r_a:r_b].reshape(m, g, kw * cg)
                    _product(xp, d3, wf[:, :, block].transpose(0, 2, 1), dr3)
            if dr4 is None:
                continue
            if compiled:
                kernels.fold_input_diff(
                    dr4.reshape(rows, size, ow, g, kw, cg), bottom.diff, lo, pw, sw, dw
                )
                if rows < h:
                    bottom.diff[lo:hi, :, rows:] = 0
                continue
            dr6 = dr4.reshape(rows, size, ow, g, kw, cg).transpose(1, 0, 2, 3, 4, 5)
            img = dxs[t][: size * rows * wp * geo.c].reshape(size, rows, wp, g, cg)
            if sw == 1 and dw == 1:  # the first kernel column covers [0, OW): assign it
                img[:, :, :ow] = dr6[:, :, :, :, 0]
                img[:, :, ow:] = 0
            else:
                img.fill(0)
            for j in range(1 if sw == 1 and dw == 1 else 0, kw):
                img[:, :, j * dw : j * dw + (ow - 1) * sw + 1 : sw] += dr6[:, :, :, :, j]
            dx_v[lo:hi, :rows] = img[:, :, pw : pw + w].reshape(size, rows, w, geo.c)
            if rows < h:
                dx_v[lo:hi, rows:] = 0

    ws.run(work)
    total = ws.part_sum(dwx, g * kh * og * kw * cg).reshape(g, kh, og, kw, cg)
    layer.weight.diff.reshape(g, og, cg, kh, kw)[...] += total.transpose(0, 2, 4, 1, 3)
    if with_bias:
        layer.bias.diff += ws.part_sum(dbx, o)


def rows_warm_up(plan: Any, dtype: Any) -> None:
    """Compile the data-movement kernels at setup (not on the first training iteration), when
    the plan runs them (ConvPlan.jit)."""
    if plan.jit:
        kernels.warm_up(dtype)


def _rows_of(x: Any, rows: int) -> Any:
    """The first `rows` rows of an NCHW batch, channels last."""
    return x[:, :, :rows].transpose(NCHW_TO_NHWC)


def rows_buffer_shape(layer: Any, plan: Any) -> tuple[int, int, int, int]:
    """(N, rows read, W + 2 p_w, C): the input buffer, padded along the width only."""
    rows = read_rows(plan.h, plan.oh, layer.kh, layer.ph, layer.sh, layer.dh)
    return (plan.n, rows, plan.w + 2 * layer.pw, layer.channels)


def rows_gemm_rows(layer: Any, h: int, oh: int) -> int:
    """Input rows x kernel rows the folded GEMMs multiply (im2col's: output rows x kh)."""
    rows = read_rows(h, oh, layer.kh, layer.ph, layer.sh, layer.dh)
    bands = row_bands(rows, oh, layer.kh, layer.ph, layer.sh, layer.dh)
    return sum((r_b - r_a) * (i_hi - i_lo) for r_a, r_b, i_lo, i_hi in bands)
