"""scripts/compare_torch.py: the net description for the PyTorch side, and the skip without torch."""

from __future__ import annotations

from scripts import bench, compare_torch
from tests.scripts.test_bench import TINY


def test_torch_spec_describes_every_layer(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    param, inputs, classes = bench.prepare_param(path, 3, None, keep_data=False)
    net = bench.build_net(param, inputs, classes, seed=0)
    spec = compare_torch.torch_spec(net, inputs)
    assert [ly["type"] for ly in spec["layers"]] == [
        "Convolution",
        "Pooling",
        "InnerProduct",
        "SoftmaxWithLoss",
    ]
    conv, pool, ip, _ = spec["layers"]
    assert conv["channels"] == 2 and conv["num_output"] == 3 and conv["pad"] == [1, 1]
    assert pool["method"] == "MAX" and pool["kernel"] == [2, 2] and pool["stride"] == [2, 2]
    assert ip["k"] == 3 * 4 * 4 and ip["num_output"] == 5
    assert spec["inputs"][0] == ("data", [3, 2, 8, 8], 0)
    name, shape, n_classes = spec["inputs"][1]
    assert name == "label" and shape == [3] and 1 <= n_classes <= 5


def test_without_torch_it_says_so_and_exits_0(capsys, monkeypatch):
    monkeypatch.setattr(compare_torch, "_find_torch_python", lambda given: None)
    assert compare_torch.main(["--nets", "lenet64"]) == 0
    assert "skipped, no interpreter with torch" in capsys.readouterr().out


def test_engine_worker_answers_timing_requests(tmp_path, capsys, monkeypatch):
    """The per-engine worker (this checkout or a --baseline one) times the requested net."""
    import io
    import json

    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    monkeypatch.setitem(bench.NETS, "tiny", bench.NetSpec("tiny", [path], 3, (2, 8, 8)))
    monkeypatch.setattr("sys.stdin", io.StringIO('{"name": "tiny", "iterations": 2}\n'))
    assert compare_torch._engine_worker(str(bench.ROOT)) == 0
    reply = json.loads(capsys.readouterr().out.strip())
    assert reply["name"] == "tiny" and len(reply["ms"]) == 2 and min(reply["ms"]) > 0
