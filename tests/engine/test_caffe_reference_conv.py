"""Convolution against loops transcribed from Caffe 1.0's im2col.cpp + GEMM (forward, weight,
bias and data gradients), under each family of plans (engine.layers.conv_plan) on NumPy and the
device path on the CuPy stand-in.

On a device the planner has one plan (untiled, channels first) whatever family is asked for, so
there only the default and the forced output tiles (which the device code also runs) are checked;
the NumPy families that a device ignores would rerun the same path.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from google.protobuf import text_format

from engine.layer import TRAIN, layer_class
from engine.layers.conv_plan import Force
from engine.proto import caffe_pb2
from tests import backends
from tests.backends import Blob, assert_allclose, dev, host
from tests.backends import current as backend

F64 = np.float64

# Families of plans, each where the geometry allows it; "tiled" forces output tiles (3x1, 2x2,
# 2x1 or 1x2, whichever first divides the output) and data-gradient tiles on the default.
PLANS = {
    "default": Force("channels_first"),
    "channels_last": Force("channels_last"),
    "tiled": Force(
        "channels_first",
        tiles=((3, 1), (2, 2), (2, 1), (1, 2)),
        dgrad_tiles=((2, 3), (3, 1), (2, 1)),
    ),
    "rows": Force("fold_rows", fold_jit=True),
    "rows_numpy": Force("fold_rows", fold_jit=False),
}
DEVICE_PLANS = ("default", "tiled")  # the others plan as "default" off NumPy
PATHS = [("numpy", plan) for plan in PLANS] + [
    (name, plan) for name in backends.BACKENDS if name != "numpy" for plan in DEVICE_PLANS
]


@pytest.fixture(params=PATHS, ids=[f"{name}-{plan}" for name, plan in PATHS])
def forced_plan(request: pytest.FixtureRequest) -> Iterator[Force]:
    """The array module (made current, as the `xp` fixture does) and the plan family to force."""
    name, plan = request.param
    previous = backends.use(backends.BACKENDS[name])
    backends.fakecupy._standin.reset()
    try:
        yield PLANS[plan]
    finally:
        backends.use(previous)


def ref_conv_forward(x, w, b, k, s, p, d, group):
    """Caffe's im2col + GEMM written as loops: out-of-image taps read zero."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    oh = (h + 2 * p[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (wd + 2 * p[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
    cg, og = c // group, o // group
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // og
        for yy in range(oh):
            for xx in range(ow):
                acc = np.full(n, b[oc])
                for ci in range(cg):
                    for i in range(k[0]):
                        r = yy * s[0] - p[0] + i * d[0]
                        if not 0 <= r < h:
                            continue
                        for j in range(k[1]):
                            q = xx * s[1] - p[1] + j * d[1]
                            if 0 <= q < wd:
                                acc += w[oc, ci, i, j] * x[:, g * cg + ci, r, q]
                y[:, oc, yy, xx] = acc
    return y


def ref_conv_backward(x, w, dy, k, s, p, d, group):
    """Caffe's weight gradient (col^T GEMM) and col2im data gradient, as loops."""
    n, c, h, wd = x.shape
    _, o, oh, ow = dy.shape
    cg, og = c // group, o // group
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), dy.sum(axis=(0, 2, 3))
    for oc in range(o):
        g = oc // og
        for yy in range(oh):
            for xx in range(ow):
                g_out = dy[:, oc, yy, xx]
                for ci in range(cg):
                    for i in range(k[0]):
                        r = yy * s[0] - p[0] + i * d[0]
                        if not 0 <= r < h:
                            continue
                        for j in range(k[1]):
                            q = xx * s[1] - p[1] + j * d[1]
                            if 0 <= q < wd:
                                dw[oc, ci, i, j] += g_out @ x[:, g * cg + ci, r, q]
                                dx[:, g * cg + ci, r, q] += w[oc, ci, i, j] * g_out
    return dx, dw, db


CONV_CASES = [
    # (input shape, num_output, geometry text, k, s, p, d, group)
    ((2, 3, 7, 6), 4, "kernel_size: 3 pad: 1 stride: 2", (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (
        (2, 4, 9, 8),
        6,
        "kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 0 stride_h: 2 stride_w: 3 dilation: 2 group: 2",
        (3, 2),
        (2, 3),
        (2, 0),
        (2, 2),
        2,
    ),
    ((3, 2, 5, 5), 3, "kernel_size: 3 pad: 1", (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 4, 8, 9), 4, "kernel_size: 3 dilation: 2 group: 2", (3, 3), (1, 1), (0, 0), (2, 2), 2),
    ((2, 2, 5, 21), 2, "kernel_size: 3 pad: 2", (3, 3), (1, 1), (2, 2), (1, 1), 1),
    (
        (1, 6, 11, 5),
        6,
        "kernel_size: 5 stride: 4 pad: 2 group: 3",
        (5, 5),
        (4, 4),
        (2, 2),
        (1, 1),
        3,
    ),
    ((2, 3, 4, 4), 5, "kernel_size: 1 pad: 0", (1, 1), (1, 1), (0, 0), (1, 1), 1),
    (
        (2, 2, 6, 7),
        2,
        "kernel_size: 2 kernel_size: 3 pad: 1 pad: 0 stride: 1 stride: 2",
        (2, 3),
        (1, 2),
        (1, 0),
        (1, 1),
        1,
    ),
    ((2, 3, 4, 4), 3, "kernel_size: 2 group: 3", (2, 2), (1, 1), (0, 0), (1, 1), 3),  # depthwise
    ((2, 2, 4, 4), 3, "kernel_size: 3 bias_term: false", (3, 3), (1, 1), (0, 0), (1, 1), 1),
]


@pytest.mark.parametrize("shape,num_output,geom,k,s,p,d,group", CONV_CASES)
def test_convolution_matches_caffe_im2col_loops(
    shape, num_output, geom, k, s, p, d, group, forced_plan
):
    """Conv forward, weight/bias/data gradients with pad_h/pad_w, stride, dilation, group and
    no bias, under each family of plans (the default channels-first choice, channels last,
    output tiles, kernel rows folded into the GEMM: engine.layers.conv_rows, which takes any
    geometry, with its data movement compiled or as NumPy passes)."""
    rng = np.random.default_rng(7)
    text = (
        f'name: "conv" type: "Convolution" convolution_param {{ num_output: {num_output} {geom}'
        ' weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } }'
    )
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = layer_class(param.type, param.name)(param, TRAIN, backend(), F64, 0)
    layer.force_plans(forced_plan)
    x = rng.standard_normal(shape)
    bottom, top = Blob(shape, dtype=F64), Blob(dtype=F64)
    bottom.data[...] = dev(x)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    w = host(layer.blobs[0].data).copy()
    b = host(layer.blobs[1].data).copy() if len(layer.blobs) > 1 else np.zeros(num_output)
    assert w.shape == (num_output, shape[1] // group, *k)
    want = ref_conv_forward(x, w, b, k, s, p, d, group)
    assert top.shape == want.shape
    assert_allclose(top.data, want, rtol=1e-12, atol=1e-12)

    dy = rng.standard_normal(want.shape)
    top.diff[...] = dev(dy)
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.backward([top], [True], [bottom])
    dx, dw, db = ref_conv_backward(x, w, dy, k, s, p, d, group)
    assert_allclose(bottom.diff, dx, rtol=1e-12, atol=1e-12)
    assert_allclose(layer.blobs[0].diff, dw, rtol=1e-12, atol=1e-12)
    if len(layer.blobs) > 1:
        assert_allclose(layer.blobs[1].diff, db, rtol=1e-12, atol=1e-12)
