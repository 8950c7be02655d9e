"""Net-level Caffe semantics: phase rules, split insertion, in-place tops, loss weights, param sharing,
backward pruning, flat parameter buffers, weight files and the pycaffe surface."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import EngineError, NetError, PrototxtError, UnknownLayerTypeError
from engine.net import Net
from engine.proto import caffe_pb2
from tests.backends import assert_allclose, assert_array_equal, dev, host
from tests.backends import current as backend

pytestmark = pytest.mark.usefixtures("xp")  # NumPy and the CuPy stand-in


def net_param(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


MLP = """
name: "mlp"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
        include { phase: TEST } }
"""


def fill_inputs(net: Net, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    net.blobs["data"].data[...] = dev(rng.standard_normal(net.blobs["data"].shape))
    if "label" in net.blobs:
        net.blobs["label"].data[...] = dev(rng.integers(0, 3, net.blobs["label"].shape))


def net_gradient_check(net: Net, step: float = 1e-6, rtol: float = 1e-5) -> None:
    """Whole-net finite differences on every learnable param (float64)."""
    net.clear_param_diffs()
    net.forward_loss()
    net.backward()
    analytic = host(net.flat_diff).copy()
    numeric = np.zeros_like(analytic)
    for k in range(net.flat_data.size):
        orig = float(net.flat_data[k])  # a CuPy element is a view: read its value
        net.flat_data[k] = orig + step
        plus = net.forward_loss()
        net.flat_data[k] = orig - step
        minus = net.forward_loss()
        net.flat_data[k] = orig
        numeric[k] = (plus - minus) / (2 * step)
    assert_allclose(analytic, numeric, rtol=rtol, atol=1e-7)


def test_phase_filtering_follows_net_state_rules():
    """Caffe's StateMeetsRule: include/exclude by phase, stage, not_stage and level range."""
    text = (
        MLP
        + """
    layer { name: "only_stage" type: "Accuracy" bottom: "ip2" bottom: "label" top: "a2"
            include { stage: "deploy" } }
    layer { name: "not_stage" type: "Accuracy" bottom: "ip2" bottom: "label" top: "a3"
            exclude { stage: "deploy" } }
    layer { name: "leveled" type: "Accuracy" bottom: "ip2" bottom: "label" top: "a4"
            include { min_level: 2 } }
    """
    )
    train = Net(net_param(text), "TRAIN", xp=backend(), seed=1)
    assert "acc" not in train.layer_names and "only_stage" not in train.layer_names
    assert "not_stage" in train.layer_names and "leveled" not in train.layer_names
    test = Net(net_param(text), "TEST", xp=backend(), seed=1, stages=["deploy"], level=2)
    assert {"acc", "only_stage", "leveled"} <= set(test.layer_names)
    assert "not_stage" not in test.layer_names


def test_split_layers_inserted_with_caffe_names():
    """A top read by two layers gets a Split layer named <blob>_<layer>_<idx>_split (InsertSplits)."""
    net = Net(net_param(MLP), "TEST", xp=backend(), dtype=np.float64, seed=3)
    assert "ip2_ip2_0_split" in net.layer_names
    split = net.layer_dict["ip2_ip2_0_split"]
    assert split.type_name == "Split"
    assert "ip2_ip2_0_split_0" in net.blobs and "ip2_ip2_0_split_1" in net.blobs
    assert "label_input_1_split" in net.layer_names


def test_loss_top_also_read_goes_through_split_top_zero():
    """A weighted top that is also a bottom: Caffe gives the loss to split top 0, readers 1.."""
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 2
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "ip2" type: "InnerProduct" bottom: "y" top: "z" loss_weight: 1
            inner_product_param { num_output: 1 weight_filler { type: "gaussian" } } }
    """
    net = Net(net_param(text), "TRAIN", xp=backend(), dtype=np.float64, seed=0)
    split = net.layer_dict["y_ip_0_split"]
    assert list(split.param.loss_weight) == [2.0, 0.0]
    assert net.bottom_names[net.layer_names.index("ip2")] == ["y_ip_0_split_1"]
    net.blobs["x"].data[...] = dev(np.arange(6.0).reshape(2, 3) / 7)
    loss = net.forward_loss()
    y, z = host(net.blobs["y"].data), host(net.blobs["z"].data)
    assert loss == pytest.approx(2 * y.sum() + z.sum())
    net_gradient_check(net)


def test_in_place_layer_shares_the_blob():
    net = Net(net_param(MLP), "TRAIN", xp=backend(), seed=0)
    i = net.layer_names.index("relu1")
    assert net.bottom_vecs[i][0] is net.top_vecs[i][0] is net.blobs["ip1"]


def test_whole_net_gradient_through_split_relu_and_loss():
    net = Net(
        net_param(MLP.replace("num_output: 5", "num_output: 4")),
        "TRAIN",
        xp=backend(),
        dtype=np.float64,
        seed=5,
    )
    fill_inputs(net)
    net_gradient_check(net)


def test_shared_params_appear_once_and_accumulate_both_uses():
    """ParamSpec name sharing: one learnable param; its diff sums the gradient of both layers."""
    text = """
    layer { name: "in" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } } }
    layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "pa" param { name: "w" }
            param { name: "bias" lr_mult: 2 }
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "pb" param { name: "w" }
            param { name: "bias" }
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "pa" bottom: "pb" top: "loss" }
    """
    net = Net(net_param(text), "TRAIN", xp=backend(), dtype=np.float64, seed=2)
    assert len(net.learnable_params) == 2
    assert net.params_lr == [1.0, 2.0]
    assert backend().shares_memory(net.params["ipa"][0].data, net.params["ipb"][0].data)
    rng = np.random.default_rng(0)
    net.blobs["a"].data[...] = dev(rng.standard_normal((2, 3)))
    net.blobs["b"].data[...] = dev(rng.standard_normal((2, 3)))
    net_gradient_check(net)


def test_param_diffs_zero_reaches_only_layers_whose_params_are_not_shared():
    """forward_backward(diffs_zero=True) after a clear: the backward equals Caffe's accumulation
    into zeros; layers sharing a param still add (the second use must not overwrite the first),
    and the layers' flags are down again after the pass, so a second pass accumulates."""
    text = """
    layer { name: "in" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 } } }
    layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "pa" param { name: "w" }
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "ipb" type: "InnerProduct" bottom: "pa" top: "pb" param { name: "w" }
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "ipc" type: "InnerProduct" bottom: "pb" top: "pc"
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "pc" bottom: "b" top: "loss" }
    """
    net = Net(net_param(text), "TRAIN", xp=backend(), dtype=np.float64, seed=2)
    rng = np.random.default_rng(0)
    net.blobs["a"].data[...] = dev(rng.standard_normal((2, 3)))
    net.blobs["b"].data[...] = dev(rng.standard_normal((2, 2)))
    seen = {}
    for name in ("ipa", "ipb", "ipc"):
        layer = net.layer_dict[name]
        original = layer.backward

        def spy(tops, down, bottoms, _layer=layer, _original=original):
            seen[_layer.name] = _layer.param_diffs_zero
            _original(tops, down, bottoms)

        layer.backward = spy
    net.clear_param_diffs()
    net.forward_backward()
    added = host(net.flat_diff).copy()
    assert seen == {"ipa": False, "ipb": False, "ipc": False}
    net.clear_param_diffs()
    net.forward_backward(diffs_zero=True)
    assert seen == {"ipa": False, "ipb": False, "ipc": True}
    assert_array_equal(net.flat_diff, added)
    assert not any(layer.param_diffs_zero for layer in net.layers)
    net.forward_backward()  # no clear: Caffe accumulates
    assert seen == {"ipa": False, "ipb": False, "ipc": False}
    assert_allclose(net.flat_diff, 2 * added)


def test_backward_is_skipped_where_caffe_skips_it():
    """No gradient for the input (no force_backward), none for lr_mult 0 params, and a layer
    that does not reach any loss runs no backward."""
    text = MLP.replace(
        'layer { name: "ip2"', 'layer { name: "ip2" param { lr_mult: 0 } param { lr_mult: 0 }'
    )
    text += """
    layer { name: "side" type: "InnerProduct" bottom: "data" top: "side"
            inner_product_param { num_output: 2 } }
    """
    net = Net(net_param(text), "TRAIN", xp=backend(), seed=0)
    fill_inputs(net)
    net.forward_loss()
    net.backward()
    assert not net.layer_need_backward[net.layer_names.index("side")]
    ip1 = net.layer_names.index("ip1")
    assert net.bottom_need_backward[ip1] == [False]
    assert not np.any(host(net.params["ip2"][0].diff))
    assert np.any(host(net.params["ip1"][0].diff))


def test_force_backward_propagates_to_data_but_not_labels():
    net = Net(
        net_param("force_backward: true\n" + MLP), "TRAIN", xp=backend(), dtype=np.float64, seed=0
    )
    fill_inputs(net)
    net.forward_loss()
    net.backward()
    loss_i = net.layer_names.index("loss")
    assert net.bottom_need_backward[loss_i] == [True, False]
    assert np.any(host(net.blobs["data"].diff))


def test_params_live_in_one_flat_buffer():
    """Caffe's multi-GPU layout: every learnable param is a view of one contiguous array."""
    net = Net(net_param(MLP), "TRAIN", xp=backend(), seed=0)
    total = sum(b.count for b in net.learnable_params)
    assert net.flat_data.shape == (total,) and net.flat_diff.shape == (total,)
    w = net.params["ip1"][0]
    xp = backend()
    assert xp.shares_memory(w.data, net.flat_data) and xp.shares_memory(w.diff, net.flat_diff)
    net.flat_data[...] = 0.25
    assert np.all(host(net.params["ip2"][0].data) == 0.25)


def test_loss_weight_scales_loss_and_gradient():
    text = MLP.replace('top: "loss" }', 'top: "loss" loss_weight: 3 }')
    a = Net(net_param(MLP), "TRAIN", xp=backend(), dtype=np.float64, seed=7)
    b = Net(net_param(text), "TRAIN", xp=backend(), dtype=np.float64, seed=7)
    for net in (a, b):
        fill_inputs(net)
        net.clear_param_diffs()
        net.forward_backward()
    assert b.loss == pytest.approx(3 * a.loss)
    assert_allclose(b.flat_diff, 3 * a.flat_diff, rtol=1e-12)


def test_caffemodel_round_trip(tmp_path):
    """A .caffemodel written by us reads back identically (modern and legacy 4-D shapes)."""
    src = Net(net_param(MLP), "TRAIN", xp=backend(), seed=11)
    for legacy in (False, True):
        path = tmp_path / f"m{legacy}.caffemodel"
        src.save(str(path), legacy_shapes=legacy)
        dst = Net(net_param(MLP), "TEST", xp=backend(), seed=99)
        assert not np.array_equal(host(dst.flat_data), host(src.flat_data))
        dst.copy_from(str(path))
        assert_array_equal(dst.flat_data, src.flat_data)
        for name, blobs in src.params.items():
            for a, b in zip(blobs, dst.params[name], strict=True):
                assert_array_equal(a.data, b.data)


def test_net_definition_text_round_trips():
    net = Net(net_param(MLP), "TRAIN", xp=backend(), seed=0)
    proto = net.to_proto()
    for lp in proto.layer:
        del lp.blobs[:]
    again = text_format.Parse(text_format.MessageToString(proto), caffe_pb2.NetParameter())
    assert again == proto


def test_wrong_shape_weights_raise_naming_layer_and_file(tmp_path):
    src = Net(
        net_param(MLP.replace("num_output: 5", "num_output: 6")), "TRAIN", xp=backend(), seed=0
    )
    path = tmp_path / "bad.caffemodel"
    src.save(str(path))
    dst = Net(net_param(MLP), "TRAIN", xp=backend(), seed=0)
    with pytest.raises(NetError, match=r"bad\.caffemodel.*'ip1'.*shape"):
        dst.copy_from(str(path))


def test_unknown_layer_type_is_a_clear_error():
    text = MLP.replace('name: "relu1" type: "ReLU"', 'name: "relu1" type: "Frobnicate"')
    with pytest.raises(UnknownLayerTypeError, match="relu1.*Frobnicate"):
        Net(net_param(text), "TRAIN", xp=backend())


def test_bottom_without_producer_is_a_clear_error():
    text = MLP.replace('bottom: "ip1" top: "ip2"', 'bottom: "nothere" top: "ip2"')
    with pytest.raises(NetError, match="'ip2'.*'nothere'"):
        Net(net_param(text), "TRAIN", xp=backend())


def test_shape_mismatch_is_a_clear_error_naming_the_layer():
    text = """
    layer { name: "in" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 4 } } }
    layer { name: "eucl" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }
    """
    with pytest.raises(EngineError, match="eucl"):
        Net(net_param(text), "TRAIN", xp=backend())


def test_malformed_prototxt_names_file_and_line(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "Input"\n  bogus_field: 3\n}\n')
    with pytest.raises(PrototxtError, match=r"broken\.prototxt:5"):
        Net(str(path), "TRAIN", xp=backend())


def test_pycaffe_surface(tmp_path):
    """engine.Net(path, "TEST"), blobs/params/inputs/outputs and forward(**inputs)."""
    import engine

    path = tmp_path / "mlp.prototxt"
    path.write_text(MLP)
    net = engine.Net(str(path), "TEST", xp=backend())
    assert net.inputs == ["data", "label"]
    assert net.outputs == ["accuracy", "loss"]  # Caffe lists outputs in sorted order
    assert net.params["ip1"][0].data.shape == (5, 3) and net.params["ip1"][1].data.shape == (5,)
    data = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    out = net.forward(data=data, label=np.zeros(4))
    assert set(out) == {"accuracy", "loss"}
    assert_array_equal(net.blobs["data"].data, data)
    assert float(out["loss"]) > 0


def test_layer_phase_field_overrides_the_net_phase():
    """Caffe's Net::Init sets a layer's phase to the net's only when the layer has none."""
    text = MLP.replace(
        'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }',
        'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }\n'
        'layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" phase: TEST }',
    )
    net = Net(net_param(text), "TRAIN", xp=backend(), seed=0)
    assert net.layer_dict["drop"].phase == "TEST" and net.layer_dict["ip1"].phase == "TRAIN"
    fill_inputs(net)
    net.forward_loss()
    before = net.blobs["ip1"].data.copy()
    net.layer_dict["drop"].forward([net.blobs["ip1"]], [net.blobs["ip1"]])
    assert_array_equal(net.blobs["ip1"].data, before)  # TEST dropout is identity


def test_save_with_diff_writes_caffe_diff_fields(tmp_path):
    """snapshot_diff: Caffe's ToProto(write_diff=true) stores each blob's diff beside its data."""
    from engine.proto_io import blob_proto_to_array, read_net_weights

    net = Net(net_param(MLP), "TRAIN", xp=backend(), seed=4)
    fill_inputs(net)
    net.clear_param_diffs()
    net.forward_backward()
    path = tmp_path / "with_diff.caffemodel"
    net.save(str(path), write_diff=True)
    saved = {lp.name: lp for lp in read_net_weights(str(path)).layer}
    w = net.params["ip1"][0]
    got = blob_proto_to_array(saved["ip1"].blobs[0], shape=w.shape, diff=True)
    assert_array_equal(got, w.diff)
    net.save(str(path))
    assert len(read_net_weights(str(path)).layer[1].blobs[0].diff) == 0
