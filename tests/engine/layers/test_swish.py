"""Swish: y = x * sigmoid(beta x); Caffe's gradient beta*y + s*(1 - beta*y); works in place."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.backends import Blob, assert_allclose, dev, host
from tests.engine.layers._build import make_layer, random_blob
from tests.gradcheck import check_layer_gradient


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
def test_forward_and_gradient(beta):
    x = random_blob((2, 3, 4), scale=2.0)
    host(x.data).reshape(-1)[:2] = [60.0, -60.0]  # stable at large |x|
    top = Blob(dtype=np.float64)
    layer = make_layer("Swish", f"swish_param {{ beta: {beta} }}")
    layer.setup([x], [top])
    layer.forward([x], [top])
    want = [v / (1 + math.exp(-beta * v)) for v in host(x.data).reshape(-1)]
    assert_allclose(top.data.reshape(-1), want, rtol=1e-12, atol=1e-15)
    check_layer_gradient(layer, [x], [top])


def test_in_place_backward_matches_out_of_place():
    x = random_blob((3, 4), seed=1)
    dy = np.random.default_rng(2).standard_normal(x.shape)
    grads = []
    for in_place in (False, True):
        b = Blob(x.shape, dtype=np.float64)
        b.data[...] = dev(host(x.data))
        t = b if in_place else Blob(dtype=np.float64)
        layer = make_layer("Swish")
        layer.setup([b], [t])
        layer.forward([b], [t])
        t.diff[...] = dev(dy)
        layer.backward([t], [True], [b])
        grads.append(host(b.diff).copy())
    assert_allclose(grads[0], grads[1], rtol=1e-12)
