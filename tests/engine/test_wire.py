"""The .caffemodel written from the arrays in place (engine/wire.py) is, byte for byte, what
protobuf serializes for Caffe's NetParameter with its blobs (Net.to_proto), in every blob
layout this project writes: float and double, shape or legacy 4-D dims, with and without diffs,
empty and non-contiguous arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from engine import wire
from engine.net import Net
from engine.proto import caffe_pb2
from engine.proto_io import array_to_blob_proto, blob_proto_chunks

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "prototxt" / "lenet_train_test.prototxt"


def joined(chunks: list[wire.Chunk]) -> bytes:
    return b"".join(bytes(c) for c in chunks)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize(
    "shape", [(), (0,), (3,), (2, 3), (2, 3, 4, 5), (1, 2, 3, 4, 5)], ids=lambda s: str(s)
)
def test_blob_chunks_are_array_to_blob_proto_serialized(shape, legacy, dtype):
    rng = np.random.default_rng(len(shape))
    data = rng.standard_normal(shape).astype(dtype)
    if legacy and len(shape) > 4:  # legacy dims hold at most 4 axes: both paths refuse
        for write in (array_to_blob_proto, blob_proto_chunks):
            with pytest.raises(ValueError, match="at most 4 axes"):
                write(data, None, legacy=True)
        return
    for diff in (None, rng.standard_normal(shape).astype(dtype)):
        want = array_to_blob_proto(data, diff, legacy=legacy).SerializeToString()
        assert joined(blob_proto_chunks(data, diff, legacy)) == want


def test_blob_chunks_read_non_contiguous_and_big_endian_arrays_as_their_values():
    values = np.arange(24, dtype=np.float32).reshape(4, 6).T  # a transposed view
    big = values.astype(">f4")
    want = array_to_blob_proto(np.ascontiguousarray(values)).SerializeToString()
    assert joined(blob_proto_chunks(values)) == want
    assert joined(blob_proto_chunks(big)) == want


def test_split_before_cuts_where_the_field_belongs():
    layer = text_format.Parse(
        'name: "c" type: "Convolution" bottom: "x" top: "y" param { lr_mult: 1 }'
        " include { phase: TRAIN } convolution_param { num_output: 2 kernel_size: 3 }",
        caffe_pb2.LayerParameter(),
    )
    head, tail = wire.split_before(layer.SerializeToString(), wire.LAYER_BLOBS)
    before, after = caffe_pb2.LayerParameter(), caffe_pb2.LayerParameter()
    before.ParseFromString(head)
    after.ParseFromString(tail)
    assert [f.name for f, _ in before.ListFields()] == ["name", "type", "bottom", "top", "param"]
    assert [f.name for f, _ in after.ListFields()] == ["include", "convolution_param"]
    assert wire.split_before(head, 100) == (head, b"")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize(("legacy", "write_diff"), [(False, False), (True, False), (False, True)])
def test_saved_caffemodel_is_protobufs_serialization_of_to_proto(
    tmp_path, dtype, phase, legacy, write_diff
):
    """Net.save (from the arrays) == to_proto().SerializeToString(), diffs nonzero."""
    param = text_format.Parse(LENET.read_text(), caffe_pb2.NetParameter())
    for layer in param.layer:  # no data files: the data layers become DummyData of MNIST's shape
        if layer.type == "Data":
            tops, include = list(layer.top), list(layer.include)
            layer.Clear()
            layer.name, layer.type = f"data_{len(include)}", "DummyData"
            layer.top.extend(tops)
            layer.include.extend(include)
            layer.dummy_data_param.shape.add().dim.extend((2, 1, 28, 28))
            layer.dummy_data_param.shape.add().dim.extend((2,))
    net = Net(param, phase, dtype=dtype, seed=3)
    rng = np.random.default_rng(5)
    for blob in net.learnable_params:
        blob.diff[...] = rng.standard_normal(blob.shape)
    path = tmp_path / "w.caffemodel"
    net.save(str(path), legacy_shapes=legacy, write_diff=write_diff)
    want = net.to_proto(write_diff=write_diff, legacy_shapes=legacy).SerializeToString()
    assert path.read_bytes() == want
    assert sum(len(lp.blobs) for lp in net.to_proto().layer) == 8  # conv1/2, ip1/2: w and b


def test_net_chunks_refuse_a_mismatched_layer_count_and_blobs_left_in_the_message():
    net = caffe_pb2.NetParameter(name="n")
    net.layer.add(name="a")
    with pytest.raises(ValueError, match="1 layers but blobs for 0"):
        wire.net_chunks(net, [])
    net.layer[0].blobs.add()
    with pytest.raises(ValueError, match="layer 'a' already holds blobs"):
        wire.net_chunks(net, [[]])
