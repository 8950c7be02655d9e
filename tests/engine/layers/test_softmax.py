"""Softmax layer: Caffe's softmax along softmax_param.axis, stability, in-place use, gradients."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layers.softmax import SoftmaxLayer
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_allclose, assert_array_equal, dev, host
from tests.backends import current as backend
from tests.gradcheck import check_layer_gradient


def make_layer(softmax: str = "", dtype=np.float64) -> SoftmaxLayer:
    text = f'name: "prob" type: "Softmax" softmax_param {{ {softmax} }}'
    return SoftmaxLayer(
        text_format.Parse(text, caffe_pb2.LayerParameter()), xp=backend(), dtype=dtype
    )


def blobs(shape, dtype=np.float64, seed: int = 1, scale: float = 1.0) -> tuple[Blob, Blob]:
    bottom = Blob(shape, dtype=dtype)
    bottom.data[...] = dev(scale * np.random.default_rng(seed).standard_normal(shape))
    return bottom, Blob(dtype=dtype)


def reference(x, axis):
    """exp(x_i) / sum_j exp(x_j) along `axis`, computed the textbook way in float64."""
    e = np.exp(x.astype(np.float64))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis_text, axis", [("", 1), ("axis: 2", 2), ("axis: -1", 3)])
def test_forward_matches_exp_over_sum(axis_text, axis):
    bottom, top = blobs((2, 3, 4, 5))
    layer = make_layer(axis_text)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert top.shape == bottom.shape
    assert_allclose(top.data, reference(host(bottom.data), axis), rtol=1e-13)
    assert_allclose(top.data.sum(axis=axis), 1.0, rtol=1e-13)


def test_large_scores_do_not_overflow_in_float32():
    bottom, top = blobs((3, 10), dtype=np.float32, scale=1.0)
    bottom.data[...] += 1000.0  # exp(1000) overflows float32 without subtracting the max
    layer = make_layer(dtype=np.float32)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert np.all(np.isfinite(host(top.data)))
    want = reference(host(bottom.data).astype(np.float64) - 1000.0, 1)
    assert_allclose(top.data, want, rtol=1e-5)


@pytest.mark.parametrize("axis_text, shape", [("", (2, 4, 3)), ("axis: 2", (2, 3, 4, 2))])
def test_gradient(axis_text, shape):
    bottom, top = blobs(shape)
    check_layer_gradient(make_layer(axis_text), [bottom], [top])


def test_in_place_matches_separate_top():
    bottom, top = blobs((3, 5, 2), seed=4)
    layer = make_layer()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff[...] = dev(np.random.default_rng(5).standard_normal(top.shape))
    layer.backward([top], [True], [bottom])

    same, _ = blobs((3, 5, 2), seed=4)
    inplace = make_layer()
    inplace.setup([same], [same])
    inplace.forward([same], [same])
    assert_array_equal(same.data, top.data)
    same.diff[...] = dev(host(top.diff))
    inplace.backward([same], [True], [same])
    assert_allclose(same.diff, bottom.diff, rtol=1e-14, atol=1e-16)


def test_axis_out_of_range_is_a_clear_error():
    bottom, top = blobs((2, 3))
    with pytest.raises(NetError, match="'prob'.*axis"):
        make_layer("axis: 2").setup([bottom], [top])
