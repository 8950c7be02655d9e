"""Parameter: no bottoms, the top is the layer's one blob of parameter_param.shape (zeros)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import NetError
from tests.backends import Blob, assert_array_equal, dev, host
from tests.engine.layers._build import make_layer
from tests.gradcheck import check_layer_gradient


def test_top_is_the_param_and_gradient_flows_to_it():
    top = Blob(dtype=np.float64)
    layer = make_layer("Parameter", "parameter_param { shape { dim: 2 dim: 3 } }")
    layer.setup([], [top])
    assert top.shape == (2, 3) and layer.blobs[0].shape == (2, 3)
    assert np.all(host(layer.blobs[0].data) == 0)
    layer.blobs[0].data[...] = dev(np.arange(6.0).reshape(2, 3))
    layer.forward([], [top])
    assert_array_equal(top.data, layer.blobs[0].data)
    check_layer_gradient(layer, [], [top])


def test_missing_shape_names_the_layer():
    with pytest.raises(NetError, match="'p'.*parameter_param.shape"):
        make_layer("Parameter", name="p").setup([], [Blob()])
