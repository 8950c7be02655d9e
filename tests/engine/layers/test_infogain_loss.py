"""InfogainLoss (Caffe 1.0, softmax inside): loss = -sum H[label, k] log p_k / normalizer, H from
bottom 2 or a .binaryproto source; H = I equals SoftmaxWithLoss; finite-difference gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import NetError
from engine.proto_io import write_blob_array
from tests.backends import Blob, assert_allclose, dev, host
from tests.engine.layers._build import make_layer, random_blob
from tests.gradcheck import check_layer_gradient


def _labels(shape, classes, seed=3):
    b = Blob(shape, dtype=np.float64)
    b.data[...] = dev(np.random.default_rng(seed).integers(0, classes, shape))
    return b


def _reference(x, labels, h):
    n, c = x.shape[:2]
    inner = int(np.prod(x.shape[2:], dtype=int))
    x3 = x.reshape(n, c, inner)
    total = 0.0
    for i in range(n):
        for j in range(inner):
            z = [math.exp(v) for v in x3[i, :, j]]
            s = sum(z)
            lab = int(labels.reshape(n, inner)[i, j])
            total -= sum(h[lab, k] * math.log(z[k] / s) for k in range(c))
    return total / (n * inner)


def test_forward_matches_reference_with_matrix_bottom_and_gradient():
    x, lab = random_blob((3, 4, 2)), _labels((3, 1, 2), 4)
    h = Blob((1, 1, 4, 4), dtype=np.float64)
    h.data[...] = dev(np.random.default_rng(9).uniform(0, 1, (1, 1, 4, 4)))
    top = Blob(dtype=np.float64)
    layer = make_layer("InfogainLoss")
    layer.setup([x, lab, h], [top])
    layer.forward([x, lab, h], [top])
    want = _reference(host(x.data), host(lab.data), host(h.data).reshape(4, 4))
    assert float(top.data) == pytest.approx(want, rel=1e-12)
    check_layer_gradient(layer, [x, lab, h], [top], check_bottoms=[0])


def test_identity_source_equals_softmax_with_loss(tmp_path):
    path = tmp_path / "h.binaryproto"
    write_blob_array(path, np.eye(5, dtype=np.float32).reshape(1, 1, 5, 5))
    x, lab = random_blob((4, 5), seed=1), _labels((4,), 5)
    tops = []
    for kind, body in (
        ("InfogainLoss", f'infogain_loss_param {{ source: "{path}" }}'),
        ("SoftmaxWithLoss", ""),
    ):
        top = Blob(dtype=np.float64)
        layer = make_layer(kind, body)
        layer.setup([x, lab], [top])
        layer.forward([x, lab], [top])
        top.diff[...] = 1.0
        layer.backward([top], [True, False], [x, lab])
        tops.append((float(top.data), x.diff.copy()))
    assert tops[0][0] == pytest.approx(tops[1][0], rel=1e-12)
    assert_allclose(tops[0][1], tops[1][1], rtol=1e-10, atol=1e-15)


def test_errors_name_the_layer(tmp_path):
    x, lab = Blob((2, 3)), Blob((2,))
    with pytest.raises(NetError, match="'ig'.*source"):
        make_layer("InfogainLoss", name="ig").setup([x, lab], [Blob()])
    with pytest.raises(NetError, match="'ig'.*missing.binaryproto"):
        body = f'infogain_loss_param {{ source: "{tmp_path}/missing.binaryproto" }}'
        make_layer("InfogainLoss", body, name="ig").setup([x, lab], [Blob()])
    with pytest.raises(NetError, match="'ig'.*needs 3x3"):
        make_layer("InfogainLoss", name="ig").setup([x, lab, Blob((2, 2))], [Blob()])
