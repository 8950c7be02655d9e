"""The row-folded convolution's bookkeeping: which input rows serve which kernel rows."""

from __future__ import annotations

import types

import pytest

from engine import jit
from engine.layers.conv_rows import kernel_row_span, read_rows, row_bands, rows_gemm_rows


def test_bands_of_an_unpadded_layer_skip_the_kernel_rows_past_the_image():
    """LeNet's conv2 (12x12 -> 8x8, 5x5): input row r feeds output rows r-4..r, so the top and
    bottom four rows serve only some kernel rows; in all, output rows x kh GEMM rows."""
    assert read_rows(12, 8, 5, 0, 1, 1) == 12
    assert row_bands(12, 8, 5, 0, 1, 1) == [
        (0, 1, 0, 1),
        (1, 2, 0, 2),
        (2, 3, 0, 3),
        (3, 4, 0, 4),
        (4, 8, 0, 5),
        (8, 9, 1, 5),
        (9, 10, 2, 5),
        (10, 11, 3, 5),
        (11, 12, 4, 5),
    ]
    layer = types.SimpleNamespace(kh=5, ph=0, sh=1, dh=1)
    assert rows_gemm_rows(layer, 12, 8) == 8 * 5


def test_bands_of_a_padded_layer_and_the_span_of_each_kernel_row():
    """CIFAR-10 quick's conv2 (16x16, 5x5, pad 2): the two top and bottom rows also serve fewer
    kernel rows (the others read the zero padding); kernel row i reads rows y + i - 2."""
    assert row_bands(16, 16, 5, 2, 1, 1) == [
        (0, 1, 0, 3),
        (1, 2, 0, 4),
        (2, 14, 0, 5),
        (14, 15, 1, 5),
        (15, 16, 2, 5),
    ]
    assert kernel_row_span(0, 16, 16, 2, 1, 1) == (2, 16, 0)  # y >= 2 reads row y - 2
    assert kernel_row_span(4, 16, 16, 2, 1, 1) == (0, 14, 2)  # y < 14 reads row y + 2


def test_strided_bands_take_the_span_of_the_kernel_rows_served():
    """3x3, stride 2, pad 1 on 7 rows (4 output rows): even rows serve kernel row 1, odd rows
    kernel rows 0 and 2, so their band spans 0..2 and multiplies kernel row 1's zeros."""
    assert read_rows(7, 4, 3, 1, 2, 1) == 7
    bands = row_bands(7, 4, 3, 1, 2, 1)
    assert bands == [(r, r + 1, 1, 2) if r % 2 == 0 else (r, r + 1, 0, 3) for r in range(7)]
    layer = types.SimpleNamespace(kh=3, ph=1, sh=2, dh=1)
    assert rows_gemm_rows(layer, 7, 4) == 4 * 1 + 3 * 3  # im2col's: 4 * 3
    assert kernel_row_span(1, 7, 4, 1, 2, 1) == (0, 4, 0)
    assert kernel_row_span(2, 7, 4, 1, 2, 1) == (0, 3, 1)  # y = 3 would read row 7


@pytest.mark.skipif(not jit.AVAILABLE, reason="numba is not installed: nothing to compile")
def test_the_folded_layer_compiles_its_kernels_at_setup(monkeypatch):
    """A layer that folds its kernel rows calls the kernels' warm-up (Numba's compile) when it
    takes the plan, with its dtype: not on the first training iteration."""
    import numpy as np
    from google.protobuf import text_format

    from engine.blob import Blob
    from engine.layers import conv_rows
    from engine.layers.convolution import ConvolutionLayer
    from engine.proto import caffe_pb2

    calls = []
    monkeypatch.setattr(conv_rows.kernels, "warm_up", calls.append)
    text = (
        'name: "c" type: "Convolution" convolution_param { num_output: 64 kernel_size: 5 pad: 2 }'
    )
    layer = ConvolutionLayer(text_format.Parse(text, caffe_pb2.LayerParameter()), dtype=np.float32)
    layer.setup([Blob((2, 32, 8, 8), dtype=np.float32)], [Blob(dtype=np.float32)])
    assert layer.plan(0).fold_rows and layer.plan(0).jit
    assert calls == [np.float32]
