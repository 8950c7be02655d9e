"""Tests of the Caffe schema and file I/O: prototxt parsing/errors, binary protos, blob arrays."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from engine import proto_io
from engine.errors import PrototxtError
from engine.proto import caffe_pb2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.environ.get(
    "CAFFE_EXAMPLES", os.path.join(os.path.dirname(REPO), "shared", "caffe-examples")
)
EXAMPLE_FILES = sorted(glob.glob(os.path.join(EXAMPLES, "**", "*.prototxt"), recursive=True))
needs_examples = pytest.mark.skipif(
    not os.path.isdir(EXAMPLES), reason=f"Caffe examples not found at {EXAMPLES}"
)

SMALL_NET = """\
name: "tiny"
layer {
  name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 1 dim: 5 dim: 5 } }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 3 kernel_size: 3 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 }
  }
}
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR }
}
layer {
  name: "loss" type: "SoftmaxWithLoss" bottom: "pool1" bottom: "label" top: "loss"
  include { phase: TRAIN } loss_weight: 0.5
}
"""


def _write(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


# ---------------------------------------------------------------- schema


# (message, field, Caffe field number) spot checks against BVLC caffe.proto.
CAFFE_FIELD_NUMBERS = [
    ("BlobProto", "shape", 7),
    ("BlobProto", "double_data", 8),
    ("BlobProto", "num", 1),
    ("Datum", "float_data", 6),
    ("Datum", "encoded", 7),
    ("NetParameter", "layer", 100),
    ("NetParameter", "layers", 2),
    ("NetParameter", "input_shape", 8),
    ("NetParameter", "input_dim", 4),
    ("LayerParameter", "transform_param", 100),
    ("LayerParameter", "loss_param", 101),
    ("LayerParameter", "convolution_param", 106),
    ("LayerParameter", "pooling_param", 121),
    ("LayerParameter", "batch_norm_param", 139),
    ("LayerParameter", "input_param", 143),
    ("LayerParameter", "swish_param", 147),
    ("LayerParameter", "clip_param", 148),
    ("LayerParameter", "propagate_down", 11),
    ("ConvolutionParameter", "dilation", 18),
    ("ConvolutionParameter", "force_nd_im2col", 17),
    ("PoolingParameter", "round_mode", 13),
    ("DataParameter", "prefetch", 10),
    ("SolverParameter", "type", 40),
    ("SolverParameter", "solver_type", 30),
    ("SolverParameter", "layer_wise_reduce", 41),
    ("SolverParameter", "weights", 42),
    ("SolverParameter", "test_state", 27),
    ("SolverState", "current_step", 4),
    ("V1LayerParameter", "blobs_lr", 7),
    ("V1LayerParameter", "param", 1001),
    ("V1LayerParameter", "transform_param", 36),
    ("V1LayerParameter", "loss_param", 42),
    ("V1LayerParameter", "layer", 1),
]


@pytest.mark.parametrize(("message", "field", "number"), CAFFE_FIELD_NUMBERS)
def test_schema_uses_caffes_field_numbers(message, field, number):
    """Binary compatibility with Caffe files rests on identical field numbers."""
    descriptor = getattr(caffe_pb2, message).DESCRIPTOR
    assert descriptor.fields_by_name[field].number == number


def test_schema_defaults_follow_caffe():
    """Caffe's documented defaults (unset fields read as these)."""
    solver = caffe_pb2.SolverParameter()
    assert solver.type == "SGD" and solver.regularization_type == "L2"
    assert solver.average_loss == 1 and solver.iter_size == 1
    assert solver.clip_gradients == -1 and solver.random_seed == -1
    assert solver.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO
    assert solver.solver_mode == caffe_pb2.SolverParameter.GPU
    assert solver.layer_wise_reduce is True and solver.test_initialization is True
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.ParamSpec().lr_mult == 1 and caffe_pb2.ParamSpec().decay_mult == 1
    assert caffe_pb2.FillerParameter().type == "constant"
    assert caffe_pb2.PoolingParameter().round_mode == caffe_pb2.PoolingParameter.CEIL
    assert caffe_pb2.DataParameter().backend == caffe_pb2.DataParameter.LEVELDB
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.BatchNormParameter().moving_average_fraction == pytest.approx(0.999)


def test_our_extensions_use_reserved_numbers_and_defaults():
    """ISGD additions sit at 1001+ so they never collide with Caffe's own fields."""
    sp = caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name
    assert sp["isgd_param"].number == 1001
    assert sp["test_interval_seconds"].number == 1002
    assert sp["loss_bands"].number == 1003
    st = caffe_pb2.SolverState.DESCRIPTOR.fields_by_name
    assert st["isgd_state"].number == 1001 and st["data_cursor"].number == 1002
    isgd = caffe_pb2.IsgdParameter()
    assert (isgd.control_limit, isgd.stop, isgd.zeta, isgd.queue_size) == (3, 5, 0, 0)
    assert isgd.epsilon == pytest.approx(0.1)
    assert caffe_pb2.SolverParameter().test_interval_seconds == 0


def test_wire_bytes_match_caffe_encoding():
    """Hand-encoded Caffe bytes: Datum fields 1/5 varint, BlobShape dims packed in field 1."""
    assert caffe_pb2.Datum(channels=1, label=7).SerializeToString() == b"\x08\x01\x28\x07"
    assert caffe_pb2.BlobShape(dim=[2, 3]).SerializeToString() == b"\x0a\x02\x02\x03"
    datum = caffe_pb2.Datum.FromString(b"\x08\x03\x10\x02\x18\x02\x22\x0c" + bytes(range(12)))
    assert (datum.channels, datum.height, datum.width) == (3, 2, 2)
    assert datum.data == bytes(range(12))


# ---------------------------------------------------------------- text files


@needs_examples
def test_examples_directory_is_populated():
    assert len(EXAMPLE_FILES) >= 10, f"expected Caffe's example prototxts under {EXAMPLES}"


@needs_examples
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: os.path.relpath(p, EXAMPLES))
def test_every_caffe_example_parses(path):
    """Caffe's own example nets and solvers read with our schema (solvers by file name)."""
    if "solver" in os.path.basename(path):
        solver = proto_io.read_solver_param(path)
        assert solver.HasField("base_lr")
        assert not solver.HasField("solver_type")
    else:
        net = proto_io.read_net_param(path)
        assert len(net.layer) > 0
        assert not net.layers and not net.input and not net.input_dim
        assert all(layer.type for layer in net.layer)


@needs_examples
def test_lenet_example_content():
    """Spot-check parsed values, not just absence of errors."""
    net = proto_io.read_net_param(
        os.path.join(EXAMPLES, "examples/mnist/lenet_train_test.prototxt")
    )
    conv1 = next(layer for layer in net.layer if layer.name == "conv1")
    assert conv1.type == "Convolution"
    assert conv1.convolution_param.num_output == 20
    assert list(conv1.convolution_param.kernel_size) == [5]
    assert [p.lr_mult for p in conv1.param] == [1, 2]
    data_layers = [layer for layer in net.layer if layer.type == "Data"]
    assert {rule.phase for layer in data_layers for rule in layer.include} == {
        caffe_pb2.TRAIN,
        caffe_pb2.TEST,
    }
    assert data_layers[0].transform_param.scale == pytest.approx(0.00390625)


def test_read_prototxt_parses_a_written_file(tmp_path):
    path = _write(tmp_path, "net.prototxt", SMALL_NET)
    net = proto_io.read_prototxt(path, caffe_pb2.NetParameter())
    assert [layer.name for layer in net.layer] == ["data", "conv1", "pool1", "loss"]
    assert net.layer[2].pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert list(net.layer[3].loss_weight) == [0.5]


def test_malformed_text_names_file_line_and_column(tmp_path):
    bad = SMALL_NET.replace("stride: 2 round_mode", "strides: 2 round_mode")
    path = _write(tmp_path, "bad.prototxt", bad)
    line = bad.splitlines().index(next(li for li in bad.splitlines() if "strides" in li)) + 1
    with pytest.raises(PrototxtError) as info:
        proto_io.read_prototxt(path, caffe_pb2.NetParameter())
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:")
    assert "strides" in message


def test_syntax_error_reports_its_line(tmp_path):
    path = _write(tmp_path, "broken.prototxt", 'name: "x"\nlayer {\n  name: "a"\n  type: \n')
    with pytest.raises(PrototxtError, match=r"broken\.prototxt:\d+:\d+: "):
        proto_io.read_net_param(path)


def test_bad_enum_value_is_a_prototxt_error(tmp_path):
    text = 'layer { name: "p" type: "Pooling" pooling_param { pool: MEDIAN } }'
    path = _write(tmp_path, "enum.prototxt", text)
    with pytest.raises(PrototxtError, match=r"enum\.prototxt:1:\d+: .*MEDIAN"):
        proto_io.read_net_param(path)


def test_missing_file_error_names_the_path(tmp_path):
    path = str(tmp_path / "nowhere" / "net.prototxt")
    with pytest.raises(PrototxtError, match="no such file") as info:
        proto_io.read_net_param(path)
    assert path in str(info.value)
    with pytest.raises(PrototxtError, match="nowhere"):
        proto_io.read_solver_param(path)
    with pytest.raises(PrototxtError, match="nowhere"):
        proto_io.read_net_weights(str(tmp_path / "nowhere.caffemodel"))


def test_binary_file_given_as_text_is_a_clear_error(tmp_path):
    path = _write(tmp_path, "weights.prototxt", b"\xff\xfe\x00\x01binary")
    with pytest.raises(PrototxtError, match="weights.prototxt: not a text prototxt"):
        proto_io.read_net_param(path)


def test_text_round_trip_is_exact(tmp_path):
    """parse -> print -> parse gives an equal message, floats included."""
    net = proto_io.parse_prototxt(SMALL_NET, caffe_pb2.NetParameter())
    net.layer[1].convolution_param.weight_filler.std = 0.0123456789
    text = proto_io.net_param_to_text(net)
    again = proto_io.parse_prototxt(text, caffe_pb2.NetParameter())
    assert again == net
    out = str(tmp_path / "out.prototxt")
    proto_io.write_text_proto(out, net)
    assert proto_io.read_net_param(out) == net


@needs_examples
def test_example_net_text_round_trip():
    path = os.path.join(EXAMPLES, "models/bvlc_alexnet/train_val.prototxt")
    net = proto_io.read_net_param(path)
    again = proto_io.parse_prototxt(proto_io.net_param_to_text(net), caffe_pb2.NetParameter())
    assert again == net


def test_read_net_param_copies_a_message_argument():
    original = caffe_pb2.NetParameter(input=["data"], input_dim=[1, 1, 2, 2])
    upgraded = proto_io.read_net_param(original)
    assert upgraded.layer[0].type == "Input"
    assert list(original.input) == ["data"] and not original.layer


def test_solver_with_extensions_parses(tmp_path):
    text = """
        net: "train_val.prototxt" base_lr: 0.01 lr_policy: "loss_bands" solver_type: NESTEROV
        test_iter: 100 test_interval: 500 test_interval_seconds: 2.5 weights: "a.caffemodel"
        isgd_param { control_limit: 2 stop: 4 }
        loss_bands { threshold: 2.0 threshold: 1.0 lr: 0.01 lr: 0.001 lr: 0.0001 }
        test_state { stage: "val" }
    """
    solver = proto_io.read_solver_param(_write(tmp_path, "solver.prototxt", text))
    assert solver.type == "Nesterov"
    assert solver.test_interval_seconds == pytest.approx(2.5)
    assert solver.isgd_param.control_limit == 2 and solver.isgd_param.stop == 4
    assert solver.isgd_param.epsilon == pytest.approx(0.1)
    assert list(solver.loss_bands.lr) == pytest.approx([0.01, 0.001, 0.0001])
    assert list(solver.weights) == ["a.caffemodel"]
    assert list(solver.test_state[0].stage) == ["val"]


# ---------------------------------------------------------------- binary files


def _small_model() -> caffe_pb2.NetParameter:
    net = proto_io.parse_prototxt(SMALL_NET, caffe_pb2.NetParameter())
    rng = np.random.default_rng(7)
    conv = net.layer[1]
    proto_io.array_to_blob_proto(
        rng.standard_normal((3, 1, 3, 3)).astype(np.float32), out=conv.blobs.add()
    )
    proto_io.array_to_blob_proto(rng.standard_normal(3).astype(np.float32), out=conv.blobs.add())
    return net


def test_caffemodel_round_trip(tmp_path):
    net = _small_model()
    path = str(tmp_path / "tiny.caffemodel")
    proto_io.write_binary_proto(path, net)
    back = proto_io.read_net_weights(path)
    assert back == net
    w = proto_io.blob_proto_to_array(back.layer[1].blobs[0])
    np.testing.assert_array_equal(w, proto_io.blob_proto_to_array(net.layer[1].blobs[0]))
    assert not os.path.exists(path + f".tmp{os.getpid()}")


def test_truncated_caffemodel_error_names_the_file(tmp_path):
    data = _small_model().SerializeToString()
    cut = data[: len(data) - 7]  # ends inside the last blob's packed floats
    path = _write(tmp_path, "cut.caffemodel", cut)
    with pytest.raises(PrototxtError, match="truncated or corrupt") as info:
        proto_io.read_net_weights(path)
    assert path in str(info.value)


def test_empty_and_garbage_binary_files_are_errors(tmp_path):
    empty = _write(tmp_path, "empty.binaryproto", b"")
    with pytest.raises(PrototxtError, match="empty.binaryproto: file is empty"):
        proto_io.read_blob_proto(empty)
    garbage = _write(tmp_path, "junk.solverstate", b"\x0f\xff\xff\xff\xff")
    with pytest.raises(PrototxtError, match="junk.solverstate: not a valid binary SolverState"):
        proto_io.read_solver_state(garbage)


def test_solverstate_round_trip_with_isgd_extension(tmp_path):
    state = caffe_pb2.SolverState(iter=1200, learned_net="snap_iter_1200.caffemodel")
    state.current_step = 2
    state.data_cursor = 987654321012
    proto_io.array_to_blob_proto(
        np.arange(6, dtype=np.float32).reshape(2, 3), out=state.history.add()
    )
    state.isgd_state.loss_queue.extend([2.3, 2.1, 1.9])
    state.isgd_state.queue_head = 1
    state.isgd_state.loss_sum = 6.3
    path = str(tmp_path / "s.solverstate")
    proto_io.write_solver_state(path, state)
    back = proto_io.read_solver_state(path)
    assert back == state
    assert back.data_cursor == 987654321012
    # A Caffe SolverState reader that ignores our fields still sees its own.
    assert back.iter == 1200 and back.current_step == 2


# ---------------------------------------------------------------- blobs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blob_proto_round_trip_shape_and_dtype(dtype):
    arr = np.random.default_rng(0).standard_normal((2, 3, 4, 5, 2)).astype(dtype)
    diff = (arr * 3).astype(dtype)
    bp = proto_io.array_to_blob_proto(arr, diff=diff)
    assert list(bp.shape.dim) == [2, 3, 4, 5, 2]
    assert not bp.HasField("num")
    stored_as_double = dtype == np.float64
    assert (len(bp.double_data) > 0) == stored_as_double
    assert (len(bp.data) > 0) == (not stored_as_double)
    back = proto_io.blob_proto_to_array(bp)
    assert back.dtype == dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_array_equal(proto_io.blob_proto_to_array(bp, diff=True), diff)
    back[0, 0, 0, 0, 0] = 123.0  # the result is a copy, not a view into the proto
    assert proto_io.blob_proto_to_array(bp)[0, 0, 0, 0, 0] == arr[0, 0, 0, 0, 0]


def test_legacy_blob_proto_writes_4d_fields():
    """Old Caffe wrote num/channels/height/width, padding fewer axes with leading 1s."""
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    bp = proto_io.array_to_blob_proto(arr, legacy=True)
    assert (bp.num, bp.channels, bp.height, bp.width) == (1, 1, 3, 4)
    assert len(bp.shape.dim) == 0
    back = proto_io.blob_proto_to_array(bp)
    assert back.shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(back.reshape(3, 4), arr)
    with pytest.raises(ValueError, match="at most 4 axes"):
        proto_io.array_to_blob_proto(np.zeros((1, 1, 1, 1, 1)), legacy=True)


def test_legacy_blob_matches_lower_rank_shape_as_caffe_shape_equals():
    """Caffe's ShapeEquals: legacy (1,1,N,K) fits an (N,K) blob; (N,K) 'shape' does not fit 4-D."""
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    legacy = proto_io.array_to_blob_proto(arr, legacy=True)
    assert proto_io.blob_proto_matches_shape(legacy, (2, 3))
    assert proto_io.blob_proto_matches_shape(legacy, (1, 1, 2, 3))
    assert not proto_io.blob_proto_matches_shape(legacy, (3, 2))
    np.testing.assert_array_equal(proto_io.blob_proto_to_array(legacy, shape=(2, 3)), arr)
    modern = proto_io.array_to_blob_proto(arr)
    assert not proto_io.blob_proto_matches_shape(modern, (1, 1, 2, 3))
    with pytest.raises(ValueError, match="w1: stored shape"):
        proto_io.blob_proto_to_array(modern, shape=(3, 2), name="w1")


def test_legacy_fields_win_over_shape_as_in_caffe():
    bp = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=1, data=[1.0, 2.0])
    bp.shape.dim.extend([5])
    assert proto_io.blob_proto_shape(bp) == (1, 2, 1, 1)


def test_blob_count_mismatch_names_the_blob():
    bp = caffe_pb2.BlobProto(data=[1.0, 2.0, 3.0])
    bp.shape.dim.extend([2, 2])
    with pytest.raises(ValueError, match="conv1 blob 0: data holds 3 values but shape"):
        proto_io.blob_proto_to_array(bp, name="conv1 blob 0")


def test_binaryproto_mean_file_round_trip(tmp_path):
    mean = np.random.default_rng(3).uniform(0, 255, (1, 3, 4, 4)).astype(np.float32)
    path = str(tmp_path / "mean.binaryproto")
    proto_io.write_blob_array(path, mean, legacy=True)
    bp = proto_io.read_blob_proto(path)
    assert (bp.num, bp.channels, bp.height, bp.width) == (1, 3, 4, 4)
    np.testing.assert_array_equal(proto_io.read_blob_array(path), mean)


def test_empty_array_blob():
    bp = proto_io.array_to_blob_proto(np.zeros((0, 3), dtype=np.float32))
    assert proto_io.blob_proto_to_array(bp).shape == (0, 3)
