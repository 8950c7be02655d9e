"""InnerProduct layer: Caffe's axis flattening, transpose storage, accumulation, gradients."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.blob import Blob
from engine.errors import NetError
from engine.layers.inner_product import InnerProductLayer
from engine.proto import caffe_pb2
from tests.gradcheck import check_layer_gradient

GAUSS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def make_layer(ip: str, dtype=np.float64) -> InnerProductLayer:
    text = f'name: "ip" type: "InnerProduct" inner_product_param {{ {ip} }}'
    return InnerProductLayer(
        text_format.Parse(text, caffe_pb2.LayerParameter()), dtype=dtype, seed=0
    )


def bottom_blob(shape, dtype=np.float64) -> Blob:
    b = Blob(shape, dtype=dtype)
    b.data[...] = np.random.default_rng(1).standard_normal(shape)
    return b


@pytest.mark.parametrize(
    "ip, shape, top_shape, wshape",
    [
        ("num_output: 5", (2, 3, 2, 2), (2, 5), (5, 12)),  # axis 1 flattens C*H*W
        ("num_output: 5 axis: 2", (2, 3, 2, 2), (2, 3, 5), (5, 4)),
        ("num_output: 5 axis: -1", (2, 3, 4), (2, 3, 5), (5, 4)),
        ("num_output: 5 transpose: true", (2, 3, 2, 2), (2, 5), (12, 5)),
        ("num_output: 4 axis: 0", (3, 2), (4,), (4, 6)),
    ],
)
def test_forward_matches_matrix_definition(ip, shape, top_shape, wshape):
    """Caffe: top = bottom(M, K) W^T + b, M = count(0, axis), K = count(axis)."""
    layer = make_layer(f"{ip} {GAUSS}")
    bottom, top = bottom_blob(shape), Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    w = layer.blobs[0].data
    assert w.shape == wshape and top.shape == top_shape
    wnk = w.T if "transpose" in ip else w
    x = bottom.data.reshape(int(np.prod(top_shape[:-1])), -1)
    want = x @ wnk.T + layer.blobs[1].data
    np.testing.assert_allclose(top.data.reshape(want.shape), want, rtol=1e-12)


@pytest.mark.parametrize(
    "ip, shape",
    [
        ("num_output: 3", (2, 2, 2, 2)),
        ("num_output: 3 axis: 2", (2, 2, 3)),
        ("num_output: 3 transpose: true", (3, 4)),
        ("num_output: 3 transpose: true axis: 2", (2, 2, 3)),
        ("num_output: 3 bias_term: false", (2, 5)),
    ],
)
def test_gradient_matches_finite_differences(ip, shape):
    layer = make_layer(f"{ip} {GAUSS}")
    check_layer_gradient(layer, [bottom_blob(shape)], [Blob(dtype=np.float64)])


def forward_with_top_diff(transpose: str):
    """A float32 layer after one forward on a (4, 6) bottom, its top diff filled."""
    layer = make_layer(f"num_output: 3 transpose: {transpose} {GAUSS}", dtype=np.float32)
    bottom, top = bottom_blob((4, 6), np.float32), Blob()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff[...] = np.random.default_rng(2).standard_normal(top.shape)
    return layer, bottom, top


@pytest.mark.parametrize("transpose", ["false", "true"])
def test_param_diffs_accumulate(transpose):
    """Caffe's backward adds into the weight and bias diffs (GEMM with beta = 1)."""
    layer, bottom, top = forward_with_top_diff(transpose)
    for p in layer.blobs:
        p.diff[...] = 1.0
    layer.backward([top], [True], [bottom])
    dw = top.diff.T @ bottom.data
    want_w = 1.0 + (dw.T if transpose == "true" else dw)
    np.testing.assert_allclose(layer.blobs[0].diff, want_w, rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].diff, 1.0 + top.diff.sum(0), rtol=1e-5)
    np.testing.assert_allclose(
        bottom.diff,
        top.diff @ (layer.blobs[0].data.T if transpose == "true" else layer.blobs[0].data),
        rtol=1e-5,
    )


@pytest.mark.parametrize("transpose", ["false", "true"])
def test_param_diffs_zero_writes_the_gradient_caffe_would_add_to_zeros(transpose):
    """With param_diffs_zero (set by the Net after the solver's ClearParamDiffs) the layer
    writes the weight and bias gradients: bit for bit Caffe's 0 + gradient. The flag is
    trusted, so diffs that were not zero show it was taken."""
    layer, bottom, top = forward_with_top_diff(transpose)
    for p in layer.blobs:
        p.diff[...] = 0.0
    layer.backward([top], [True], [bottom])
    added = [p.diff.copy() for p in layer.blobs]
    for p in layer.blobs:
        p.diff[...] = 5.0
    layer.param_diffs_zero = True
    layer.backward([top], [True], [bottom])
    for p, want in zip(layer.blobs, added, strict=True):
        np.testing.assert_array_equal(p.diff, want)


def test_no_bottom_diff_without_propagate_down():
    layer = make_layer(f"num_output: 3 {GAUSS}")
    bottom, top = bottom_blob((2, 4)), Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    bottom.diff[...] = 7.0
    top.diff[...] = 1.0
    layer.backward([top], [False], [bottom])
    assert np.all(bottom.diff == 7.0)


def test_batch_size_change_reshapes():
    layer = make_layer(f"num_output: 3 {GAUSS}")
    bottom, top = bottom_blob((2, 4)), Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    bottom.reshape((5, 4))
    layer.reshape([bottom], [top])
    layer.forward([bottom], [top])
    layer.backward([top], [True], [bottom])
    assert top.shape == (5, 3)


@pytest.mark.parametrize(
    "ip, shape, needle",
    [
        ("num_output: 0", (2, 4), "num_output"),
        ("num_output: 3 axis: 3", (2, 4), "axis"),
    ],
)
def test_bad_parameters_raise_named_error(ip, shape, needle):
    layer = make_layer(ip)
    with pytest.raises(NetError, match="ip") as info:
        layer.setup([bottom_blob(shape)], [Blob(dtype=np.float64)])
    assert needle in str(info.value)


def test_wrong_input_size_after_setup_is_named():
    layer = make_layer("num_output: 3")
    bottom, top = bottom_blob((2, 4)), Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    bottom.reshape((2, 5))
    with pytest.raises(NetError, match="expect 4"):
        layer.reshape([bottom], [top])
