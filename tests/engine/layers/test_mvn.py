"""MVN: per (sample, channel) or per sample (across_channels) mean subtraction and division by
sqrt(E[(x-mean)^2]) + eps, as Caffe's mvn_layer computes; gradients by finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.backends import Blob, assert_allclose, dev, host
from tests.engine.layers._build import make_layer, random_blob
from tests.gradcheck import check_layer_gradient


def _reference(x, normalize, across, eps):
    n, c = x.shape[:2]
    rows = x.reshape(n, -1) if across else x.reshape(n * c, -1)
    out = np.empty_like(rows)
    for i, r in enumerate(rows):
        mean = sum(r) / len(r)
        centred = [v - mean for v in r]
        if normalize:
            std = math.sqrt(sum(v * v for v in centred) / len(r)) + eps
            centred = [v / std for v in centred]
        out[i] = centred
    return out.reshape(x.shape)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("across", [True, False])
def test_forward_matches_reference_and_gradient(normalize, across):
    x = random_blob((2, 3, 2, 3), scale=3.0)
    x.data += 1.5
    top = Blob(dtype=np.float64)
    body = (
        f"mvn_param {{ normalize_variance: {str(normalize).lower()} "
        f"across_channels: {str(across).lower()} eps: 0.25 }}"
    )
    layer = make_layer("MVN", body)
    layer.setup([x], [top])
    layer.forward([x], [top])
    assert_allclose(top.data, _reference(host(x.data), normalize, across, 0.25), rtol=1e-12)
    if normalize:  # Caffe's gradient is exact for eps = 0; check with a negligible eps
        layer = make_layer("MVN", body.replace("eps: 0.25", "eps: 1e-12"))
    check_layer_gradient(layer, [x], [Blob(dtype=np.float64)])


def test_in_place_gives_the_same_values_and_gradient():
    x = random_blob((2, 2, 3), seed=4)
    dy = np.random.default_rng(5).standard_normal(x.shape)
    results = []
    for in_place in (False, True):
        b = Blob(x.shape, dtype=np.float64)
        b.data[...] = dev(host(x.data))
        t = b if in_place else Blob(dtype=np.float64)
        layer = make_layer("MVN")
        layer.setup([b], [t])
        layer.forward([b], [t])
        y = host(t.data).copy()
        t.diff[...] = dev(dy)
        layer.backward([t], [True], [b])
        results.append((y, host(b.diff).copy()))
    assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    assert_allclose(results[0][1], results[1][1], rtol=1e-12)
