"""How a Convolution layer runs on one input shape: ConvPlan, the cost model and its measured
constants, and plan_convolution, which the layer calls once per shape (Caffe has one way, im2col +
GEMM; on NumPy the layout and cut of that work decide the speed).

The padded input is kept in one of three layouts: channels first with the batch second (C, N, H,
W) or, for small maps, last (C, H, W, N), where the column matrix is (C*kh*kw, pixels) and the
GEMM weights x columns, as in Caffe's im2col; or channels last (N, H, W, C), where the columns
are patch-major (pixels, kh*kw*C) and the GEMM is columns x weights^T. OpenBLAS runs the latter
~1.5x faster when num_output is 32-64, so wide-channel stride-1 layers take it.

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
sample; wide layers fold the kernel rows into the GEMM (engine.layers.conv_rows).

Which layer of which net takes which family is recorded in tests/engine/test_conv_plan.py. A test
or a benchmark forces a family (and any field) with Force, passed to plan_convolution or to the
layer's force_plans, instead of changing the constants below.

On a device (CuPy) there are no host threads and no chunks: one (batched over groups) GEMM per
pass, untiled, channels first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import jit
from engine.im2col import NCHW_TO_CHWN, NCHW_TO_CNHW, NCHW_TO_NHWC
from engine.layer import TEST
from engine.layers.conv_rows import rows_buffer_shape, rows_gemm_rows
from engine.threads import MIN_THREADED_BYTES, THREADS

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
    which then runs all three passes; jit: the folded passes' data movement runs compiled by
    Numba (engine.layers.conv_rows_kernels), else as NumPy passes.
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
    jit: bool = False

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


FAMILIES = ("per_sample", "fold_rows", "channels_last", "channels_first")
Tiles = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Force:
    """A plan chosen by hand (tests, benchmarks) instead of by the cost model, on NumPy.

    family: taken wherever the layer's geometry allows it, else channels first: "per_sample"
    (group 1), "fold_rows" (any), "channels_last" (stride 1 and pad <= d(k-1)) or
    "channels_first"; batch_last: the channels-first batch axis last or second (None: the
    measured crossover); fold_jit: the folded passes' data movement compiled (where Numba is
    installed) or NumPy passes (None: compiled where installed). Then, on any backend: tiles /
    dgrad_tiles, the first of these that divides the output (input) becomes the forward (full
    data-gradient) tile, else (1, 1); fields: ConvPlan fields set last (the layer checks them).
    """

    family: str | None = None
    batch_last: bool | None = None
    fold_jit: bool | None = None
    tiles: Tiles = ()
    dgrad_tiles: Tiles = ()
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"Force: unknown family {self.family!r}, expected one of {FAMILIES}")
        unknown = set(self.fields) - {f.name for f in dataclasses.fields(ConvPlan)}
        if unknown:
            raise ValueError(f"Force: {sorted(unknown)} are not ConvPlan fields")


def _first_fit(tiles: Tiles, hh: int, ww: int) -> tuple[int, int]:
    return next(((p, q) for p, q in tiles if hh % p == 0 and ww % q == 0), (1, 1))


def plan_convolution(
    layer: Any, n: int, h: int, w: int, oh: int, ow: int, force: Force | None = None
) -> ConvPlan:
    """The plan for `layer` on (n, h, w) inputs: on NumPy the cheapest under the cost model (or
    the family `force` names), on a device one untiled, unchunked GEMM per pass; then the
    tiles and fields `force` sets."""
    force = force or Force()
    plan = _choose(layer, n, h, w, oh, ow, force)
    if force.tiles:
        plan = dataclasses.replace(plan, tile=_first_fit(force.tiles, oh, ow))
    if force.dgrad_tiles:
        dtile = _first_fit(force.dgrad_tiles, h, w) if plan.dgrad == "full" else (1, 1)
        plan = dataclasses.replace(plan, dgrad_tile=dtile)
    return dataclasses.replace(plan, **force.fields)


def _choose(layer: Any, n: int, h: int, w: int, oh: int, ow: int, force: Force) -> ConvPlan:
    """The cost model's plan (or `force`'s family) before forced tiles and fields."""
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
    family = force.family
    skinny = o // g * (c // g * kk) < _SKINNY_WGRAD
    if g == 1 and (
        family == "per_sample" or (family is None and skinny and ow > _BATCH_LAST_MAX_OW)
    ):
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
    if family == "fold_rows" or (
        family is None and narrow >= _ROWS_MIN_WIDTH and fold_work <= _ROWS_MAX_WASTE
    ):
        rows = rows_buffer_shape(layer, base)[1]
        col_bytes = n * rows * ow * layer.kw * c * item  # the row patches
        return dataclasses.replace(
            base,
            layout="NHWC",
            fold_rows=True,
            jit=jit.AVAILABLE and force.fold_jit is not False,
            threaded=col_bytes >= MIN_THREADED_BYTES,
            keep_columns=keep(col_bytes),
            **threads,
        )
    if full_ok and (
        family == "channels_last"
        or (family is None and c // g >= _CHANNELS_LAST_MIN_CG and t_full < t_col2im)
    ):
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
        last = ow // tile[1] <= _BATCH_LAST_MAX_OW if force.batch_last is None else force.batch_last
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
