"""LRN layer: Caffe's ACROSS_CHANNELS and WITHIN_CHANNEL formulas vs direct loops, and gradients."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layers.lrn import LRNLayer
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_allclose, assert_array_equal, dev, host
from tests.backends import current as backend
from tests.gradcheck import check_layer_gradient


def make_layer(lrn: str, dtype=np.float64) -> LRNLayer:
    param = text_format.Parse(
        f'name: "norm" type: "LRN" lrn_param {{ {lrn} }}', caffe_pb2.LayerParameter()
    )
    return LRNLayer(param, xp=backend(), dtype=dtype, seed=0)


def blobs(shape, dtype=np.float64, seed: int = 1) -> tuple[Blob, Blob]:
    bottom = Blob(shape, dtype=dtype)
    bottom.data[...] = dev(np.random.default_rng(seed).standard_normal(shape))
    return bottom, Blob(dtype=dtype)


def reference_across(x, n, alpha, beta, k):
    """Caffe: scale_c = k + alpha/n * sum of x^2 over channels c-(n-1)/2 .. c+(n-1)/2 that exist."""
    half = (n - 1) // 2
    scale = np.empty_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - half), min(x.shape[1], c + half + 1)
        scale[:, c] = k + alpha / n * np.sum(x[:, lo:hi] ** 2, axis=1)
    return x * scale**-beta


def reference_within(x, n, alpha, beta):
    """Caffe: scale = 1 + alpha * AVE-pool(x^2, n x n, pad (n-1)/2); the divisor is always n^2."""
    half = (n - 1) // 2
    _, _, h, w = x.shape
    scale = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            win = x[:, :, max(0, i - half) : i + half + 1, max(0, j - half) : j + half + 1]
            scale[:, :, i, j] = 1 + alpha / n**2 * np.sum(win**2, axis=(2, 3))
    return x * scale**-beta


def f32(value: float) -> float:
    """A prototxt float as the layer sees it: rounded to float32, then used in float64."""
    return float(np.float32(value))


def run(layer, bottom, top):
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    return host(top.data)


@pytest.mark.parametrize(
    "n, alpha, beta, k",
    [(5, 1.0, 0.75, 1.0), (3, 0.5, 0.6, 2.0), (1, 2.0, 1.5, 1.0), (17, 3.0, 0.75, 0.5)],
)
def test_across_channels_forward_matches_caffe_formula(n, alpha, beta, k):
    bottom, top = blobs((2, 20, 3, 2))
    layer = make_layer(f"local_size: {n} alpha: {alpha} beta: {beta} k: {k}")
    want = reference_across(host(bottom.data), n, f32(alpha), f32(beta), f32(k))
    assert_allclose(run(layer, bottom, top), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n, alpha, beta", [(3, 1.0, 0.75), (5, 4.0, 0.6), (17, 20.0, 0.9)])
def test_within_channel_forward_matches_caffe_pooling_composition(n, alpha, beta):
    bottom, top = blobs((2, 3, 6, 5))
    region = "norm_region: WITHIN_CHANNEL"
    layer = make_layer(f"local_size: {n} alpha: {alpha} beta: {beta} k: 7 {region}")
    want = reference_within(host(bottom.data), n, f32(alpha), f32(beta))  # k is unused
    assert_allclose(run(layer, bottom, top), want, rtol=1e-12, atol=1e-14)


def test_defaults_are_caffes_local_size_5_alpha_1_beta_075_k_1():
    bottom, top = blobs((1, 7, 2, 2))
    want = reference_across(host(bottom.data), 5, 1.0, 0.75, 1.0)
    assert_allclose(run(make_layer(""), bottom, top), want, rtol=1e-12)


def test_float32_forward_close_to_float64():
    b64, t64 = blobs((2, 8, 5, 5))
    b32, t32 = blobs((2, 8, 5, 5), dtype=np.float32)
    want = run(make_layer("local_size: 5 alpha: 0.5"), b64, t64)
    got = run(make_layer("local_size: 5 alpha: 0.5", dtype=np.float32), b32, t32)
    assert got.dtype == np.float32
    assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "lrn",
    [
        "local_size: 3 alpha: 1.0 beta: 0.75",
        "local_size: 5 alpha: 2.0 beta: 0.6 k: 2.0",
        "local_size: 1 alpha: 1.5 beta: 1.2 k: 0.5",
        "local_size: 17 alpha: 4.0 beta: 0.75",
    ],
)
def test_across_channels_gradient(lrn):
    bottom, top = blobs((2, 19, 2, 3))
    check_layer_gradient(make_layer(lrn), [bottom], [top])


@pytest.mark.parametrize(
    "lrn",
    [
        "local_size: 3 alpha: 2.0 beta: 0.75",
        "local_size: 5 alpha: 9.0 beta: 0.6",
        "local_size: 17 alpha: 30.0 beta: 1.1",
    ],
)
def test_within_channel_gradient(lrn):
    bottom, top = blobs((2, 2, 5, 4))
    check_layer_gradient(make_layer(f"{lrn} norm_region: WITHIN_CHANNEL"), [bottom], [top])


def test_repeated_forward_backward_reuses_buffers_and_is_deterministic():
    bottom, top = blobs((2, 6, 3, 3))
    layer = make_layer("local_size: 3 alpha: 1.0")
    first = run(layer, bottom, top).copy()
    top.diff[...] = 1.0
    layer.backward([top], [True], [bottom])
    grad = host(bottom.diff).copy()
    scale_buffer = layer.scale
    layer.reshape([bottom], [top])
    layer.forward([bottom], [top])
    layer.backward([top], [True], [bottom])
    assert layer.scale is scale_buffer
    assert_array_equal(top.data, first)
    assert_array_equal(bottom.diff, grad)


def test_even_local_size_is_rejected_naming_the_layer():
    bottom, top = blobs((1, 4, 2, 2))
    with pytest.raises(NetError, match="'norm'.*local_size.*odd"):
        make_layer("local_size: 4").setup([bottom], [top])


def test_non_4d_input_is_rejected():
    bottom, top = blobs((2, 4, 3))
    with pytest.raises(NetError, match="4 axes"):
        make_layer("local_size: 3").setup([bottom], [top])


def test_in_place_use_is_rejected():
    bottom, _ = blobs((1, 4, 2, 2))
    with pytest.raises(NetError, match="in place"):
        make_layer("local_size: 3").setup([bottom], [bottom])


def _same_bits(a, b) -> None:
    """Equal to the bit (signed zeros included), NaN where the other is NaN."""
    a, b = host(a), host(b)
    nan = np.isnan(a)
    assert_array_equal(nan, np.isnan(b))
    ints = np.uint32 if a.dtype == np.float32 else np.uint64
    assert_array_equal(a[~nan].view(ints), b[~nan].view(ints))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN and inf inputs
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, lrn",
    [
        ((3, 7, 5, 3), "local_size: 5 alpha: 2.0 beta: 0.75 k: 1.5"),
        ((2, 2, 4, 4), "local_size: 5 alpha: 1.0 beta: 0.6"),
        ((1, 1, 3, 2), "local_size: 3"),
        ((5, 16, 6, 5), "local_size: 5 alpha: 0.0001 beta: 0.75"),  # AlexNet's norm settings
        ((2, 9, 2, 2), "local_size: 15 alpha: 3.0 beta: 0.9"),
    ],
)
def test_compiled_across_channels_gives_the_numpy_passes_bits(shape, lrn, dtype):
    """The compiled loops (engine.layers.lrn_kernels) add each window in channel order, padding
    as 0, in the blob's precision: top and bottom diff equal the NumPy passes' to the bit, with
    signed zeros, an inf and a NaN in the input and the top diff, over uneven thread slices."""
    from engine.layers import lrn_kernels

    outputs = []
    for compiled in (True, False):
        bottom, top = blobs(shape, dtype, seed=3)
        x = host(bottom.data).copy()
        x.flat[:4] = [-0.0, 0.0, np.inf, np.nan]
        bottom.data[...] = dev(x)
        layer = make_layer(lrn, dtype)
        layer.setup([bottom], [top])
        if compiled:  # on NumPy with Numba; elsewhere both runs are the NumPy passes
            assert layer.compiled == (backend() is np and lrn_kernels.AVAILABLE)
        else:
            layer.compiled = False
        layer.forward([bottom], [top])
        dy = np.random.default_rng(4).standard_normal(shape).astype(dtype)
        dy.flat[-3:] = [-0.0, np.inf, np.nan]
        top.diff[...] = dev(dy)
        layer.backward([top], [True], [bottom])
        outputs.append((host(top.data).copy(), host(bottom.diff).copy()))
    (y1, dx1), (y0, dx0) = outputs
    _same_bits(y1, y0)
    _same_bits(dx1, dx0)
