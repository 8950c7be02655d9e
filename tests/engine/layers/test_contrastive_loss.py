"""ContrastiveLoss: 1/(2N) sum [y d^2 + (1-y) max(m - d, 0)^2] (legacy: max(m - d^2, 0)),
against a loop reference; finite-difference gradients on a and b (margin away from kinks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import NetError
from tests.backends import Blob, dev, host
from tests.engine.layers._build import make_layer, random_blob
from tests.gradcheck import check_layer_gradient


def _reference(a, b, y, margin, legacy):
    total = 0.0
    for i in range(a.shape[0]):
        d2 = sum((p - q) ** 2 for p, q in zip(a[i].ravel(), b[i].ravel(), strict=True))
        if int(y.ravel()[i]):
            total += d2
        elif legacy:
            total += max(margin - d2, 0.0)
        else:
            total += max(margin - math.sqrt(d2), 0.0) ** 2
    return total / a.shape[0] / 2


@pytest.mark.parametrize("legacy", [False, True])
def test_forward_matches_reference_and_gradient(legacy):
    a, b = (
        random_blob((6, 3, 1, 1), seed=1, scale=0.6),
        random_blob((6, 3, 1, 1), seed=2, scale=0.6),
    )
    y = Blob((6, 1, 1, 1), dtype=np.float64)
    y.data[...] = dev(np.array([1, 0, 0, 1, 0, 0.0]).reshape(y.shape))
    top = Blob(dtype=np.float64)
    body = f"contrastive_loss_param {{ margin: 1.5 legacy_version: {str(legacy).lower()} }}"
    layer = make_layer("ContrastiveLoss", body)
    layer.setup([a, b, y], [top])
    layer.forward([a, b, y], [top])
    want = _reference(host(a.data), host(b.data), host(y.data), 1.5, legacy)
    assert float(top.data) == pytest.approx(want, rel=1e-12)
    # Caffe's non-legacy gradient divides by d + 1e-4, so it is only close to the exact one
    rtol = 1e-5 if legacy else 2e-3
    check_layer_gradient(layer, [a, b, y], [top], check_bottoms=[0, 1], rtol=rtol)


def test_errors_name_the_layer():
    with pytest.raises(NetError, match="'pair'.*\\(N, C, 1, 1\\)"):
        make_layer("ContrastiveLoss", name="pair").setup(
            [Blob((2, 3, 2, 1)), Blob((2, 3, 2, 1)), Blob((2, 1, 1, 1))], [Blob()]
        )
