"""Independent reference check of our layers against loops transcribed from Caffe 1.0's CPU code.

Each reference below is written from Caffe's own loops (pooling_layer.cpp, lrn_layer.cpp,
softmax_loss_layer.cpp, accuracy_layer.cpp, data_transformer.cpp, filler.hpp, insert_splits.cpp;
im2col.cpp's convolution is in test_caffe_reference_conv.py), not from our implementation, and is
compared on random float64 inputs with awkward shapes: odd sizes, pad > 0 with stride > 1,
partial last windows, groups and dilation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import text_format

from engine.boost_random import CaffeRNG
from engine.data_transformer import DataTransformer, TransformDraw
from engine.fillers import fill
from engine.layer import TEST, TRAIN, layer_class
from engine.net import Net
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_allclose, assert_array_equal, dev, host
from tests.backends import current as backend

# Every reference check runs under NumPy and under the strict CuPy stand-in (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("xp")

F64 = np.float64
FLT_MIN = float(np.finfo(np.float32).tiny)


def f32(value: float) -> float:
    """A prototxt float field as Caffe (and protobuf) stores it."""
    return float(np.float32(value))


# --------------------------------------------------------------------------------- helpers
def make(text: str, phase: str = TRAIN, seed: int = 0):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return layer_class(param.type, param.name)(param, phase, backend(), F64, seed)


def blob(values) -> Blob:
    values = np.asarray(values, dtype=F64)
    b = Blob(values.shape, dtype=F64)
    b.data[...] = dev(values)
    return b


def run(layer, bottoms, ntops: int = 1):
    tops = [Blob(dtype=F64) for _ in range(ntops)]
    layer.setup(bottoms, tops)
    layer.reshape(bottoms, tops)
    layer.forward(bottoms, tops)
    return tops


def backprop(layer, bottoms, tops, top_diffs, propagate=None):
    for t, d in zip(tops, top_diffs, strict=True):
        t.diff[...] = dev(d)
    for p in layer.blobs:
        p.diff[...] = 0
    propagate = [True] * len(bottoms) if propagate is None else propagate
    layer.backward(tops, propagate, bottoms)


# ------------------------------------------------------------------- pooling (pooling_layer.cpp)
def ref_pooled(size, k, p, s, any_pad):
    """Caffe: ceil((size + 2p - k) / s) + 1, then, when pad_h or pad_w is non-zero, drop a last
    window starting at or past size + p (the check runs on both axes if either pad is set)."""
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if any_pad and (out - 1) * s >= size + p:
        out -= 1
    return out


def ref_pool(x, method, k, s, p, dy=None):
    """Caffe's CPU pooling loops: MAX (strict >, scan order, mask h * W + w) and AVE
    (divisor from the window clipped to [-p, size + p)). Returns y, mask and the data grad."""
    n, c, h, w = x.shape
    any_pad = bool(p[0] or p[1])
    oh, ow = ref_pooled(h, k[0], p[0], s[0], any_pad), ref_pooled(w, k[1], p[1], s[1], any_pad)
    y = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    dx = np.zeros_like(x)
    for a in range(oh):
        for b in range(ow):
            hs, ws = a * s[0] - p[0], b * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            for i in range(n):
                for j in range(c):
                    if method == "AVE":
                        y[i, j, a, b] = x[i, j, hs:he, ws:we].sum() / pool_size
                        if dy is not None:
                            dx[i, j, hs:he, ws:we] += dy[i, j, a, b] / pool_size
                        continue
                    best, arg = -np.finfo(np.float32).max, -1
                    for hh in range(hs, he):
                        for ww in range(ws, we):
                            if x[i, j, hh, ww] > best:
                                best, arg = x[i, j, hh, ww], hh * w + ww
                    y[i, j, a, b], mask[i, j, a, b] = best, arg
                    if dy is not None:
                        dx[i, j, arg // w, arg % w] += dy[i, j, a, b]
    return y, mask, dx


POOL_CASES = [
    # (input shape, geometry text, k, s, p)
    ((2, 3, 6, 6), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),  # ceil: overhanging window
    ((2, 2, 7, 7), "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1)),
    ((1, 2, 8, 5), "kernel_size: 3 stride: 3 pad: 2", (3, 3), (3, 3), (2, 2)),  # dropped window
    ((2, 2, 9, 7), "kernel_size: 2 stride: 3 pad: 1", (2, 2), (3, 3), (1, 1)),  # stride > kernel
    (
        (1, 3, 7, 10),
        "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 1",
        (3, 2),
        (2, 1),
        (1, 1),
    ),
    ((2, 2, 5, 5), "kernel_size: 2 stride: 1", (2, 2), (1, 1), (0, 0)),
    ((1, 2, 13, 13), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),  # CaffeNet-style 13->6
]
PAD_ONE_AXIS = pytest.param(
    (1, 2, 5, 6),
    "kernel_h: 1 kernel_w: 3 stride: 3 pad_h: 0 pad_w: 1",
    (1, 3),
    (3, 3),
    (0, 1),
    id="pad-on-one-axis-only",  # Caffe drops on both axes when either pad is non-zero
)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,geom,k,s,p", [*POOL_CASES, PAD_ONE_AXIS])
@pytest.mark.parametrize("path", ["compiled", "scatter", "per_offset"])
def test_pooling_matches_caffe_loops(method, shape, geom, k, s, p, path, monkeypatch):
    """Output size, values, MAX mask top and backward, AVE divisor and backward, by each path:
    the Numba-compiled loops (NumPy's default), the NumPy passes with MAX backward by
    np.add.at, and per kernel offset (the device path)."""
    from engine.layers import pool_kernels, pooling

    if path == "compiled" and not pool_kernels.AVAILABLE:
        pytest.skip("numba is not installed: the compiled pooling loops are unavailable")
    monkeypatch.setattr(pooling, "_COMPILED", path == "compiled")
    monkeypatch.setattr(pooling, "_SCATTER_BACKWARD", path == "scatter")
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    ntops = 2 if method == "MAX" else 1
    layer = make(f'name: "pool" type: "Pooling" pooling_param {{ pool: {method} {geom} }}')
    tops = run(layer, [bottom := blob(x)], ntops)
    want, mask, _ = ref_pool(x, method, k, s, p)
    assert tops[0].shape == want.shape
    dy = rng.standard_normal(want.shape)
    _, _, dx = ref_pool(x, method, k, s, p, dy)
    assert_allclose(tops[0].data, want, rtol=1e-13, atol=1e-13)
    if method == "MAX":
        assert_array_equal(tops[1].data, mask)
    backprop(layer, [bottom], tops[:1], [dy])
    assert_allclose(bottom.diff, dx, rtol=1e-13, atol=1e-13)


def test_max_pooling_ties_keep_the_first_maximum_in_scan_order():
    """Caffe updates the max only on a strict '>', so the first of equal values wins."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, (2, 3, 7, 7)).astype(F64)  # many ties
    layer = make('name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }')
    top, mask_top = run(layer, [bottom := blob(x)], 2)
    want, mask, _ = ref_pool(x, "MAX", (3, 3), (2, 2), (0, 0))
    dy = rng.standard_normal(want.shape)
    _, _, dx = ref_pool(x, "MAX", (3, 3), (2, 2), (0, 0), dy)
    assert_array_equal(mask_top.data, mask)
    backprop(layer, [bottom], [top], [dy])
    assert_allclose(bottom.diff, dx, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling_uses_the_whole_plane(method):
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 7))
    layer = make(f'name: "g" type: "Pooling" pooling_param {{ pool: {method} global_pooling: 1 }}')
    (top,) = run(layer, [blob(x)])
    want, _, _ = ref_pool(x, method, (5, 7), (1, 1), (0, 0))
    assert top.shape == (2, 3, 1, 1)
    assert_allclose(top.data, want, rtol=1e-13)


# ----------------------------------------------------------------------- LRN (lrn_layer.cpp)
def ref_lrn(x, size, alpha, beta, k, region):
    """ACROSS: scale = k + alpha/size * sum of x^2 over channels [c - pre, c + pre] in range.
    WITHIN: Caffe's composition square -> AVE pool(size, pad pre, stride 1) -> power(1 + alpha *
    pooled) ^ -beta -> product (k unused)."""
    pre = (size - 1) // 2
    if region == "ACROSS_CHANNELS":
        c = x.shape[1]
        scale = np.full(x.shape, k)
        for ch in range(c):
            lo, hi = max(0, ch - pre), min(c, ch + pre + 1)
            scale[:, ch] += alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
        return x * scale**-beta
    pooled, _, _ = ref_pool(x * x, "AVE", (size, size), (1, 1), (pre, pre))
    return x * (1.0 + alpha * pooled) ** -beta


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("size,k", [(5, 2.0), (3, 1.0)])
def test_lrn_matches_caffe_both_regions(region, size, k):
    """alpha is divided by n (across) or by n^2 through AVE pooling (within); k only across."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 5, 4)) * 2
    alpha, beta = 0.3, 0.75
    layer = make(
        f'name: "lrn" type: "LRN" lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} '
        f"k: {k} norm_region: {region} }}"
    )
    (top,) = run(layer, [bottom := blob(x)])
    alpha = f32(alpha)
    assert_allclose(top.data, ref_lrn(x, size, alpha, beta, k, region), rtol=1e-12)
    # gradient against central differences of the reference (not of our own forward)
    r = rng.standard_normal(x.shape)
    backprop(layer, [bottom], [top], [r])
    eps, num = 1e-6, np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += eps
        xm[idx] -= eps
        fp = np.sum(ref_lrn(xp_, size, alpha, beta, k, region) * r)
        fm = np.sum(ref_lrn(xm, size, alpha, beta, k, region) * r)
        num[idx] = (fp - fm) / (2 * eps)
    assert_allclose(bottom.diff, num, rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------- InnerProduct axis / transpose
@pytest.mark.parametrize("axis,transpose", [(1, False), (2, True), (-1, False), (1, True)])
def test_inner_product_axis_and_transpose(axis, transpose):
    """K = count(axis..); weights (N, K), or (K, N) with transpose; top = shape[:axis] + (N,)."""
    rng = np.random.default_rng(1)
    shape = (2, 3, 4, 5)
    x = rng.standard_normal(shape)
    layer = make(
        f'name: "ip" type: "InnerProduct" inner_product_param {{ num_output: 6 axis: {axis} '
        f"transpose: {str(transpose).lower()} weight_filler {{ type: 'gaussian' }} "
        "bias_filler { type: 'gaussian' } }"
    )
    (top,) = run(layer, [bottom := blob(x)])
    a = axis % len(shape)
    m, kk = math.prod(shape[:a]), math.prod(shape[a:])
    w, b = host(layer.blobs[0].data), host(layer.blobs[1].data)
    assert w.shape == ((kk, 6) if transpose else (6, kk))
    wnk = w.T if transpose else w
    want = x.reshape(m, kk) @ wnk.T + b
    assert top.shape == (*shape[:a], 6)
    assert_allclose(top.data.reshape(m, 6), want, rtol=1e-12)
    dy = rng.standard_normal(top.shape)
    backprop(layer, [bottom], [top], [dy])
    dy2 = dy.reshape(m, 6)
    dwnk = dy2.T @ x.reshape(m, kk)
    assert_allclose(layer.blobs[0].diff, dwnk.T if transpose else dwnk, rtol=1e-12)
    assert_allclose(layer.blobs[1].diff, dy2.sum(0), rtol=1e-12)
    assert_allclose(bottom.diff.reshape(m, kk), dy2 @ wnk, rtol=1e-12)


# ----------------------------------------------------- SoftmaxWithLoss (softmax_loss_layer.cpp)
def ref_softmax_loss(x, labels, axis, ignore, mode, weight):
    """Caffe's loops: loss -= log(max(p, FLT_MIN)) over non-ignored (i, j), divided by
    GetNormalizer (FULL: outer*inner, VALID: count, BATCH_SIZE: outer, NONE: 1; floored at 1)."""
    outer, ch = math.prod(x.shape[:axis]), x.shape[axis]
    inner = math.prod(x.shape[axis + 1 :])
    x3 = x.reshape(outer, ch, inner)
    e = np.exp(x3 - x3.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    lab = labels.reshape(outer, inner).astype(int)
    loss, count = 0.0, 0
    grad = prob.copy()
    for i in range(outer):
        for j in range(inner):
            if ignore is not None and lab[i, j] == ignore:
                grad[i, :, j] = 0
                continue
            loss -= math.log(max(prob[i, lab[i, j], j], FLT_MIN))
            grad[i, lab[i, j], j] -= 1
            count += 1
    norm = {"FULL": outer * inner, "VALID": count, "BATCH_SIZE": outer, "NONE": 1}[mode]
    norm = max(1.0, norm)
    return loss / norm, grad.reshape(x.shape) * weight / norm


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE", "legacy-false"])
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_with_loss_normalization_and_ignore_label(mode, ignore):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 2, 3)) * 3
    labels = rng.integers(0, 4, (3, 1, 2, 3)).astype(F64)
    labels[0, 0, 0, :2] = 2  # make sure some positions carry the ignored label
    loss_param = "normalize: false" if mode == "legacy-false" else f"normalization: {mode}"
    if ignore is not None:
        loss_param += f" ignore_label: {ignore}"
    layer = make(f'name: "loss" type: "SoftmaxWithLoss" loss_param {{ {loss_param} }}')
    (top,) = run(layer, [scores := blob(x), blob(labels)])
    want_mode = "BATCH_SIZE" if mode == "legacy-false" else mode
    loss, grad = ref_softmax_loss(x, labels, 1, ignore, want_mode, 0.7)
    assert float(top.data) == pytest.approx(loss, rel=1e-12)
    backprop(layer, [scores, Blob(labels.shape, dtype=F64)], [top], [0.7], [True, False])
    assert_allclose(scores.diff, grad, rtol=1e-12, atol=1e-15)


def test_softmax_with_loss_along_axis_2():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 5))
    labels = rng.integers(0, 5, (2, 3)).astype(F64)
    layer = make('name: "l" type: "SoftmaxWithLoss" softmax_param { axis: 2 }')
    (top,) = run(layer, [blob(x), blob(labels)])
    loss, _ = ref_softmax_loss(x, labels, 2, None, "VALID", 1.0)
    assert float(top.data) == pytest.approx(loss, rel=1e-12)


# ----------------------------------------------------------------- Accuracy (Caffe 1.0 CPU)
def ref_accuracy(x, labels, axis, top_k, ignore):
    """Caffe 1.0: std::partial_sort of (score, class) pairs with std::greater, so among equal
    scores the higher class index ranks first; the label is a hit if among the first top_k."""
    outer, ch = math.prod(x.shape[:axis]), x.shape[axis]
    inner = math.prod(x.shape[axis + 1 :])
    x3 = x.reshape(outer, ch, inner)
    lab = labels.reshape(outer, inner).astype(int)
    hits = count = 0
    for i in range(outer):
        for j in range(inner):
            if ignore is not None and lab[i, j] == ignore:
                continue
            pairs = sorted(((x3[i, c, j], c) for c in range(ch)), reverse=True)
            hits += lab[i, j] in [c for _, c in pairs[:top_k]]
            count += 1
    return hits / count


@pytest.mark.parametrize("top_k", [1, 3, 5])
@pytest.mark.parametrize("ignore", [None, 1])
def test_accuracy_top_k_with_ties_and_ignore_label(top_k, ignore):
    """Integer scores make ties common: Caffe 1.0 breaks them toward the higher class index."""
    rng = np.random.default_rng(top_k)
    x = rng.integers(0, 3, (6, 7, 2)).astype(F64)
    labels = rng.integers(0, 7, (6, 2)).astype(F64)
    extra = f" ignore_label: {ignore}" if ignore is not None else ""
    layer = make(f'name: "a" type: "Accuracy" accuracy_param {{ top_k: {top_k}{extra} }}')
    (top,) = run(layer, [blob(x), blob(labels)])
    assert float(top.data) == pytest.approx(ref_accuracy(x, labels, 1, top_k, ignore), abs=1e-15)


def test_accuracy_all_scores_equal_top5_hits_the_five_highest_classes():
    """With equal scores (e.g. zero-initialized weights) Caffe's top 5 of 10 are classes 9..5."""
    labels = np.arange(10, dtype=F64)
    layer = make('name: "a" type: "Accuracy" accuracy_param { top_k: 5 }')
    top, per_class = run(layer, [blob(np.zeros((10, 10))), blob(labels)], 2)
    assert float(top.data) == 0.5
    assert_array_equal(per_class.data, [0] * 5 + [1] * 5)


# ------------------------------------------------------------ Eltwise / Concat / Slice / Flatten
def test_eltwise_sum_coeffs_prod_and_max_tie_rule():
    """SUM = sum coeff_i x_i; PROD; MAX: bottom 1 wins a tie with bottom 0, later ones need '>'."""
    a = np.array([[1.0, 2.0, 3.0, 0.5]])
    b = np.array([[1.0, 1.0, 4.0, 0.5]])
    c = np.array([[1.0, 2.0, 4.0, 0.7]])
    (top,) = run(
        make('name: "e" type: "Eltwise" eltwise_param { coeff: 2 coeff: -1 coeff: 0.5 }'),
        [blob(a), blob(b), blob(c)],
    )
    assert_allclose(top.data, 2 * a - b + 0.5 * c)
    (top,) = run(
        make('name: "e" type: "Eltwise" eltwise_param { operation: PROD }'),
        [blob(a), blob(b), blob(c)],
    )
    assert_allclose(top.data, a * b * c)
    # Caffe rejects coeff only for PROD; MAX accepts and ignores it
    layer = make(
        'name: "e" type: "Eltwise" eltwise_param { operation: MAX coeff: 5 coeff: 1 coeff: 1 }'
    )
    bottoms = [blob(a), blob(b), blob(c)]
    (top,) = run(layer, bottoms)
    assert_allclose(top.data, np.maximum(np.maximum(a, b), c))
    backprop(layer, bottoms, [top], [np.array([[10.0, 20.0, 30.0, 40.0]])])
    # column 0: all equal -> bottom 1; column 1: a=2 > b=1, c=2 not strictly greater -> bottom 0;
    # column 2: b=4 > a, c=4 ties -> bottom 1; column 3: c wins strictly.
    assert_array_equal(bottoms[0].diff, [[0, 20, 0, 0]])
    assert_array_equal(bottoms[1].diff, [[10, 0, 30, 0]])
    assert_array_equal(bottoms[2].diff, [[0, 0, 0, 40]])


def test_concat_and_slice_along_axis_2():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((2, 3, n, 2)) for n in (1, 3, 2)]
    (top,) = run(
        make('name: "c" type: "Concat" concat_param { axis: 2 }'), [blob(p) for p in parts]
    )
    assert_array_equal(top.data, np.concatenate(parts, axis=2))
    layer = make('name: "s" type: "Slice" slice_param { axis: -2 slice_point: 1 slice_point: 4 }')
    tops = run(layer, [blob(host(top.data))], 3)
    for t, p in zip(tops, parts, strict=True):
        assert_array_equal(t.data, p)


def test_flatten_and_reshape_shapes():
    x = np.arange(120.0).reshape(2, 3, 4, 5)
    (top,) = run(make('name: "f" type: "Flatten"'), [blob(x)])
    assert top.shape == (2, 60)
    (top,) = run(make('name: "f" type: "Flatten" flatten_param { axis: 2 }'), [blob(x)])
    assert top.shape == (2, 3, 20)
    text = 'name: "r" type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 5 } }'
    (top,) = run(make(text), [blob(x)])
    assert top.shape == (2, 12, 5)
    assert_array_equal(top.data.reshape(-1), x.reshape(-1))


# ------------------------------------------------------------------------ Dropout / DummyData
def test_dropout_scales_kept_units_in_train_and_is_identity_in_test():
    x = np.random.default_rng(0).standard_normal((50, 40)) + 5
    text = 'name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.3 }'
    (top,) = run(make(text, TRAIN, seed=3), [blob(x)])
    kept = host(top.data) != 0
    assert_allclose(host(top.data)[kept], x[kept] / (1 - f32(0.3)), rtol=1e-14)
    assert abs(kept.mean() - 0.7) < 0.03
    (top,) = run(make(text, TEST), [blob(x)])
    assert_array_equal(top.data, x)


def test_dummy_data_constant_is_not_refilled_random_is():
    """Caffe fills constant tops once (refill_ false) and refills other fillers every Forward."""
    layer = make(
        'name: "d" type: "DummyData" dummy_data_param { shape { dim: 4 } shape { dim: 6 } '
        'data_filler { type: "constant" value: 3 } data_filler { type: "gaussian" } }'
    )
    tops = [Blob(dtype=F64), Blob(dtype=F64)]
    layer.setup([], tops)
    tops[0].data[0] = -1.0  # a constant top is never rewritten after setup
    layer.forward([], tops)
    first = host(tops[1].data).copy()
    layer.forward([], tops)
    assert_array_equal(tops[0].data, [-1, 3, 3, 3])
    assert not np.array_equal(first, host(tops[1].data))


# ------------------------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("phase,global_stats", [(TRAIN, False), (TEST, True)])
def test_batch_norm_default_use_global_stats_follows_the_phase(phase, global_stats):
    """use_global_stats defaults to (phase == TEST); TRAIN updates s <- maf s + stat, using the
    unbiased variance m/(m-1) var; global mode normalizes by the sums / the scale factor."""
    rng = np.random.default_rng(9)
    x1, x2 = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2)) * 2 + 1
    layer = make(
        'name: "bn" type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 }', phase
    )
    tops = run(layer, [blob(x1)])
    assert layer.use_global_stats is global_stats
    if global_stats:
        layer.blobs[0].data[...] = dev([1.0, 2.0, 3.0])
        layer.blobs[1].data[...] = dev([4.0, 8.0, 12.0])
        layer.blobs[2].data[...] = 2.0
        layer.forward([blob(x2)], tops)
        mean = np.array([0.5, 1.0, 1.5]).reshape(1, 3, 1, 1)
        var = np.array([2.0, 4.0, 6.0]).reshape(1, 3, 1, 1)
        assert_allclose(tops[0].data, (x2 - mean) / np.sqrt(var + 1e-5), rtol=1e-12)
        return
    layer.forward([blob(x2)], tops)
    m = 4 * 2 * 2

    def stats(x):
        return x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))

    (m1, v1), (m2, v2) = stats(x1), stats(x2)
    maf = f32(0.9)
    assert_allclose(layer.blobs[2].data, [maf * 1 + 1], rtol=1e-12)
    assert_allclose(layer.blobs[0].data, maf * m1 + m2, rtol=1e-12)
    assert_allclose(layer.blobs[1].data, (maf * v1 + v2) * m / (m - 1), rtol=1e-12)
    want = (x2 - m2.reshape(1, 3, 1, 1)) / np.sqrt(v2.reshape(1, 3, 1, 1) + 1e-5)
    assert_allclose(tops[0].data, want, rtol=1e-12)


# ----------------------------------------------------------------- DataTransformer / fillers
def test_data_transformer_mean_file_crop_mirror_scale_order(tmp_path):
    """Caffe: out[c, h, w'] = (x[c, h_off + h, w_off + w] - mean[c, h_off + h, w_off + w]) * scale
    with w' = crop - 1 - w when mirrored; TEST crops the centre ((H - crop) / 2)."""
    rng = np.random.default_rng(6)
    imgs = rng.integers(0, 256, (3, 2, 7, 6)).astype(np.uint8)
    mean = rng.uniform(0, 255, (2, 7, 6)).astype(np.float32)
    bp = caffe_pb2.BlobProto(num=1, channels=2, height=7, width=6)
    bp.data.extend(mean.reshape(-1).tolist())
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(bp.SerializeToString())
    tp = caffe_pb2.TransformationParameter(scale=0.5, crop_size=4, mirror=True, mean_file=str(path))
    for phase in (TRAIN, TEST):
        tr = DataTransformer(tp, phase, np.float64)
        assert tr.output_shape(2, 7, 6) == (2, 4, 4)
        draw = tr.draw(3, 7, 6, CaffeRNG(1))
        if phase == TEST:
            assert list(draw.h_off) == [1] * 3 and list(draw.w_off) == [1] * 3
        else:
            assert all(0 <= v <= 3 for v in draw.h_off) and all(0 <= v <= 2 for v in draw.w_off)
    draw = TransformDraw(np.array([True, False, True]), np.array([0, 3, 2]), np.array([2, 1, 0]))
    out = tr.apply(imgs, draw, np.empty((3, 2, 4, 4)))
    want = np.zeros((3, 2, 4, 4))
    for n in range(3):
        for c in range(2):
            for h in range(4):
                for w in range(4):
                    src = (c, draw.h_off[n] + h, draw.w_off[n] + w)
                    col = 3 - w if draw.mirror[n] else w
                    want[n, c, h, col] = (float(imgs[n][src]) - float(mean[src])) * 0.5
    assert_allclose(out, want, rtol=1e-6)


@pytest.mark.parametrize(
    "norm,fan", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 40 * 5 * 5), ("AVERAGE", (75 + 1000) / 2)]
)
def test_xavier_and_msra_fans_for_conv_weights(norm, fan):
    """filler.hpp: fan_in = count / num, fan_out = count / channels; xavier U(+-sqrt(3/n)),
    msra N(0, sqrt(2/n))."""
    shape = (40, 3, 5, 5)
    rng = CaffeRNG(0)
    xav = caffe_pb2.FillerParameter(type="xavier", variance_norm=norm)
    w = fill(xav, shape, rng, F64)
    bound = math.sqrt(3.0 / fan)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    msra = caffe_pb2.FillerParameter(type="msra", variance_norm=norm)
    w = fill(msra, shape, rng, F64)
    assert w.std() == pytest.approx(math.sqrt(2.0 / fan), rel=0.05)


def test_gaussian_sparse_keeps_sparse_over_num_outputs():
    p = caffe_pb2.FillerParameter(type="gaussian", std=1.0, sparse=5)
    w = fill(p, (20, 2000), CaffeRNG(0), F64)
    assert np.count_nonzero(w) / w.size == pytest.approx(5 / 20, abs=0.01)


def test_filler_defaults_constant_zero_and_uniform_zero_one():
    assert np.all(fill(caffe_pb2.FillerParameter(), (3, 2), CaffeRNG(0)) == 0)
    u = fill(caffe_pb2.FillerParameter(type="uniform"), (1000,), CaffeRNG(0), F64)
    assert u.min() >= 0 and u.max() <= 1 and u.max() > 0.99


# ----------------------------------------------------------------------- Net: splits, losses
NET = """
name: "t"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" loss_weight: 0.5
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
  include { phase: TEST } }
"""


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_net_split_names_loss_weight_on_split_top_0_and_gradient(phase):
    """insert_splits.cpp: '<blob>_<layer>_<top>_split[_k]'; a weighted top takes split output 0
    and readers take 1, 2, ...; the net loss is sum of weight * top data; force_backward gives
    the input a gradient (TRAIN only: Caffe's Accuracy, in the TEST net, has no backward)."""
    param = text_format.Parse(NET, caffe_pb2.NetParameter())
    param.force_backward = phase == TRAIN
    net = Net(param, phase, xp=backend(), dtype=F64, seed=1)
    readers = 2 if phase == TEST else 1
    assert "ip_ip_0_split" in net.layer_names
    split = net.layers[net.layer_names.index("ip_ip_0_split")]
    assert list(split.param.top) == [f"ip_ip_0_split_{k}" for k in range(readers + 1)]
    assert list(split.param.loss_weight) == [0.5] + [0.0] * readers
    assert net.bottom_names[net.layer_names.index("loss")][0] == "ip_ip_0_split_1"
    if phase == TEST:
        assert net.bottom_names[net.layer_names.index("acc")] == [
            "ip_ip_0_split_2",
            "label_data_1_split_1",
        ]
    else:
        assert "acc" not in net.layer_names and "label_data_1_split" not in net.layer_names
    rng = np.random.default_rng(2)
    x, lab = rng.standard_normal((4, 3)), rng.integers(0, 5, 4).astype(F64)
    net.blobs["data"].data[...] = dev(x)
    net.blobs["label"].data[...] = dev(lab)
    loss = net.forward_loss()
    w = host(net.params["ip"][0].data)
    ip = x @ w.T + host(net.params["ip"][1].data)
    sm_loss, sm_grad = ref_softmax_loss(ip, lab, 1, None, "VALID", 1.0)
    assert loss == pytest.approx(0.5 * ip.sum() + sm_loss, rel=1e-12)
    if phase == TEST:
        return
    net.clear_param_diffs()
    net.backward()
    dip = sm_grad + 0.5
    assert_allclose(net.params["ip"][0].diff, dip.T @ x, rtol=1e-12)
    assert_allclose(net.blobs["data"].diff, dip @ w, rtol=1e-12)  # force_backward
