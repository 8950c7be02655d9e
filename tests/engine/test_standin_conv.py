"""Convolution, Deconvolution, Pooling and InnerProduct on the CuPy path (the strict stand-in).

Their own test files run under NumPy only for now (tests/conftest.py NUMPY_ONLY: those layers are
being rewritten on another branch); the Caffe-transcribed references for them run under both
backends in test_caffe_reference.py. Here: finite-difference gradients in float64 on the
stand-in, and NumPy == stand-in at sizes where the CPU path splits work over threads and chunks
(the device path must give the same numbers with one pass per GEMM and no host threads).
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.backend import to_numpy
from engine.blob import Blob
from engine.layer import layer_class
from engine.proto import caffe_pb2
from tests.cupy_standin import fakecupy
from tests.gradcheck import check_layer_gradient

F64 = np.float64

GRAD_CASES = {
    "conv pad stride": (
        "Convolution",
        "convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 2 "
        'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" } }',
        (2, 2, 5, 5),
    ),
    "conv group dilation": (
        "Convolution",
        "convolution_param { num_output: 4 group: 2 kernel_h: 2 kernel_w: 3 dilation: 2 "
        'weight_filler { type: "gaussian" std: 0.5 } }',
        (1, 4, 6, 7),
    ),
    "deconv": (
        "Deconvolution",
        "convolution_param { num_output: 2 kernel_size: 3 stride: 2 pad: 1 "
        'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" } }',
        (2, 3, 3, 4),
    ),
    "max pool": (
        "Pooling",
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }",
        (2, 2, 5, 6),
    ),
    "ave pool": ("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 }", (1, 3, 7, 7)),
    "inner product": (
        "InnerProduct",
        'inner_product_param { num_output: 4 weight_filler { type: "gaussian" } '
        'bias_filler { type: "gaussian" } }',
        (3, 2, 2, 2),
    ),
    "inner product transpose": (
        "InnerProduct",
        'inner_product_param { num_output: 3 axis: 2 transpose: true weight_filler { type: "gaussian" } }',
        (2, 3, 4),
    ),
}


def make(kind: str, body: str, xp, dtype=F64, seed: int = 0):
    param = text_format.Parse(f'name: "l" type: "{kind}" {body}', caffe_pb2.LayerParameter())
    return layer_class(kind)(param, "TRAIN", xp, dtype, seed)


def blob(values: np.ndarray, xp) -> Blob:
    b = Blob(values.shape, xp, values.dtype)
    b.data[...] = xp.asarray(values)
    return b


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_finite_difference_gradients_on_the_standin(case: str) -> None:
    kind, body, shape = GRAD_CASES[case]
    x = np.random.default_rng(1).standard_normal(shape)
    if kind == "Pooling":  # distinct values: no max ties for the finite differences to straddle
        x = np.random.default_rng(1).permutation(x.size).reshape(shape) / x.size
    layer = make(kind, body, fakecupy)
    check_layer_gradient(layer, [blob(x, fakecupy)], [Blob((), fakecupy, F64)])


BIG_CASES = {  # past the CPU path's thread and chunk thresholds
    "conv": (
        "Convolution",
        'convolution_param { num_output: 32 kernel_size: 5 pad: 2 weight_filler { type: "xavier" } '
        'bias_filler { type: "constant" value: 0.1 } }',
        (40, 16, 24, 24),
    ),
    "max pool": (
        "Pooling",
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
        (64, 32, 33, 33),
    ),
    "ave pool": (
        "Pooling",
        "pooling_param { pool: AVE kernel_size: 3 stride: 2 }",
        (64, 32, 33, 33),
    ),
    "inner product": (
        "InnerProduct",
        'inner_product_param { num_output: 500 weight_filler { type: "xavier" } }',
        (256, 800),
    ),
    "deconv": (
        "Deconvolution",
        'convolution_param { num_output: 8 kernel_size: 4 stride: 2 weight_filler { type: "xavier" } }',
        (16, 16, 20, 20),
    ),
}


def run_once(kind: str, body: str, x: np.ndarray, dy_seed: int, xp) -> list[np.ndarray]:
    layer = make(kind, body, xp, np.float32, seed=4)
    bottom, top = blob(x, xp), Blob((), xp, np.float32)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    dy = np.random.default_rng(dy_seed).standard_normal(top.shape).astype(np.float32)
    top.diff[...] = xp.asarray(dy)
    for p in layer.blobs:
        p.diff[...] = 0
    layer.backward([top], [True], [bottom])
    return [to_numpy(a).copy() for a in (top.data, bottom.diff, *(p.diff for p in layer.blobs))]


@pytest.mark.parametrize("case", list(BIG_CASES))
def test_device_path_matches_the_threaded_cpu_path(case: str) -> None:
    kind, body, shape = BIG_CASES[case]
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    cpu = run_once(kind, body, x, 3, np)
    gpu = run_once(kind, body, x, 3, fakecupy)
    for got, want in zip(gpu, cpu, strict=True):
        scale = float(np.abs(want).max()) or 1.0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("case", ["conv", "inner product", "deconv"])
def test_no_host_threads_on_a_second_device(case: str, on_device_1: None) -> None:
    """Device work in a host worker thread would run on that thread's device 0 and fail here.
    (Pooling on device 1: test_standin_second_device.py.)"""
    kind, body, shape = BIG_CASES[case]
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    gpu = run_once(kind, body, x, 3, fakecupy)
    assert all(np.isfinite(a).all() for a in gpu)
