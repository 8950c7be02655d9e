"""Tile (repeat whole blocks along axis) and Reduction (SUM/ASUM/SUMSQ/MEAN from axis on, coeff)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layer import layer_class
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_allclose, assert_array_equal, dev, host
from tests.backends import current as backend
from tests.gradcheck import check_layer_gradient


def _layer(kind: str, body: str, name: str = "l"):
    param = text_format.Parse(f'name: "{name}" type: "{kind}" {body}', caffe_pb2.LayerParameter())
    return layer_class(kind)(param, xp=backend(), dtype=np.float64)


def _bottom(shape, seed=0):
    b = Blob(shape, dtype=np.float64)
    b.data[...] = dev(np.random.default_rng(seed).standard_normal(shape))
    return b


@pytest.mark.parametrize(("axis", "tiles"), [(1, 3), (0, 2), (-1, 2), (2, 1)])
def test_tile_forward_matches_loop_reference_and_gradient(axis, tiles):
    x = _bottom((2, 3, 2))
    top = Blob(dtype=np.float64)
    layer = _layer("Tile", f"tile_param {{ axis: {axis} tiles: {tiles} }}")
    layer.setup([x], [top])
    layer.forward([x], [top])
    ax = axis % 3
    want = np.empty(top.shape)
    for idx in np.ndindex(*top.shape):  # top index i along axis reads bottom index i % size
        src = list(idx)
        src[ax] = idx[ax] % x.shape[ax]
        want[idx] = host(x.data)[tuple(src)]
    assert_array_equal(top.data, want)
    check_layer_gradient(layer, [x], [top])


def test_tile_errors_name_the_layer():
    with pytest.raises(NetError, match="'rep'.*tiles must be given and positive"):
        _layer("Tile", "tile_param { axis: 1 }", "rep").setup([Blob((2, 3))], [Blob()])
    with pytest.raises(NetError, match="'rep'.*axis"):
        _layer("Tile", "tile_param { axis: 4 tiles: 2 }", "rep").setup([Blob((2, 3))], [Blob()])


def _reduce_ref(x, op, axis, coeff):
    lead = x.shape[:axis]
    rows = x.reshape(int(np.prod(lead, dtype=int)), -1)
    out = np.empty(rows.shape[0])
    for i, r in enumerate(rows):
        vals = {"SUM": r, "ASUM": np.abs(r), "SUMSQ": r * r, "MEAN": r / r.size}[op]
        total = 0.0
        for v in vals:
            total += v
        out[i] = coeff * total
    return out.reshape(lead)


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize(("axis", "coeff"), [(0, 1.0), (1, -2.5), (2, 0.5), (-1, 3.0)])
def test_reduction_forward_and_gradient(op, axis, coeff):
    x = _bottom((2, 3, 4), seed=1)
    top = Blob(dtype=np.float64)
    layer = _layer(
        "Reduction", f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}"
    )
    layer.setup([x], [top])
    layer.forward([x], [top])
    ax = axis % 3
    assert top.shape == x.shape[:ax]
    assert_allclose(top.data, _reduce_ref(host(x.data), op, ax, coeff), rtol=1e-12)
    check_layer_gradient(layer, [x], [top], kink=lambda a: np.abs(a) < 1e-4)


def test_reduction_default_is_sum_of_everything_to_a_scalar():
    x = _bottom((2, 3), seed=2)
    top = Blob(dtype=np.float64)
    layer = _layer("Reduction", "")
    layer.setup([x], [top])
    layer.forward([x], [top])
    assert top.shape == ()
    assert float(top.data) == pytest.approx(float(np.sum(host(x.data))))


def test_reduction_asum_gradient_is_zero_at_zero_as_caffe_sign():
    x = Blob((1, 3), dtype=np.float64)
    x.data[...] = dev([[-2.0, 0.0, 5.0]])
    top = Blob(dtype=np.float64)
    layer = _layer("Reduction", "reduction_param { operation: ASUM axis: 1 }")
    layer.setup([x], [top])
    layer.forward([x], [top])
    top.diff[...] = 1.0
    layer.backward([top], [True], [x])
    assert_array_equal(x.diff, [[-1.0, 0.0, 1.0]])
