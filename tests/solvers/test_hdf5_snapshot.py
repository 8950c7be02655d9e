"""snapshot_format: HDF5 as Caffe: <prefix>_iter_N.caffemodel.h5 + .solverstate.h5, and resume."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from engine.proto import caffe_pb2
from engine.proto_io import blob_proto_to_array
from solvers.solver import Solver

from .conftest import Tiny

ISGD_EAGER = "isgd_param { control_limit: -100 stop: 3 zeta: 0.0005 }"


def solve(tiny: Tiny, quiet_log, name: str, extra: str = "", resume=None, **fields) -> Solver:
    log, text, _ = quiet_log(name)
    solver = Solver(str(tiny.solver(extra, name=name, **fields)), log=log)
    solver.solve(None if resume is None else str(resume))
    solver.text = text.getvalue()  # type: ignore[attr-defined]
    return solver


def test_hdf5_snapshots_are_named_and_logged_as_caffe(tiny: Tiny, quiet_log) -> None:
    s = solve(tiny, quiet_log, "h", max_iter=4, snapshot=2, snapshot_format="=HDF5")
    snap = tiny.root / "snap"
    for it in (2, 4):
        assert (snap / f"h_iter_{it}.caffemodel.h5").is_file()
        assert (snap / f"h_iter_{it}.solverstate.h5").is_file()
    assert not list(snap.glob("*.caffemodel")) and not list(snap.glob("*.solverstate"))
    assert f"Snapshotting to HDF5 file {snap / 'h_iter_4.caffemodel.h5'}" in s.text
    assert f"Snapshotting solver state to HDF5 file {snap / 'h_iter_4.solverstate.h5'}" in s.text
    with h5py.File(snap / "h_iter_4.solverstate.h5", "r") as f:
        assert f["iter"][0] == 4
        assert f["learned_net"][()].rstrip(b"\0").decode() == str(snap / "h_iter_4.caffemodel.h5")
        assert len(f["history"]) == len(s.net.learnable_params)
        np.testing.assert_array_equal(
            np.concatenate([f["history"][str(i)][()].ravel() for i in range(len(f["history"]))]),
            s.history.flat[0],
        )
    with h5py.File(snap / "h_iter_4.caffemodel.h5", "r") as f:
        np.testing.assert_array_equal(f["data/ip2/0"][()], s.net.params["ip2"][0].data)


@pytest.mark.parametrize("extra", ["", ISGD_EAGER])
def test_resume_from_hdf5_snapshot_equals_uninterrupted_training(
    tiny: Tiny, quiet_log, extra: str
) -> None:
    """2k straight == k, HDF5 snapshot, `-snapshot X.solverstate.h5`, k more (SGD and ISGD)."""
    fields = dict(type="Nesterov", snapshot_format="=HDF5")
    straight = solve(tiny, quiet_log, "straight", extra, max_iter=18, **fields).net.flat_data
    solve(tiny, quiet_log, "first", extra, max_iter=9, **fields)
    state = tiny.root / "snap" / "first_iter_9.solverstate.h5"
    resumed = solve(tiny, quiet_log, "second", extra, resume=state, max_iter=18, **fields)
    np.testing.assert_array_equal(resumed.net.flat_data, straight)
    with h5py.File(state, "r") as f:
        assert f["data_cursor"][0] == 9 * 4 % 24  # the Data layer's record after 9 batches
        isgd = caffe_pb2.IsgdState.FromString(f["isgd_state"][()].tobytes())
    assert isgd.seen == 9  # the loss queue (kept for the statistics log even under plain SGD)


def test_binary_and_hdf5_states_restore_the_same_solver(tiny: Tiny, quiet_log) -> None:
    """A Caffe-layout .solverstate.h5 made from a binary state (no extensions) restores the same
    iter, current_step, history and weights as the binary one."""
    solve(tiny, quiet_log, "bin", max_iter=5)
    binary = tiny.root / "snap" / "bin_iter_5.solverstate"
    state = caffe_pb2.SolverState.FromString(binary.read_bytes())
    h5 = tiny.root / "caffe.solverstate.h5"
    with h5py.File(h5, "w") as f:
        f["iter"] = np.array([state.iter], np.int32)
        f["learned_net"] = np.bytes_(state.learned_net)
        f["current_step"] = np.array([state.current_step], np.int32)
        for i, bp in enumerate(state.history):
            f[f"history/{i}"] = blob_proto_to_array(bp)
    solvers = []
    for name, path in (("a", binary), ("b", h5)):
        log, _, _ = quiet_log(name)
        s = Solver(str(tiny.solver(name=name, max_iter=5)), log=log)
        s.restore(str(path))
        solvers.append(s)
    a, b = solvers
    assert a.iter == b.iter == 5
    np.testing.assert_array_equal(a.net.flat_data, b.net.flat_data)
    np.testing.assert_array_equal(a.history.flat[0], b.history.flat[0])
    assert b.net.data_layers()[0].cursor == 0  # a Caffe state has no cursor: data restarts


HDF5_NET = """
name: "tiny_h5"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{source}" batch_size: 4 shuffle: true }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


@pytest.mark.parametrize("extra", ["", "isgd_param { control_limit: -100 stop: 2 queue_size: 3 }"])
def test_resume_restores_a_shuffling_hdf5_data_layer_position(
    tiny: Tiny, quiet_log, extra: str
) -> None:
    """The HDF5Data cursor and pass rng go into the state, so resume matches a straight run
    (with ISGD's Alg. 2 rewinding the layer to each batch's start too)."""
    rng = np.random.default_rng(0)
    names = []
    for k, n in enumerate((7, 6)):
        p = tiny.root / f"h{k}.h5"
        with h5py.File(p, "w") as f:
            f["data"] = rng.normal(size=(n, 6)).astype(np.float32)
            f["label"] = rng.integers(0, 3, n).astype(np.float32)
        names.append(str(p))
    (tiny.root / "h5.txt").write_text("\n".join(names))
    tiny.net.write_text(HDF5_NET.format(source=tiny.root / "h5.txt"))
    fields = dict(snapshot_format="=HDF5", test_interval=0)
    no_test = "test_iter: 2\n"

    def run(name, resume=None, **more):
        path = tiny.solver(extra, name=name, **fields, **more)
        path.write_text(path.read_text().replace(no_test, ""))
        log, _, _ = quiet_log(name)
        s = Solver(str(path), log=log)
        s.solve(None if resume is None else str(resume))
        return s

    straight = run("s", max_iter=11)
    run("f", max_iter=5)
    resumed = run("r", resume=tiny.root / "snap" / "f_iter_5.solverstate.h5", max_iter=11)
    np.testing.assert_array_equal(resumed.net.flat_data, straight.net.flat_data)
    assert resumed.net.data_layers()[0].cursor == straight.net.data_layers()[0].cursor
