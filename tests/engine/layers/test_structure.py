"""Split, Flatten, Reshape, Concat, Slice, Eltwise, Silence: shapes, Caffe's rules, gradients."""

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


def rand(shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def top_shape(text: str, shape) -> tuple[int, ...]:
    layer = make(text)
    bottom, top = blob(rand(shape)), empty()
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    assert_array_equal(top.data.ravel(), bottom.data.ravel())
    return top.shape


# --- Split -----------------------------------------------------------------------------------
def test_split_shares_data_and_sums_diffs():
    layer = make('name: "s" type: "Split"')
    x = rand((2, 3))
    bottom, tops = blob(x), [empty(), empty(), empty()]
    layer.setup([bottom], tops)
    layer.forward([bottom], tops)
    for t in tops:
        assert t.data is bottom.data
    check_layer_gradient(make('name: "s" type: "Split"'), [blob(x)], [empty(), empty(), empty()])
    check_layer_gradient(make('name: "s" type: "Split"'), [blob(x)], [empty()])


# --- Flatten ---------------------------------------------------------------------------------
def test_flatten_shapes():
    assert top_shape('name: "f" type: "Flatten"', (2, 3, 4, 5)) == (2, 60)
    assert top_shape('name: "f" type: "Flatten" flatten_param { axis: 2 }', (2, 3, 4, 5)) == (
        2,
        3,
        20,
    )
    assert top_shape(
        'name: "f" type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', (2, 3, 4, 5)
    ) == (2, 12, 5)
    assert top_shape('name: "f" type: "Flatten" flatten_param { axis: 0 }', (2, 3)) == (6,)
    assert layer_class("FLATTEN").type_name == "Flatten"


def test_flatten_gradient_and_bad_axis():
    check_layer_gradient(make('name: "f" type: "Flatten"'), [blob(rand((2, 3, 2)))], [empty()])
    with pytest.raises(NetError, match="'f'"):
        top_shape('name: "f" type: "Flatten" flatten_param { axis: 4 }', (2, 3))


def test_flatten_backward_survives_replaced_arrays():
    layer = make('name: "f" type: "Flatten"')
    bottom, top = blob(rand((2, 3, 2))), empty()
    layer.setup([bottom], [top])
    top.diff = dev(rand((2, 6), seed=5))  # a consumer replaced the diff array instead of writing it
    layer.backward([top], [True], [bottom])
    assert_array_equal(bottom.diff, top.diff.reshape(2, 3, 2))


# --- Reshape ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, shape, expected",
    [
        ("shape { dim: 0 dim: -1 }", (2, 3, 4), (2, 12)),
        ("shape { dim: -1 dim: 4 }", (2, 3, 4), (6, 4)),
        ("shape { dim: 0 dim: 0 dim: 2 dim: 2 }", (2, 3, 4), (2, 3, 2, 2)),
        ("shape { dim: 3 dim: 8 }", (2, 3, 4), (3, 8)),
        ("shape { dim: 2 dim: 2 } axis: 2", (2, 3, 4), (2, 3, 2, 2)),
        ("shape { dim: 2 dim: -1 } axis: -2", (2, 3, 4), (2, 3, 2, 2)),  # -2: the last axis
        ("shape { dim: 1 dim: -1 } axis: -1", (2, 3, 4), (2, 3, 4, 1, 1)),  # -1: after the last
        ("shape { dim: 6 } axis: 0 num_axes: 2", (2, 3, 4), (6, 4)),
        ("shape { dim: 1 } axis: 1 num_axes: 0", (2, 3, 4), (2, 1, 3, 4)),  # insert an axis
        ("shape { dim: 0 dim: 1 dim: -1 }", (2, 3, 4), (2, 1, 12)),
    ],
)
def test_reshape_copy_and_infer_rules(spec, shape, expected):
    assert top_shape(f'name: "r" type: "Reshape" reshape_param {{ {spec} }}', shape) == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        ("shape { dim: -1 dim: -1 }", "more than one -1"),
        ("shape { dim: 5 dim: -1 }", "cannot infer"),
        ("shape { dim: 7 dim: 2 }", "count"),
        ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", "no axis"),
    ],
)
def test_reshape_errors_name_the_layer(spec, match):
    with pytest.raises(NetError, match=f"'rs'.*{match}"):
        top_shape(f'name: "rs" type: "Reshape" reshape_param {{ {spec} }}', (2, 3, 4))


def test_reshape_gradient():
    layer = make('name: "r" type: "Reshape" reshape_param { shape { dim: -1 } }')
    check_layer_gradient(layer, [blob(rand((2, 3)))], [empty()])


# --- Concat ----------------------------------------------------------------------------------
def test_concat_forward_matches_numpy_on_axis_0_and_1():
    a, b = rand((2, 3, 2), 1), rand((2, 1, 2), 2)
    layer = make('name: "c" type: "Concat"')
    top = empty()
    layer.setup([blob(a), blob(b)], [top])
    layer.forward([blob(a), blob(b)], [top])
    assert_array_equal(top.data, np.concatenate([a, b], axis=1))
    c = rand((4, 3, 2), 3)
    layer = make('name: "c" type: "Concat" concat_param { concat_dim: 0 }')
    layer.setup([blob(a), blob(c)], [top])
    layer.forward([blob(a), blob(c)], [top])
    assert_array_equal(top.data, np.concatenate([a, c], axis=0))
    assert layer_class("CONCAT").type_name == "Concat"


@pytest.mark.parametrize(
    "axis, shapes", [(0, [(2, 3, 2), (1, 3, 2)]), (1, [(2, 3), (2, 1), (2, 2)])]
)
def test_concat_gradient(axis, shapes):
    layer = make(f'name: "c" type: "Concat" concat_param {{ axis: {axis} }}')
    bottoms = [blob(rand(s, i)) for i, s in enumerate(shapes)]
    check_layer_gradient(layer, bottoms, [empty()])


def test_concat_shape_errors():
    layer = make('name: "cat" type: "Concat"')
    with pytest.raises(NetError, match="'cat'.*outside the concat axis"):
        layer.setup([blob(rand((2, 3))), blob(rand((3, 3)))], [empty()])
    with pytest.raises(NetError, match="'cat'.*axes"):
        layer.setup([blob(rand((2, 3))), blob(rand((2, 3, 1)))], [empty()])
    both = make('name: "cat" type: "Concat" concat_param { axis: 1 concat_dim: 1 }')
    with pytest.raises(NetError, match="not both"):
        both.setup([blob(rand((2, 3))), blob(rand((2, 3)))], [empty()])
    far = make('name: "cat" type: "Concat" concat_param { axis: 2 }')
    with pytest.raises(NetError, match="out of range"):
        far.setup([blob(rand((2, 3))), blob(rand((2, 3)))], [empty()])


# --- Slice -----------------------------------------------------------------------------------
def test_slice_points_and_even_split():
    x = rand((2, 6, 2))
    layer = make('name: "s" type: "Slice" slice_param { slice_point: 1 slice_point: 4 }')
    tops = [empty(), empty(), empty()]
    layer.setup([blob(x)], tops)
    layer.forward([blob(x)], tops)
    for t, ref in zip(tops, np.split(x, [1, 4], axis=1), strict=True):
        assert_array_equal(t.data, ref)
    layer = make('name: "s" type: "Slice" slice_param { slice_dim: 0 }')
    tops = [empty(), empty()]
    layer.setup([blob(x)], tops)
    assert [t.shape for t in tops] == [(1, 6, 2), (1, 6, 2)]


def test_slice_gradient_and_errors():
    layer = make('name: "s" type: "Slice" slice_param { axis: -1 slice_point: 2 }')
    check_layer_gradient(layer, [blob(rand((2, 3, 5)))], [empty(), empty()])
    uneven = make('name: "sl" type: "Slice"')
    with pytest.raises(NetError, match="'sl'.*evenly"):
        uneven.setup([blob(rand((2, 5)))], [empty(), empty()])
    wrong = make('name: "sl" type: "Slice" slice_param { slice_point: 2 }')
    with pytest.raises(NetError, match="'sl'"):
        wrong.setup([blob(rand((2, 5)))], [empty(), empty(), empty()])


# --- Eltwise ---------------------------------------------------------------------------------
def test_eltwise_forward_ops():
    a, b, c = rand((2, 3), 1), rand((2, 3), 2), rand((2, 3), 3)
    cases = {
        "operation: PROD": a * b * c,
        "operation: SUM": a + b + c,
        "operation: SUM coeff: 1 coeff: -2 coeff: 0.5": a - 2 * b + 0.5 * c,
        "operation: MAX": np.maximum(np.maximum(a, b), c),
    }
    for spec, ref in cases.items():
        layer = make(f'name: "e" type: "Eltwise" eltwise_param {{ {spec} }}')
        top = empty()
        layer.setup([blob(a), blob(b), blob(c)], [top])
        layer.forward([blob(a), blob(b), blob(c)], [top])
        assert_allclose(top.data, ref, rtol=1e-12, err_msg=spec)


def test_eltwise_max_routes_gradient_with_caffes_tie_rule():
    """Caffe: bottom 1 wins a tie with bottom 0; a later bottom must be strictly larger."""
    a = np.array([[1.0, 2.0, 0.0, 5.0]])
    b = np.array([[1.0, 3.0, 0.0, 4.0]])
    c = np.array([[1.0, 3.0, 7.0, 0.0]])
    bottoms, top = [blob(a), blob(b), blob(c)], empty()
    layer = make('name: "e" type: "Eltwise" eltwise_param { operation: MAX }')
    layer.setup(bottoms, [top])
    layer.forward(bottoms, [top])
    top.diff[...] = dev([[10.0, 20.0, 30.0, 40.0]])
    layer.backward([top], [True, True, True], bottoms)
    assert_array_equal(bottoms[0].diff, [[0, 0, 0, 40]])
    assert_array_equal(bottoms[1].diff, [[10, 20, 0, 0]])
    assert_array_equal(bottoms[2].diff, [[0, 0, 30, 0]])


@pytest.mark.parametrize(
    "spec",
    [
        "operation: PROD",
        "operation: PROD stable_prod_grad: false",
        "operation: SUM",
        "operation: SUM coeff: 0.5 coeff: -3 coeff: 2",
        "operation: MAX",
    ],
)
def test_eltwise_gradients(spec):
    layer = make(f'name: "e" type: "Eltwise" eltwise_param {{ {spec} }}')
    bottoms = [blob(rand((2, 3, 2), s)) for s in (1, 2, 3)]
    check_layer_gradient(layer, bottoms, [empty()])


def test_eltwise_errors():
    layer = make('name: "ew" type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }')
    with pytest.raises(NetError, match="'ew'.*PROD"):
        layer.setup([blob(rand((2,))), blob(rand((2,)))], [empty()])
    layer = make('name: "ew" type: "Eltwise" eltwise_param { coeff: 1 }')
    with pytest.raises(NetError, match="'ew'.*coeff"):
        layer.setup([blob(rand((2,))), blob(rand((2,)))], [empty()])
    layer = make('name: "ew" type: "Eltwise"')
    with pytest.raises(NetError, match="'ew'.*shape"):
        layer.setup([blob(rand((2,))), blob(rand((3,)))], [empty()])


# --- Silence ---------------------------------------------------------------------------------
def test_silence_has_no_tops_and_zero_gradient():
    layer = make('name: "quiet" type: "Silence"')
    a, b = blob(rand((2, 2))), blob(rand((3,)))
    a.diff[...] = 5
    b.diff[...] = 5
    layer.setup([a, b], [])
    layer.forward([a, b], [])
    layer.backward([], [True, False], [a, b])
    assert np.all(host(a.diff) == 0) and np.all(host(b.diff) == 5)
    with pytest.raises(NetError, match="'quiet'"):
        layer.setup([a], [empty()])
