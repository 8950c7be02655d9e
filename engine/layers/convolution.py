"""Caffe's Convolution layer (2-D, groups, dilation): BaseConvolutionLayer's three passes, run the
way a per-shape ConvPlan says. Caffe's forward_cpu_gemm is `_conv_pass` / `_patch_pass`, its
weight_cpu_gemm (+ bias) `_weight_gradient` / `_patch_weight_gradient` /
`_weight_gradient_per_sample`, its backward_cpu_gemm `_data_gradient_full` /
`_data_gradient_col2im` / `_patch_data_gradient`; forward() and backward() pick by the plan.

Blobs are NCHW at the interface. Internally the padded input is kept in one of three layouts:
channels first with the batch second (C, N, H, W) or, for small maps, last (C, H, W, N), where
the column matrix is (C*kh*kw, pixels) and the GEMM weights x columns, as in Caffe's im2col; or
channels last (N, H, W, C), where the columns are patch-major (pixels, kh*kw*C) and the GEMM is
columns x weights^T. OpenBLAS runs the latter ~1.5x faster when num_output is 32-64 (CIFAR-10
quick), so wide-channel stride-1 layers take it.

Output tiles (channels first): a GEMM whose M side is num_output runs below OpenBLAS's peak when M
is small, since every column element is packed for only M multiply-adds. A tile of p x q
neighbouring outputs computed by one GEMM row block (an "extended" kernel of (p-1)s + (k-1)d + 1
rows holding the weights p times, shifted, zeros elsewhere) makes M p*q times larger and the
column matrix smaller, at the price of multiplying those zeros.

The work is cut along the axis after the channels (samples, or tile rows) into chunks whose column
matrix stays in cache between im2col and its GEMM, and the chunks run on the engine's threads
(engine.threads). When the whole column matrix is small, forward keeps it for the weight gradient.
The data gradient is, for stride 1, a "full" convolution of the padded top diff with the flipped
weights, else GEMM + col2im; skinny first layers (no data gradient) take the weight gradient per
sample. plan_convolution chooses among these with a cost model measured on OpenBLAS.

On a device (CuPy) there are no host threads and no chunks: one (batched over groups) GEMM per
pass, untiled, channels first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.blob import Blob
from engine.im2col import (
    NCHW_TO_CHWN,
    NCHW_TO_CNHW,
    NCHW_TO_NHWC,
    columns_view,
    conv_out_size,
    patches_view,
    window,
)
from engine.layer import TEST, Layer, register_layer
from engine.layers.conv_rows import (
    rows_backward,
    rows_buffer_shape,
    rows_forward,
    rows_gemm_rows,
    rows_warm_up,
)
from engine.threads import MIN_THREADED_BYTES, THREADS, EngineThreads, chunks, split

# Measured on OpenBLAS, 2 cores (ns per element of an in-cache im2col copy / col2im add, by
# batch-last; GFLOP/s of a GEMM as _GEMM_PEAK * M / (M + _GEMM_HALF_M), M its row count).
_NS_COPY = {False: 0.27, True: 0.13}
_NS_COL2IM = {False: 0.66, True: 0.34}
_GEMM_PEAK = 290.0
_GEMM_HALF_M = 36.0
# Batch-last layout when output rows are at most this long (measured crossover near 16).
_BATCH_LAST_MAX_OW = 16
# Channels-last (patch-major columns, GEMM columns x weights) from this many input channels per
# group: each patch row is then a long contiguous copy, and OpenBLAS ran the (pixels x K) x
# (K x 32) GEMMs of CIFAR-10 quick at ~100 GFLOP/s per core where (32 x K) x (K x pixels) ran
# at 60-90 (measured in chunks, one thread each).
_CHANNELS_LAST_MIN_CG = 8
# Weight gradients of fewer elements (per group) than this are "skinny" (LeNet conv1: 500).
_SKINNY_WGRAD = 1024
# Tile rows tried (tiles along the width interleave the output scatter into runs of q floats,
# measured slower; the code supports them, the planner does not pick them).
_TILES = ((1, 1), (2, 1), (3, 1), (4, 1))
# Kernel rows folded into the GEMM (conv_rows) when both of its inner sides, kw*C/g and kh*O/g,
# are at least this wide and it multiplies at most this many times im2col's FLOPs (1 for any
# stride-1 layer; a vertical stride multiplies some zeros). Measured faster than the im2col
# plans on every layer of CIFAR-10 quick, LeNet and AlexNet it picks (conv2/conv3, conv2,
# conv2-5); strided layers were not measured, so the bound keeps them on im2col.
_ROWS_MIN_WIDTH = 64
_ROWS_MAX_WASTE = 1.1
# Column-buffer chunk per thread: small enough to stay in cache between im2col and the GEMM.
_CHUNK_BYTES = 2 << 20
# Up to this whole-batch column size, forward keeps its columns for the weight gradient
# instead of backward re-making them.
_KEEP_COL_BYTES = 32 << 20


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


# --- the plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvPlan:
    """How one Convolution layer runs on one input shape (n, h, w): chosen once per shape.

    layout: the internal image layout, "CNHW" (channels first, batch second), "CHWN" (batch
    last) or "NHWC" (channels last: patch-major columns, GEMM columns x weights); tile: (p, q)
    outputs per GEMM column in forward and the weight gradient (channels-first layouts);
    dgrad: "full" (stride 1: convolution of the padded top diff with flipped weights, tiled by
    dgrad_tile) or "col2im"; parts: pieces the work is split into (one per thread), run on
    threads if `threaded`; chunk_bytes: column chunk per piece (0: the whole piece at once);
    keep_columns: forward's columns are kept for the weight gradient; wgrad: "gemm", or
    "per_sample" (untiled batch-second layout, group 1: when no data gradient is wanted, one
    batched GEMM over the samples straight from the NCHW top diff, for skinny layers);
    fold_rows: channels last with the kernel rows folded into the GEMM (engine.layers.conv_rows),
    which then runs all three passes.
    """

    n: int
    h: int
    w: int
    oh: int
    ow: int
    layout: str = "CNHW"
    tile: tuple[int, int] = (1, 1)
    dgrad: str = "col2im"
    dgrad_tile: tuple[int, int] = (1, 1)
    wgrad: str = "gemm"
    parts: int = 1
    threaded: bool = False
    chunk_bytes: int = 0
    keep_columns: bool = False
    fold_rows: bool = False

    def summary(self) -> str:
        """The algorithm in a few words, for `caffe time`-style tables."""
        if self.fold_rows:
            return "NHWC kernel rows folded"
        text = f"{self.layout} tile {self.tile[0]}x{self.tile[1]} dgrad {self.dgrad}"
        return text if self.wgrad == "gemm" else f"{text} wgrad {self.wgrad}"

    @property
    def batch_last(self) -> bool:
        return self.layout == "CHWN"

    @property
    def channels_last(self) -> bool:
        return self.layout == "NHWC"

    @property
    def spatial(self) -> tuple[int, int]:
        """The two spatial axes of the internal layout."""
        return (1, 2) if self.layout in ("CHWN", "NHWC") else (2, 3)

    @property
    def to_internal(self) -> tuple[int, ...]:
        """Transpose from NCHW to the internal layout."""
        return {"CNHW": NCHW_TO_CNHW, "CHWN": NCHW_TO_CHWN, "NHWC": NCHW_TO_NHWC}[self.layout]

    def internal_shape(self, channels: int, hh: int, ww: int) -> tuple[int, int, int, int]:
        """Shape of a channels x hh x ww image batch in the internal layout."""
        if self.layout == "CHWN":
            return (channels, hh, ww, self.n)
        if self.layout == "NHWC":
            return (self.n, hh, ww, channels)
        return (channels, self.n, hh, ww)


def extended_kernel(k: int, stride: int, dilation: int, t: int) -> int:
    """Extent of the kernel that computes t neighbouring outputs at once."""
    return (t - 1) * stride + (k - 1) * dilation + 1


def pass_geometry(geom: tuple[int, ...], tile: tuple[int, int]) -> tuple[int, ...]:
    """The im2col geometry (kh, kw, sh, sw, dh, dw) of a p x q tiled pass: the dense extended
    kernel at p*sh, q*sw strides; untiled, the layer's own (dilation kept, no zeros)."""
    if tile == (1, 1):
        return tuple(geom)
    kh, kw, sh, sw, dh, dw = geom
    p, q = tile
    return (extended_kernel(kh, sh, dh, p), extended_kernel(kw, sw, dw, q), p * sh, q * sw, 1, 1)


def _gemm_seconds(flops: float, m: int) -> float:
    return flops / (1e9 * _GEMM_PEAK * m / (m + _GEMM_HALF_M))


def pass_cost(
    c_in: int,
    c_out: int,
    group: int,
    geom: tuple[int, ...],
    out_hw: tuple[int, int],
    n: int,
    tile: tuple[int, int],
    batch_last: bool,
    gemms: int = 1,
) -> float:
    """Modelled seconds of one tiled im2col + `gemms` GEMMs over its columns."""
    p, q = tile
    ekh, ekw = pass_geometry(geom, tile)[:2]
    ncols = n * (out_hw[0] // p) * (out_hw[1] // q)
    m = p * q * c_out // group
    kdim = c_in // group * ekh * ekw
    flops = 2.0 * group * m * kdim * ncols
    return gemms * _gemm_seconds(flops, m) + 1e-9 * _NS_COPY[batch_last] * group * kdim * ncols


def _tiles(out_hw: tuple[int, int]) -> list[tuple[int, int]]:
    return [(p, q) for p, q in _TILES if out_hw[0] % p == 0 and out_hw[1] % q == 0]


def plan_convolution(layer: Any, n: int, h: int, w: int, oh: int, ow: int) -> ConvPlan:
    """The plan for `layer` on (n, h, w) inputs: on NumPy the cheapest under the cost model,
    on a device (CuPy) one untiled, unchunked GEMM per pass, in the caller."""
    c, o, g = layer.channels, layer.num_output, layer.group
    geom = (layer.kh, layer.kw, layer.sh, layer.sw, layer.dh, layer.dw)
    qh = layer.dh * (layer.kh - 1) - layer.ph
    qw = layer.dw * (layer.kw - 1) - layer.pw
    full_ok = layer.sh == 1 and layer.sw == 1 and qh >= 0 and qw >= 0
    base = ConvPlan(n, h, w, oh, ow, dgrad="full" if full_ok else "col2im")
    if layer.xp is not np:
        return base
    item = np.dtype(layer.dtype).itemsize
    threads = {"parts": THREADS, "chunk_bytes": _CHUNK_BYTES}

    def keep(col_bytes: int) -> bool:
        """Keep forward's columns for backward: small enough, and a backward expected (a TEST
        net runs forward only; should pycaffe ask for a backward, it re-makes them)."""
        return col_bytes <= _KEEP_COL_BYTES and layer.phase != TEST

    kk = layer.kh * layer.kw
    # The full data gradient multiplies the top diff's zero border too: with little padding
    # (LeNet: none) it costs more than GEMM + col2im, which only the channels-first code has.
    t_full = _gemm_seconds(2.0 * c * o * kk / g * n * h * w, c // g)
    t_col2im = _gemm_seconds(2.0 * c * o * kk / g * n * oh * ow, c // g)
    t_col2im += 1e-9 * _NS_COL2IM[True] * c * kk * n * oh * ow
    skinny = o // g * (c // g * kk) < _SKINNY_WGRAD
    if skinny and g == 1 and ow > _BATCH_LAST_MAX_OW:
        # One GEMM with a tiny M x N and a long K runs no faster on two threads than on one:
        # the weight gradient goes per sample (batched) straight from the NCHW top diff.
        col_bytes = c * kk * n * oh * ow * item
        return dataclasses.replace(
            base,
            layout="CNHW",
            wgrad="per_sample",
            dgrad="full" if full_ok and t_full < t_col2im else "col2im",
            threaded=col_bytes >= MIN_THREADED_BYTES,
            keep_columns=keep(col_bytes),
            **threads,
        )
    narrow = min(layer.kw * c // g, layer.kh * o // g)
    fold_work = rows_gemm_rows(layer, h, oh) / (oh * layer.kh)
    if narrow >= _ROWS_MIN_WIDTH and fold_work <= _ROWS_MAX_WASTE:
        rows = rows_buffer_shape(layer, base)[1]
        col_bytes = n * rows * ow * layer.kw * c * item  # the row patches
        return dataclasses.replace(
            base,
            layout="NHWC",
            fold_rows=True,
            threaded=col_bytes >= MIN_THREADED_BYTES,
            keep_columns=keep(col_bytes),
            **threads,
        )
    if full_ok and c // g >= _CHANNELS_LAST_MIN_CG and t_full < t_col2im:
        col_bytes = c * layer.kh * layer.kw * n * oh * ow * item
        return dataclasses.replace(
            base,
            layout="NHWC",
            threaded=col_bytes >= MIN_THREADED_BYTES,
            keep_columns=keep(col_bytes),
            **threads,
        )
    best: tuple[float, tuple[int, int], bool] | None = None
    for tile in _tiles((oh, ow)):
        last = ow // tile[1] <= _BATCH_LAST_MAX_OW
        cost = pass_cost(c, o, g, geom, (oh, ow), n, tile, last, gemms=2)  # forward + dW
        if best is None or cost < best[0]:
            best = (cost, tile, last)
    assert best is not None
    _, tile, last = best
    dgrad, dtile = "col2im", (1, 1)
    if full_ok:
        fgeom = (layer.kh, layer.kw, 1, 1, layer.dh, layer.dw)
        costs = {t: pass_cost(o, c, g, fgeom, (h, w), n, t, last) for t in _tiles((h, w))}
        dtile = min(costs, key=costs.__getitem__)
        t_col2im = _NS_COL2IM[last] * c * layer.kh * layer.kw * n * oh * ow * 1e-9
        t_col2im += _gemm_seconds(2.0 * c * o * layer.kh * layer.kw / g * n * oh * ow, c // g)
        if costs[dtile] < t_col2im:
            dgrad = "full"
    ekh, ekw = pass_geometry(geom, tile)[:2]
    col_bytes = c * ekh * ekw * n * (oh // tile[0]) * (ow // tile[1]) * item
    return dataclasses.replace(
        base,
        layout="CHWN" if last else "CNHW",
        tile=tile,
        dgrad=dgrad,
        dgrad_tile=dtile,
        threaded=col_bytes >= MIN_THREADED_BYTES,
        keep_columns=keep(col_bytes),
        **threads,
    )


def tile_view(a: Any, group: int, tile: tuple[int, int], batch_last: bool) -> Any:
    """An NCHW array (N, M, TY*p, TX*q) as the (group, p, q, M/group, *rest) view that a tiled
    GEMM's product fills, rest being (N, TY, TX), or (TY, TX, N) when batch_last."""
    n, m, hh, ww = a.shape
    p, q = tile
    v = a.reshape(n, group, m // group, hh // p, p, ww // q, q)  # n g mg ty a tx b
    if batch_last:
        return v.transpose(1, 4, 6, 2, 3, 5, 0)
    return v.transpose(1, 4, 6, 2, 0, 3, 5)


@dataclass
class _Workspace:
    """Buffers of one bottom's plan, reused across iterations (Caffe's col_buffer_ and kin)."""

    plan: ConvPlan
    xpad: Any = None  # padded input, internal layout (None: read the bottom directly)
    scratch: dict[str, list[Any]] = field(default_factory=dict)  # per-part flat buffers
    kept: Any = None  # forward's column chunks, (count, chunk size)
    kept_ready: bool = False
    arrays: dict[str, Any] = field(default_factory=dict)  # named buffers made on first use
    rows_geometry: Any = None  # conv_rows' sizes and row bands, made once per plan


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
        self._threads = EngineThreads(self.xp, self.name)
        self._ws: list[_Workspace | None] = [None for _ in bottoms]

    # --- shapes, plans, buffers --------------------------------------------------------------
    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            n, h, w, oh, ow = image_extents(self, k, bottom.shape, conv_out_size)
            if oh <= 0 or ow <= 0:
                raise self.error(f"kernel larger than the padded input {h}x{w}")
            top.reshape((n, self.num_output, oh, ow))
            ws = self._ws[k]
            if ws is None or (ws.plan.n, ws.plan.h, ws.plan.w) != (n, h, w):
                self.use_plan(k, plan_convolution(self, n, h, w, oh, ow))

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
        ws = _Workspace(plan)
        hp, wp = plan.h + 2 * self.ph, plan.w + 2 * self.pw
        if plan.fold_rows:
            ws.xpad = self.xp.zeros(rows_buffer_shape(self, plan), self.dtype)
            rows_warm_up(self.xp, self.dtype)
        elif self.ph or self.pw or plan.layout != "CNHW":  # copy: gather the batch / channels
            ws.xpad = self.xp.zeros(plan.internal_shape(self.channels, hp, wp), self.dtype)
        self._ws[k] = ws

    def _full_pad(self) -> tuple[int, int]:
        """Zero border of the top diff for the full data gradient: d(k-1) - p per axis."""
        return self.dh * (self.kh - 1) - self.ph, self.dw * (self.kw - 1) - self.pw

    def _scratch(self, ws: _Workspace, key: str, size: int) -> list[Any]:
        """One flat scratch array of `size` elements per part, made on first use."""
        bufs = ws.scratch.get(key)
        if bufs is None or bufs[0].size < size:
            bufs = [self.xp.empty((size,), self.dtype) for _ in range(ws.plan.parts)]
            ws.scratch[key] = bufs
        return bufs

    def _part_sum(self, ws: _Workspace, bufs: list[Any], size: int) -> Any:
        """The first `size` elements of the parts' flat buffers, summed into part 0's."""
        total = bufs[0][:size]
        for t in range(1, ws.plan.parts):
            total += bufs[t][:size]
        return total

    def _array(self, ws: _Workspace, key: str, shape: tuple[int, ...]) -> Any:
        """A named zero-initialized buffer of `shape`, made on first use."""
        a = ws.arrays.get(key)
        if a is None or a.shape != shape:
            a = ws.arrays[key] = self.xp.zeros(shape, self.dtype)
        return a

    def _schedule(self, plan: ConvPlan, total: int, row_elems: int) -> list[list[tuple]]:
        """Per part its chunks (index, lo, hi) of the outer axis; forward and backward agree."""
        item = np.dtype(self.dtype).itemsize
        step = total
        if plan.chunk_bytes:
            step = max(1, min(total, plan.chunk_bytes // max(1, row_elems * item)))
        out, idx = [], 0
        for lo_t, hi_t in split(0, total, plan.parts):
            mine = []
            for lo, hi in chunks(lo_t, hi_t, step):
                mine.append((idx, lo, hi))
                idx += 1
            out.append(mine)
        return out

    def _interior(self, plan: ConvPlan, ph: int, pw: int, h: int, w: int) -> tuple:
        """Index of the unpadded h x w region inside a padded internal-layout image."""
        inner: list[slice] = [slice(None)] * 4
        inner[plan.spatial[0]] = slice(ph, ph + h)
        inner[plan.spatial[1]] = slice(pw, pw + w)
        return tuple(inner)

    def _copy_in(self, ws: _Workspace, dst: Any, src: Any) -> None:
        """dst[...] = src, split by channels over the parts (large strided copies)."""
        parts = split(0, src.shape[0], ws.plan.parts)
        self._threads.run(
            lambda t: dst.__setitem__(slice(*parts[t]), src[slice(*parts[t])]),
            ws.plan.parts,
            threaded=ws.plan.threaded,
        )

    def _input(self, ws: _Workspace, x: Any) -> Any:
        """The input in internal layout, copied into the zero-padded buffer when there is one."""
        plan = ws.plan
        x_int = x.transpose(plan.to_internal)
        if ws.xpad is None:
            return x_int
        inner = self._interior(plan, self.ph, self.pw, plan.h, plan.w)
        self._copy_in(ws, ws.xpad[inner], x_int)
        return ws.xpad

    def _extended_weights(
        self, ws: _Workspace, key: str, wbase: Any, geom: tuple[int, ...], tile: tuple[int, int]
    ) -> Any:
        """wbase (g, M, Cs, kh, kw) as the (g, p*q*M, Cs*KH*KW) matrix of a p x q output tile:
        for tile position (a, b) the weights sit at row offset a*s_h, column offset b*s_w."""
        g, m, cs, kh, kw = wbase.shape
        p, q = tile
        if tile == (1, 1):
            return wbase.reshape(g, m, cs * kh * kw)
        _, _, sh, sw, dh, dw = geom
        ekh, ekw = extended_kernel(kh, sh, dh, p), extended_kernel(kw, sw, dw, q)
        wext = self._array(ws, "wext_" + key, (g, p, q, m, cs, ekh, ekw))
        for a in range(p):
            for b in range(q):
                rows = slice(a * sh, a * sh + (kh - 1) * dh + 1, dh)
                cols = slice(b * sw, b * sw + (kw - 1) * dw + 1, dw)
                wext[:, a, b, :, :, rows, cols] = wbase
        return wext.reshape(g, p * q * m, cs * ekh * ekw)

    # --- the passes ----------------------------------------------------------------------------
    def _conv_pass(
        self,
        ws: _Workspace,
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
        sched = self._schedule(plan, rest[0], kdim * row)
        step = max(hi - lo for part in sched for _, lo, hi in part) if rest[0] else 0
        if keep:
            count = sum(len(part) for part in sched)
            if ws.kept is None or ws.kept.shape != (count, kdim * step * row):
                ws.kept = xp.empty((count, kdim * step * row), self.dtype)
            cols = ws.kept
        else:
            cols = self._scratch(ws, key + "_col", kdim * step * row)
        prods = self._scratch(ws, key + "_prod", g * p * q * m * step * row)
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

        self._threads.run(work, plan.parts, threaded=plan.threaded)
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
                wt = self._array(ws, "wt", (g, self.kh, self.kw, self.channels // g, o // g))
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
        ws: _Workspace,
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
        xp, plan, g = self.xp, ws.plan, self.group
        n, m, oh, ow = out.shape
        kdim = wt3.shape[1]
        whole = patches_view(xp, src, geom, (oh, ow), g)
        row = oh * ow
        sched = self._schedule(plan, n, g * kdim * row)
        step = max(hi - lo for part in sched for _, lo, hi in part) if n else 0
        if keep:
            count = sum(len(part) for part in sched)
            if ws.kept is None or ws.kept.shape != (count, g * kdim * step * row):
                ws.kept = xp.empty((count, g * kdim * step * row), self.dtype)
            cols = ws.kept
        else:
            cols = self._scratch(ws, key + "_col", g * kdim * step * row)
        prods = self._scratch(ws, key + "_prod", m * step * row)
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

        self._threads.run(work, plan.parts, threaded=plan.threaded)
        if keep:
            ws.kept_ready = True

    def _padded_top_diff(self, ws: _Workspace, top: Blob) -> Any:
        """The top diff channels last, zero-padded by d(k-1)-p for the full data gradient."""
        plan = ws.plan
        qh, qw = self._full_pad()
        o = self.num_output
        dypad = self._array(ws, "dypad", plan.internal_shape(o, plan.oh + 2 * qh, plan.ow + 2 * qw))
        inner = self._interior(plan, qh, qw, plan.oh, plan.ow)
        self._copy_in(ws, dypad[inner], top.diff.transpose(NCHW_TO_NHWC))
        return dypad

    def _patch_weight_gradient(self, ws: _Workspace, top: Blob, dypad: Any = None) -> None:
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
        sched = self._schedule(plan, plan.n, g * kdim * row)
        step = max(hi - lo for part in sched for _, lo, hi in part)
        keep = plan.keep_columns and ws.kept_ready
        cols = ws.kept if keep else self._scratch(ws, "w_col", g * kdim * step * row)
        dys = self._scratch(ws, "w_dy", o * step * row)
        ones = self._scratch(ws, "w_ones", step * row)
        dwx = self._scratch(ws, "w_dw", g * kdim * og)
        tmps = self._scratch(ws, "w_tmp", g * kdim * og)
        dbx = self._scratch(ws, "w_db", o)
        if dypad is None:
            dy_v = top.diff.transpose(NCHW_TO_NHWC)
        else:
            dy_v = dypad[self._interior(plan, *self._full_pad(), plan.oh, plan.ow)]
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

        self._threads.run(work, plan.parts, threaded=plan.threaded)
        total = self._part_sum(ws, dwx, g * kdim * og).reshape(g, kh, kw, cg, og)
        self.weight.diff.reshape(g, og, cg, kh, kw)[...] += total.transpose(0, 4, 3, 1, 2)
        if with_bias:
            self.bias.diff += self._part_sum(ws, dbx, o)

    def _patch_data_gradient(self, ws: _Workspace, dypad: Any, bottom: Blob) -> None:
        """dx = (top diff zero-padded by d(k-1)-p, channels last) convolved with the flipped
        weights: a channels-last pass into the bottom diff."""
        g = self.group
        o, c = self.num_output, self.channels
        wg = self.weight.data.reshape(g, o // g, c // g, self.kh, self.kw)
        wf = self._array(ws, "wflip_t", (g, self.kh, self.kw, o // g, c // g))
        wf[...] = wg[:, :, :, ::-1, ::-1].transpose(0, 3, 4, 1, 2)
        geom = (self.kh, self.kw, 1, 1, self.dh, self.dw)
        self._patch_pass(ws, "d", dypad, wf.reshape(g, -1, c // g), geom, bottom.diff, None, False)

    def _weight_gradient(self, ws: _Workspace, top: Blob, bottom: Blob, share: bool) -> None:
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
        sched = self._schedule(plan, rest[0], kdim * row)
        step = max(hi - lo for part in sched for _, lo, hi in part)
        cols = ws.kept if keep else self._scratch(ws, "w_col", kdim * step * row)
        dys = None if share else self._scratch(ws, "w_dy", g * m * step * row)
        dy_int = self._array(ws, "dy", plan.internal_shape(o, plan.oh, plan.ow)) if share else None
        ones = self._scratch(ws, "w_ones", step * row)
        dwx = self._scratch(ws, "w_dw", g * m * (kdim // g))
        tmps = self._scratch(ws, "w_tmp", g * m * (kdim // g))
        dbx = self._scratch(ws, "w_db", g * m)
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

        self._threads.run(work, plan.parts, threaded=plan.threaded)
        dw_t = self._part_sum(ws, dwx, g * m * (kdim // g)).reshape(g, kdim // g, m)
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
            db = self._part_sum(ws, dbx, g * m).reshape(g, p, q, og)
            self.bias.diff += db.sum(axis=(1, 2)).reshape(o)

    def _weight_gradient_per_sample(self, ws: _Workspace, top: Blob, bottom: Blob) -> None:
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
        sched = self._schedule(plan, plan.n, ckk * row)
        step = max(hi - lo for part in sched for _, lo, hi in part)
        keep = plan.keep_columns and ws.kept_ready
        cols = ws.kept if keep else self._scratch(ws, "ps_col", ckk * step * row)
        prods = self._scratch(ws, "ps_prod", step * o * ckk)
        ones = self._scratch(ws, "ps_ones", row)
        dwx = self._scratch(ws, "ps_dw", o * ckk)
        tmps = self._scratch(ws, "ps_tmp", o * ckk)
        dbx = self._scratch(ws, "ps_db", o)
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

        self._threads.run(work, plan.parts, threaded=plan.threaded)
        wdiff = self.weight.diff.reshape(-1)
        for t in range(plan.parts):
            wdiff += dwx[t][: o * ckk]
            if with_bias:
                self.bias.diff += dbx[t][:o]

    def _data_gradient_full(self, ws: _Workspace, top: Blob, bottom: Blob) -> None:
        """Stride 1: dx = (top diff zero-padded by d(k-1)-p) convolved with the flipped weights."""
        plan, g = ws.plan, self.group
        o, c = self.num_output, self.channels
        qh, qw = self._full_pad()
        shape = plan.internal_shape(o, plan.oh + 2 * qh, plan.ow + 2 * qw)
        dypad = self._array(ws, "dypad", shape)  # borders stay zero
        inner = self._interior(plan, qh, qw, plan.oh, plan.ow)
        self._copy_in(ws, dypad[inner], top.diff.transpose(plan.to_internal))
        wflip = self._array(ws, "wflip", (g, c // g, o // g, self.kh, self.kw))
        wg = self.weight.data.reshape(g, o // g, c // g, self.kh, self.kw)
        wflip[...] = wg[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        geom = (self.kh, self.kw, 1, 1, self.dh, self.dw)
        self._conv_pass(ws, "d", dypad, wflip, geom, plan.dgrad_tile, bottom.diff, None, False)

    def _data_gradient_col2im(
        self, ws: _Workspace, top: Blob, bottom: Blob, gathered: bool = False
    ) -> None:
        """Per part a share of the input channels: dcol = W^T dy in chunks, summed back into
        the padded image (col2im), then cropped into the bottom diff."""
        xp, plan, g = self.xp, ws.plan, self.group
        o, c = self.num_output, self.channels
        kh, kw, kk = self.kh, self.kw, self.kh * self.kw
        geom = (kh, kw, self.sh, self.sw, self.dh, self.dw)
        cg = c // g
        w3 = self.weight.data.reshape(g, o // g, cg * kk)
        dy = self._array(ws, "dy", plan.internal_shape(o, plan.oh, plan.ow))
        if not gathered:  # else the weight gradient left it there
            self._copy_in(ws, dy, top.diff.transpose(plan.to_internal))
        dyg = dy.reshape(g, o // g, *dy.shape[1:])
        rest = dy.shape[2:]
        total = dy.shape[1]
        hp, wp = plan.h + 2 * self.ph, plan.w + 2 * self.pw
        dxpad = self._array(ws, "dxpad", plan.internal_shape(c, hp, wp))
        # Work items: (group, channel range in the group); channel halves when g == 1.
        per_group = max(1, plan.parts // g)
        items = [(gi, a, b) for gi in range(g) for a, b in split(0, cg, per_group) if b > a]
        cmax = max(b - a for _, a, b in items)
        item = np.dtype(self.dtype).itemsize
        row = rest[0] * rest[1]
        step = total
        if plan.chunk_bytes:
            step = max(1, min(total, 2 * plan.chunk_bytes // max(1, cmax * kk * row * item)))
        cols = self._scratch(ws, "d_col", cmax * kk * step * row)
        inner = self._interior(plan, self.ph, self.pw, plan.h, plan.w)
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

        self._threads.run(work, nparts, threaded=plan.threaded)
