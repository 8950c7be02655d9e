"""Tests of Caffe's net and solver upgrades: V1 layers, legacy inputs, BatchNorm, solver_type."""

from __future__ import annotations

import numpy as np
import pytest

from engine import proto_io
from engine.errors import PrototxtError
from engine.proto import caffe_pb2
from engine.upgrade import (
    V1_LAYER_TYPES,
    net_needs_upgrade,
    upgrade_net_param,
    upgrade_solver_param,
)

V1_LENET = """\
name: "LeNetV1"
layers {
  name: "mnist" type: DATA top: "data" top: "label"
  data_param { source: "mnist_train_lmdb" backend: LMDB batch_size: 64 scale: 0.00390625
               mirror: true crop_size: 24 }
  include { phase: TRAIN }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  param: "conv1_w" param: "conv1_b" blob_share_mode: STRICT blob_share_mode: PERMISSIVE
  convolution_param { num_output: 20 kernel_size: 5 stride: 1
                      weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layers {
  name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layers {
  name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1"
  blobs_lr: 1 blobs_lr: 2
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } }
}
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" relu_param { negative_slope: 0.1 } }
layers { name: "drop1" type: DROPOUT bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.3 } }
layers {
  name: "accuracy" type: ACCURACY bottom: "ip1" bottom: "label" top: "accuracy"
  include { phase: TEST }
}
layers {
  name: "loss" type: SOFTMAX_LOSS bottom: "ip1" bottom: "label" top: "loss"
  loss_weight: 2 loss_param { ignore_label: 255 }
}
"""


def _parse(text: str) -> caffe_pb2.NetParameter:
    return proto_io.parse_prototxt(text, caffe_pb2.NetParameter())


# ---------------------------------------------------------------- V1 -> V2


def test_v1_net_upgrades_to_layer_list():
    """Caffe's UpgradeV1Net: same order, names and connectivity; types from the enum table."""
    net = upgrade_net_param(_parse(V1_LENET))
    assert not net.layers
    assert [(lp.name, lp.type) for lp in net.layer] == [
        ("mnist", "Data"),
        ("conv1", "Convolution"),
        ("pool1", "Pooling"),
        ("ip1", "InnerProduct"),
        ("relu1", "ReLU"),
        ("drop1", "Dropout"),
        ("accuracy", "Accuracy"),
        ("loss", "SoftmaxWithLoss"),
    ]
    assert list(net.layer[0].top) == ["data", "label"]
    assert list(net.layer[7].bottom) == ["ip1", "label"]
    assert net.name == "LeNetV1"


def test_v1_blobs_lr_and_weight_decay_become_param_specs():
    """blobs_lr -> lr_mult, weight_decay -> decay_mult, param -> name, blob_share_mode -> mode."""
    conv = upgrade_net_param(_parse(V1_LENET)).layer[1]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert [p.name for p in conv.param] == ["conv1_w", "conv1_b"]
    assert [p.share_mode for p in conv.param] == [
        caffe_pb2.ParamSpec.STRICT,
        caffe_pb2.ParamSpec.PERMISSIVE,
    ]
    ip1 = upgrade_net_param(_parse(V1_LENET)).layer[3]
    assert [p.lr_mult for p in ip1.param] == [1, 2]
    assert not ip1.param[0].HasField("decay_mult")  # unset keeps Caffe's default of 1
    assert ip1.param[0].decay_mult == 1


def test_v1_per_layer_params_rules_and_loss_weight_are_copied():
    net = upgrade_net_param(_parse(V1_LENET))
    conv, pool, relu, drop = net.layer[1], net.layer[2], net.layer[4], net.layer[5]
    assert conv.convolution_param.num_output == 20
    assert list(conv.convolution_param.kernel_size) == [5]
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert pool.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert relu.relu_param.negative_slope == pytest.approx(0.1)
    assert drop.dropout_param.dropout_ratio == pytest.approx(0.3)
    assert net.layer[6].include[0].phase == caffe_pb2.TEST
    assert net.layer[0].include[0].phase == caffe_pb2.TRAIN
    loss = net.layer[7]
    assert list(loss.loss_weight) == [2] and loss.loss_param.ignore_label == 255


def test_v1_data_transform_fields_move_to_transform_param():
    """Caffe's UpgradeNetDataTransformation: scale/mean_file/crop_size/mirror leave data_param."""
    data = upgrade_net_param(_parse(V1_LENET)).layer[0]
    assert data.transform_param.scale == pytest.approx(0.00390625)
    assert data.transform_param.mirror is True
    assert data.transform_param.crop_size == 24
    for field in ("scale", "mirror", "crop_size", "mean_file"):
        assert not data.data_param.HasField(field)
    assert data.data_param.source == "mnist_train_lmdb"
    assert data.data_param.batch_size == 64
    assert data.data_param.backend == caffe_pb2.DataParameter.LMDB


def test_v1_blobs_are_carried_over():
    v1 = _parse(V1_LENET)
    proto_io.array_to_blob_proto(np.array([[1.0, 2.0]], np.float32), out=v1.layers[1].blobs.add())
    net = upgrade_net_param(v1)
    assert len(net.layer[1].blobs) == 1
    assert proto_io.blob_proto_to_array(net.layer[1].blobs[0]).tolist() == [[1.0, 2.0]]


def test_v1_type_table_covers_every_v1_enum():
    """Every V1 LayerType value has a mapping (Caffe's UpgradeV1LayerType is total)."""
    enum = caffe_pb2.V1LayerParameter.LayerType
    assert set(V1_LAYER_TYPES) == set(enum.values())
    assert V1_LAYER_TYPES[enum.Value("SOFTMAX_LOSS")] == "SoftmaxWithLoss"
    assert V1_LAYER_TYPES[enum.Value("HDF5_DATA")] == "HDF5Data"
    assert V1_LAYER_TYPES[enum.Value("TANH")] == "TanH"


def test_v1_file_is_upgraded_by_read_net_param(tmp_path):
    path = tmp_path / "v1.prototxt"
    path.write_text(V1_LENET)
    net = proto_io.read_net_param(str(path))
    assert net.layer[1].type == "Convolution" and not net.layers
    assert not net_needs_upgrade(net)


def test_v0_layers_are_rejected_with_the_layer_named():
    text = 'layers { layer { name: "conv1" type: "conv" num_output: 4 } top: "c" }'
    net = _parse(text)
    with pytest.raises(PrototxtError, match="V0 format"):
        upgrade_net_param(net, source="old.prototxt")


def test_mixed_layer_and_layers_is_rejected():
    text = 'layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }'
    with pytest.raises(PrototxtError, match="mixed.prototxt: net mixes V1"):
        upgrade_net_param(_parse(text), source="mixed.prototxt")


# ---------------------------------------------------------------- legacy inputs


def test_input_dim_becomes_first_input_layer():
    """Caffe's UpgradeNetInput: an "Input" layer named "input", placed before all layers."""
    net = _parse(
        'input: "data" input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }'
    )
    upgrade_net_param(net)
    assert not net.input and not net.input_dim and not net.input_shape
    assert [lp.name for lp in net.layer] == ["input", "relu"]
    first = net.layer[0]
    assert first.type == "Input" and list(first.top) == ["data"]
    assert [list(s.dim) for s in first.input_param.shape] == [[10, 3, 227, 227]]


def test_two_inputs_with_input_dim_groups_of_four():
    net = _parse(
        'input: "a" input: "b" '
        "input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4 "
        "input_dim: 5 input_dim: 6 input_dim: 7 input_dim: 8"
    )
    upgrade_net_param(net)
    layer = net.layer[0]
    assert list(layer.top) == ["a", "b"]
    assert [list(s.dim) for s in layer.input_param.shape] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_input_shape_becomes_input_layer():
    net = _parse(
        'input: "data" input_shape { dim: 2 dim: 5 } '
        'input: "label" input_shape { dim: 2 } '
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }'
    )
    upgrade_net_param(net)
    assert [lp.type for lp in net.layer] == ["Input", "InnerProduct"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[2, 5], [2]]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('input: "data" input_dim: 1 input_dim: 2 input_dim: 3', "need 4 input_dim"),
        ('input: "a" input: "b" input_shape { dim: 1 }', "1 input_shape entries"),
        ('input: "data"', "no input_shape or input_dim"),
        ("input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1", "without any `input`"),
    ],
)
def test_inconsistent_legacy_inputs_are_errors(text, pattern):
    with pytest.raises(PrototxtError, match=pattern):
        upgrade_net_param(_parse(text), source="deploy.prototxt")


def test_v1_net_with_legacy_inputs_upgrades_both():
    net = _parse(
        'input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4 '
        'layers { name: "sig" type: SIGMOID bottom: "data" top: "s" }'
    )
    upgrade_net_param(net)
    assert [(lp.name, lp.type) for lp in net.layer] == [("input", "Input"), ("sig", "Sigmoid")]


# ---------------------------------------------------------------- BatchNorm


def test_batch_norm_with_three_param_specs_gets_frozen_statistics():
    """Caffe's UpgradeNetBatchNorm: BatchNorm's 3 statistics blobs get lr_mult = decay_mult = 0."""
    net = _parse(
        'layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } '
        'param { lr_mult: 1 name: "shared" } }'
        'layer { name: "sc" type: "Scale" param { lr_mult: 1 } }'
    )
    upgrade_net_param(net)
    bn, scale = net.layer
    assert [(p.lr_mult, p.decay_mult) for p in bn.param] == [(0, 0)] * 3
    assert bn.param[2].name == "shared"
    assert scale.param[0].lr_mult == 1


def test_current_net_is_unchanged():
    text = 'layer { name: "r" type: "ReLU" bottom: "x" top: "x" param { lr_mult: 3 } }'
    net = _parse(text)
    assert not net_needs_upgrade(net)
    assert upgrade_net_param(_parse(text)) == net


# ---------------------------------------------------------------- solvers


@pytest.mark.parametrize(
    ("enum_name", "type_name"),
    [
        ("SGD", "SGD"),
        ("NESTEROV", "Nesterov"),
        ("ADAGRAD", "AdaGrad"),
        ("RMSPROP", "RMSProp"),
        ("ADADELTA", "AdaDelta"),
        ("ADAM", "Adam"),
    ],
)
def test_solver_type_enum_becomes_type_string(enum_name, type_name):
    """Caffe's UpgradeSolverType: the enum is replaced by the string and cleared."""
    solver = proto_io.parse_prototxt(
        f"base_lr: 0.1 solver_type: {enum_name}", caffe_pb2.SolverParameter()
    )
    upgrade_solver_param(solver)
    assert solver.type == type_name
    assert not solver.HasField("solver_type")


def test_solver_with_both_type_fields_is_rejected(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('solver_type: ADAM type: "SGD"')
    with pytest.raises(PrototxtError, match="solver.prototxt: both the deprecated solver_type"):
        proto_io.read_solver_param(str(path))


def test_solver_without_enum_keeps_its_type():
    solver = caffe_pb2.SolverParameter(type="Nesterov")
    assert upgrade_solver_param(solver).type == "Nesterov"
    assert upgrade_solver_param(caffe_pb2.SolverParameter()).type == "SGD"
