"""Deploy-style nets of the BVLC model zoo's shapes (not among the example files): GoogLeNet-style
inception with Caffe's ceil pooling and Concat, a fully-convolutional CaffeNet declared with legacy
`input_dim` fields, grouped convolutions, and a ResNet-style BatchNorm/Scale/Eltwise block."""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from engine.net import Net
from engine.proto import caffe_pb2
from engine.upgrade import upgrade_net_param


def conv(name: str, bottom: str, n: int, k: int, s: int = 1, p: int = 0, g: int = 1) -> str:
    return f"""
    layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"
      convolution_param {{ num_output: {n} kernel_size: {k} stride: {s} pad: {p} group: {g}
        weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" value: 0.2 }} }} }}
    layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}"""


def pool(name: str, bottom: str, k: int, s: int, method: str = "MAX", p: int = 0) -> str:
    return f"""
    layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}"
      pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }} }}"""


def inception(
    name: str, bottom: str, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int
) -> str:
    return (
        conv(f"{name}/1x1", bottom, c1, 1)
        + conv(f"{name}/3x3_reduce", bottom, c3r, 1)
        + conv(f"{name}/3x3", f"{name}/3x3_reduce", c3, 3, p=1)
        + conv(f"{name}/5x5_reduce", bottom, c5r, 1)
        + conv(f"{name}/5x5", f"{name}/5x5_reduce", c5, 5, p=2)
        + pool(f"{name}/pool", bottom, 3, 1, p=1)
        + conv(f"{name}/pool_proj", f"{name}/pool", pp, 1)
        + f"""
    layer {{ name: "{name}/output" type: "Concat" top: "{name}/output"
      bottom: "{name}/1x1" bottom: "{name}/3x3" bottom: "{name}/5x5" bottom: "{name}/pool_proj" }}"""
    )


GOOGLENET_STYLE = (
    """name: "GoogleNetStyle"
    layer { name: "data" type: "Input" top: "data"
            input_param { shape: { dim: 2 dim: 3 dim: 112 dim: 112 } } }"""
    + conv("conv1/7x7_s2", "data", 16, 7, s=2, p=3)
    + pool("pool1/3x3_s2", "conv1/7x7_s2", 3, 2)
    + """
    layer { name: "pool1/norm1" type: "LRN" bottom: "pool1/3x3_s2" top: "pool1/norm1"
            lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }"""
    + conv("conv2/3x3", "pool1/norm1", 24, 3, p=1)
    + pool("pool2/3x3_s2", "conv2/3x3", 3, 2)
    + inception("inception_3a", "pool2/3x3_s2", 8, 8, 12, 4, 4, 4)
    + pool("pool3/3x3_s2", "inception_3a/output", 3, 2)
    + """
    layer { name: "pool5" type: "Pooling" bottom: "pool3/3x3_s2" top: "pool5"
            pooling_param { pool: AVE global_pooling: true } }
    layer { name: "drop" type: "Dropout" bottom: "pool5" top: "pool5"
            dropout_param { dropout_ratio: 0.4 } }
    layer { name: "classifier" type: "InnerProduct" bottom: "pool5" top: "classifier"
            inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
    layer { name: "prob" type: "Softmax" bottom: "classifier" top: "prob" }
    """
)


def test_googlenet_style_inception_uses_caffe_ceil_pooling_and_concat():
    net = Net(text_format.Parse(GOOGLENET_STYLE, caffe_pb2.NetParameter()), "TEST", seed=0)
    # conv1: (112 + 6 - 7) / 2 + 1 = 56; pool 3/2 with Caffe's ceil: ceil(53 / 2) + 1 = 28
    assert net.blobs["conv1/7x7_s2"].shape == (2, 16, 56, 56)
    assert net.blobs["pool1/3x3_s2"].shape == (2, 16, 28, 28)
    assert net.blobs["pool2/3x3_s2"].shape == (2, 24, 14, 14)  # floor would give 13
    assert net.blobs["inception_3a/output"].shape == (2, 8 + 12 + 4 + 4, 14, 14)
    assert net.blobs["pool3/3x3_s2"].shape == (2, 28, 7, 7)
    data = np.random.default_rng(0).uniform(0, 1, (2, 3, 112, 112)).astype(np.float32)
    prob = net.forward(data=data)["prob"]
    assert prob.shape == (2, 10)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


FULL_CONV_CAFFENET = """
name: "CaffeNetConvStyle"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 99 input_dim: 99
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 11 stride: 4 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  convolution_param { num_output: 8 pad: 2 kernel_size: 5 group: 2 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6-conv" type: "Convolution" bottom: "pool2" top: "fc6-conv"
  convolution_param { num_output: 12 kernel_size: 3 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "fc8-conv" type: "Convolution" bottom: "fc6-conv" top: "fc8-conv"
  convolution_param { num_output: 5 kernel_size: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "prob" type: "Softmax" bottom: "fc8-conv" top: "prob" }
"""


def test_fully_convolutional_caffenet_with_legacy_input_dim_and_groups():
    param = upgrade_net_param(text_format.Parse(FULL_CONV_CAFFENET, caffe_pb2.NetParameter()))
    net = Net(param, "TEST", seed=0)
    assert net.inputs == ["data"]
    assert net.params["conv2"][0].data.shape == (8, 4, 5, 5)  # channels / group
    # 99 -> conv 11/4: 23 -> pool 3/2: 11 -> conv2 (pad 2): 11 -> pool: 5 -> fc6 3x3: 3
    assert net.blobs["fc8-conv"].shape == (1, 5, 3, 3)
    prob = net.forward(data=np.ones((1, 3, 99, 99), np.float32))["prob"]
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)
    # a bigger input reshapes the whole net, as Caffe's Reshape does
    prob = net.forward(data=np.ones((2, 3, 131, 131), np.float32))["prob"]
    assert prob.shape[:2] == (2, 5) and prob.shape[2] > 3


RESNET_BLOCK = """
name: "ResStyle"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 8 dim: 8 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "res_a" type: "Convolution" bottom: "data" top: "res_a"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: "msra" } } }
layer { name: "bn_a" type: "BatchNorm" bottom: "res_a" top: "res_a" }
layer { name: "scale_a" type: "Scale" bottom: "res_a" top: "res_a" scale_param { bias_term: true } }
layer { name: "relu_a" type: "ReLU" bottom: "res_a" top: "res_a" }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "res_a" top: "sum" }
layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def test_resnet_style_block_trains_one_step_with_batchnorm_frozen_stats():
    net = Net(text_format.Parse(RESNET_BLOCK, caffe_pb2.NetParameter()), "TRAIN", seed=0)
    # BatchNorm's three statistics blobs are not learned (Caffe forces lr_mult 0)
    bn = net.learnable_params.index(net.params["bn_a"][0])
    assert net.params_lr[bn : bn + 3] == [0.0, 0.0, 0.0]
    assert net.blobs["pool"].shape == (2, 4, 4, 4)  # ceil((8 - 3) / 2) + 1
    net.blobs["data"].data[...] = np.random.default_rng(1).standard_normal((2, 4, 8, 8))
    net.forward_backward()
    assert np.any(net.params["res_a"][0].diff) and np.any(net.params["scale_a"][0].diff)
    assert not np.any(net.params["bn_a"][0].diff)
