"""scripts/bench.py: runs a tiny net end to end and reports the documented JSON keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scripts import bench

TINY = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 dim: 8 dim: 8 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

KEYS = {
    "net",
    "batch",
    "ms_per_iter",
    "forward_ms",
    "backward_ms",
    "images_per_s",
    "gemm_gflops",
    "peak_fraction",
}


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    return path


def test_json_lines_have_documented_keys(tiny, capsys, monkeypatch):
    monkeypatch.setattr(bench, "gemm_peak_gflops", lambda: 100.0)  # keep the test fast
    assert bench.main(["--model", str(tiny), "--iterations", "2", "--batch", "3", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert KEYS <= set(row)
    assert row["net"] == "tiny" and row["batch"] == 3
    assert row["ms_per_iter"] > 0 and row["images_per_s"] > 0
    assert 0 < row["peak_fraction"] == pytest.approx(row["gemm_gflops"] / 100.0)
    assert [ly["name"] for ly in row["layers"]][1:] == ["conv", "pool", "ip", "loss"]
    conv = row["layers"][1]
    assert conv["plan"].split()[0] in ("CNHW", "CHWN", "NHWC")  # the convolution's chosen plan


def test_useful_flops_counts_forward_weight_and_data_gradients(tiny):
    """conv: 4*3*8*8*(2*9) MACs; ip: 4*5*48 MACs; no data gradient into the input layer."""
    param, inputs, classes = bench.prepare_param(tiny, None, None, keep_data=False)
    assert inputs == [("data", (4, 2, 8, 8)), ("label", (4,))] and classes == 5
    net = bench.build_net(param, inputs, classes, seed=0)
    labels = net.blobs["label"].data
    assert labels.min() >= 0 and labels.max() < 5 and np.all(labels == np.round(labels))
    fwd, bwd = bench.useful_flops(net)
    conv, ip = 4 * 3 * 64 * 18, 4 * 5 * 48
    assert fwd == 2 * (conv + ip)
    assert bwd == 2 * conv + 4 * ip


def test_table_output_names_layers(tiny, capsys, monkeypatch):
    monkeypatch.setattr(bench, "gemm_peak_gflops", lambda: 100.0)
    bench.main(["--model", str(tiny), "--iterations", "1"])
    out = capsys.readouterr().out
    assert "conv" in out and "Convolution" in out and "GEMM peak" in out


def test_unknown_net_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown net"):
        bench.main(["--nets", "vgg"])


def test_phase_test_times_the_forward_pass_only(tiny, capsys, monkeypatch):
    monkeypatch.setattr(bench, "gemm_peak_gflops", lambda: 100.0)
    assert bench.main(["--model", str(tiny), "--phase", "TEST", "--iterations", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["phase"] == "TEST" and row["batch"] == 4  # the data layer's own batch
    assert row["backward_ms"] == 0 and row["forward_ms"] > 0
    assert all(ly["backward_ms"] == 0 for ly in row["layers"])
    assert any(ly["forward_ms"] > 0 for ly in row["layers"])


LMDB_NET = """
name: "tiny_lmdb"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "SOURCE" batch_size: 4 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

SOLVER = """
net: "NET"
base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 max_iter: 100 random_seed: 1 display: 1
isgd_param { control_limit: 3 epsilon: 0.1 stop: 5 }
"""


def _lmdb_spec(tmp_path, with_data: bool) -> bench.NetSpec:
    from data_tools.lmdb_io import LmdbWriter
    from engine.datum import make_datum

    source = tmp_path / "train_lmdb"
    if with_data:
        rng = np.random.default_rng(0)
        with LmdbWriter(source, progress=False) as db:
            for i in range(12):
                image = rng.integers(0, 256, (2, 6, 6), dtype=np.uint8)
                db.put(b"%08d" % i, make_datum(image, i % 5).SerializeToString())
    net = tmp_path / "net.prototxt"
    net.write_text(LMDB_NET.replace("SOURCE", str(source)))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.replace("NET", str(net)))
    return bench.NetSpec("tinylmdb", [net], 4, (2, 6, 6), str(solver))


def test_train_step_runs_the_real_solver_beside_forward_backward(tmp_path, capsys, monkeypatch):
    """--train-step: Solver.step on the LMDB net (ISGD on) and the bench's fwd+bwd, one run."""
    monkeypatch.setitem(bench.NETS, "tinylmdb", _lmdb_spec(tmp_path, with_data=True))
    argv = ["--train-step", "--nets", "tinylmdb", "--iterations", "2", "--warmup", "1", "--json"]
    assert bench.main(argv) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["net"] == "tinylmdb" and row["batch"] == 4
    assert row["train_step_ms"] > 0 and row["forward_backward_ms"] > 0
    assert row["overhead"] == pytest.approx(row["train_step_ms"] / row["forward_backward_ms"] - 1)


def test_missing_lmdb_or_prototxt_is_skipped_with_the_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.NETS, "tinylmdb", _lmdb_spec(tmp_path, with_data=False))
    monkeypatch.setitem(bench.NETS, "gone", bench.NetSpec("gone", [tmp_path / "no.prototxt"], 1))
    monkeypatch.setattr(bench, "gemm_peak_gflops", lambda: 100.0)
    assert bench.main(["--train-step", "--nets", "tinylmdb"]) == 0
    assert "train step skipped: no LMDB at" in capsys.readouterr().out
    assert bench.main(["--nets", "gone"]) == 0
    assert "gone: skipped: net 'gone': none of" in capsys.readouterr().out


def test_examples_path_is_relative_to_the_repository():
    from scripts import bench_nets

    assert bench_nets.EXAMPLES == bench_nets.ROOT.parent / "shared" / "caffe-examples"


def test_gpu_flag_hands_the_nets_to_the_gpu_benchmark(monkeypatch) -> None:
    """`scripts/bench.py --gpu N` times the same nets under CuPy on device N (gpu_bench.py,
    itself run on the strict stand-in in tests/solvers/test_standin_runs.py)."""
    from scripts import bench, gpu_bench

    seen: list[list[str]] = []
    monkeypatch.setattr(gpu_bench, "main", lambda argv: seen.append(argv) or 0)
    assert bench.main(["--gpu", "1", "--nets", "cifar100", "--iterations", "3", "--json"]) == 0
    argv = seen[0]
    assert argv[argv.index("--nets") + 1] == "cifar100" and argv[argv.index("--device") + 1] == "1"
    assert "--json" in argv and argv[argv.index("--iterations") + 1] == "3"
    with pytest.raises(SystemExit, match="--gpu times the built-in nets"):
        bench.main(["--gpu", "--train-step"])
