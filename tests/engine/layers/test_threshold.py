"""Threshold: y = 1 where x > threshold (strictly), else 0; Caffe gives it no backward."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import NetError
from tests.backends import Blob, assert_array_equal
from tests.engine.layers._build import make_layer, random_blob


@pytest.mark.parametrize("t", [0.0, 0.3, -1.0])
def test_forward_is_strict_step(t):
    x = random_blob((2, 3, 4))
    x.data.reshape(-1)[0] = t  # exactly at the threshold gives 0
    top = Blob(dtype=np.float64)
    layer = make_layer("Threshold", f"threshold_param {{ threshold: {t} }}")
    layer.setup([x], [top])
    layer.forward([x], [top])
    want = np.array([1.0 if v > t else 0.0 for v in x.data.reshape(-1)]).reshape(x.shape)
    assert_array_equal(top.data, want)


def test_in_place_and_no_backward():
    x = random_blob((5,))
    orig = x.data.copy()
    layer = make_layer("Threshold", name="step")
    layer.setup([x], [x])
    layer.forward([x], [x])
    assert_array_equal(x.data, (orig > 0).astype(float))
    with pytest.raises(NetError, match="'step'"):
        layer.backward([x], [True], [x])
