"""What the Solver keeps of a Net through Net methods: data cursors (every data layer), random
streams (NumPy and device), and the rank set-up; exact resume with two data layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.backend import to_numpy
from engine.errors import NetError
from engine.net import Net
from engine.proto import caffe_pb2
from solvers.solver import Solver

from .conftest import Tiny

# A second data stream with its own record count (8) and batch (3): its cursor runs apart.
AUX = """
layer {{ name: "aux" type: "Data" top: "aux_data" top: "aux_label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 mirror: true }}
  data_param {{ source: "{test}" batch_size: 3 backend: LMDB }} }}
layer {{ name: "aux_ip" type: "InnerProduct" bottom: "aux_data" top: "aux_ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux_ip" bottom: "aux_label"
  top: "aux_loss" loss_weight: 0.5 }}
"""
DROPOUT = (
    'layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" '
    "dropout_param { dropout_ratio: 0.3 } }"
)
RELU = 'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }'


def with_aux_and_dropout(tiny: Tiny) -> None:
    text = tiny.net.read_text().replace(RELU, RELU + "\n" + DROPOUT)
    tiny.net.write_text(text + AUX.format(test=tiny.test_lmdb))


def test_data_cursors_cover_every_data_layer_individually(tiny: Tiny, xp) -> None:
    with_aux_and_dropout(tiny)
    net = Net(str(tiny.net), "TRAIN", xp=xp, seed=3)
    assert [layer.name for layer in net.data_layers()] == ["data", "aux"]
    for _ in range(3):
        net.forward_backward()
    saved = json.loads(json.dumps(net.data_cursors()))
    assert [(c["layer"], c["cursor"]) for c in saved] == [("data", 12), ("aux", 1)]
    assert saved[1]["rng_state"] is not None  # the mirror coin's generator
    net.forward()
    expected = [to_numpy(net.blobs[n].data).copy() for n in ("data", "aux_data")]
    net.forward()  # both streams move on
    moved = [to_numpy(net.blobs[n].data).copy() for n in ("data", "aux_data")]
    assert not any(np.array_equal(m, e) for m, e in zip(moved, expected, strict=True))
    net.set_data_cursors(saved)
    net.forward()
    for name, want in zip(("data", "aux_data"), expected, strict=True):
        np.testing.assert_array_equal(to_numpy(net.blobs[name].data), want)
    assert [c["cursor"] for c in net.data_cursors()] == [16, 4]
    with pytest.raises(NetError, match="2 data layers"):
        net.set_data_cursors(saved[:1])
    with pytest.raises(NetError, match="does not fit"):
        net.set_data_cursors([saved[1], saved[0]])


def test_rng_state_holds_caffes_stream_and_the_device_noise_streams(tiny: Tiny, xp) -> None:
    """Caffe draws fillers, transformer seeds and CPU Dropout masks from one mt19937 per
    thread: the net saves that stream, plus (on a GPU, where Caffe uses cuRAND) each Dropout
    layer's device stream; the data layers' transform generators travel with their cursors."""
    with_aux_and_dropout(tiny)
    net = Net(str(tiny.net), "TRAIN", xp=xp, seed=3)
    states = json.loads(json.dumps(net.rng_state()))
    assert states["caffe_stream"]["kind"] == "mt19937"
    assert len(states["caffe_stream"]["key"]) == 624
    layers = {key.split(":")[1] for key in states if key != "caffe_stream"}
    assert layers == ({"drop1"} if xp is not np else set())
    device_streams = [key for key in states if states[key].get("kind") == "DeviceRNG"]
    assert bool(device_streams) == (xp is not np)  # on a GPU the device stream is apart


def test_dropout_stream_continues_exactly_after_set_rng_state(xp) -> None:
    from google.protobuf import text_format

    param = text_format.Parse(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 50 } } }'
        'layer { name: "d" type: "Dropout" bottom: "x" top: "y" }',
        caffe_pb2.NetParameter(),
    )
    net = Net(param, "TRAIN", xp=xp, seed=5)
    net.blobs["x"].data[...] = 1
    net.forward()
    saved = json.loads(json.dumps(net.rng_state()))
    net.forward()
    second = to_numpy(net.blobs["y"].data).copy()
    net.forward()
    assert not np.array_equal(to_numpy(net.blobs["y"].data), second)
    assert net.set_rng_state(saved) == []
    net.forward()
    assert np.array_equal(to_numpy(net.blobs["y"].data), second)


def test_device_streams_from_the_other_backend_are_reported_not_misread(tiny: Tiny) -> None:
    from tests.cupy_standin import fakecupy

    with_aux_and_dropout(tiny)
    cpu = Net(str(tiny.net), "TRAIN", seed=3)
    gpu = Net(str(tiny.net), "TRAIN", xp=fakecupy, seed=3)
    assert gpu.set_rng_state(cpu.rng_state()) == ["drop1"]
    assert cpu.set_rng_state(gpu.rng_state()) == ["drop1"]


def test_set_rank_slices_data_and_dropout_masks_of_the_global_batch(tiny: Tiny) -> None:
    """On the host every rank draws the global batch's Dropout masks from Caffe's stream and
    keeps its rows, so two ranks' masks concatenate to the one-process masks (as their data
    slices concatenate to the one-process batch)."""
    with_aux_and_dropout(tiny)
    text = tiny.net.read_text().replace("batch_size: 3", "batch_size: 4")
    tiny.net.write_text(text)
    nets = [Net(str(tiny.net), "TRAIN", seed=3) for _ in range(3)]
    nets[0].set_rank(0, 2)
    nets[1].set_rank(1, 2)
    for net in nets[:2]:
        assert [layer.local_batch_size for layer in net.data_layers()] == [2, 2]
    masks = []
    for net in nets:
        net.forward()
        masks.append(to_numpy(net.layer_dict["drop1"].mask).copy())
    assert masks[0].shape[0] == masks[2].shape[0] // 2
    np.testing.assert_array_equal(np.concatenate(masks[:2]), masks[2])
    assert not np.array_equal(masks[0], masks[1])


def test_set_rank_gives_each_rank_its_own_device_dropout_stream(tiny: Tiny) -> None:
    """On a GPU (Caffe draws these masks with cuRAND) each rank gets a device stream of its
    own, so the ranks' sub-batches do not share masks."""
    from tests.cupy_standin import fakecupy

    with_aux_and_dropout(tiny)
    text = tiny.net.read_text().replace("batch_size: 3", "batch_size: 4")
    tiny.net.write_text(text)
    nets = [Net(str(tiny.net), "TRAIN", xp=fakecupy, seed=3) for _ in range(3)]
    nets[0].set_rank(0, 2)
    nets[1].set_rank(1, 2)
    nets[2].set_rank(0, 2)
    draws = [to_numpy(n.layer_dict["drop1"].xp_rng.random(64, dtype=np.float32)) for n in nets]
    assert not np.array_equal(draws[0], draws[1])
    assert np.array_equal(draws[0], draws[2])


def test_resume_with_two_data_layers_restores_each_cursor(tiny: Tiny, quiet_log, xp) -> None:
    """Both data streams (different record counts and batches) continue where they stopped."""
    with_aux_and_dropout(tiny)
    fields = {"type": "SGD", "test_interval": 0}

    def solver(name: str, max_iter: int) -> Solver:
        path = tiny.solver(name=name, max_iter=max_iter, **fields)
        path.write_text(path.read_text().replace("test_iter: 2\n", ""))
        log, _, _ = quiet_log(name)
        return Solver(str(path), log=log, xp=xp)

    straight = solver("straight", 7)
    straight.solve()
    first = solver("first", 4)
    first.solve()
    state_path = tiny.root / "snap" / "first_iter_4.solverstate"
    state = caffe_pb2.SolverState.FromString(state_path.read_bytes())
    saved = json.loads(state.data_cursors)
    assert [c["cursor"] for c in saved] == [16, 4]
    assert state.data_cursor == 16  # the first data layer also in the older field
    resumed = solver("resumed", 7)
    resumed.solve(str(state_path))
    assert resumed.net.data_cursors() == straight.net.data_cursors()
    np.testing.assert_array_equal(to_numpy(resumed.net.flat_data), to_numpy(straight.net.flat_data))


def test_a_cpu_snapshot_resumes_on_the_gpu_and_says_dropout_restarts(tiny: Tiny, quiet_log) -> None:
    from tests.cupy_standin import fakecupy

    with_aux_and_dropout(tiny)

    def solver_file(name: str, max_iter: int) -> str:
        path = tiny.solver(name=name, max_iter=max_iter, test_interval=0)
        path.write_text(path.read_text().replace("test_iter: 2\n", ""))
        return str(path)

    log, _, _ = quiet_log("cpu")
    Solver(solver_file("cpu", 3), log=log).solve()
    log, text, _ = quiet_log("gpu")
    gpu = Solver(solver_file("gpu", 5), log=log, xp=fakecupy)
    gpu.restore(str(tiny.root / "snap" / "cpu_iter_3.solverstate"))
    assert "random streams of layers drop1 from the other backend" in text.getvalue()
    assert gpu.iter == 3 and [c["cursor"] for c in gpu.net.data_cursors()] == [12, 1]


def test_transform_states_of_an_older_version_are_reported_not_misread(tiny: Tiny) -> None:
    """A snapshot of an older version holds NumPy (PCG64) crop/mirror states: the Data layer
    keeps its mt19937 (Caffe's transformer generator) and the Net names the layer."""
    with_aux_and_dropout(tiny)
    net = Net(str(tiny.net), "TRAIN", seed=3)
    saved = json.loads(json.dumps(net.data_cursors()))
    assert saved[1]["rng_state"]["kind"] == "mt19937"
    before = net.layer_dict["aux"].rng_state
    saved[1]["rng_state"] = np.random.default_rng(0).bit_generator.state
    assert net.set_data_cursors(saved) == ["aux"]
    assert net.layer_dict["aux"].rng_state == before
