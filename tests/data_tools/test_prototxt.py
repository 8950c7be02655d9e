"""prototxt/ nets read the databases `python -m data_tools prepare` writes, at its default paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from google.protobuf import text_format

from engine.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[2]


def data_layers(name: str) -> list:
    net = text_format.Parse((ROOT / "prototxt" / name).read_text(), caffe_pb2.NetParameter())
    return [lay for lay in net.layer if lay.type == "Data"]


def test_sources_are_the_tools_default_outputs():
    lenet = [lay.data_param.source for lay in data_layers("lenet_train_test.prototxt")]
    assert lenet == ["data/mnist/mnist_train_lmdb", "data/mnist/mnist_test_lmdb"]
    quick = data_layers("cifar10_quick_train_test.prototxt")
    assert [lay.data_param.source for lay in quick] == [
        "data/cifar10/cifar10_train_lmdb",
        "data/cifar10/cifar10_test_lmdb",
    ]
    assert {lay.transform_param.mean_file for lay in quick} == {"data/cifar10/mean.binaryproto"}
    alex = data_layers("alexnet_train_val.prototxt")
    assert [lay.transform_param.crop_size for lay in alex] == [227, 227]
    assert [lay.transform_param.mirror for lay in alex] == [True, False]
    assert [lay.data_param.batch_size for lay in alex] == [256, 50]


def test_lenet_runs_on_prepared_mnist(mnist_files, tmp_path, monkeypatch):
    """`prepare` into a fresh directory, then LeNet's TRAIN net reads batches of 64 from it."""
    from data_tools.prepare import prepare
    from engine.net import Net

    monkeypatch.chdir(tmp_path)
    prepare(str(mnist_files["dir"]), "data", ("mnist",), verify=False, progress=False)
    net = Net(str(ROOT / "prototxt" / "lenet_train_test.prototxt"), "TRAIN", seed=0)
    net.forward()
    assert net.blobs["data"].shape == (64, 1, 28, 28)
    assert np.isfinite(net.loss)
    assert float(net.blobs["data"].data.max()) <= 1.0  # scale 1/256 applied
