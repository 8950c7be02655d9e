"""Input and DummyData layers (Caffe's input_layer / dummy_data_layer behaviour)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layer import layer_class
from engine.proto import caffe_pb2
from tests.backends import Blob, host
from tests.backends import current as backend


def make(text: str, seed: int = 0):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return layer_class(param.type, param.name)(param, "TRAIN", backend(), np.float32, seed)


def test_input_shapes_one_per_top():
    layer = make(
        'name: "in" type: "Input" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } }'
    )
    tops = [Blob(), Blob()]
    layer.setup([], tops)
    assert tops[0].shape == (2, 3) and tops[1].shape == (2,)


def test_input_one_shape_shared_by_all_tops_and_user_data_kept():
    layer = make('name: "in" type: "Input" input_param { shape { dim: 4 dim: 1 dim: 2 } }')
    tops = [Blob(), Blob()]
    layer.setup([], tops)
    assert tops[0].shape == tops[1].shape == (4, 1, 2)
    tops[0].data[...] = 7
    layer.reshape([], tops)
    layer.forward([], tops)
    assert np.all(host(tops[0].data) == 7)


def test_input_wrong_number_of_shapes_names_layer():
    layer = make('name: "bad_in" type: "Input" input_param { shape { dim: 1 } shape { dim: 2 } }')
    with pytest.raises(NetError, match="bad_in"):
        layer.setup([], [Blob(), Blob(), Blob()])


def test_dummy_data_defaults_to_constant_zero_with_legacy_dims():
    layer = make(
        'name: "d" type: "DummyData" dummy_data_param { num: 2 channels: 3 height: 4 width: 5 }'
    )
    top = Blob()
    layer.setup([], [top])
    assert top.shape == (2, 3, 4, 5)
    top.data[...] = 1
    layer.forward([], [top])
    assert np.all(host(top.data) == 1), "constant fillers are not refilled by forward"


def test_dummy_data_constant_filled_at_setup_per_top_fillers():
    """Caffe's DummyData fills constant tops at setup and draws the others only in Forward
    (dummy_data_layer.cpp runs Forward once with refill_ inverted): setup takes no draw."""
    layer = make(
        'name: "d" type: "DummyData" dummy_data_param { shape { dim: 3 } shape { dim: 2 dim: 2 }'
        ' data_filler { type: "constant" value: 4 } data_filler { type: "uniform" min: 1 max: 2 }'
        " }"
    )
    tops = [Blob(), Blob()]
    before = layer.stream.get_state()
    layer.setup([], tops)
    assert layer.stream.get_state() == before
    assert np.all(host(tops[0].data) == 4)
    assert tops[1].shape == (2, 2)
    layer.forward([], tops)
    second = host(tops[1].data)
    assert np.all((second >= 1) & (second <= 2))
    assert layer.stream.get_state() != before


def test_dummy_data_refills_random_fillers_every_forward():
    """Caffe refills non-constant fillers in each Forward."""
    layer = make(
        'name: "d" type: "DummyData" dummy_data_param { shape { dim: 50 }'
        ' data_filler { type: "gaussian" std: 1 } }'
    )
    top = Blob()
    layer.setup([], [top])
    first = host(top.data).copy()
    layer.forward([], [top])
    assert not np.array_equal(first, host(top.data))
    assert abs(float(top.data.std()) - 1) < 0.5


def test_dummy_data_bad_filler_count_is_an_error():
    layer = make(
        'name: "dd" type: "DummyData" dummy_data_param { shape { dim: 1 }'
        " data_filler { value: 1 } data_filler { value: 2 } }"
    )
    with pytest.raises(NetError, match="dd"):
        layer.setup([], [Blob(), Blob(), Blob()])


def test_dummy_data_shape_and_legacy_dims_conflict():
    layer = make(
        'name: "dd" type: "DummyData" dummy_data_param { shape { dim: 1 } num: 1 channels: 1'
        " height: 1 width: 1 }"
    )
    with pytest.raises(NetError, match="not both"):
        layer.setup([], [Blob()])


def test_dummy_data_is_registered_under_v1_name():
    assert layer_class("DUMMY_DATA").type_name == "DummyData"
