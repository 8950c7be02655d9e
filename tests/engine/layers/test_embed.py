"""Embed: rows of W (input_dim, num_output) picked by integer indices, plus bias; param
gradients by finite differences; indices get no gradient; bad indices raise naming the layer."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import NetError
from tests.backends import Blob, assert_array_equal, dev
from tests.engine.layers._build import make_layer
from tests.gradcheck import check_layer_gradient

_BODY = (
    "embed_param { num_output: 3 input_dim: 5 bias_term: %s "
    'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } }'
)


@pytest.mark.parametrize("bias", [True, False])
def test_forward_lookup_and_param_gradients(bias):
    idx = Blob((2, 3), dtype=np.float64)
    idx.data[...] = dev([[0, 4, 2], [2, 2, 1]])  # repeats: gradients must add up
    top = Blob(dtype=np.float64)
    layer = make_layer("Embed", _BODY % str(bias).lower())
    layer.setup([idx], [top])
    layer.forward([idx], [top])
    assert top.shape == (2, 3, 3)
    w = layer.blobs[0].data
    for i in range(2):
        for j in range(3):
            want = w[int(idx.data[i, j])] + (layer.blobs[1].data if bias else 0)
            assert_array_equal(top.data[i, j], want)
    check_layer_gradient(layer, [idx], [top], check_bottoms=[])
    assert not layer.allow_force_backward(0)


def test_bad_indices_and_backward_to_indices_raise_naming_the_layer():
    layer = make_layer("Embed", _BODY % "true", name="emb")
    idx, top = Blob((1,), dtype=np.float64), Blob(dtype=np.float64)
    layer.setup([idx], [top])
    for bad in (5.0, -1.0, 1.5):
        idx.data[...] = dev(bad)
        with pytest.raises(NetError, match="'emb'.*input_dim"):
            layer.forward([idx], [top])
    idx.data[...] = 1
    layer.forward([idx], [top])
    with pytest.raises(NetError, match="'emb'.*indices"):
        layer.backward([top], [True], [idx])
