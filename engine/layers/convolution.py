"""Caffe's Convolution layer (2-D, groups, dilation): BaseConvolutionLayer's setup and three
passes, run the way a per-shape ConvPlan (engine.layers.conv_plan) says.

Caffe's forward_cpu_gemm is `_conv_pass` / `_patch_pass`, its weight_cpu_gemm (+ bias)
`_weight_gradient` / `_patch_weight_gradient` / `_weight_gradient_per_sample`, its
backward_cpu_gemm `_data_gradient_full` / `_data_gradient_col2im` / `_patch_data_gradient`, or
all three engine.layers.conv_rows; forward() and backward() pick by the plan. Blobs are NCHW at
the interface; the plan names the internal layout, tiles and chunks (see conv_plan), and each
bottom's buffers live in a ConvWorkspace (engine.layers.conv_workspace).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.blob import Blob
from engine.im2col import (
    NCHW_TO_NHWC,
    columns_view,
    conv_out_size,
    patches_view,
    window,
)
from engine.jit import AVAILABLE as JIT_AVAILABLE
from engine.layer import Layer, register_layer
from engine.layers.conv_plan import (
    ConvPlan,
    Force,
    extended_kernel,
    pass_geometry,
    plan_convolution,
)
from engine.layers.conv_rows import rows_backward, rows_buffer_shape, rows_forward, rows_warm_up
from engine.layers.conv_workspace import ConvWorkspace
from engine.threads import EngineThreads, chunks, split


# --- geometry (shared with Deconvolution) -------------------------------------------------------
def _pair(
    values: Sequence[int],
    h: int | None,
    w: int | None,
    default: int,
    what: str,
    err: Any,
    missing: int | None = None,
) -> tuple[int, int]:
    """Caffe's rule for 2-D geometry: x_h/x_w, else one repeated value for both, else two.

    With x_h/x_w, an absent one takes `missing` (pad: 0); if None both are required, since
    Caffe would read 0 and reject it.
    """
    if h is not None or w is not None:
        if len(values):
            raise err(f"{what}: give either {what}_size/{what} or {what}_h and {what}_w, not both")
        if (h is None or w is None) and missing is None:
            raise err(f"{what}_h and {what}_w must both be given")
        return int(missing if h is None else h), int(missing if w is None else w)
    if len(values) == 0:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise err(f"{what} has {len(values)} values; only 2-D convolution is supported")


def _opt(p: Any, field_name: str) -> int | None:
    return int(getattr(p, field_name)) if p.HasField(field_name) else None


def read_geometry(layer: Layer, p: Any, bottom: Blob, kind: str) -> None:
    """Caffe's BaseConvolutionLayer setup, shared by Convolution and Deconvolution: sets kh, kw,
    ph, pw, sh, sw, dh, dw, num_output, group and channels on `layer`, checking each."""
    err = layer.error
    if p.axis not in (1, -3):
        raise err(f"axis {p.axis} is not supported (only the channel axis 1)")
    if len(bottom.shape) != 4:
        raise err(f"bottom shape {bottom.shape}: only 2-D (N, C, H, W) {kind} is supported")
    kh, kw = _opt(p, "kernel_h"), _opt(p, "kernel_w")
    layer.kh, layer.kw = _pair(p.kernel_size, kh, kw, 0, "kernel", err)
    if layer.kh <= 0 or layer.kw <= 0:
        raise err("kernel_size (or kernel_h and kernel_w) must be given and positive")
    layer.ph, layer.pw = _pair(p.pad, _opt(p, "pad_h"), _opt(p, "pad_w"), 0, "pad", err, missing=0)
    layer.sh, layer.sw = _pair(p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), 1, "stride", err)
    if layer.sh <= 0 or layer.sw <= 0:
        raise err("stride must be positive")
    layer.dh, layer.dw = _pair(p.dilation, None, None, 1, "dilation", err)
    if layer.dh <= 0 or layer.dw <= 0:
        raise err("dilation must be positive")
    layer.num_output = int(p.num_output)
    if layer.num_output <= 0:
        raise err("num_output must be given and positive")
    layer.group = int(p.group)
    layer.channels = bottom.shape[1]
    if layer.group <= 0 or layer.channels % layer.group:
        raise err(f"channels ({layer.channels}) must be divisible by group ({layer.group})")
    if layer.num_output % layer.group:
        raise err(f"num_output ({layer.num_output}) must be divisible by group ({layer.group})")


def image_extents(
    layer: Layer, k: int, shape: tuple[int, ...], out_size: Callable[..., int]
) -> tuple[int, int, int, int, int]:
    """(n, h, w, oh, ow) of bottom k for Convolution or Deconvolution (`out_size` is the
    layer's extent rule); refuses a bottom that is not (N, channels, H, W)."""
    if len(shape) != 4 or shape[1] != layer.channels:
        raise layer.error(
            f"bottom {k} shape {shape} does not match the layer's input (N, {layer.channels}, H, W)"
        )
    n, _, h, w = shape
    oh = out_size(h, layer.kh, layer.ph, layer.sh, layer.dh)
    ow = out_size(w, layer.kw, layer.pw, layer.sw, layer.dw)
    return n, h, w, oh, ow


def tile_view(a: Any, group: int, tile: tuple[int, int], batch_last: bool) -> Any:
    """An NCHW array (N, M, TY*p, TX*q) as the (group, p, q, M/group, *rest) view that a tiled
    GEMM's product fills, rest being (N, TY, TX), or (TY, TX, N) when batch_last."""
    n, m, hh, ww = a.shape
    p, q = tile
    v = a.reshape(n, group, m // group, hh // p, p, ww // q, q)  # n g mg ty a tx b
    if batch_last:
        return v.transpose(1, 4, 6, 2, 3, 5, 0)
    return v.transpose(1, 4, 6, 2, 0, 3, 5)


@register_layer("Convolution", v1_name="CONVOLUTION")
class ConvolutionLayer(Layer):
    """y = W * x + b over 2-D images, weights (num_output, channels/group, kh, kw)."""

    min_bottoms = 1
    min_tops = 1
    _force: Force | None = None  # see force_plans

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.convolution_param
        if len(bottoms) != len(tops):
            raise self.error(f"needs as many tops as bottoms, got {len(bottoms)} and {len(tops)}")
        read_geometry(self, p, bottoms[0], "convolution")
        if p.force_nd_im2col:
            raise self.error("force_nd_im2col: N-d convolution is not supported")
        self.bias_term = bool(p.bias_term)
        wshape = (self.num_output, self.channels // self.group, self.kh, self.kw)
        self.weight = self.new_param_blob(wshape, p.weight_filler)
        self.bias = None
        if self.bias_term:
            self.bias = self.new_param_blob((self.num_output,), p.bias_filler)
        self._threads = EngineThreads(self.xp, self.name)
        self._ws: list[ConvWorkspace | None] = [None for _ in bottoms]

    # --- shapes, plans, buffers --------------------------------------------------------------
    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            n, h, w, oh, ow = image_extents(self, k, bottom.shape, conv_out_size)
            if oh <= 0 or ow <= 0:
                raise self.error(f"kernel larger than the padded input {h}x{w}")
            top.reshape((n, self.num_output, oh, ow))
            ws = self._ws[k]
            if ws is None or (ws.plan.n, ws.plan.h, ws.plan.w) != (n, h, w):
                self.use_plan(k, plan_convolution(self, n, h, w, oh, ow, self._force))

    def force_plans(self, force: Force | None) -> None:
        """Plan every shape from now on as `force` says (tests, benchmarks; None: the cost
        model again); takes effect at the next setup or reshape."""
        self._force = force
        if hasattr(self, "_ws"):
            self._ws = [None for _ in self._ws]

    def plan(self, k: int = 0) -> ConvPlan:
        """The plan in use for bottom k (after setup/reshape)."""
        ws = self._ws[k]
        if ws is None:
            raise self.error("no plan before reshape")
        return ws.plan

    def use_plan(self, k: int, plan: ConvPlan) -> None:
        """Run bottom k with `plan` (checked), dropping the buffers of the previous one."""
        if plan.oh % plan.tile[0] or plan.ow % plan.tile[1]:
            raise self.error(f"tile {plan.tile} does not divide the output {plan.oh}x{plan.ow}")
        if plan.dgrad == "full":
            if plan.h % plan.dgrad_tile[0] or plan.w % plan.dgrad_tile[1]:
                raise self.error(f"data-gradient tile {plan.dgrad_tile} does not divide the input")
            if self.sh != 1 or self.sw != 1 or min(self._full_pad()) < 0:
                raise self.error("the full data gradient needs stride 1 and pad <= d(k-1)")
        elif plan.dgrad != "col2im":
            raise self.error(f"unknown data-gradient algorithm {plan.dgrad!r}")
        if plan.layout not in ("CNHW", "CHWN", "NHWC"):
            raise self.error(f"unknown layout {plan.layout!r}")
        if (
            plan.channels_last
            and not plan.fold_rows
            and (plan.tile, plan.dgrad) != ((1, 1), "full")
        ):
            raise self.error("the channels-last layout runs untiled, with the full data gradient")
        if plan.wgrad == "per_sample" and (plan.layout, plan.tile, self.group) != (
            "CNHW",
            (1, 1),
            1,
        ):
            raise self.error("the per-sample weight gradient needs layout CNHW, no tile, group 1")
        if plan.fold_rows and (plan.layout, plan.tile) != ("NHWC", (1, 1)):
            raise self.error("the row-folded passes run channels last, untiled")
        if plan.jit and not (plan.fold_rows and self.xp is np and JIT_AVAILABLE):
            raise self.error("compiled data movement needs the row-folded passes, NumPy and Numba")
        ws = ConvWorkspace(plan, self.xp, self.dtype, self._threads)
        hp, wp = plan.h + 2 * self.ph, plan.w + 2 * self.pw
        if plan.fold_rows:
            ws.xpad = self.xp.zeros(rows_buffer_shape(self, plan), self.dtype)
            rows_warm_up(plan, self.dtype)
        elif self.ph or self.pw or plan.layout != "CNHW":  # copy: gather the batch / channels
            ws.xpad = self.xp.zeros(plan.internal_shape(self.channels, hp, wp), self.dtype)
        self._ws[k] = ws

    def _full_pad(self) -> tuple[int, int]:
        """Zero border of the top diff for the full data gradient: d(k-1) - p per axis."""
        return self.dh * (self.kh - 1) - self.ph, self.dw * (self.kw - 1) - self.pw

    def _input(self, ws: ConvWorkspace, x: Any) -> Any:
        """The input in internal layout, copied into the zero-padded buffer when there is one."""
        plan = ws.plan
        x_int = x.transpose(plan.to_internal)
        if ws.xpad is None:
            return x_int
        inner = ws.interior(self.ph, self.pw, plan.h, plan.w)
        ws.copy_in(ws.xpad[inner], x_int)
        return ws.xpad

    def _extended_weights(
        self, ws: ConvWorkspace, key: str, wbase: Any, geom: tuple[int, ...], tile: tuple[int, int]
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

    # --- the passes ----------------------------------------------------------------------------
    def _conv_pass(
        self,
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
        xp, plan, g = self.xp, ws.plan, self.group
        p, q = tile
        m, cs = wbase.shape[1], src.shape[0]
        wext = self._extended_weights(ws, key, wbase, geom, tile)
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

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Caffe's forward_cpu_gemm (+ bias) over the whole batch."""
        g, o = self.group, self.num_output
        w5 = self.weight.data.reshape(g, o // g, self.channels // g, self.kh, self.kw)
        bias = None if self.bias is None else self.bias.data
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            ws = self._ws[k]
            plan = ws.plan
            if plan.fold_rows:
                rows_forward(self, ws, bottom, top)
                continue
            src = self._input(ws, bottom.data)
            geom = (self.kh, self.kw, self.sh, self.sw, self.dh, self.dw)
            ws.kept_ready = False
            if plan.channels_last:
                wt = ws.array("wt", (g, self.kh, self.kw, self.channels // g, o // g))
                wt[...] = w5.transpose(0, 3, 4, 2, 1)
                wt3 = wt.reshape(g, -1, o // g)
                self._patch_pass(ws, "f", src, wt3, geom, top.data, bias, plan.keep_columns)
            else:
                self._conv_pass(
                    ws, "f", src, w5, geom, plan.tile, top.data, bias, plan.keep_columns
                )

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        """Weight and bias gradients (accumulated), then the data gradient (overwritten)."""
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            ws = self._ws[k]
            if ws.plan.fold_rows:
                rows_backward(self, ws, top, bottom, bool(propagate_down[k]))
                continue
            if ws.plan.channels_last:
                # With a data gradient the top diff is gathered once, into the padded
                # channels-last buffer, and the weight gradient copies its chunks from there
                # (the NCHW -> NHWC gather is the slow copy: 9 ms for AlexNet's conv2 top).
                dypad = self._padded_top_diff(ws, top) if propagate_down[k] else None
                self._patch_weight_gradient(ws, top, dypad)
                if dypad is not None:
                    self._patch_data_gradient(ws, dypad, bottom)
                continue
            if ws.plan.wgrad == "per_sample" and not propagate_down[k]:
                self._weight_gradient_per_sample(ws, top, bottom)
                continue
            # col2im reads the top diff in internal layout: an untiled weight gradient leaves
            # its chunks there instead of in scratch (one gather of the top diff, not two).
            share = bool(propagate_down[k]) and ws.plan.dgrad == "col2im" and ws.plan.tile == (1, 1)
            self._weight_gradient(ws, top, bottom, share)
            if not propagate_down[k]:
                continue
            if ws.plan.dgrad == "full":
                self._data_gradient_full(ws, top, bottom)
            else:
                self._data_gradient_col2im(ws, top, bottom, gathered=share)

    # --- channels-last passes: patch-major columns, GEMM (pixels x K) x (K x M) ---------------
    def _patch_pass(
        self,
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
        xp, g = self.xp, self.group
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

    def _padded_top_diff(self, ws: ConvWorkspace, top: Blob) -> Any:
        """The top diff channels last, zero-padded by d(k-1)-p for the full data gradient."""
        plan = ws.plan
        qh, qw = self._full_pad()
        o = self.num_output
        dypad = ws.array("dypad", plan.internal_shape(o, plan.oh + 2 * qh, plan.ow + 2 * qw))
        inner = ws.interior(qh, qw, plan.oh, plan.ow)
        ws.copy_in(dypad[inner], top.diff.transpose(NCHW_TO_NHWC))
        return dypad

    def _patch_weight_gradient(self, ws: ConvWorkspace, top: Blob, dypad: Any = None) -> None:
        """dW^T += cols^T dy and db += 1^T dy per chunk of samples, summed over the parts;
        dy chunks from the padded channels-last top diff when given, else from the top."""
        xp, plan, g = self.xp, ws.plan, self.group
        o, c = self.num_output, self.channels
        og, cg = o // g, c // g
        kh, kw = self.kh, self.kw
        kdim = kh * kw * cg
        geom = (kh, kw, self.sh, self.sw, self.dh, self.dw)
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
            dy_v = dypad[ws.interior(*self._full_pad(), plan.oh, plan.ow)]
        with_bias = self.bias is not None

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
        self.weight.diff.reshape(g, og, cg, kh, kw)[...] += total.transpose(0, 4, 3, 1, 2)
        if with_bias:
            self.bias.diff += ws.part_sum(dbx, o)

    def _patch_data_gradient(self, ws: ConvWorkspace, dypad: Any, bottom: Blob) -> None:
        """dx = (top diff zero-padded by d(k-1)-p, channels last) convolved with the flipped
        weights: a channels-last pass into the bottom diff."""
        g = self.group
        o, c = self.num_output, self.channels
        wg = self.weight.data.reshape(g, o // g, c // g, self.kh, self.kw)
        wf = ws.array("wflip_t", (g, self.kh, self.kw, o // g, c // g))
        wf[...] = wg[:, :, :, ::-1, ::-1].transpose(0, 3, 4, 1, 2)
        geom = (self.kh, self.kw, 1, 1, self.dh, self.dw)
        self._patch_pass(ws, "d", dypad, wf.reshape(g, -1, c // g), geom, bottom.diff, None, False)

    def _weight_gradient(self, ws: ConvWorkspace, top: Blob, bottom: Blob, share: bool) -> None:
        """dW += dy col^T and db += dy 1 per chunk (tiled as forward), summed over the parts,
        then the extended kernel's p*q shifted copies folded back into the weight diff."""
        xp, plan, g = self.xp, ws.plan, self.group
        o, c = self.num_output, self.channels
        og, cg = o // g, c // g
        kh, kw, sh, sw, dh, dw = self.kh, self.kw, self.sh, self.sw, self.dh, self.dw
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
        with_bias = self.bias is not None

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
        wdiff = self.weight.diff.reshape(g, og, cg, kh, kw)
        if plan.tile == (1, 1):
            wdiff += dw_ext[:, 0, 0]
        for a in range(p) if plan.tile != (1, 1) else ():
            for b in range(q):
                rows = slice(a * sh, a * sh + (kh - 1) * dh + 1, dh)
                cols_ = slice(b * sw, b * sw + (kw - 1) * dw + 1, dw)
                wdiff += dw_ext[:, a, b, :, :, rows, cols_]
        if with_bias:
            db = ws.part_sum(dbx, g * m).reshape(g, p, q, og)
            self.bias.diff += db.sum(axis=(1, 2)).reshape(o)

    def _weight_gradient_per_sample(self, ws: ConvWorkspace, top: Blob, bottom: Blob) -> None:
        """Batch-second layout, group 1, no tile: per sample dW += dy_n col_n^T as one batched
        GEMM over a chunk of samples, reading the NCHW top diff in place; columns kept or
        re-made."""
        xp, plan, o = self.xp, ws.plan, self.num_output
        ckk = self.channels * self.kh * self.kw
        row = plan.oh * plan.ow
        geom = (self.kh, self.kw, self.sh, self.sw, self.dh, self.dw)
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
        with_bias = self.bias is not None

        def work(t: int) -> None:
            dw, tmp, db = dwx[t][: o * ckk], tmps[t][: o * ckk], dbx[t][:o]
            dw.fill(0)
            db.fill(0)
            ones[t].fill(1)
            for idx, lo, hi in sched[t]:
                size = hi - lo
                col = (cols[idx] if keep else cols[t])[: ckk * size * row]
                col5 = col.reshape(self.channels, self.kh, self.kw, size, row)
                if not keep:
                    col5[...] = whole[:, :, :, lo:hi].reshape(col5.shape)
                per = col.reshape(ckk, size, row).transpose(1, 2, 0)
                prod = prods[t][: size * o * ckk].reshape(size, o, ckk)
                xp.matmul(dy3[lo:hi], per, out=prod)
                dw += prod.sum(axis=0, out=tmp.reshape(o, ckk)).reshape(-1)
                if with_bias:
                    db += xp.matmul(dy3[lo:hi], ones[t][:row]).sum(axis=0)

        ws.run(work)
        wdiff = self.weight.diff.reshape(-1)
        for t in range(plan.parts):
            wdiff += dwx[t][: o * ckk]
            if with_bias:
                self.bias.diff += dbx[t][:o]

    def _data_gradient_full(self, ws: ConvWorkspace, top: Blob, bottom: Blob) -> None:
        """Stride 1: dx = (top diff zero-padded by d(k-1)-p) convolved with the flipped weights."""
        plan, g = ws.plan, self.group
        o, c = self.num_output, self.channels
        qh, qw = self._full_pad()
        shape = plan.internal_shape(o, plan.oh + 2 * qh, plan.ow + 2 * qw)
        dypad = ws.array("dypad", shape)  # borders stay zero
        inner = ws.interior(qh, qw, plan.oh, plan.ow)
        ws.copy_in(dypad[inner], top.diff.transpose(plan.to_internal))
        wflip = ws.array("wflip", (g, c // g, o // g, self.kh, self.kw))
        wg = self.weight.data.reshape(g, o // g, c // g, self.kh, self.kw)
        wflip[...] = wg[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        geom = (self.kh, self.kw, 1, 1, self.dh, self.dw)
        self._conv_pass(ws, "d", dypad, wflip, geom, plan.dgrad_tile, bottom.diff, None, False)

    def _data_gradient_col2im(
        self, ws: ConvWorkspace, top: Blob, bottom: Blob, gathered: bool = False
    ) -> None:
        """Per part a share of the input channels: dcol = W^T dy in chunks, summed back into
        the padded image (col2im), then cropped into the bottom diff."""
        xp, plan, g = self.xp, ws.plan, self.group
        o, c = self.num_output, self.channels
        kh, kw, kk = self.kh, self.kw, self.kh * self.kw
        geom = (kh, kw, self.sh, self.sw, self.dh, self.dw)
        cg = c // g
        w3 = self.weight.data.reshape(g, o // g, cg * kk)
        dy = ws.array("dy", plan.internal_shape(o, plan.oh, plan.ow))
        if not gathered:  # else the weight gradient left it there
            ws.copy_in(dy, top.diff.transpose(plan.to_internal))
        dyg = dy.reshape(g, o // g, *dy.shape[1:])
        rest = dy.shape[2:]
        total = dy.shape[1]
        hp, wp = plan.h + 2 * self.ph, plan.w + 2 * self.pw
        dxpad = ws.array("dxpad", plan.internal_shape(c, hp, wp))
        # Work items: (group, channel range in the group); channel halves when g == 1.
        per_group = max(1, plan.parts // g)
        items = [(gi, a, b) for gi in range(g) for a, b in split(0, cg, per_group) if b > a]
        cmax = max(b - a for _, a, b in items)
        item = np.dtype(self.dtype).itemsize
        row = rest[0] * rest[1]
        step = total
        if plan.chunk_bytes:
            step = max(1, min(total, 2 * plan.chunk_bytes // max(1, cmax * kk * row * item)))
        cols = ws.scratch("d_col", cmax * kk * step * row)
        inner = ws.interior(self.ph, self.pw, plan.h, plan.w)
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
