"""Crop (Caffe 1.0): axis default 2, offset none/one/per-axis, crops bottom 0 to bottom 1's shape."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layer import layer_class
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_array_equal, dev, host
from tests.backends import current as backend
from tests.gradcheck import check_layer_gradient


def _layer(crop: str = "", name: str = "crop"):
    text = f'name: "{name}" type: "Crop" crop_param {{ {crop} }}'
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return layer_class("Crop")(param, xp=backend(), dtype=np.float64)


def _run(crop, s0, s1):
    a, b, top = Blob(s0, dtype=np.float64), Blob(s1, dtype=np.float64), Blob(dtype=np.float64)
    a.data[...] = dev(np.arange(a.count).reshape(s0))
    layer = _layer(crop)
    layer.setup([a, b], [top])
    layer.forward([a, b], [top])
    return a, top


def _loop_crop(x, shape, offsets):
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        out[idx] = x[tuple(i + o for i, o in zip(idx, offsets, strict=True))]
    return out


@pytest.mark.parametrize(
    ("crop", "s0", "s1", "axis", "offsets"),
    [
        ("", (2, 3, 6, 7), (1, 1, 4, 4), 2, (0, 0, 0, 0)),  # default axis 2, offsets 0
        ("offset: 1", (2, 3, 6, 7), (5, 5, 4, 4), 2, (0, 0, 1, 1)),  # one offset for all axes
        ("axis: 1 offset: 1 offset: 2 offset: 0", (2, 4, 6, 7), (9, 2, 4, 7), 1, (0, 1, 2, 0)),
        ("axis: -1 offset: 3", (2, 3, 6, 7), (1, 1, 1, 4), 3, (0, 0, 0, 3)),
    ],
)
def test_forward_matches_loop_reference(crop, s0, s1, axis, offsets):
    a, top = _run(crop, s0, s1)
    want_shape = tuple(s0[i] if i < axis else s1[i] for i in range(len(s0)))
    assert top.shape == want_shape
    assert_array_equal(top.data, _loop_crop(a.data, want_shape, offsets))


def test_gradient_finite_difference_and_zero_for_reference_bottom():
    a, b = Blob((2, 2, 5, 4), dtype=np.float64), Blob((1, 1, 3, 2), dtype=np.float64)
    a.data[...] = dev(np.random.default_rng(0).standard_normal(a.shape))
    layer = _layer("offset: 1 offset: 2")
    check_layer_gradient(layer, [a, b], [Blob(dtype=np.float64)], check_bottoms=[0])
    b.diff[...] = 7.0
    top = Blob(dtype=np.float64)
    layer.setup([a, b], [top])
    layer.forward([a, b], [top])
    top.diff[...] = 1.0
    layer.backward([top], [True, True], [a, b])
    assert np.all(host(b.diff) == 0)
    assert a.diff.sum() == top.count


def test_errors_name_the_layer():
    with pytest.raises(NetError, match="'cut'.*invalid crop on axis 3"):
        layer = _layer("offset: 0 offset: 3", name="cut")
        layer.setup([Blob((1, 1, 4, 4)), Blob((1, 1, 2, 2))], [Blob()])
    with pytest.raises(NetError, match="'cut'.*offset has 3 values"):
        layer = _layer("offset: 0 offset: 0 offset: 0", name="cut")
        layer.setup([Blob((1, 1, 4, 4)), Blob((1, 1, 2, 2))], [Blob()])
    with pytest.raises(NetError, match="'cut'.*same number of axes"):
        _layer(name="cut").setup([Blob((1, 1, 4, 4)), Blob((1, 2, 2))], [Blob()])
