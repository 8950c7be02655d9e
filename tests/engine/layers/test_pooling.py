"""Pooling layer: Caffe's ceil output rule with the dropped last window, AVE divisor, MAX ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import text_format

from engine.blob import Blob
from engine.errors import NetError
from engine.layers.pooling import PoolingLayer, pooled_size
from engine.proto import caffe_pb2
from tests.gradcheck import check_layer_gradient


def make_layer(pool: str, dtype=np.float64) -> PoolingLayer:
    text = f'name: "pool" type: "Pooling" pooling_param {{ {pool} }}'
    return PoolingLayer(text_format.Parse(text, caffe_pb2.LayerParameter()), dtype=dtype)


def bottom_blob(shape, dtype=np.float64, seed: int = 1) -> Blob:
    b = Blob(shape, dtype=dtype)
    b.data[...] = np.random.default_rng(seed).standard_normal(shape)
    return b


def reference_pool(x, method, k, s, p):
    """Loop pooling written from Caffe's pooling_layer.cpp description (CPU path)."""
    n, c, h, w = x.shape
    oh = pooled_size(h, k[0], p[0], s[0])
    ow = pooled_size(w, k[1], p[1], s[1])
    y = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for a in range(oh):
        for b in range(ow):
            hs, ws = a * s[0] - p[0], b * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            if method == "AVE":
                y[:, :, a, b] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
                continue
            for i in range(n):
                for j in range(c):
                    best, arg = -np.inf, -1
                    for hh in range(hs, he):
                        for ww in range(ws, we):
                            if x[i, j, hh, ww] > best:
                                best, arg = x[i, j, hh, ww], hh * w + ww
                    y[i, j, a, b], mask[i, j, a, b] = best, arg
    return y, mask


CASES = [
    ("kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), (2, 3, 8, 8)),  # partial last window
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), (2, 2, 7, 7)),
    ("kernel_size: 2 stride: 2", (2, 2), (2, 2), (0, 0), (2, 2, 6, 6)),  # LeNet
    (
        "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 1",
        (3, 2),
        (2, 1),
        (1, 1),
        (1, 2, 6, 5),
    ),
    ("kernel_size: 3 stride: 3 pad: 2", (3, 3), (3, 3), (2, 2), (1, 2, 5, 5)),  # dropped window
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("pool, k, s, p, shape", CASES)
def test_forward_matches_caffe_loop_reference(method, pool, k, s, p, shape):
    """MAX over windows clipped to the image; AVE divides by the window clipped to H + pad."""
    layer = make_layer(f"pool: {method} {pool}")
    bottom = bottom_blob(shape)
    tops = (
        [Blob(dtype=np.float64), Blob(dtype=np.float64)]
        if method == "MAX"
        else [Blob(dtype=np.float64)]
    )
    layer.setup([bottom], tops)
    layer.forward([bottom], tops)
    want, mask = reference_pool(bottom.data, method, k, s, p)
    assert tops[0].shape == want.shape
    np.testing.assert_allclose(tops[0].data, want, rtol=1e-12, atol=1e-12)
    if method == "MAX":
        np.testing.assert_array_equal(tops[1].data, mask)


@pytest.mark.parametrize(
    "size, k, s, p, want",
    [
        (32, 3, 2, 0, 16),  # CIFAR-10 quick pool1: ceil(29/2)+1
        (24, 2, 2, 0, 12),  # LeNet pool1
        (55, 3, 2, 0, 27),  # AlexNet pool1
        (7, 3, 2, 1, 4),  # ceil(6/2)+1
        (5, 3, 3, 2, 3),  # ceil(6/3)+1 = 3; last start 6 < 5+2, kept
        (4, 2, 2, 1, 3),  # ceil(4/2)+1 = 3: start 4 < 4+1 kept
        (6, 2, 4, 1, 2),  # ceil(6/4)+1 = 3, but (3-1)*4=8 >= 6+1: dropped -> 2
    ],
)
def test_output_size_is_ceil_with_dropped_window(size, k, s, p, want):
    """Caffe: ceil((H+2p-k)/s)+1, then --pooled if pad and (pooled-1)*s >= H + p."""
    assert pooled_size(size, k, p, s) == want
    layer = make_layer(f"pool: MAX kernel_size: {k} stride: {s} pad: {p}")
    bottom, top = bottom_blob((1, 1, size, size)), Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    assert top.shape == (1, 1, want, want)


def test_dropped_window_rule_changes_the_shape():
    """Without the drop rule the 6-wide, k2 s4 p1 case would give 3 outputs, not 2."""
    assert math.ceil((6 + 2 - 2) / 4) + 1 == 3
    assert pooled_size(6, 2, 1, 4) == 2


def test_floor_round_mode():
    layer = make_layer("pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR")
    bottom, top = bottom_blob((1, 1, 8, 8)), Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    assert top.shape == (1, 1, 3, 3)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(
    "pool, shape",
    [
        ("kernel_size: 3 stride: 2", (2, 2, 7, 7)),  # overlapping, exact
        ("kernel_size: 3 stride: 2", (1, 2, 6, 6)),  # partial last window
        ("kernel_size: 3 stride: 2 pad: 1", (2, 2, 6, 6)),  # padding
        ("kernel_size: 2 stride: 2", (2, 2, 4, 4)),
        ("kernel_size: 2 stride: 4 pad: 1", (1, 2, 6, 6)),  # dropped window
        ("global_pooling: true", (2, 3, 3, 4)),
    ],
)
def test_gradient_matches_finite_differences(method, pool, shape, max_backward):
    layer = make_layer(f"pool: {method} {pool}")
    check_layer_gradient(layer, [bottom_blob(shape)], [Blob(dtype=np.float64)])


@pytest.fixture(params=["compiled", "scatter", "per_offset"])
def max_backward(request, monkeypatch):
    """Caffe's loops compiled by Numba (NumPy's default); or the vectorized NumPy passes with
    MAX backward by one np.add.at, or one pass per kernel offset (the device path)."""
    from engine.layers import pool_kernels, pooling

    if request.param == "compiled" and not pool_kernels.AVAILABLE:
        pytest.skip("numba is not installed: the compiled pooling loops are unavailable")
    monkeypatch.setattr(pooling, "_COMPILED", request.param == "compiled")
    monkeypatch.setattr(pooling, "_SCATTER_BACKWARD", request.param == "scatter")
    return request.param


def test_max_ties_route_gradient_to_first_in_scan_order(max_backward):
    """Caffe's MAX keeps the first maximum (strict >), and backward sends the diff there only."""
    layer = make_layer("pool: MAX kernel_size: 2 stride: 2")
    bottom = Blob((1, 1, 2, 2), dtype=np.float64)
    bottom.data[...] = [[[[1.0, 3.0], [3.0, 3.0]]]]
    top, mask = Blob(dtype=np.float64), Blob(dtype=np.float64)
    layer.setup([bottom], [top, mask])
    layer.forward([bottom], [top, mask])
    assert top.data.item() == 3.0 and mask.data.item() == 1.0
    top.diff[...] = 5.0
    layer.backward([top, mask], [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, [[[[0.0, 5.0], [0.0, 0.0]]]])


def test_overlapping_max_windows_accumulate_gradient(max_backward):
    """An input that is the max of two windows receives both windows' diffs."""
    layer = make_layer("pool: MAX kernel_size: 3 stride: 2")
    bottom = Blob((1, 1, 5, 5), dtype=np.float64)
    bottom.data[...] = 0.0
    bottom.data[0, 0, 2, 2] = 9.0  # inside all four windows
    top = Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff[...] = 1.0
    layer.backward([top], [True], [bottom])
    assert bottom.diff[0, 0, 2, 2] == 4.0 and bottom.diff.sum() == 4.0


def test_ave_padding_divisor_counts_padding_not_overhang():
    """Caffe's AVE on all-ones 4x4, k3 s2 p1: windows start at -1, 1, 3 (3 outputs).

    Rows [-1, 2): divisor 3 (padding counts), 2 image rows -> 2/3. Rows [3, 5): clipped at
    H + p = 5, divisor 2 (the overhang beyond the padding does not count), 1 image row -> 1/2.
    """
    layer = make_layer("pool: AVE kernel_size: 3 stride: 2 pad: 1")
    bottom = Blob((1, 1, 4, 4), dtype=np.float64)
    bottom.data[...] = 1.0
    top = Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    per_axis = np.array([2 / 3, 1.0, 1 / 2])
    np.testing.assert_allclose(top.data[0, 0], np.outer(per_axis, per_axis))


def test_float32_works_and_matches_reference():
    layer = make_layer("pool: MAX kernel_size: 3 stride: 2", dtype=np.float32)
    bottom, top = bottom_blob((4, 3, 9, 9), np.float32), Blob(dtype=np.float32)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    want, _ = reference_pool(bottom.data.astype(np.float64), "MAX", (3, 3), (2, 2), (0, 0))
    np.testing.assert_allclose(top.data, want, rtol=1e-6)


@pytest.mark.parametrize(
    "pool, needle",
    [
        ("pool: MAX kernel_size: 2 pad: 2", "pad"),
        ("pool: MAX stride: 2", "kernel"),
        ("pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2", "kernel"),
        ("pool: MAX global_pooling: true kernel_size: 2", "global_pooling"),
        ("pool: MAX global_pooling: true pad: 1", "global_pooling"),
        ("pool: MAX kernel_size: 9", "larger"),
    ],
)
def test_bad_parameters_raise_named_error(pool, needle):
    layer = make_layer(pool)
    with pytest.raises(NetError, match="pool") as info:
        layer.setup([bottom_blob((1, 1, 4, 4))], [Blob(dtype=np.float64)])
    assert needle in str(info.value)


def test_stochastic_is_clearly_not_implemented():
    layer = make_layer("pool: STOCHASTIC kernel_size: 2")
    with pytest.raises(NotImplementedError, match="STOCHASTIC"):
        layer.setup([bottom_blob((1, 1, 4, 4))], [Blob(dtype=np.float64)])


def forward_in_phase(param, phase: str, x: np.ndarray):
    """A NumPy Pooling layer in `phase`, set up on a bottom holding x, after one forward."""
    layer = PoolingLayer(param, phase=phase, dtype=x.dtype)
    bottom, top = Blob(x.shape, dtype=x.dtype), Blob(dtype=x.dtype)
    bottom.data[...] = x
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    return layer, bottom, top


def test_mask_top_only_for_max():
    layer = make_layer("pool: AVE kernel_size: 2")
    with pytest.raises(NetError, match="mask"):
        layer.setup([bottom_blob((1, 1, 4, 4))], [Blob(dtype=np.float64), Blob(dtype=np.float64)])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_threaded_batch_halves_match_single_pass(method, max_backward, monkeypatch):
    """Large inputs run as batch halves on two threads; results equal the one-pass ones."""
    from engine import threads
    from engine.layers import pooling

    shape = (5, 3, 9, 9)
    results = []
    monkeypatch.setattr(threads, "THREADS", 2)  # whatever OMP_NUM_THREADS says
    for threshold in (10**9, 1):
        monkeypatch.setattr(pooling, "_MIN_PARALLEL", threshold)
        monkeypatch.setattr(pooling, "_MIN_PARALLEL_COMPILED", threshold)
        layer = make_layer(f"pool: {method} kernel_size: 3 stride: 2 pad: 1")
        bottom, top = bottom_blob(shape), Blob(dtype=np.float64)
        layer.setup([bottom], [top])
        assert layer._buf["parts"] == (1 if threshold > 1 else 2)
        layer.forward([bottom], [top])
        top.diff[...] = np.random.default_rng(4).standard_normal(top.shape)
        layer.backward([top], [True], [bottom])
        results.append((top.data.copy(), bottom.diff.copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    check_layer_gradient(layer, [bottom_blob(shape)], [Blob(dtype=np.float64)])


@pytest.mark.parametrize("pool", ["kernel_size: 3 stride: 2", "kernel_size: 3 stride: 2 pad: 1"])
def test_test_phase_max_skips_the_argmax_until_a_backward_needs_it(pool, max_backward):
    """A TEST forward computes values only; a backward run after it (pycaffe allows one) makes
    the argmax from the bottom and gives the TRAIN gradient, ties included."""
    text = f'name: "pool" type: "Pooling" pooling_param {{ pool: MAX {pool} }}'
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    x = np.random.default_rng(2).integers(0, 3, (2, 3, 9, 9)).astype(np.float64)  # many ties
    dy = np.random.default_rng(3).standard_normal((2, 3, 5, 5))
    results = []
    for phase in ("TRAIN", "TEST"):
        layer, bottom, top = forward_in_phase(param, phase, x)
        assert layer._buf.get("arg_ready", True) == (phase == "TRAIN")
        top.diff[...] = dy[:, :, : top.shape[2], : top.shape[3]]
        layer.backward([top], [True], [bottom])
        results.append((top.data.copy(), bottom.diff.copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_compiled_test_phase_max_values_equal_train_values_with_nan_and_inf():
    """The compiled values-only TEST pass keeps Caffe's strict > from -FLT_MAX: NaN and -inf
    never win, so a window holding only those gives -FLT_MAX, as the TRAIN pass (Caffe's loop
    with the argmax) does. (The NumPy fallback passes use np.maximum, which lets NaN through.)"""
    from engine.layers import pool_kernels, pooling

    if not (pool_kernels.AVAILABLE and pooling._COMPILED):
        pytest.skip("numba is not installed: the compiled pooling loops are unavailable")
    param = text_format.Parse(
        'name: "pool" type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }',
        caffe_pb2.LayerParameter(),
    )
    x = np.random.default_rng(5).standard_normal((2, 2, 6, 6)).astype(np.float32)
    x[0, 0, :2, :2] = np.nan  # a window of NaN only
    x[0, 1, :2, :2] = -np.inf  # a window of -inf only
    x[1, 0, 2:4, 2:4] = [[np.nan, 1.0], [-np.inf, 0.5]]  # mixed: 1.0 wins
    values = [forward_in_phase(param, phase, x)[2].data.copy() for phase in ("TRAIN", "TEST")]
    np.testing.assert_array_equal(values[0], values[1])
    lowest = -np.finfo(np.float32).max
    assert values[1][0, 0, 0, 0] == lowest and values[1][0, 1, 0, 0] == lowest
    assert values[1][1, 0, 1, 1] == 1.0


def test_ave_pooling_rounds_in_float32_as_caffe(max_backward):
    """Caffe's float AVE pooling sums the window in float in scan order, divides by the
    (clipped) window size in float, and backward adds top_diff / size (rounded to float first)
    into each input in output order: the compiled loops give the same bits in float32; the
    NumPy passes the same forward bits, and a backward summed per kernel offset (another
    order, so within float rounding)."""
    f = np.float32
    layer = make_layer("pool: AVE kernel_size: 3 stride: 2 pad: 1", dtype=f)
    bottom, top = bottom_blob((2, 3, 7, 8), f, seed=5), Blob(dtype=f)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff[...] = np.random.default_rng(6).standard_normal(top.shape)
    layer.backward([top], [True], [bottom])
    x, dy = bottom.data, top.diff
    n, c, h, w = x.shape
    want, dx = np.zeros(top.shape, f), np.zeros(x.shape, f)
    for a in range(top.shape[2]):
        for b in range(top.shape[3]):
            hs, ws = a * 2 - 1, b * 2 - 1
            he, we = min(hs + 3, h + 1), min(ws + 3, w + 1)
            size = f((he - hs) * (we - ws))
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            for i in range(n):
                for j in range(c):
                    total = f(0)
                    for y in range(hs, he):
                        for z in range(ws, we):
                            total = f(total + x[i, j, y, z])
                    want[i, j, a, b] = f(total / size)
                    share = f(dy[i, j, a, b] / size)
                    for y in range(hs, he):
                        for z in range(ws, we):
                            dx[i, j, y, z] = f(dx[i, j, y, z] + share)
    np.testing.assert_array_equal(top.data, want)
    if max_backward == "compiled":
        np.testing.assert_array_equal(bottom.diff, dx)
    else:
        np.testing.assert_allclose(bottom.diff, dx, rtol=1e-6, atol=1e-7)


def test_compiled_kernels_are_ready_after_setup():
    """Numba compiles on first call: setup makes that call (tiny arrays, the layer's types),
    so a training run's first iteration, which is on the training clock, does not compile."""
    from engine.layers import pool_kernels, pooling

    if not (pool_kernels.AVAILABLE and pooling._COMPILED):
        pytest.skip("numba is not installed: the compiled pooling loops are unavailable")
    kernels = pool_kernels.window_kernels(7, 5)  # a window no other test uses
    assert not kernels.max_forward.signatures
    layer = make_layer("pool: MAX kernel_h: 7 kernel_w: 5 stride: 2", dtype=np.float32)
    layer.setup([bottom_blob((2, 3, 9, 9), np.float32)], [Blob(dtype=np.float32)])
    assert [str(sig[0]) for sig in kernels.max_forward.signatures] == ["array(float32, 4d, C)"]
    assert not kernels.ave_forward.signatures  # only what this layer calls
