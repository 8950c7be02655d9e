"""Clip: y = min(max(x, min), max); gradient passes where min <= x <= max (Caffe's rule)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import NetError
from tests.backends import Blob, assert_array_equal, dev
from tests.engine.layers._build import make_layer, random_blob
from tests.gradcheck import check_layer_gradient


def test_forward_and_gradient():
    x = random_blob((2, 3, 4), scale=2.0)
    top = Blob(dtype=np.float64)
    layer = make_layer("Clip", "clip_param { min: -1 max: 0.5 }")
    layer.setup([x], [top])
    layer.forward([x], [top])
    want = [min(max(v, -1.0), 0.5) for v in x.data.reshape(-1)]
    assert_array_equal(top.data.reshape(-1), want)
    near = lambda a: (np.abs(a + 1) < 1e-4) | (np.abs(a - 0.5) < 1e-4)  # noqa: E731
    check_layer_gradient(layer, [x], [top], kink=near)


def test_in_place_gradient_uses_the_input_and_bounds_are_inclusive():
    x = Blob((4,), dtype=np.float64)
    x.data[...] = dev([-2.0, -1.0, 0.5, 3.0])
    layer = make_layer("Clip", "clip_param { min: -1 max: 0.5 }")
    layer.setup([x], [x])
    layer.forward([x], [x])
    x.diff[...] = 1.0
    layer.backward([x], [True], [x])
    assert_array_equal(x.diff, [0.0, 1.0, 1.0, 0.0])


def test_errors_name_the_layer():
    with pytest.raises(NetError, match="'cl'.*greater than max"):
        make_layer("Clip", "clip_param { min: 2 max: 1 }", "cl").setup([Blob((2,))], [Blob()])
