"""Caffe's Convolution layer (2-D, groups, dilation) as batch-folded im2col + GEMM, in chunks.

Blobs are NCHW at the interface. Internally the padded input is kept channel-major, batch second
(C, N, H, W) or, for small maps, batch last (C, H, W, N). The work is cut along the axis after
the channels (samples, or output rows) into chunks whose column matrix (C*kh*kw, chunk) stays
in cache between im2col and its GEMM; the chunks run on two threads (engine.conv_gemm).
Each chunk's im2col is one copy from a strided view. When the whole column matrix is small,
forward keeps it for the weight gradient; with the batch second (and group 1) and no data
gradient, the weight gradient is one GEMM per sample read straight from the NCHW top diff.
The data gradient uses col2im, or for stride 1 a "full" convolution of the padded top diff with
the flipped weights when that moves fewer bytes (a cost model, measured on OpenBLAS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.blob import Blob
from engine.conv_gemm import MIN_THREADED_BYTES, WORKERS, TwoCores, chunks, split
from engine.im2col import (
    CHWN_TO_NCHW,
    CNHW_TO_NCHW,
    NCHW_TO_CHWN,
    NCHW_TO_CNHW,
    columns_view,
    conv_out_size,
    window,
)
from engine.layer import Layer, register_layer

# Measured costs on 2 cores (ns per element for im2col copies and col2im adds, indexed by
# batch-last; GFLOP/s of the GEMMs) used to pick the data-gradient algorithm.
_NS_COPY = {False: 0.27, True: 0.13}
_NS_COL2IM = {False: 0.66, True: 0.34}
_GEMM_GFLOPS = 150.0
_BATCH_LAST_MAX_OW = 16
# Column-buffer chunk per thread: small enough to stay in cache between im2col and the GEMM.
_CHUNK_BYTES = 2 << 20
# Up to this whole-batch column size, forward keeps its columns for the weight gradient
# instead of backward re-making them (LeNet batch 64: conv1 3.7 MB, conv2 8.2 MB).
_KEEP_COL_BYTES = 32 << 20
# col2im chunks twice as large: fewer, wider GEMMs measured faster (LeNet conv2 1.42 -> 1.33 ms).
_DGRAD_CHUNK_SCALE = 2
_MIN_THREADED_WGRAD = 1024  # elements of one group's weight gradient


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


def _opt(p: Any, field: str) -> int | None:
    return int(getattr(p, field)) if p.HasField(field) else None


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


@register_layer("Convolution", v1_name="CONVOLUTION")
class ConvolutionLayer(Layer):
    """y = W * x + b over 2-D images, weights (num_output, channels/group, kh, kw)."""

    min_bottoms = 1
    min_tops = 1

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
        self._buffers: list[dict[str, Any]] = [{} for _ in bottoms]
        self._cores = TwoCores(self.xp, self.name)
        self._key: list[tuple[int, ...] | None] = [None for _ in bottoms]

    # --- shapes and buffers ----------------------------------------------------------------
    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            shape = bottom.shape
            if len(shape) != 4 or shape[1] != self.channels:
                raise self.error(
                    f"bottom {k} shape {shape} does not match the layer's input "
                    f"(N, {self.channels}, H, W)"
                )
            n, _, h, w = shape
            oh = conv_out_size(h, self.kh, self.ph, self.sh, self.dh)
            ow = conv_out_size(w, self.kw, self.pw, self.sw, self.dw)
            if oh <= 0 or ow <= 0:
                raise self.error(f"kernel larger than the padded input {h}x{w}")
            top.reshape((n, self.num_output, oh, ow))
            if self._key[k] != (n, h, w):
                self._key[k] = (n, h, w)
                self._buffers[k] = self._make_buffers(n, h, w, oh, ow)

    def _make_buffers(self, n: int, h: int, w: int, oh: int, ow: int) -> dict[str, Any]:
        xp, dt = self.xp, self.dtype
        c, o, g = self.channels, self.num_output, self.group
        kk = self.kh * self.kw
        npix = n * oh * ow
        # Layout: batch-last (C, H, W, N) copies faster when output rows are short; measured
        # crossover on OpenBLAS/2 cores near OW = 16 (CIFAR conv2/3, LeNet conv2 vs conv1).
        last = ow <= _BATCH_LAST_MAX_OW
        buf: dict[str, Any] = {"dims": (n, h, w, oh, ow), "batch_last": last}
        buf["to_int"], buf["to_nchw"] = (
            (NCHW_TO_CHWN, CHWN_TO_NCHW) if last else (NCHW_TO_CNHW, CNHW_TO_NCHW)
        )
        buf["spatial"] = (1, 2) if last else (2, 3)

        def shape(ch: int, hh: int, ww: int) -> tuple[int, ...]:
            return (ch, hh, ww, n) if last else (ch, n, hh, ww)

        buf["shape"] = shape
        hp, wp = h + 2 * self.ph, w + 2 * self.pw
        if self.ph or self.pw or last:  # batch-last: gather the batch axis once, not per offset
            buf["xpad"] = xp.zeros(shape(c, hp, wp), dt)
        buf["dy"] = xp.empty(shape(o, oh, ow), dt)
        col_bytes = c * kk * npix * np.dtype(dt).itemsize
        buf["threaded"] = col_bytes >= MIN_THREADED_BYTES
        buf["keep"] = col_bytes <= _KEEP_COL_BYTES
        # OpenBLAS runs a skinny weight-gradient GEMM (tiny M x N, long K) no faster on two
        # threads than on one (LeNet conv1, 20 x 25: measured slower). With the batch second,
        # one GEMM per sample straight from the NCHW top diff (no copy of it) scales instead:
        # LeNet conv1 b64 0.55 -> 0.33 ms, b1000 16 -> 8 ms; CIFAR conv1 -4%, AlexNet conv1 -1%.
        skinny = o // g * (c // g * kk) < _MIN_THREADED_WGRAD
        buf["per_sample"] = not last and g == 1
        buf["wgrad_threaded"] = buf["threaded"] and not skinny
        buf["dw"] = [xp.zeros((g, o // g, c // g * kk), dt) for _ in range(WORKERS)]
        buf["db"] = [xp.zeros((o,), dt) for _ in range(WORKERS)]
        buf["dw_tmp"] = [xp.empty((o // g, c // g * kk), dt) for _ in range(WORKERS)]
        # Data-gradient algorithm: col2im, or (stride 1) full convolution with flipped weights,
        # whichever the cost model (bytes moved + GEMM FLOPs) says is cheaper.
        qh = self.dh * (self.kh - 1) - self.ph
        qw = self.dw * (self.kw - 1) - self.pw
        full_ok = self.sh == 1 and self.sw == 1 and qh >= 0 and qw >= 0
        ns_copy, ns_add = _NS_COPY[last], _NS_COL2IM[last]
        flops = 2.0 * c * o * kk / g
        t_col2im = ns_add * c * kk * npix + flops * npix / _GEMM_GFLOPS
        t_full = ns_copy * o * kk * n * h * w + flops * n * h * w / _GEMM_GFLOPS
        buf["full"] = full_ok and t_full < t_col2im
        buf["q"] = (qh, qw)
        return buf

    def _geom(self) -> tuple[int, ...]:
        return (self.kh, self.kw, self.sh, self.sw, self.dh, self.dw)

    def _thread_buffer(self, buf: dict[str, Any], key: str, shape: tuple[int, ...]) -> list[Any]:
        """One scratch array per thread, created on first use."""
        if key not in buf:
            buf[key] = [self.xp.empty(shape, self.dtype) for _ in range(WORKERS)]
        return buf[key]

    def _plan(self, total: int, step: int) -> list[list[tuple[int, int, int]]]:
        """Per thread its chunks (index, lo, hi) of the outer axis; forward and backward agree."""
        plan, q = [], 0
        for lo_t, hi_t in split(0, total, WORKERS):
            mine = []
            for lo, hi in chunks(lo_t, hi_t, step):
                mine.append((q, lo, hi))
                q += 1
            plan.append(mine)
        return plan

    def _kept_columns(self, buf: dict[str, Any], shape: tuple[int, ...], count: int) -> Any:
        """The store of forward's column chunks, (count, *chunk shape), created on first use."""
        if "kept" not in buf or buf["kept"].shape != (count, *shape):
            buf["kept"] = self.xp.empty((count, *shape), self.dtype)
        return buf["kept"]

    def _interior(self, buf: dict[str, Any], ph: int, pw: int, h: int, w: int) -> tuple:
        """Index of the unpadded h x w region inside a padded internal-layout image."""
        inner: list[slice] = [slice(None)] * 4
        sp = buf["spatial"]
        inner[sp[0]] = slice(ph, ph + h)
        inner[sp[1]] = slice(pw, pw + w)
        return tuple(inner)

    def _step(self, rows: int, per_row: int, scale: int = 1) -> int:
        """Chunk length along the outer axis so one column chunk is about scale*_CHUNK_BYTES."""
        item = np.dtype(self.dtype).itemsize
        return max(1, min(rows, scale * _CHUNK_BYTES // max(1, per_row * item)))

    def _conv_pass(
        self,
        buf: dict[str, Any],
        key: str,
        src: Any,
        wmat: Any,
        out: Any,
        geom: tuple[int, ...],
        out_hw: tuple[int, int],
        bias: Any,
    ) -> None:
        """out (internal layout, may be a transposed view) = wmat (g, M, K) conv src (+ bias).

        Chunks of the outer axis: im2col into a per-thread column buffer, one GEMM per group
        into a per-thread product buffer, then one write into `out` (adding the bias).
        """
        xp, g = self.xp, self.group
        csrc, m = src.shape[0], out.shape[0]
        kh, kw = geom[0], geom[1]
        rest = out.shape[2:]
        per = csrc * kh * kw * rest[0] * rest[1]
        total = out.shape[1]
        step = self._step(total, per)
        plan = self._plan(total, step)
        keep = key == "f" and buf["keep"]
        if keep:
            cols = self._kept_columns(buf, (csrc, kh, kw, step, *rest), plan[-1][-1][0] + 1)
        else:
            cols = self._thread_buffer(buf, key + "_col", (csrc, kh, kw, step, *rest))
        prods = self._thread_buffer(buf, key + "_prod", (m, step, *rest))
        sp = buf["spatial"]
        bias_b = None if bias is None else bias.reshape(m, 1, 1, 1)
        kdim = csrc // g * kh * kw

        whole = columns_view(xp, src, geom, out_hw, sp)

        def work(t: int) -> None:
            for q, lo, hi in plan[t]:
                col = (cols[q] if keep else cols[t])[:, :, :, : hi - lo]
                col[...] = whole[:, :, :, lo:hi]
                colg = col.reshape(g, kdim, -1)
                prod = prods[t][:, : hi - lo]
                prodg = prod.reshape(g, m // g, -1)
                for gi in range(g):
                    xp.matmul(wmat[gi], colg[gi], out=prodg[gi])
                if bias_b is not None:
                    prod += bias_b  # in cache; a ufunc writing a transposed view is slow
                out[:, lo:hi] = prod

        self._cores.run(work, threaded=buf["threaded"])

    def _pad_input(self, buf: dict[str, Any], x: Any) -> Any:
        """The input in internal layout, copied into the zero-padded buffer when there is one."""
        x_int = x.transpose(buf["to_int"])
        if "xpad" not in buf:
            return x_int
        n, h, w = buf["dims"][:3]
        xpad = buf["xpad"]
        inner = self._interior(buf, self.ph, self.pw, h, w)
        parts = split(0, self.channels, WORKERS)

        def copy(t: int) -> None:
            sl = slice(*parts[t])
            xpad[sl][(slice(None), *inner[1:])] = x_int[sl]

        self._cores.run(copy, threaded=buf["threaded"])
        return xpad

    # --- forward ---------------------------------------------------------------------------
    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        g, o = self.group, self.num_output
        w3 = self.weight.data.reshape(g, o // g, -1)
        bias = None if self.bias is None else self.bias.data
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            buf = self._buffers[k]
            oh, ow = buf["dims"][3:5]
            src = self._pad_input(buf, bottom.data)
            out = top.data.transpose(buf["to_int"])
            self._conv_pass(buf, "f", src, w3, out, self._geom(), (oh, ow), bias)

    # --- backward --------------------------------------------------------------------------
    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            buf = self._buffers[k]
            if buf["per_sample"] and not propagate_down[k]:
                self._param_grads_per_sample(buf, top, bottom)
                continue
            self._param_grads(buf, top, bottom, bool(propagate_down[k]))
            if not propagate_down[k]:
                continue
            if buf["full"]:
                self._data_grad_full(buf, bottom)
            else:
                self._data_grad_col2im(buf, bottom)

    def _param_grads(self, buf: dict[str, Any], top: Blob, bottom: Blob, down: bool) -> None:
        """Chunks of the top diff: copy into internal layout (and the padded copy the full data
        gradient reads), bias sums, weight gradient from re-made columns; sum the threads."""
        xp, g = self.xp, self.group
        o, c = self.num_output, self.channels
        n, h, w, oh, ow = buf["dims"]
        geom = self._geom()
        kh, kw = self.kh, self.kw
        ckk = c // g * kh * kw
        # The columns of forward's input (forward left its padded copy in place).
        src = buf["xpad"] if "xpad" in buf else bottom.data.transpose(buf["to_int"])
        dy = buf["dy"]
        dy_top = top.diff.transpose(buf["to_int"])
        rest = dy.shape[2:]
        total = dy.shape[1]
        step = self._step(total, c * kh * kw * rest[0] * rest[1])
        plan = self._plan(total, step)
        keep = buf["keep"] and "kept" in buf
        cols = buf["kept"] if keep else self._thread_buffer(buf, "w_col", (c, kh, kw, step, *rest))
        ones = self._thread_buffer(buf, "ones", (step * rest[0] * rest[1],))
        full = down and buf["full"]
        if full:
            qh, qw = buf["q"]
            if "dypad" not in buf:
                buf["dypad"] = xp.zeros(buf["shape"](o, oh + 2 * qh, ow + 2 * qw), self.dtype)
            dypad = buf["dypad"]
            inner = self._interior(buf, qh, qw, oh, ow)
            off = inner[1].start if buf["batch_last"] else 0
        whole = None if keep else columns_view(xp, src, geom, (oh, ow), buf["spatial"])

        def work(t: int) -> None:
            dw, db, tmp, one = buf["dw"][t], buf["db"][t], buf["dw_tmp"][t], ones[t]
            dw.fill(0)
            db.fill(0)
            one.fill(1)
            for q, lo, hi in plan[t]:
                dyc = dy[:, lo:hi]
                dyc[...] = dy_top[:, lo:hi]
                if full:
                    dst = list(inner)
                    dst[1] = slice(off + lo, off + hi)
                    dypad[tuple(dst)] = dyc
                dy2 = dyc.reshape(o, -1)
                if self.bias is not None:
                    db += dy2 @ one[: dy2.shape[1]]
                col = (cols[q] if keep else cols[t])[:, :, :, : hi - lo]
                if not keep:
                    col[...] = whole[:, :, :, lo:hi]
                colg = col.reshape(g, ckk, -1)
                dyg = dy2.reshape(g, o // g, -1)
                for gi in range(g):
                    xp.matmul(dyg[gi], colg[gi].T, out=tmp)
                    dw[gi] += tmp

        self._cores.run(work, threaded=buf["wgrad_threaded"])
        wdiff = self.weight.diff.reshape(g, o // g, ckk)
        for t in range(WORKERS):
            wdiff += buf["dw"][t]
            if self.bias is not None:
                self.bias.diff += buf["db"][t]

    def _param_grads_per_sample(self, buf: dict[str, Any], top: Blob, bottom: Blob) -> None:
        """Batch-second layout, group 1, no data gradient: per sample dW += dy_n col_n^T as one
        batched GEMM over the NCHW top diff (no copy of it), columns kept or re-made."""
        xp, o = self.xp, self.num_output
        n, h, w, oh, ow = buf["dims"]
        ckk = self.channels * self.kh * self.kw
        src = buf["xpad"] if "xpad" in buf else bottom.data.transpose(buf["to_int"])
        dy3 = top.diff.reshape(n, o, oh * ow)
        step = self._step(n, ckk * oh * ow)
        plan = self._plan(n, step)
        keep = buf["keep"] and "kept" in buf
        shape = (self.channels, self.kh, self.kw, step, oh, ow)
        cols = buf["kept"] if keep else self._thread_buffer(buf, "ps_col", shape)
        prods = self._thread_buffer(buf, "ps_prod", (step, o, ckk))
        ones = self._thread_buffer(buf, "ps_ones", (oh * ow,))
        whole = None if keep else columns_view(xp, src, self._geom(), (oh, ow), buf["spatial"])

        def work(t: int) -> None:
            dw, db, tmp, one = buf["dw"][t][0], buf["db"][t], buf["dw_tmp"][t], ones[t]
            dw.fill(0)
            db.fill(0)
            one.fill(1)
            for q, lo, hi in plan[t]:
                col = (cols[q] if keep else cols[t])[:, :, :, : hi - lo]
                if not keep:
                    col[...] = whole[:, :, :, lo:hi]
                per = col.reshape(ckk, hi - lo, oh * ow).transpose(1, 2, 0)
                prod = prods[t][: hi - lo]
                xp.matmul(dy3[lo:hi], per, out=prod)
                dw += prod.sum(axis=0, out=tmp)
                if self.bias is not None:
                    db += (dy3[lo:hi] @ one).sum(axis=0)

        self._cores.run(work, threaded=buf["threaded"])
        wdiff = self.weight.diff.reshape(o, ckk)
        for t in range(WORKERS):
            wdiff += buf["dw"][t][0]
            if self.bias is not None:
                self.bias.diff += buf["db"][t]

    def _data_grad_col2im(self, buf: dict[str, Any], bottom: Blob) -> None:
        """Per thread a share of the input channels: dcol = W^T dy in chunks, summed back into
        the padded image (col2im), then cropped into the bottom diff."""
        xp, g = self.xp, self.group
        o, c = self.num_output, self.channels
        n, h, w, oh, ow = buf["dims"]
        kh, kw, kk = self.kh, self.kw, self.kh * self.kw
        geom = self._geom()
        cg = c // g
        w3 = self.weight.data.reshape(g, o // g, cg * kk)
        dy = buf["dy"]
        dyg = dy.reshape(g, o // g, *dy.shape[1:])
        rest = dy.shape[2:]
        total = dy.shape[1]
        if "dxpad" not in buf:
            buf["dxpad"] = xp.empty(buf["shape"](c, h + 2 * self.ph, w + 2 * self.pw), self.dtype)
        dxpad = buf["dxpad"]
        # Work items: (group, channel range in the group); channel halves when g == 1.
        per_group = max(1, WORKERS // g)
        items = [(gi, a, b) for gi in range(g) for a, b in split(0, cg, per_group) if b > a]
        cmax = max(b - a for _, a, b in items)
        step = self._step(total, cmax * kk * rest[0] * rest[1], _DGRAD_CHUNK_SCALE)
        cols = self._thread_buffer(buf, "d_col", (cmax, kh, kw, step, *rest))
        sp = buf["spatial"]
        inner = self._interior(buf, self.ph, self.pw, h, w)
        dx_int = bottom.diff.transpose(buf["to_int"])

        def work(t: int) -> None:
            for gi, a, b in items[t::WORKERS]:
                ca, cb = gi * cg + a, gi * cg + b
                img = dxpad[ca:cb]
                img.fill(0)
                wt = w3[gi][:, a * kk : b * kk].T
                for lo, hi in chunks(0, total, step):
                    col = cols[t][: b - a, :, :, : hi - lo]
                    xp.matmul(
                        wt, dyg[gi][:, lo:hi].reshape(o // g, -1), out=col.reshape((b - a) * kk, -1)
                    )
                    for i in range(kh):
                        for j in range(kw):
                            view = window(img, i, j, geom, (oh, ow), sp)[:, lo:hi]
                            view += col[:, i, j]
                dx_int[ca:cb] = img[(slice(None), *inner[1:])]

        self._cores.run(work, min(WORKERS, len(items)), threaded=buf["threaded"])

    def _data_grad_full(self, buf: dict[str, Any], bottom: Blob) -> None:
        """Stride 1: dx = (top diff zero-padded by d(k-1)-p) correlated with flipped weights."""
        g = self.group
        o, c = self.num_output, self.channels
        n, h, w, oh, ow = buf["dims"]
        if "wflip" not in buf:
            buf["wflip"] = self.xp.empty((g, c // g, o // g, self.kh, self.kw), self.dtype)
        wflip = buf["wflip"]
        wg = self.weight.data.reshape(g, o // g, c // g, self.kh, self.kw)
        wflip[...] = wg[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        wf3 = wflip.reshape(g, c // g, -1)
        dx_int = bottom.diff.transpose(buf["to_int"])
        geom = (self.kh, self.kw, 1, 1, self.dh, self.dw)
        self._conv_pass(buf, "d", buf["dypad"], wf3, dx_int, geom, (h, w), None)
