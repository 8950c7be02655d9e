"""Caffe's Convolution layer (2-D, groups, dilation) as batch-folded im2col + one GEMM per group.

Blobs are NCHW at the interface. Internally the padded input is kept channel-major, batch second
(C, N, H, W) or, for small maps, batch last (C, H, W, N), so that im2col yields a
(C*kh*kw, N*OH*OW) matrix and the whole batch is one wide GEMM per group.
The data gradient uses col2im, or for stride 1 a "full" convolution of the padded top diff with
the flipped weights when that moves fewer bytes (a cost model, measured on OpenBLAS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.blob import Blob
from engine.conv_gemm import gemm
from engine.im2col import (
    CHWN_TO_NCHW,
    CNHW_TO_NCHW,
    NCHW_TO_CHWN,
    NCHW_TO_CNHW,
    col2im,
    conv_out_size,
    im2col,
)
from engine.layer import Layer, register_layer

# Measured costs on 2 cores (ns per element for im2col copies and col2im adds, indexed by
# batch-last; GFLOP/s of the GEMMs) used to pick the data-gradient algorithm.
_NS_COPY = {False: 0.27, True: 0.13}
_NS_COL2IM = {False: 0.66, True: 0.34}
_GEMM_GFLOPS = 150.0
_BATCH_LAST_MAX_OW = 16


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


@register_layer("Convolution", v1_name="CONVOLUTION")
class ConvolutionLayer(Layer):
    """y = W * x + b over 2-D images, weights (num_output, channels/group, kh, kw)."""

    min_bottoms = 1
    min_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.convolution_param
        if len(bottoms) != len(tops):
            raise self.error(f"needs as many tops as bottoms, got {len(bottoms)} and {len(tops)}")
        if p.axis not in (1, -3):
            raise self.error(f"axis {p.axis} is not supported (only the channel axis 1)")
        if len(bottoms[0].shape) != 4:
            raise self.error(
                f"bottom shape {bottoms[0].shape}: only 2-D (N, C, H, W) convolution is supported"
            )
        if p.force_nd_im2col:
            raise self.error("force_nd_im2col: N-d convolution is not supported")
        kh, kw = _opt(p, "kernel_h"), _opt(p, "kernel_w")
        self.kh, self.kw = _pair(p.kernel_size, kh, kw, 0, "kernel", self.error)
        if self.kh <= 0 or self.kw <= 0:
            raise self.error("kernel_size (or kernel_h and kernel_w) must be given and positive")
        ph = p.pad_h if p.HasField("pad_h") else None
        pw = p.pad_w if p.HasField("pad_w") else None
        self.ph, self.pw = _pair(p.pad, ph, pw, 0, "pad", self.error, missing=0)
        self.sh, self.sw = _pair(
            p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), 1, "stride", self.error
        )
        if self.sh <= 0 or self.sw <= 0:
            raise self.error("stride must be positive")
        self.dh, self.dw = _pair(p.dilation, None, None, 1, "dilation", self.error)
        if self.dh <= 0 or self.dw <= 0:
            raise self.error("dilation must be positive")
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.error("num_output must be given and positive")
        self.group = int(p.group)
        self.channels = bottoms[0].shape[1]
        if self.group <= 0 or self.channels % self.group:
            raise self.error(
                f"channels ({self.channels}) must be divisible by group ({self.group})"
            )
        if self.num_output % self.group:
            raise self.error(
                f"num_output ({self.num_output}) must be divisible by group ({self.group})"
            )
        self.bias_term = bool(p.bias_term)
        wshape = (self.num_output, self.channels // self.group, self.kh, self.kw)
        self.weight = self.new_param_blob(wshape, p.weight_filler)
        self.bias = None
        if self.bias_term:
            self.bias = self.new_param_blob((self.num_output,), p.bias_filler)
        self._buffers: list[dict[str, Any]] = [{} for _ in bottoms]
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
        if self.ph or self.pw:
            buf["xpad"] = xp.zeros(shape(c, hp, wp), dt)
        buf["col"] = xp.empty((c, self.kh, self.kw, *shape(1, oh, ow)[1:]), dt)
        buf["y"] = xp.empty(shape(o, oh, ow), dt)
        buf["dy"] = xp.empty(shape(o, oh, ow), dt)
        buf["ones"] = xp.ones((npix,), dt)
        buf["dw"] = xp.empty((o // g, c // g * kk), dt)
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

    # --- forward ---------------------------------------------------------------------------
    def _geom(self) -> tuple[int, ...]:
        return (self.kh, self.kw, self.sh, self.sw, self.dh, self.dw)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp, g = self.xp, self.group
        o, c = self.num_output, self.channels
        w2 = self.weight.data.reshape(g, o // g, -1)
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            buf = self._buffers[k]
            n, h, w, oh, ow = buf["dims"]
            x_int = bottom.data.transpose(buf["to_int"])
            if "xpad" in buf:
                src = buf["xpad"]
                sp = buf["spatial"]
                inner: list[slice] = [slice(None)] * 4
                inner[sp[0]] = slice(self.ph, self.ph + h)
                inner[sp[1]] = slice(self.pw, self.pw + w)
                src[tuple(inner)] = x_int
            else:
                src = x_int
            col = buf["col"]
            im2col(src, col, self._geom(), (oh, ow), buf["spatial"])
            colg = col.reshape(g, c // g * self.kh * self.kw, -1)
            y = buf["y"]
            yg = y.reshape(g, o // g, -1)
            for gi in range(g):
                gemm(xp, w2[gi], colg[gi], yg[gi])
            y_nchw = y.transpose(buf["to_nchw"])
            if self.bias is not None:
                xp.add(y_nchw, self.bias.data.reshape(1, o, 1, 1), out=top.data)
            else:
                top.data[...] = y_nchw

    # --- backward --------------------------------------------------------------------------
    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        xp, g = self.xp, self.group
        o, c = self.num_output, self.channels
        ckk = c // g * self.kh * self.kw
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            buf = self._buffers[k]
            dy = buf["dy"]
            dy[...] = top.diff.transpose(buf["to_int"])
            dy2 = dy.reshape(o, -1)
            if self.bias is not None:
                self.bias.diff += dy2 @ buf["ones"]
            colg = buf["col"].reshape(g, ckk, -1)
            dyg = dy.reshape(g, o // g, -1)
            dw2 = self.weight.diff.reshape(g, o // g, ckk)
            for gi in range(g):
                gemm(xp, dyg[gi], colg[gi].T, dw2[gi], accumulate=True, scratch=buf["dw"])
            if not propagate_down[k]:
                continue
            if buf["full"]:
                self._data_grad_full(buf, bottom)
            else:
                self._data_grad_col2im(buf, bottom)

    def _data_grad_col2im(self, buf: dict[str, Any], bottom: Blob) -> None:
        """dcol = W^T dy, then col2im into the padded image and crop."""
        xp, g = self.xp, self.group
        o, c = self.num_output, self.channels
        n, h, w, oh, ow = buf["dims"]
        ckk = c // g * self.kh * self.kw
        w2 = self.weight.data.reshape(g, o // g, ckk)
        col = buf["col"]  # forward's columns are no longer needed: reuse as dcol
        colg = col.reshape(g, ckk, -1)
        dyg = buf["dy"].reshape(g, o // g, -1)
        for gi in range(g):
            gemm(xp, w2[gi].T, dyg[gi], colg[gi])
        if "dxpad" not in buf:
            buf["dxpad"] = xp.empty(buf["shape"](c, h + 2 * self.ph, w + 2 * self.pw), self.dtype)
        dxpad = buf["dxpad"]
        sp = buf["spatial"]
        col2im(col, dxpad, self._geom(), (oh, ow), sp)
        inner: list[slice] = [slice(None)] * 4
        inner[sp[0]] = slice(self.ph, self.ph + h)
        inner[sp[1]] = slice(self.pw, self.pw + w)
        bottom.diff[...] = dxpad[tuple(inner)].transpose(buf["to_nchw"])

    def _data_grad_full(self, buf: dict[str, Any], bottom: Blob) -> None:
        """Stride 1: dx = (top diff zero-padded by d(k-1)-p) correlated with flipped weights."""
        xp, g = self.xp, self.group
        o, c = self.num_output, self.channels
        n, h, w, oh, ow = buf["dims"]
        qh, qw = buf["q"]
        okk = o // g * self.kh * self.kw
        shape, sp = buf["shape"], buf["spatial"]
        if "dypad" not in buf:
            buf["dypad"] = xp.zeros(shape(o, oh + 2 * qh, ow + 2 * qw), self.dtype)
            buf["dcol"] = xp.empty((o, self.kh, self.kw, *shape(1, h, w)[1:]), self.dtype)
            buf["wflip"] = xp.empty((g, c // g, o // g, self.kh, self.kw), self.dtype)
            buf["dx"] = xp.empty(shape(c, h, w), self.dtype)
        dypad, dcol, wflip, dx = buf["dypad"], buf["dcol"], buf["wflip"], buf["dx"]
        inner: list[slice] = [slice(None)] * 4
        inner[sp[0]] = slice(qh, qh + oh)
        inner[sp[1]] = slice(qw, qw + ow)
        dypad[tuple(inner)] = buf["dy"]
        im2col(dypad, dcol, (self.kh, self.kw, 1, 1, self.dh, self.dw), (h, w), sp)
        wg = self.weight.data.reshape(g, o // g, c // g, self.kh, self.kw)
        wflip[...] = wg[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        wf2 = wflip.reshape(g, c // g, okk)
        dcolg = dcol.reshape(g, okk, -1)
        dxg = dx.reshape(g, c // g, -1)
        for gi in range(g):
            gemm(xp, wf2[gi], dcolg[gi], dxg[gi])
        bottom.diff[...] = dx.transpose(buf["to_nchw"])
