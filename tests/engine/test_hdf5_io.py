"""Caffe's HDF5 layouts: Net::ToHDF5 / CopyTrainedLayersFromHDF5 and the .solverstate.h5 datasets."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from engine.errors import NetError, PrototxtError
from engine.hdf5_io import (
    is_hdf5_path,
    read_solver_state,
    save_net_weights,
    write_solver_state,
)
from engine.net import Net
from engine.proto import caffe_pb2
from engine.proto_io import array_to_blob_proto, blob_proto_to_array, parse_prototxt

NET = """
name: "h5net"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 1 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
layer { name: "ip1" type: "InnerProduct" bottom: "c" top: "a" param { name: "shared_w" }
  inner_product_param { num_output: 4 bias_term: false weight_filler { type: "gaussian" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "c" top: "b" param { name: "shared_w" }
  inner_product_param { num_output: 4 bias_term: false weight_filler { type: "gaussian" } } }
"""


def make_net(seed: int) -> Net:
    return Net(parse_prototxt(NET, caffe_pb2.NetParameter()), "TEST", seed=seed)


def params(net: Net) -> dict[str, list[np.ndarray]]:
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


def test_caffe_decides_hdf5_by_the_name_ending_h5() -> None:
    """Net::CopyTrainedLayersFrom and Solver::Restore test for the ".h5" suffix only."""
    assert is_hdf5_path("a.caffemodel.h5") and is_hdf5_path("x.solverstate.h5")
    assert not is_hdf5_path("a.caffemodel") and not is_hdf5_path("a.h5.caffemodel")


def test_weights_round_trip_through_caffemodel_h5(tmp_path) -> None:
    src, dst = make_net(1), make_net(2)
    assert not np.array_equal(src.params["conv"][0].data, dst.params["conv"][0].data)
    path = tmp_path / "w.caffemodel.h5"
    src.save(str(path))
    dst.copy_from(str(path))
    for name, arrays in params(src).items():
        for a, b in zip(arrays, params(dst)[name], strict=True):
            np.testing.assert_array_equal(a, b)
    # the Net constructor's weights= goes through copy_from too
    third = Net(parse_prototxt(NET, caffe_pb2.NetParameter()), "TEST", seed=3, weights=str(path))
    np.testing.assert_array_equal(third.flat_data, src.flat_data)


def test_to_hdf5_layout_one_group_per_layer_shared_params_written_once(tmp_path) -> None:
    """ToHDF5: data/<layer>/<j> for every layer; a sharer's param is left to its owner; the
    diff group holds every param, sharers included."""
    net = make_net(4)
    net.forward_loss()
    net.flat_diff[...] = np.arange(net.flat_diff.size, dtype=np.float32)
    path = tmp_path / "w.caffemodel.h5"
    save_net_weights(net, str(path), write_diff=True)
    with h5py.File(path, "r") as f:
        assert set(f) == {"data", "diff"}
        assert set(f["data"]) == set(net.layer_names)
        assert len(f["data/in"]) == 0 and len(f["data/relu"]) == 0
        assert f["data/conv/0"].shape == (3, 1, 3, 3) and f["data/conv/1"].shape == (3,)
        assert f["data/conv/0"].dtype == np.float32
        assert list(f["data/ip1"]) == ["0"] and list(f["data/ip2"]) == []
        assert list(f["diff/ip2"]) == ["0"]
        np.testing.assert_array_equal(f["data/ip1/0"][()], net.params["ip1"][0].data)
        np.testing.assert_array_equal(f["diff/conv/0"][()], net.params["conv"][0].diff)


def test_a_caffe_file_written_by_hand_loads_converting_types(tmp_path) -> None:
    """A file in Caffe's layout (double and integer datasets, an unknown layer, a shared param
    missing from the sharer's group) loads; values convert to the net's dtype."""
    net = make_net(5)
    rng = np.random.default_rng(0)
    conv_w = rng.normal(size=(3, 1, 3, 3))
    conv_b = np.arange(3, dtype=np.int32)
    ip_w = rng.normal(size=(4, 27))
    path = tmp_path / "caffe.caffemodel.h5"
    with h5py.File(path, "w") as f:
        f["data/conv/0"] = conv_w
        f["data/conv/1"] = conv_b
        f["data/ip1/0"] = ip_w
        f.create_group("data/ip2")
        f["data/not_in_net/0"] = np.ones(2)
    net.copy_from(str(path))
    np.testing.assert_array_equal(net.params["conv"][0].data, conv_w.astype(np.float32))
    np.testing.assert_array_equal(net.params["conv"][1].data, [0, 1, 2])
    np.testing.assert_array_equal(net.params["ip2"][0].data, ip_w.astype(np.float32))
    assert net.params["conv"][0].data.dtype == np.float32


def test_bad_weight_files_get_errors_naming_file_and_layer(tmp_path) -> None:
    net = make_net(6)
    bad_shape = tmp_path / "shape.caffemodel.h5"
    with h5py.File(bad_shape, "w") as f:
        f["data/conv/0"] = np.zeros((3, 1, 2, 2))
        f["data/conv/1"] = np.zeros(3)
    with pytest.raises(NetError, match=r"shape\.caffemodel\.h5: layer 'conv'.*shape mismatch"):
        net.copy_from(str(bad_shape))
    too_many = tmp_path / "many.caffemodel.h5"
    with h5py.File(too_many, "w") as f:
        for j in range(3):
            f[f"data/conv/{j}"] = np.zeros(3)
    with pytest.raises(NetError, match="layer 'conv': incompatible number of blobs"):
        net.copy_from(str(too_many))
    missing = tmp_path / "missing.caffemodel.h5"
    with h5py.File(missing, "w") as f:
        f["data/conv/0"] = np.zeros((3, 1, 3, 3))
    with pytest.raises(NetError, match="param 1 is missing"):
        net.copy_from(str(missing))
    no_data = tmp_path / "nodata.caffemodel.h5"
    with h5py.File(no_data, "w") as f:
        f["weights"] = np.zeros(1)
    with pytest.raises(NetError, match="nodata.caffemodel.h5: no group 'data'"):
        net.copy_from(str(no_data))
    string_ds = tmp_path / "str.caffemodel.h5"
    with h5py.File(string_ds, "w") as f:
        f["data/conv/0"] = np.bytes_("abc")
    with pytest.raises(NetError, match="float or integer"):
        net.copy_from(str(string_ds))
    not_h5 = tmp_path / "text.caffemodel.h5"
    not_h5.write_text("not hdf5")
    with pytest.raises(NetError, match="text.caffemodel.h5: cannot read as an HDF5 file"):
        net.copy_from(str(not_h5))
    with pytest.raises(NetError, match="absent.caffemodel.h5: weights file not found"):
        net.copy_from(str(tmp_path / "absent.caffemodel.h5"))


def make_state() -> caffe_pb2.SolverState:
    state = caffe_pb2.SolverState(iter=12, learned_net="snap/x_iter_12.caffemodel.h5")
    state.current_step = 2
    rng = np.random.default_rng(3)
    for shape in [(3, 1, 3, 3), (3,), (4, 27)]:
        array_to_blob_proto(rng.normal(size=shape).astype(np.float32), out=state.history.add())
    state.data_cursor = 17
    state.data_rng_state = '{"bit_generator": "PCG64"}'
    state.isgd_state.seen = 9
    return state


def test_solver_state_layout_and_round_trip(tmp_path) -> None:
    """SnapshotSolverStateToHDF5: int "iter"/"current_step" of shape (1,), NUL-terminated string
    "learned_net", group "history" with "0".."k-1" in blob shapes; our extensions beside them."""
    state = make_state()
    path = tmp_path / "x_iter_12.solverstate.h5"
    write_solver_state(str(path), state)
    with h5py.File(path, "r") as f:
        assert f["iter"].shape == (1,) and f["iter"].dtype == np.int32 and f["iter"][0] == 12
        assert f["current_step"][0] == 2
        tid = f["learned_net"].id.get_type()
        assert f["learned_net"].shape == () and tid.get_strpad() == h5py.h5t.STR_NULLTERM
        assert tid.get_size() == len(state.learned_net) + 1
        assert list(f["history"]) == ["0", "1", "2"]
        assert f["history/0"].shape == (3, 1, 3, 3) and f["history/2"].shape == (4, 27)
        assert f["data_cursor"][0] == 17
    back = read_solver_state(str(path))
    assert back.iter == 12 and back.current_step == 2 and back.learned_net == state.learned_net
    assert back.data_cursor == 17 and back.data_rng_state == state.data_rng_state
    assert back.isgd_state.seen == 9
    for a, b in zip(state.history, back.history, strict=True):
        np.testing.assert_array_equal(blob_proto_to_array(a), blob_proto_to_array(b))


def test_a_caffe_written_state_without_extensions_reads(tmp_path) -> None:
    path = tmp_path / "caffe.solverstate.h5"
    with h5py.File(path, "w") as f:
        f["iter"] = np.array([40], np.int32)
        f["learned_net"] = np.bytes_("lenet_iter_40.caffemodel.h5")
        f["current_step"] = np.array([1], np.int32)
        f["history/0"] = np.ones((2, 3), np.float32)
        f["history/1"] = np.full(2, 0.5)
    state = read_solver_state(str(path))
    assert state.iter == 40 and state.current_step == 1
    assert state.learned_net == "lenet_iter_40.caffemodel.h5"
    assert not state.HasField("data_cursor") and not state.HasField("isgd_state")
    assert [tuple(h.shape.dim) for h in state.history] == [(2, 3), (2,)]
    np.testing.assert_array_equal(blob_proto_to_array(state.history[1]), [0.5, 0.5])


def test_bad_solver_states_get_errors_naming_the_file(tmp_path) -> None:
    no_history = tmp_path / "nohist.solverstate.h5"
    with h5py.File(no_history, "w") as f:
        f["iter"] = np.array([1], np.int32)
        f["current_step"] = np.array([0], np.int32)
    with pytest.raises(PrototxtError, match="nohist.solverstate.h5: no group 'history'"):
        read_solver_state(str(no_history))
    gap = tmp_path / "gap.solverstate.h5"
    with h5py.File(gap, "w") as f:
        f["iter"] = np.array([1], np.int32)
        f["current_step"] = np.array([0], np.int32)
        f["history/0"] = np.zeros(2)
        f["history/5"] = np.zeros(2)
    with pytest.raises(PrototxtError, match="gap.solverstate.h5: history: no dataset '1'"):
        read_solver_state(str(gap))
    no_iter = tmp_path / "noiter.solverstate.h5"
    with h5py.File(no_iter, "w") as f:
        f.create_group("history")
    with pytest.raises(PrototxtError, match="noiter.solverstate.h5: .*dataset 'iter'"):
        read_solver_state(str(no_iter))


def test_layer_names_with_slashes_round_trip(tmp_path) -> None:
    """GoogLeNet-style names ("inception/1x1") become nested groups and are found again."""
    text = NET.replace('name: "conv"', 'name: "block/conv"')
    src = Net(parse_prototxt(text, caffe_pb2.NetParameter()), "TEST", seed=1)
    dst = Net(parse_prototxt(text, caffe_pb2.NetParameter()), "TEST", seed=2)
    path = tmp_path / "slash.caffemodel.h5"
    src.save(str(path))
    dst.copy_from(str(path))
    np.testing.assert_array_equal(
        dst.params["block/conv"][0].data, src.params["block/conv"][0].data
    )
    np.testing.assert_array_equal(dst.flat_data, src.flat_data)
