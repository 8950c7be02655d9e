"""BatchNorm (Caffe's running-sum semantics), Scale and Bias: forward rules and gradients."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layer import layer_class
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_allclose, assert_array_equal, dev, host
from tests.backends import current as backend
from tests.gradcheck import check_layer_gradient


def make(text: str, phase: str = "TRAIN", seed: int = 0):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return layer_class(param.type, param.name)(param, phase, backend(), np.float64, seed)


def blob(values: np.ndarray) -> Blob:
    b = Blob(values.shape, backend(), np.float64)
    b.data[...] = dev(values)
    return b


def empty() -> Blob:
    return Blob((), backend(), np.float64)


def rand(shape, seed=1, loc=0.0, scale=1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, size=shape)


BN = 'name: "bn" type: "BatchNorm"'
EPS = float(np.float32(1e-5))  # Caffe's default eps, as the proto's float holds it


# --- BatchNorm -------------------------------------------------------------------------------
def test_batchnorm_train_normalises_with_biased_batch_variance():
    x = rand((4, 3, 2, 5), loc=2.0, scale=3.0)
    layer = make(BN + " batch_norm_param { eps: 0.01 }")
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    assert_allclose(top.data, (x - mean) / np.sqrt(var + 0.01), rtol=1e-10)
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]


def test_batchnorm_running_sums_follow_caffe():
    """s2 <- maf s2 + 1; s0 <- maf s0 + mean; s1 <- maf s1 + m/(m-1) var (unbiased)."""
    maf = 0.75  # exact in the proto's float32
    x1, x2 = rand((4, 3, 2, 2), 1), rand((4, 3, 2, 2), 2, loc=1.0)
    layer = make(BN + f" batch_norm_param {{ moving_average_fraction: {maf} }}")
    bottom, top = blob(x1), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    bottom.data[...] = dev(x2)
    layer.forward([bottom], [top])
    m = 4 * 2 * 2
    mean = [x.mean(axis=(0, 2, 3)) for x in (x1, x2)]
    var = [x.var(axis=(0, 2, 3)) * m / (m - 1) for x in (x1, x2)]
    assert_allclose(layer.blobs[2].data, [maf * 1 + 1])
    assert_allclose(layer.blobs[0].data, maf * mean[0] + mean[1], rtol=1e-12)
    assert_allclose(layer.blobs[1].data, maf * var[0] + var[1], rtol=1e-12)


def test_batchnorm_global_stats_divides_sums_by_scale_factor():
    x = rand((2, 3, 4))
    layer = make(BN + " batch_norm_param { use_global_stats: true }")
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.blobs[0].data[...] = dev([1.0, 2.0, -4.0])
    layer.blobs[1].data[...] = dev([2.0, 0.5, 8.0])
    layer.blobs[2].data[...] = 2.0
    layer.forward([bottom], [top])
    mean = np.array([0.5, 1.0, -2.0])[None, :, None]
    var = np.array([1.0, 0.25, 4.0])[None, :, None]
    assert_allclose(top.data, (x - mean) / np.sqrt(var + EPS), rtol=1e-12)
    before = [host(b.data).copy() for b in layer.blobs]
    layer.forward([bottom], [top])
    for b, ref in zip(layer.blobs, before, strict=True):
        assert_array_equal(b.data, ref)  # global stats are never updated


def test_batchnorm_zero_scale_factor_means_zero_statistics():
    x = rand((2, 3))
    layer = make(BN, phase="TEST")  # use_global_stats defaults to true in TEST
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert_allclose(top.data, x / np.sqrt(EPS), rtol=1e-12)


def test_batchnorm_forces_lr_mult_zero_and_rejects_learned_stats():
    layer = make(BN)
    layer.setup([blob(rand((2, 3)))], [empty()])
    assert [p.lr_mult for p in layer.param.param] == [0.0, 0.0, 0.0]
    bad = make(BN + " param { lr_mult: 0 } param { lr_mult: 1 }")
    with pytest.raises(NetError, match="'bn'.*lr_mult"):
        bad.setup([blob(rand((2, 3)))], [empty()])


def test_batchnorm_train_gradient():
    layer = make(BN)
    check_layer_gradient(layer, [blob(rand((3, 2, 2, 2), loc=1.0))], [empty()], check_params=False)


def test_batchnorm_2d_input_gradient():
    layer = make(BN + " batch_norm_param { eps: 0.1 }")
    check_layer_gradient(layer, [blob(rand((5, 3)))], [empty()], check_params=False)


def test_batchnorm_global_stats_gradient():
    layer = make(BN + " batch_norm_param { use_global_stats: true }")
    bottom, top = blob(rand((3, 2, 3))), empty()
    layer.setup([bottom], [top])
    layer.blobs[0].data[...] = dev([0.3, -1.0])
    layer.blobs[1].data[...] = dev([1.5, 0.2])
    layer.blobs[2].data[...] = 0.8
    check_layer_gradient(layer, [bottom], [top], check_params=False)


def test_batchnorm_in_place_backward_survives_overwritten_top():
    """An in-place Scale after BatchNorm overwrites the top data; BN's backward must not use it."""
    x, dy = rand((4, 2, 3), 1), rand((4, 2, 3), 2)
    ref_layer = make(BN)
    bottom, top = blob(x), empty()
    ref_layer.setup([bottom], [top])
    ref_layer.forward([bottom], [top])
    top.diff[...] = dev(dy)
    ref_layer.backward([top], [True], [bottom])

    layer = make(BN)
    shared = blob(x)
    layer.setup([shared], [shared])
    layer.forward([shared], [shared])
    assert_allclose(shared.data, top.data, rtol=1e-12)
    shared.data[...] = 123.0  # what an in-place Scale would do
    shared.diff[...] = dev(dy)
    layer.backward([shared], [True], [shared])
    assert_allclose(shared.diff, bottom.diff, rtol=1e-12)


# --- Scale -----------------------------------------------------------------------------------
def test_scale_defaults_to_identity_with_per_channel_blob():
    x = rand((2, 3, 4))
    layer = make('name: "sc" type: "Scale"')
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert [b.shape for b in layer.blobs] == [(3,)]
    assert_array_equal(top.data, x)


def test_scale_forward_with_bias_matches_broadcast():
    x = rand((2, 3, 4))
    layer = make(
        'name: "sc" type: "Scale" scale_param { bias_term: true'
        ' filler { type: "uniform" min: 1 max: 2 } bias_filler { type: "constant" value: 0.5 } }'
    )
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    s, b = host(layer.blobs[0].data), host(layer.blobs[1].data)
    assert np.all((s >= 1) & (s <= 2)) and np.all(b == 0.5)
    assert_allclose(top.data, x * s[None, :, None] + 0.5, rtol=1e-12)


@pytest.mark.parametrize(
    "spec, shape",
    [
        (
            "bias_term: true filler { type: 'gaussian' std: 1 }"
            " bias_filler { type: 'gaussian' std: 1 }",
            (2, 3, 2),
        ),
        ("axis: 0 num_axes: -1 filler { type: 'uniform' min: -1 max: 1 }", (2, 3)),
        ("num_axes: 0 bias_term: true filler { type: 'constant' value: 1.5 }", (2, 3, 2)),
        ("axis: -1 filler { type: 'uniform' min: -1 max: 1 }", (2, 3, 2)),
    ],
)
def test_scale_one_bottom_gradient(spec, shape):
    layer = make(f'name: "sc" type: "Scale" scale_param {{ {spec} }}')
    check_layer_gradient(layer, [blob(rand(shape))], [empty()])


@pytest.mark.parametrize(
    "spec, shapes",
    [
        ("", [(2, 3, 2), (3,)]),
        ("bias_term: true bias_filler { type: 'gaussian' std: 1 }", [(2, 3, 2), (3, 2)]),
        ("axis: 0", [(2, 3, 2), (2,)]),
        ("axis: 1", [(2, 3, 2), ()]),  # a scalar scale applies everywhere
    ],
)
def test_scale_two_bottoms_gradient(spec, shapes):
    layer = make(f'name: "sc" type: "Scale" scale_param {{ {spec} }}')
    bottoms = [blob(rand(shapes[0], 1)), blob(rand(shapes[1], 2))]
    check_layer_gradient(layer, bottoms, [empty()])


def test_scale_in_place_matches_separate_blobs():
    x, dy = rand((2, 3, 2), 1), rand((2, 3, 2), 2)
    text = 'name: "sc" type: "Scale" scale_param { filler { type: "uniform" min: 1 max: 2 } }'
    results = []
    for in_place in (False, True):
        layer = make(text)
        bottom = blob(x)
        top = bottom if in_place else empty()
        layer.setup([bottom], [top])
        layer.forward([bottom], [top])
        y = host(top.data).copy()
        top.diff[...] = dev(dy)
        layer.blobs[0].diff[...] = 0
        layer.backward([top], [True], [bottom])
        results.append((y, host(bottom.diff).copy(), layer.blobs[0].diff.copy()))
    for got, ref in zip(results[1], results[0], strict=True):
        assert_allclose(got, ref, rtol=1e-12)


def test_scale_accumulates_param_diff():
    layer = make('name: "sc" type: "Scale"')
    bottom, top = blob(rand((2, 3))), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff[...] = 1.0
    layer.blobs[0].diff[...] = 10.0
    layer.backward([top], [False], [bottom])
    assert_allclose(layer.blobs[0].diff, 10.0 + bottom.data.sum(axis=0))


def test_scale_shape_mismatch_names_layer():
    layer = make('name: "scl" type: "Scale"')
    with pytest.raises(NetError, match="'scl'.*does not match"):
        layer.setup([blob(rand((2, 3))), blob(rand((4,)))], [empty()])


# --- Bias ------------------------------------------------------------------------------------
def test_bias_forward_and_gradients():
    x = rand((2, 3, 2))
    layer = make('name: "b" type: "Bias" bias_param { filler { type: "constant" value: 2 } }')
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert_allclose(top.data, x + 2)
    layer = make('name: "b" type: "Bias" bias_param { filler { type: "gaussian" std: 1 } }')
    check_layer_gradient(layer, [blob(x)], [empty()])
    layer = make('name: "b" type: "Bias" bias_param { axis: 1 num_axes: 2 }')
    check_layer_gradient(layer, [blob(x)], [empty()])
    layer = make('name: "b" type: "Bias"')
    check_layer_gradient(layer, [blob(x), blob(rand((3, 2), 4))], [empty()])
    layer = make('name: "b" type: "Bias" bias_param { axis: 0 }')
    check_layer_gradient(layer, [blob(x), blob(rand((2,), 4))], [empty()])
