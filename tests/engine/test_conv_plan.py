"""Which plan (engine.layers.conv_plan) each convolution layer of the project's nets gets.

Caffe runs every convolution as im2col + GEMM; the planner picks among layouts and cuts of that
work by a cost model. These tests pin the plan of every layer of LeNet, CIFAR-10 quick and
AlexNet (prototxt/), so that a change of the cost model shows here first, and show that each
family of plans is taken by some layer of a net the tests build; the two paths that no net
selects on this machine are named with the reason they are kept.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from engine import jit
from engine.errors import NetError
from engine.im2col import conv_out_size
from engine.layers.conv_plan import ConvPlan, Force, plan_convolution
from engine.layers.convolution import read_geometry
from engine.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[2]


def plan_for(
    conv: caffe_pb2.ConvolutionParameter | str,
    shape: tuple[int, int, int, int],
    phase: str = "TRAIN",
    dtype: type = np.float32,
    force: Force | None = None,
) -> ConvPlan:
    """The plan a NumPy Convolution layer with `conv` makes for an NCHW `shape` bottom."""
    if isinstance(conv, str):
        conv = text_format.Parse(conv, caffe_pb2.ConvolutionParameter())
    layer = types.SimpleNamespace(error=NetError, xp=np, dtype=dtype, phase=phase)
    read_geometry(layer, conv, types.SimpleNamespace(shape=shape), "convolution")
    n, _, h, w = shape
    oh = conv_out_size(h, layer.kh, layer.ph, layer.sh, layer.dh)
    ow = conv_out_size(w, layer.kw, layer.pw, layer.sw, layer.dw)
    return plan_convolution(layer, n, h, w, oh, ow, force)


def family(plan: ConvPlan) -> str:
    if plan.fold_rows:
        return "fold_rows"
    if plan.wgrad == "per_sample":
        return "per_sample"
    return {"NHWC": "channels_last", "CHWN": "batch_last", "CNHW": "batch_second"}[plan.layout]


# The bottom (C, H, W) of each conv layer, the batch sizes of TRAIN and TEST, from the prototxt.
NETS = {
    "lenet_train_test": ({"conv1": (1, 28, 28), "conv2": (20, 12, 12)}, 64, 100),
    "cifar10_quick_train_test": (
        {"conv1": (3, 32, 32), "conv2": (32, 16, 16), "conv3": (32, 8, 8)},
        100,
        100,
    ),
    "alexnet_train_val": (
        {
            "conv1": (3, 227, 227),
            "conv2": (96, 27, 27),
            "conv3": (256, 13, 13),
            "conv4": (384, 13, 13),
            "conv5": (384, 13, 13),
        },
        256,
        50,
    ),
}
FOLDED = "NHWC kernel rows folded"
# net/layer: (summary, threaded, keep_columns in TRAIN); TEST plans keep no columns.
EXPECTED = {
    "lenet_train_test/conv1": ("CNHW tile 1x1 dgrad col2im wgrad per_sample", True, True),
    "lenet_train_test/conv2": (FOLDED, True, True),
    "cifar10_quick_train_test/conv1": ("CNHW tile 2x1 dgrad full", True, True),
    "cifar10_quick_train_test/conv2": (FOLDED, True, True),
    "cifar10_quick_train_test/conv3": (FOLDED, True, True),
    "alexnet_train_val/conv1": ("CNHW tile 1x1 dgrad col2im", True, False),
    **{f"alexnet_train_val/conv{i}": (FOLDED, True, False) for i in (2, 3, 4, 5)},
}


def net_layers() -> list[tuple[str, caffe_pb2.ConvolutionParameter, tuple, int, int]]:
    """(net/layer, convolution_param, (C, H, W), TRAIN batch, TEST batch) of every conv layer."""
    out = []
    for net, (shapes, n_train, n_test) in NETS.items():
        text = (ROOT / "prototxt" / f"{net}.prototxt").read_text()
        param = text_format.Parse(text, caffe_pb2.NetParameter())
        convs = [lp for lp in param.layer if lp.type == "Convolution"]
        assert sorted(lp.name for lp in convs) == sorted(shapes), net  # a new layer: add it
        for lp in convs:
            out.append((f"{net}/{lp.name}", lp.convolution_param, shapes[lp.name], n_train, n_test))
    return out


@pytest.mark.parametrize(
    "name, conv, chw, n_train, n_test", [pytest.param(*v, id=v[0]) for v in net_layers()]
)
def test_each_layer_of_the_projects_nets_gets_its_recorded_plan(name, conv, chw, n_train, n_test):
    """The plans measured fastest for LeNet, CIFAR-10 quick and AlexNet stay those layers'
    plans (TRAIN and TEST batches); a TEST net runs forward only and keeps no columns."""
    summary, threaded, keep = EXPECTED[name]
    train = plan_for(conv, (n_train, *chw), "TRAIN")
    test = plan_for(conv, (n_test, *chw), "TEST")
    assert (train.summary(), train.threaded, train.keep_columns) == (summary, threaded, keep)
    assert (test.summary(), test.keep_columns) == (summary, False)
    assert train.jit == test.jit == (train.fold_rows and jit.AVAILABLE)


# Layers of the small nets that tests/engine builds (test_deploy_nets.py, test_fcn_style_net.py)
# which take the families no layer of the project's nets takes: (conv, bottom, phase, dtype).
TEST_NET_LAYERS = {
    "fcn-style conv1": ("num_output: 4 kernel_size: 3 pad: 1", (2, 3, 12, 10), "TRAIN", np.float64),
    "resnet-style res_a": (
        "num_output: 4 kernel_size: 3 pad: 1",
        (2, 4, 8, 8),
        "TRAIN",
        np.float32,
    ),
    "googlenet-style inception_3a/5x5": (
        "num_output: 4 kernel_size: 5 pad: 2",
        (2, 4, 14, 14),
        "TEST",
        np.float32,
    ),
    "googlenet-style inception_3a/1x1": (
        "num_output: 8 kernel_size: 1",
        (2, 24, 14, 14),
        "TEST",
        np.float32,
    ),
    "caffenet fc8-conv": ("num_output: 5 kernel_size: 1", (2, 12, 5, 5), "TEST", np.float32),
}


def test_every_family_of_plans_is_taken_by_some_layer():
    """Each family is the cost model's choice for a layer of some net the tests build: the
    project's nets take per-sample (LeNet conv1), folded kernel rows (every wide layer) and
    channels first, batch second (CIFAR-10 quick conv1, tiled; AlexNet conv1); small maps and
    few channels (the zoo-shaped test nets) take batch last and channels last."""
    taken = {}
    for name, conv, chw, n_train, _ in net_layers():
        taken.setdefault(family(plan_for(conv, (n_train, *chw))), name)
    for name, (conv, shape, phase, dtype) in TEST_NET_LAYERS.items():
        taken.setdefault(family(plan_for(conv, shape, phase, dtype)), name)
    assert taken == {
        "per_sample": "lenet_train_test/conv1",
        "fold_rows": "lenet_train_test/conv2",
        "batch_second": "cifar10_quick_train_test/conv1",
        "batch_last": "fcn-style conv1",
        "channels_last": "googlenet-style inception_3a/1x1",
    }


def test_the_paths_no_net_takes_here_are_forced_and_kept_for_a_reason():
    """Two paths no layer takes on this machine, each run by the tests through Force: the
    row-folded passes as NumPy passes (jit False) are what a platform without a Numba wheel
    runs (engine.jit.AVAILABLE False), and the device plan (one untiled channels-first GEMM per
    pass) is what CuPy runs (tests/engine/test_caffe_reference_conv.py, test_standin_conv.py).
    Width tiles (q > 1) are never the cost model's choice; they are the same extended-kernel
    code as row tiles, forced in the reference tests."""
    conv = "num_output: 32 kernel_size: 5 pad: 2"
    plan = plan_for(conv, (8, 32, 16, 16), force=Force("fold_rows", fold_jit=False))
    assert plan.fold_rows and not plan.jit
    tiled = plan_for(conv, (8, 3, 32, 32), force=Force("channels_first", tiles=((2, 2),)))
    assert tiled.tile == (2, 2) and tiled.layout in ("CNHW", "CHWN")
    with pytest.raises(ValueError, match="unknown family"):
        Force("im2col")
    with pytest.raises(ValueError, match="not ConvPlan fields"):
        Force(fields={"tiles": (2, 1)})
