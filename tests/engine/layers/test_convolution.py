"""Convolution layer: Caffe's output-size rule, forward vs a direct loop reference, gradients."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from google.protobuf import text_format

from engine.blob import Blob
from engine.errors import NetError
from engine.layers.conv_plan import Force
from engine.layers.convolution import ConvolutionLayer
from engine.proto import caffe_pb2
from tests.gradcheck import check_layer_gradient

# Each internal layout as a forced plan family (where the geometry allows it; else channels
# first, batch second): (C, H, W, N), (C, N, H, W) and (N, H, W, C) (channels last where the full
# data gradient applies), the per-sample weight gradient of group-1 layers (batch second), and
# the kernel rows folded into the GEMM (channels last, any geometry), with its data movement
# compiled by Numba (where installed) or as NumPy passes.
LAYOUTS = {
    "batch_last": Force("channels_first", batch_last=True),
    "batch_second": Force("channels_first", batch_last=False),
    "channels_last": Force("channels_last", batch_last=False),
    "per_sample": Force("per_sample", batch_last=False),
    "rows": Force("fold_rows", fold_jit=True),
    "rows_numpy": Force("fold_rows", fold_jit=False),
}


@pytest.fixture(params=list(LAYOUTS))
def layout(request) -> str:
    """Run a test with each internal layout (LAYOUTS)."""
    return request.param


@pytest.fixture(params=["batch_last", "batch_second"])
def cf_layout(request) -> str:
    """The channels-first layouts only (tiles and col2im run there)."""
    return request.param


def forced(layout: str | None, **fields) -> Force:
    """The layout's forced family with ConvPlan `fields` set on every plan it makes."""
    return dataclasses.replace(LAYOUTS[layout] if layout else Force(), fields=fields)


def make_layer(
    conv: str, dtype=np.float64, seed: int = 0, force: Force | str | None = None
) -> ConvolutionLayer:
    """A Convolution layer; `force` (a Force or a LAYOUTS name) fixes the plans it makes."""
    text = f'name: "conv" type: "Convolution" convolution_param {{ {conv} }}'
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = ConvolutionLayer(param, dtype=dtype, seed=seed)
    layer.force_plans(LAYOUTS[force] if isinstance(force, str) else force)
    return layer


GAUSS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def blobs(shape, dtype=np.float64, seed: int = 1) -> tuple[Blob, Blob]:
    bottom = Blob(shape, dtype=dtype)
    bottom.data[...] = np.random.default_rng(seed).standard_normal(shape)
    return bottom, Blob(dtype=dtype)


def reference_conv(x, w, b, stride, pad, dil, group):
    """Direct loop convolution, written from Caffe's definition (cross-correlation)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]))
    xp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + wd] = x
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    og = o // group
    for oc in range(o):
        gi = oc // og
        for yy in range(oh):
            for xx in range(ow):
                for i in range(kh):
                    for j in range(kw):
                        hh = yy * stride[0] + i * dil[0]
                        ww = xx * stride[1] + j * dil[1]
                        patch = xp[:, gi * cg : (gi + 1) * cg, hh, ww]
                        y[:, oc, yy, xx] += patch @ w[oc, :, i, j]
        if b is not None:
            y[:, oc] += b[oc]
    return y


@pytest.mark.parametrize(
    "conv, shape, stride, pad, dil, group",
    [
        ("num_output: 4 kernel_size: 3 pad: 1 stride: 2", (2, 3, 7, 7), (2, 2), (1, 1), (1, 1), 1),
        (
            "num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2",
            (2, 2, 6, 5),
            (1, 2),
            (1, 0),
            (1, 1),
            1,
        ),
        ("num_output: 4 kernel_size: 3 group: 2 pad: 1", (2, 4, 5, 5), (1, 1), (1, 1), (1, 1), 2),
        (
            "num_output: 4 kernel_size: 2 dilation: 2 pad: 1",
            (1, 3, 6, 6),
            (1, 1),
            (1, 1),
            (2, 2),
            1,
        ),
        ("num_output: 6 kernel_size: 5 pad: 2", (3, 2, 6, 6), (1, 1), (2, 2), (1, 1), 1),
    ],
)
def test_forward_matches_direct_loop_reference(conv, shape, stride, pad, dil, group, layout):
    """Caffe's convolution is a cross-correlation of each group of channels with its weights."""
    layer = make_layer(f"{conv} {GAUSS}", force=layout)
    bottom, top = blobs(shape)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    want = reference_conv(
        bottom.data, layer.blobs[0].data, layer.blobs[1].data, stride, pad, dil, group
    )
    assert top.shape == want.shape
    np.testing.assert_allclose(top.data, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "conv, shape, oh_ow",
    [
        ("kernel_size: 3 stride: 2 pad: 1", (1, 1, 7, 7), (4, 4)),  # (7+2-3)//2+1
        ("kernel_size: 5 pad: 2", (1, 3, 32, 32), (32, 32)),  # CIFAR-10 quick conv1
        ("kernel_size: 5", (1, 1, 28, 28), (24, 24)),  # LeNet conv1
        ("kernel_size: 11 stride: 4", (1, 3, 227, 227), (55, 55)),  # AlexNet conv1
        ("kernel_size: 3 dilation: 2", (1, 1, 9, 8), (5, 4)),  # effective kernel 5
        ("kernel_size: 2 stride: 2", (1, 1, 7, 7), (3, 3)),  # floor, unlike pooling's ceil
    ],
)
def test_output_size_follows_caffe_floor_rule(conv, shape, oh_ow):
    """Caffe: out = (H + 2p - (d(k-1)+1)) / s + 1 with integer (floor) division."""
    layer = make_layer(f"num_output: 2 {conv}", dtype=np.float32)
    bottom, top = blobs(shape, np.float32)
    layer.setup([bottom], [top])
    assert top.shape == (shape[0], 2, *oh_ow)
    assert layer.blobs[0].shape == (2, shape[1], *map(int, _kernel(conv)))


def _kernel(conv: str) -> tuple[int, int]:
    k = int(conv.split("kernel_size: ")[1].split()[0])
    return k, k


@pytest.mark.parametrize(
    "conv, shape",
    [
        ("num_output: 3 kernel_size: 3 pad: 1 stride: 2", (2, 2, 5, 5)),  # pad + stride
        ("num_output: 4 kernel_size: 3 pad: 1 group: 2", (2, 4, 4, 4)),  # group 2
        ("num_output: 3 kernel_size: 2 group: 3", (2, 3, 4, 4)),  # group == channels
        ("num_output: 2 kernel_size: 2 dilation: 2 pad: 1", (2, 2, 5, 5)),  # dilation
        ("num_output: 3 kernel_size: 3 bias_term: false", (2, 2, 4, 4)),  # no bias
        ("num_output: 2 kernel_size: 3 pad: 2", (1, 2, 3, 3)),  # col2im with wide padding
        (
            "num_output: 2 kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 1",
            (2, 2, 5, 6),
        ),  # non-square
    ],
)
def test_gradient_matches_finite_differences(conv, shape):
    """Backward: bottom diff, weight diff and bias diff agree with central differences (Caffe's
    gradients by definition), under the planner's own choice; every other layout is held to
    the exact backward of Caffe's loops in tests/engine/test_caffe_reference_conv.py."""
    layer = make_layer(f"{conv} {GAUSS}")
    bottom, top = blobs(shape)
    check_layer_gradient(layer, [bottom], [top])


@pytest.mark.parametrize("dgrad", ["full", "col2im"])
def test_both_data_gradient_algorithms_agree(dgrad, cf_layout):
    """The stride-1 full-convolution path and the col2im path give the same bottom diff."""
    layer = make_layer(f"num_output: 3 kernel_size: 3 pad: 1 group: 1 {GAUSS}", force=cf_layout)
    bottom, top = blobs((2, 2, 5, 5))
    layer.setup([bottom], [top])
    layer.use_plan(0, dataclasses.replace(layer.plan(0), dgrad=dgrad, dgrad_tile=(1, 1)))
    assert layer.plan(0).batch_last == (cf_layout == "batch_last")
    check_layer_gradient(layer, [bottom], [top])


def test_param_diffs_accumulate_and_bottom_diff_overwrites():
    """Caffe: backward adds into weight/bias diffs (iter_size) but overwrites the bottom diff."""
    layer = make_layer(f"num_output: 2 kernel_size: 3 pad: 1 {GAUSS}")
    bottom, top = blobs((2, 2, 4, 4))
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff[...] = np.random.default_rng(3).standard_normal(top.shape)
    for p in layer.blobs:
        p.diff[...] = 0
    layer.backward([top], [True], [bottom])
    once = [p.diff.copy() for p in layer.blobs]
    dx_once = bottom.diff.copy()
    layer.backward([top], [True], [bottom])
    for p, d in zip(layer.blobs, once, strict=True):
        np.testing.assert_allclose(p.diff, 2 * d)
    np.testing.assert_allclose(bottom.diff, dx_once)


def test_no_bottom_diff_without_propagate_down():
    """propagate_down False (first layer): the bottom diff is left untouched."""
    layer = make_layer(f"num_output: 2 kernel_size: 3 {GAUSS}")
    bottom, top = blobs((1, 1, 5, 5))
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    bottom.diff[...] = 7.0
    top.diff[...] = 1.0
    layer.backward([top], [False], [bottom])
    assert np.all(bottom.diff == 7.0)
    assert np.any(layer.blobs[0].diff != 0)


def test_default_fillers_are_caffe_constant_zero():
    """Caffe's FillerParameter defaults to type constant, value 0 (weights and bias)."""
    layer = make_layer("num_output: 2 kernel_size: 1", dtype=np.float32)
    bottom, top = blobs((1, 2, 3, 3), np.float32)
    layer.setup([bottom], [top])
    assert layer.blobs[0].shape == (2, 2, 1, 1) and layer.blobs[1].shape == (2,)
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()


def test_float32_forward_backward_shapes_and_reshape():
    """A changed batch size reshapes the top and the buffers; values stay correct."""
    layer = make_layer(f"num_output: 3 kernel_size: 3 pad: 1 {GAUSS}", dtype=np.float32)
    bottom, top = blobs((2, 2, 6, 6), np.float32)
    layer.setup([bottom], [top])
    bottom.reshape((3, 2, 6, 6))
    bottom.data[...] = 1.0
    layer.reshape([bottom], [top])
    layer.forward([bottom], [top])
    want = reference_conv(
        bottom.data.astype(np.float64),
        layer.blobs[0].data.astype(np.float64),
        layer.blobs[1].data.astype(np.float64),
        (1, 1),
        (1, 1),
        (1, 1),
        1,
    )
    np.testing.assert_allclose(top.data, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "conv, shape, needle",
    [
        ("num_output: 3 kernel_size: 3 group: 2", (1, 4, 5, 5), "num_output"),
        ("num_output: 4 kernel_size: 3 group: 2", (1, 3, 5, 5), "channels"),
        ("num_output: 4", (1, 3, 5, 5), "kernel"),
        ("num_output: 4 kernel_size: 0", (1, 3, 5, 5), "kernel"),
        ("kernel_size: 3", (1, 3, 5, 5), "num_output"),
        ("num_output: 2 kernel_size: 3", (1, 3, 5, 5, 5), "2-D"),
        ("num_output: 2 kernel_size: 7", (1, 3, 5, 5), "kernel larger"),
        ("num_output: 2 kernel_size: 3 stride_h: 2", (1, 3, 5, 5), "stride_w"),
        ("num_output: 2 kernel_size: 3 kernel_h: 2 kernel_w: 2", (1, 3, 5, 5), "not both"),
    ],
)
def test_bad_parameters_raise_named_error(conv, shape, needle):
    layer = make_layer(conv, dtype=np.float32)
    bottom, top = blobs(shape, np.float32)
    with pytest.raises(NetError, match="conv") as info:
        layer.setup([bottom], [top])
    assert needle in str(info.value)


def test_registered_under_v1_name():
    from engine.layer import layer_class

    assert layer_class("CONVOLUTION") is ConvolutionLayer


@pytest.mark.parametrize("dgrad", ["col2im", "full"])
@pytest.mark.parametrize("group", [1, 2])
def test_threaded_small_chunks_match_single_pass(dgrad, group, layout):
    """Chunked, threaded work (many tiny column chunks) gives the same top, bottom diff and
    accumulated param diffs as one whole-batch pass in the caller."""
    conv = f"num_output: 4 kernel_size: 3 pad: 1 group: {group} {GAUSS}"
    results = []
    for threaded in (False, True):
        chunk_bytes = 64 if threaded else 10**12
        layer = make_layer(conv, force=forced(layout, threaded=threaded, chunk_bytes=chunk_bytes))
        bottom, top = blobs((5, 4, 7, 6))
        layer.setup([bottom], [top])
        if layer.plan(0).layout == "CNHW" or layer.plan(0).batch_last:  # not channels last
            layer.use_plan(0, dataclasses.replace(layer.plan(0), dgrad=dgrad, dgrad_tile=(1, 1)))
        assert layer.plan(0).channels_last == (layout in ("channels_last", "rows", "rows_numpy"))
        assert layer.plan(0).fold_rows == (layout in ("rows", "rows_numpy"))
        assert layer.plan(0).threaded is threaded
        layer.forward([bottom], [top])
        top.diff[...] = np.random.default_rng(3).standard_normal(top.shape)
        layer.weight.diff[...] = 1.0  # accumulation must add onto what is there
        layer.backward([top], [True], [bottom])
        results.append([top.data.copy(), bottom.diff.copy(), *(b.diff.copy() for b in layer.blobs)])
    for serial, threaded in zip(*results, strict=True):
        np.testing.assert_allclose(threaded, serial, rtol=1e-12, atol=1e-12)


@pytest.fixture(params=["kept", "remade"])
def columns(request) -> str:
    """Weight gradient from forward's kept columns, or from columns re-made in backward."""
    return request.param


@pytest.mark.parametrize("chunk_bytes", [8, 2 << 20])  # one sample/row per chunk, or one chunk
@pytest.mark.parametrize(
    "conv, shape",
    [
        ("num_output: 3 kernel_size: 3", (3, 1, 6, 7)),  # LeNet-conv1-like: 1 channel, skinny
        ("num_output: 2 kernel_size: 3 pad: 1 stride: 2", (3, 2, 5, 5)),  # padded, strided
        ("num_output: 4 kernel_size: 2 group: 2", (2, 4, 4, 4)),  # groups
    ],
)
def test_param_gradient_without_bottom_gradient(conv, shape, chunk_bytes, layout, columns):
    """propagate_down False (Caffe's first conv layer): weight and bias diffs still match
    central differences, whichever column source and weight-gradient path is taken."""
    force = forced(layout, chunk_bytes=chunk_bytes, keep_columns=columns == "kept")
    layer = make_layer(f"{conv} {GAUSS}", force=force)
    bottom, top = blobs(shape)
    check_layer_gradient(layer, [bottom], [top], check_bottoms=[])


def test_kept_columns_follow_the_latest_forward():
    """Backward uses the bottom of the last forward, as Caffe's backward reads bottom data."""
    conv = f"num_output: 3 kernel_size: 3 {GAUSS}"
    first, second = make_layer(conv), make_layer(conv)
    x1, top1 = blobs((2, 1, 6, 6), seed=1)
    x2, top2 = blobs((2, 1, 6, 6), seed=2)
    first.setup([x1], [top1])
    second.setup([x2], [top2])
    first.forward([x1], [top1])
    x1.data[...] = x2.data
    first.forward([x1], [top1])
    second.forward([x2], [top2])
    for layer, top in ((first, top1), (second, top2)):
        top.diff[...] = np.random.default_rng(5).standard_normal(top.shape)
        layer.backward([top], [False], [x1 if layer is first else x2])
    for a, b in zip(first.blobs, second.blobs, strict=True):
        np.testing.assert_allclose(a.diff, b.diff, rtol=1e-12)


def test_propagate_down_may_change_between_backward_calls(layout):
    """A layer's weight gradient is the same whether or not the bottom diff is also wanted."""
    layer = make_layer(f"num_output: 3 kernel_size: 3 {GAUSS}", force=layout)
    bottom, top = blobs((2, 1, 6, 6))
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    top.diff[...] = np.random.default_rng(4).standard_normal(top.shape)
    diffs = []
    for down in (True, False, True):
        for p in layer.blobs:
            p.diff[...] = 0
        layer.backward([top], [down], [bottom])
        diffs.append([p.diff.copy() for p in layer.blobs])
    for later in diffs[1:]:
        for a, b in zip(diffs[0], later, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# --- plans: output tiles, data-gradient algorithms, the device path ------------------------------
TILED = [
    # conv, shape, stride, pad, dil, group, tile, data-gradient tile (None: col2im)
    (
        "num_output: 4 kernel_size: 3 pad: 1 stride: 2",
        (2, 3, 7, 7),
        (2, 2),
        (1, 1),
        (1, 1),
        1,
        (2, 2),
        None,
    ),
    (
        "num_output: 4 kernel_size: 3 pad: 1 stride: 2",
        (2, 3, 7, 7),
        (2, 2),
        (1, 1),
        (1, 1),
        1,
        (4, 1),
        None,
    ),
    (
        "num_output: 3 kernel_h: 3 kernel_w: 2 pad_h: 1 stride_h: 1 stride_w: 2",
        (2, 2, 6, 5),
        (1, 2),
        (1, 0),
        (1, 1),
        1,
        (3, 2),
        None,
    ),
    (
        "num_output: 4 kernel_size: 3 group: 2 pad: 1",
        (2, 4, 6, 6),
        (1, 1),
        (1, 1),
        (1, 1),
        2,
        (2, 3),
        (3, 1),
    ),
    (
        "num_output: 4 kernel_size: 3 group: 2 pad: 1",
        (2, 4, 6, 6),
        (1, 1),
        (1, 1),
        (1, 1),
        2,
        (3, 1),
        (2, 2),
    ),
    (
        "num_output: 4 kernel_size: 2 dilation: 2 pad: 1",
        (1, 3, 6, 6),
        (1, 1),
        (1, 1),
        (2, 2),
        1,
        (2, 1),
        (3, 2),
    ),
    (
        "num_output: 5 kernel_size: 5 pad: 2",
        (3, 2, 6, 6),
        (1, 1),
        (2, 2),
        (1, 1),
        1,
        (2, 1),
        (2, 3),
    ),
    (
        "num_output: 5 kernel_size: 5 pad: 2",
        (3, 2, 6, 6),
        (1, 1),
        (2, 2),
        (1, 1),
        1,
        (3, 3),
        (6, 1),
    ),
]


@pytest.mark.parametrize("conv, shape, stride, pad, dil, group, tile, dtile", TILED)
def test_tiled_plans_match_reference_and_finite_differences(
    conv, shape, stride, pad, dil, group, tile, dtile, cf_layout
):
    """Output tiles (extended kernels) in forward, weight and data gradients, with stride, pad,
    dilation, groups and non-square tiles: forward equals the direct loop, gradients equal
    central differences."""
    dgrad = {"dgrad": "col2im"} if dtile is None else {"dgrad": "full", "dgrad_tile": dtile}
    layer = make_layer(f"{conv} {GAUSS}", force=forced(cf_layout, tile=tile, wgrad="gemm", **dgrad))
    bottom, top = blobs(shape)
    layer.setup([bottom], [top])
    assert layer.plan(0).tile == tile
    layer.forward([bottom], [top])
    want = reference_conv(
        bottom.data, layer.blobs[0].data, layer.blobs[1].data, stride, pad, dil, group
    )
    np.testing.assert_allclose(top.data, want, rtol=1e-10, atol=1e-10)
    check_layer_gradient(layer, [bottom], [top])


@pytest.mark.parametrize("kept", [True, False])
def test_tiled_chunks_on_threads_match_one_pass(kept, cf_layout):
    """Tiny chunks on threads, kept or re-made columns: the same numbers as one untiled pass."""
    conv = f"num_output: 4 kernel_size: 3 pad: 1 {GAUSS}"
    results = []
    for tiled in (False, True):
        fields = {"threaded": True, "chunk_bytes": 64, "keep_columns": kept} if tiled else {}
        force = forced(
            cf_layout,
            tile=(2, 1) if tiled else (1, 1),
            dgrad="full",
            dgrad_tile=(3, 1) if tiled else (1, 1),
            wgrad="gemm",
            **fields,
        )
        layer = make_layer(conv, force=force)
        bottom, top = blobs((5, 3, 6, 7))
        layer.setup([bottom], [top])
        assert layer.plan(0).threaded is tiled and layer.plan(0).keep_columns is (kept or not tiled)
        layer.forward([bottom], [top])
        top.diff[...] = np.random.default_rng(3).standard_normal(top.shape)
        layer.weight.diff[...] = 1.0
        layer.backward([top], [True], [bottom])
        results.append([top.data.copy(), bottom.diff.copy(), *(b.diff.copy() for b in layer.blobs)])
    for one, tiled in zip(*results, strict=True):
        np.testing.assert_allclose(tiled, one, rtol=1e-11, atol=1e-11)


def test_planner_picks_layouts_and_tiles_by_shape():
    """CIFAR-10 quick's conv2 and conv3, LeNet's conv2 and AlexNet's grouped conv2 fold the
    kernel rows into the GEMM (both of its inner sides are >= 64 wide); CIFAR-10 quick's conv1
    (3 channels: a 15-wide K) does not; LeNet's conv1 (one input channel, a skinny weight
    gradient) runs batch second with the per-sample weight gradient; a strided layer with no
    dividing tile stays untiled, with col2im (a stride of 2 would double the folded work)."""
    for conv, shape in [
        ("num_output: 32 kernel_size: 5 pad: 2", (100, 32, 16, 16)),
        ("num_output: 64 kernel_size: 5 pad: 2", (100, 32, 8, 8)),
        ("num_output: 50 kernel_size: 5", (64, 20, 12, 12)),
        ("num_output: 256 kernel_size: 5 pad: 2 group: 2", (2, 96, 27, 27)),
    ]:
        layer = make_layer(conv, dtype=np.float32)
        bottom, top = blobs(shape, np.float32)
        layer.setup([bottom], [top])
        plan = layer.plan(0)
        assert plan.fold_rows and plan.channels_last, conv
        assert plan.summary() == "NHWC kernel rows folded"
    first = make_layer("num_output: 32 kernel_size: 5 pad: 2", dtype=np.float32)
    b0, t0 = blobs((100, 3, 32, 32), np.float32)
    first.setup([b0], [t0])
    assert not first.plan(0).fold_rows and first.plan(0).layout == "CNHW"
    lenet = make_layer("num_output: 20 kernel_size: 5", dtype=np.float32)
    b1, t1 = blobs((64, 1, 28, 28), np.float32)
    lenet.setup([b1], [t1])
    assert lenet.plan(0).layout == "CNHW" and lenet.plan(0).wgrad == "per_sample"
    odd = make_layer("num_output: 32 kernel_size: 5 stride: 2", dtype=np.float32)
    b2, t2 = blobs((4, 3, 25, 25), np.float32)
    odd.setup([b2], [t2])
    assert odd.plan(0).tile == (1, 1) and odd.plan(0).dgrad == "col2im"
    wide_strided = make_layer("num_output: 64 kernel_size: 3 stride: 2 pad: 1", dtype=np.float32)
    b3, t3 = blobs((2, 64, 16, 16), np.float32)
    wide_strided.setup([b3], [t3])
    assert not wide_strided.plan(0).fold_rows


def _fake_device_module() -> types.ModuleType:
    """An array module that is not NumPy (as CuPy is not) but computes with it."""
    fake = types.ModuleType("fake_device")
    fake.__getattr__ = lambda name: getattr(np, name)  # type: ignore[method-assign]
    return fake


def test_device_path_is_one_untiled_pass_and_matches_numpy():
    """With a non-NumPy array module: no threads, one chunk, no tile; same numbers."""
    conv = f"num_output: 4 kernel_size: 3 pad: 1 group: 2 {GAUSS}"
    results = []
    for xp in (np, _fake_device_module()):
        text = f'name: "conv" type: "Convolution" convolution_param {{ {conv} }}'
        param = text_format.Parse(text, caffe_pb2.LayerParameter())
        layer = ConvolutionLayer(param, xp=xp, dtype=np.float64, seed=0)
        bottom = Blob((3, 4, 6, 6), xp=xp, dtype=np.float64)
        bottom.data[...] = np.random.default_rng(1).standard_normal(bottom.shape)
        top = Blob(xp=xp, dtype=np.float64)
        layer.setup([bottom], [top])
        plan = layer.plan(0)
        if xp is not np:
            assert (plan.tile, plan.parts, plan.chunk_bytes, plan.threaded) == ((1, 1), 1, 0, False)
            assert not layer._threads.parallel
        layer.forward([bottom], [top])
        top.diff[...] = np.random.default_rng(2).standard_normal(top.shape)
        layer.backward([top], [True], [bottom])
        results.append([top.data.copy(), bottom.diff.copy(), *(b.diff.copy() for b in layer.blobs)])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "conv", ["num_output: 8 kernel_size: 3 pad: 1", "num_output: 4 kernel_size: 3"]
)
def test_test_phase_keeps_no_columns_and_a_backward_still_matches_train(conv, layout):
    """A TEST net runs forward only, so its plan keeps no column buffer for a backward; a
    backward asked for anyway (pycaffe allows one) re-makes the columns and gives TRAIN's."""
    text = f'name: "conv" type: "Convolution" convolution_param {{ {conv} {GAUSS} }}'
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    results = []
    for phase in ("TRAIN", "TEST"):
        layer = ConvolutionLayer(param, phase=phase, dtype=np.float64, seed=0)
        layer.force_plans(LAYOUTS[layout])
        bottom, top = blobs((3, 4, 6, 6))
        layer.setup([bottom], [top])
        assert layer.plan(0).keep_columns == (phase == "TRAIN")
        layer.forward([bottom], [top])
        top.diff[...] = np.random.default_rng(5).standard_normal(top.shape)
        layer.backward([top], [True], [bottom])
        results.append([top.data.copy(), bottom.diff.copy(), *(b.diff.copy() for b in layer.blobs)])
    for train, test in zip(*results, strict=True):
        np.testing.assert_array_equal(test, train)


def test_forced_plans_take_effect_at_the_next_reshape_and_are_checked():
    """force_plans after setup re-plans at the next reshape (None: the cost model again); a
    forced plan the geometry cannot run is refused with the layer's name, as use_plan does."""
    layer = make_layer(f"num_output: 4 kernel_size: 3 pad: 1 {GAUSS}")
    bottom, top = blobs((2, 3, 6, 6))
    layer.setup([bottom], [top])
    chosen = layer.plan(0)
    layer.force_plans(Force("fold_rows", fold_jit=False))
    layer.reshape([bottom], [top])
    assert layer.plan(0).fold_rows and not layer.plan(0).jit
    layer.force_plans(None)
    layer.reshape([bottom], [top])
    assert layer.plan(0) == chosen
    layer.force_plans(forced("batch_second", tile=(4, 1)))
    with pytest.raises(NetError, match="conv.*tile"):
        layer.reshape([bottom], [top])
    layer.force_plans(forced("batch_second", jit=True))
    with pytest.raises(NetError, match="conv.*compiled data movement"):
        layer.reshape([bottom], [top])
