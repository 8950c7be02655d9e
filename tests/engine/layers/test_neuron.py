"""Neuron layers: Caffe's forward formulas, finite-difference gradients, in-place use."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.backend import make_rng
from engine.errors import NetError
from engine.layer import layer_class
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_allclose, assert_array_equal, dev, host
from tests.backends import current as backend
from tests.gradcheck import check_layer_gradient


def make(text: str, phase: str = "TRAIN", dtype=np.float64, seed: int = 0):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return layer_class(param.type, param.name)(param, phase, backend(), dtype, seed)


def blob(values: np.ndarray) -> Blob:
    b = Blob(values.shape, backend(), values.dtype)
    b.data[...] = dev(values)
    return b


def empty() -> Blob:
    return Blob((), backend(), np.float64)


def rand(shape, seed=1, low=-1.0, high=1.0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(low, high, size=shape)
    x[np.abs(x) < 0.02] = 0.05  # keep clear of kinks at 0 for the finite differences
    return x


def near_zero(x: np.ndarray) -> np.ndarray:
    return np.abs(x) < 1e-4


# --- forward against hand computations -------------------------------------------------------
def test_relu_leaky_forward_and_v1_name():
    layer = make('name: "r" type: "ReLU" relu_param { negative_slope: 0.1 }')
    x = np.array([[-2.0, -0.5, 0.0, 3.0]])
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert_allclose(top.data, [[-0.2, -0.05, 0.0, 3.0]])
    assert layer_class("RELU").type_name == "ReLU"


def test_sigmoid_tanh_forward():
    x = np.linspace(-3, 3, 7)
    for kind, ref in (("Sigmoid", 1 / (1 + np.exp(-x))), ("TanH", np.tanh(x))):
        layer = make(f'name: "n" type: "{kind}"')
        bottom, top = blob(x), empty()
        layer.setup([bottom], [top])
        layer.forward([bottom], [top])
        assert_allclose(top.data, ref, rtol=1e-12)


def test_other_neurons_forward():
    x = np.array([-1.5, -0.2, 0.3, 2.0])
    cases = {
        "type: 'Power' power_param { power: 2 scale: 3 shift: 1 }": (1 + 3 * x) ** 2,
        "type: 'AbsVal'": np.abs(x),
        "type: 'BNLL'": np.log1p(np.exp(x)),
        "type: 'ELU' elu_param { alpha: 0.5 }": np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
        "type: 'Exp' exp_param { base: 2 scale: 3 shift: 1 }": 2.0 ** (1 + 3 * x),
        "type: 'Log' log_param { base: 10 scale: 2 shift: 4 }": np.log10(4 + 2 * x),
        "type: 'PReLU'": np.where(x > 0, x, 0.25 * x),
    }
    for text, ref in cases.items():
        layer = make('name: "n" ' + text)
        bottom, top = blob(x.reshape(1, 4)), empty()
        layer.setup([bottom], [top])
        layer.forward([bottom], [top])
        assert_allclose(top.data.ravel(), ref, rtol=1e-12, err_msg=text)


def test_dropout_train_scales_kept_units_and_preserves_expectation():
    layer = make('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.3 }', seed=5)
    x = np.ones((200, 500))
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    kept = top.data != 0
    assert_allclose(top.data[kept], 1 / 0.7)
    assert abs(kept.mean() - 0.7) < 0.01
    assert abs(top.data.mean() - 1.0) < 0.01


def test_dropout_test_phase_is_identity_and_passes_gradient():
    layer = make('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.5 }', phase="TEST")
    x = rand((3, 4))
    bottom, top = blob(x), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert_array_equal(top.data, x)
    top.diff[...] = 2.0
    layer.backward([top], [True], [bottom])
    assert_array_equal(bottom.diff, np.full((3, 4), 2.0))


def test_dropout_bad_ratio_names_layer():
    layer = make('name: "drop7" type: "Dropout" dropout_param { dropout_ratio: 1.0 }')
    with pytest.raises(NetError, match="drop7"):
        layer.setup([blob(rand((2, 2)))], [empty()])


# --- gradient checks -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, low, high",
    [
        ('type: "ReLU"', -1, 1),
        ('type: "ReLU" relu_param { negative_slope: 0.1 }', -1, 1),
        ('type: "Sigmoid"', -3, 3),
        ('type: "TanH"', -2, 2),
        ('type: "Power" power_param { power: 3 scale: 0.5 shift: 2 }', -1, 1),
        ('type: "Power" power_param { power: 1 scale: 0.5 shift: 2 }', -1, 1),
        ('type: "Power" power_param { power: 2 scale: -1.5 shift: 0.5 }', -1, 1),
        ('type: "AbsVal"', -1, 1),
        ('type: "BNLL"', -3, 3),
        ('type: "ELU" elu_param { alpha: 0.7 }', -2, 2),
        ('type: "Exp" exp_param { base: 3 scale: 0.5 shift: 0.2 }', -1, 1),
        ('type: "Log" log_param { scale: 2 shift: 3 }', -1, 1),
        ('type: "PReLU"', -1, 1),
        ('type: "PReLU" prelu_param { channel_shared: true }', -1, 1),
        ('type: "PReLU" prelu_param { filler { type: "uniform" min: -0.5 max: 0.5 } }', -1, 1),
    ],
)
def test_neuron_gradients(text, low, high):
    layer = make('name: "n" ' + text)
    bottom, top = blob(rand((2, 3, 2, 2), low=low, high=high)), empty()
    check_layer_gradient(layer, [bottom], [top], kink=near_zero)


def test_dropout_gradient_with_fixed_mask():
    layer = make('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.4 }')

    def same_mask():
        layer.xp_rng = make_rng(layer.xp, 11)

    bottom, top = blob(rand((3, 5))), empty()
    check_layer_gradient(layer, [bottom], [top], prepare=same_mask)
    mask = host(layer.mask)
    assert (mask == 0).any() and (mask != 0).any()


# --- in place: same Blob as bottom and top -----------------------------------------------------
def run_once(layer, x, dy, in_place, prepare=None):
    if in_place:
        b = blob(x)
        bottoms, tops = [b], [b]
    else:
        bottoms, tops = [blob(x)], [empty()]
    layer.setup(bottoms, tops)
    if prepare:
        prepare(layer)
    layer.forward(bottoms, tops)
    y = tops[0].data.copy()
    for p in layer.blobs:
        p.diff[...] = 0
    tops[0].diff[...] = dev(dy)
    layer.backward(tops, [True], bottoms)
    return y, bottoms[0].diff.copy(), [p.diff.copy() for p in layer.blobs]


@pytest.mark.parametrize(
    "text",
    [
        'type: "ReLU"',
        'type: "ReLU" relu_param { negative_slope: 0.2 }',
        'type: "ReLU" relu_param { negative_slope: -0.5 }',
        'type: "Sigmoid"',
        'type: "TanH"',
        'type: "Dropout"',
        'type: "Power" power_param { power: 2 shift: 1 }',
        'type: "AbsVal"',
        'type: "BNLL"',
        'type: "ELU"',
        'type: "Exp"',
        'type: "Log" log_param { shift: 2 }',
        'type: "PReLU"',
    ],
)
def test_in_place_matches_separate_blobs(text):
    x, dy = rand((2, 3, 4), seed=3), rand((2, 3, 4), seed=4)

    def reseed(layer):
        layer.xp_rng = make_rng(layer.xp, 2)

    ref = run_once(make('name: "n" ' + text), x, dy, False, reseed)
    got = run_once(make('name: "n" ' + text), x, dy, True, reseed)
    assert_allclose(got[0], ref[0], rtol=1e-12)
    assert_allclose(got[1], ref[1], rtol=1e-12)
    for a, b in zip(got[2], ref[2], strict=True):
        assert_allclose(a, b, rtol=1e-12)


def test_float32_relu_keeps_dtype():
    layer = make('name: "r" type: "ReLU"', dtype=np.float32)
    bottom, top = Blob((2, 2), backend(), np.float32), Blob((), backend(), np.float32)
    bottom.data[...] = dev([[-1, 2], [3, -4]])
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert top.data.dtype == np.float32
    assert_array_equal(top.data, [[0, 2], [3, 0]])
