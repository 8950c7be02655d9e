"""Deconvolution: Caffe's output size s*(H-1) + d*(k-1) + 1 - 2p, weights (C_in, C_out/g, kh, kw),
forward against a scatter-loop reference, finite-difference gradients, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.blob import Blob
from engine.errors import NetError
from engine.layer import layer_class
from engine.proto import caffe_pb2
from tests.gradcheck import check_layer_gradient


def _layer(conv: str, name: str = "deconv"):
    text = f'name: "{name}" type: "Deconvolution" convolution_param {{ {conv} }}'
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return layer_class("Deconvolution")(param, dtype=np.float64, seed=3)


def _reference(x, w, b, stride, pad, dil, group):
    """Scatter each input pixel times the kernel into the (uncropped) output, then crop pad."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    sh, sw = stride
    ph, pw = pad
    oh = sh * (h - 1) + dil * (kh - 1) + 1 - 2 * ph
    ow = sw * (wd - 1) + dil * (kw - 1) + 1 - 2 * pw
    cg = c // group
    out = np.zeros((n, og * group, oh + 2 * ph, ow + 2 * pw))
    for b_ in range(n):
        for ci in range(c):
            g = ci // cg
            for i in range(h):
                for j in range(wd):
                    for o in range(og):
                        for ki in range(kh):
                            for kj in range(kw):
                                out[b_, g * og + o, i * sh + ki * dil, j * sw + kj * dil] += (
                                    x[b_, ci, i, j] * w[ci, o, ki, kj]
                                )
    out = out[:, :, ph : ph + oh, pw : pw + ow]
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


@pytest.mark.parametrize(
    ("conv", "stride", "pad", "dil", "group"),
    [
        ("num_output: 3 kernel_size: 3", (1, 1), (0, 0), 1, 1),
        ("num_output: 4 kernel_size: 4 stride: 2 pad: 1", (2, 2), (1, 1), 1, 1),
        ("num_output: 4 kernel_size: 3 stride: 2 group: 2 dilation: 2", (2, 2), (0, 0), 2, 2),
        (
            "num_output: 2 kernel_h: 2 kernel_w: 3 stride_h: 3 stride_w: 1 pad_w: 1",
            (3, 1),
            (0, 1),
            1,
            1,
        ),
    ],
)
def test_forward_matches_scatter_reference_and_caffe_output_size(conv, stride, pad, dil, group):
    fill = ' weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 }'
    layer = _layer(conv + fill)
    rng = np.random.default_rng(0)
    bottom = Blob((2, 4, 3, 4), dtype=np.float64)
    bottom.data[...] = rng.standard_normal(bottom.shape)
    top = Blob((), dtype=np.float64)
    layer.setup([bottom], [top])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert w.shape[0] == 4 and w.shape[1] * group == layer.num_output
    layer.forward([bottom], [top])
    want = _reference(bottom.data, w, b, stride, pad, dil, group)
    assert top.shape == want.shape
    np.testing.assert_allclose(top.data, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "conv",
    [
        "num_output: 3 kernel_size: 3 stride: 2 pad: 1",
        "num_output: 4 kernel_size: 2 group: 2 dilation: 2",
        "num_output: 2 kernel_size: 3 bias_term: false",
    ],
)
def test_gradients_finite_difference(conv):
    fill = ' weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 }'
    layer = _layer(conv + fill)
    rng = np.random.default_rng(1)
    bottom = Blob((2, 2, 3, 3), dtype=np.float64)
    bottom.data[...] = rng.standard_normal(bottom.shape)
    check_layer_gradient(layer, [bottom], [Blob((), dtype=np.float64)])


def test_param_diffs_accumulate_and_bottom_diff_is_overwritten():
    layer = _layer('num_output: 2 kernel_size: 2 stride: 2 weight_filler { type: "gaussian" }')
    bottom, top = Blob((1, 1, 2, 2), dtype=np.float64), Blob((), dtype=np.float64)
    bottom.data[...] = np.arange(4.0).reshape(1, 1, 2, 2)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff[...] = 1.0
    bottom.diff[...] = 100.0
    layer.backward([top], [True], [bottom])
    once_w, once_dx = layer.blobs[0].diff.copy(), bottom.diff.copy()
    layer.backward([top], [True], [bottom])
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once_w)
    np.testing.assert_allclose(bottom.diff, once_dx)
    assert not np.any(once_dx == 100.0)


def test_errors_name_the_layer():
    bottom, top = Blob((1, 3, 4, 4)), Blob(())
    with pytest.raises(NetError, match="'up'.*divisible by group"):
        _layer("num_output: 4 kernel_size: 2 group: 2", name="up").setup([bottom], [top])
    with pytest.raises(NetError, match="'up'.*kernel_size"):
        _layer("num_output: 4", name="up").setup([bottom], [top])
    with pytest.raises(NetError, match="'up'.*pad too large"):
        _layer("num_output: 4 kernel_size: 1 pad: 2", name="up").setup([Blob((1, 3, 1, 1))], [top])
