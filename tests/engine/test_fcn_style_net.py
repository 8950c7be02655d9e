"""An FCN-style net through engine.net.Net: conv -> pool -> score conv -> Deconvolution (stride 2,
kernel 4, bilinear, group = channels, lr_mult 0, as FCN's upscore) -> Crop to the data ->
per-pixel SoftmaxWithLoss. It builds, runs forward and backward, and keeps the input's size."""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from engine.net import Net
from engine.proto import caffe_pb2

_NET = """
name: "fcn_tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 12 dim: 10 } shape { dim: 2 dim: 1 dim: 12 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "pool1" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "upscore" type: "Deconvolution" bottom: "score" top: "upscore"
  param { lr_mult: 0 }
  convolution_param { num_output: 3 group: 3 kernel_size: 4 stride: 2 bias_term: false
    weight_filler { type: "bilinear" } } }
layer { name: "crop" type: "Crop" bottom: "upscore" bottom: "data" top: "cropped"
  crop_param { axis: 2 offset: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "cropped" bottom: "label" top: "loss" }
"""


def test_fcn_style_net_runs_and_output_matches_input_size():
    param = text_format.Parse(_NET, caffe_pb2.NetParameter())
    net = Net(param, phase="TRAIN", dtype=np.float64, seed=1)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 3, net.blobs["label"].shape)
    net.forward()
    loss = float(net.loss)  # forward() returns pycaffe's outputs; the loss is kept here
    assert np.isfinite(loss) and loss > 0
    assert net.blobs["upscore"].shape == (2, 3, 14, 12)  # 2*(6-1) + 4 = 14, 2*(5-1) + 4 = 12
    assert net.blobs["cropped"].shape[2:] == net.blobs["data"].shape[2:]
    net.backward()
    # the score and conv1 weights get a nonzero gradient through Crop and Deconvolution
    assert np.any(net.params["score"][0].diff != 0)
    assert np.any(net.params["conv1"][0].diff != 0)
    w = net.params["upscore"][0].data
    assert w.shape == (3, 1, 4, 4)
    np.testing.assert_allclose(w[0, 0, 1:3, 1:3], 0.5625)  # bilinear centre: (3/4)^2
