"""The paper's nets trained on the CuPy path (the strict stand-in) give NumPy's numbers; the
`isgd` commands with `-gpu 0` and the GPU benchmark run there end to end.

LeNet and CIFAR-10 quick are the real prototxts and solver files of prototxt/, reading small
generated LMDBs (and a mean file) laid out where the prototxts look for them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from data_tools.image_mean import write_mean
from data_tools.lmdb_io import LmdbWriter
from engine.datum import serialize_records
from solvers.cli import main
from solvers.solver import Solver, load_solver_param
from solvers.train_log import TrainLog
from tests.cupy_standin import fakecupy

REPO = Path(__file__).resolve().parents[2]
ITERS = 6
NETS = {  # solver file, net file, LMDBs (train, test), image shape
    "lenet": (
        "lenet_sgd_solver.prototxt",
        "lenet_train_test.prototxt",
        ("data/mnist/mnist_train_lmdb", "data/mnist/mnist_test_lmdb"),
        (1, 28, 28),
    ),
    "cifar10_quick": (
        "cifar10_quick_sgd_solver.prototxt",
        "cifar10_quick_train_test.prototxt",
        ("data/cifar10/cifar10_train_lmdb", "data/cifar10/cifar10_test_lmdb"),
        (3, 32, 32),
    ),
}


def _write_db(path: Path, n: int, shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    # class-dependent brightness, so a few SGD steps lower the loss
    images = np.clip(rng.normal(60 + 15 * labels[:, None, None, None], 40, (n, *shape)), 0, 255)
    with LmdbWriter(path, progress=False) as db:
        for i, record in enumerate(serialize_records(images.astype(np.uint8), labels)):
            db.put(f"{i:08d}".encode(), record)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("paper_nets"))


def make_tree(root: Path) -> Path:
    """prototxt/ copies and data/ LMDBs (a few batches each) under one working directory."""
    (root / "prototxt").mkdir()
    for solver, net, (train, test), shape in NETS.values():
        for name in (solver, net):
            shutil.copy(REPO / "prototxt" / name, root / "prototxt" / name)
        if shape[0] == 3:  # CIFAR-10 quick at batch 50 instead of 100: a 2-core test budget
            path = root / "prototxt" / net
            path.write_text(path.read_text().replace("batch_size: 100", "batch_size: 50"))
        _write_db(root / train, 256, shape, seed=1)
        _write_db(root / test, 100, shape, seed=2)
    write_mean(np.full((3, 32, 32), 120.0, np.float32), root / "data/cifar10/mean.binaryproto")
    return root


def _solver_param(tree: Path, name: str) -> object:
    param, _ = load_solver_param(str(tree / "prototxt" / NETS[name][0]))
    param.max_iter = ITERS
    param.test_iter[:] = [1]
    param.test_interval = 3
    param.test_interval_seconds = 0
    param.display = 1
    param.snapshot = 0
    param.snapshot_after_train = False
    return param


def train_losses(tree: Path, name: str, xp: object, monkeypatch: pytest.MonkeyPatch) -> list:
    monkeypatch.chdir(tree)
    log = TrainLog(stream=None, json_path=None, progress=False)
    events: list[dict] = []
    log.event = events.append  # type: ignore[method-assign]
    solver = Solver(_solver_param(tree, name), xp=xp, log=log)
    solver.solve()
    assert solver.test_nets and solver.mean_scores[0], "the test net ran"
    return [e["loss"] for e in events if e["event"] == "iter"]


@pytest.mark.parametrize("name", list(NETS))
def test_paper_nets_train_to_numpys_losses(
    tree: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = train_losses(tree, name, np, monkeypatch)
    gpu = train_losses(tree, name, fakecupy, monkeypatch)
    assert len(cpu) == len(gpu) == ITERS
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=0)
    assert cpu[-1] < cpu[0], "the generated problem is learnable: the loss goes down"


@pytest.fixture
def as_cupy(monkeypatch: pytest.MonkeyPatch) -> object:
    """The stand-in installed as `cupy` / `cupyx`, as a GPU machine has them."""
    monkeypatch.setitem(sys.modules, "cupy", fakecupy)
    monkeypatch.setitem(sys.modules, "cupyx", fakecupy.cupyx)
    fakecupy._standin.reset()
    return fakecupy


def test_isgd_train_test_and_time_with_gpu_flag(
    tree: Path, as_cupy: object, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree)
    solver = tree / "prototxt" / "lenet_gpu.prototxt"
    text = (tree / "prototxt" / NETS["lenet"][0]).read_text()
    for old, new in (
        ("max_iter: 10000", "max_iter: 4"),
        ("test_iter: 100", "test_iter: 1"),
        ("test_interval_seconds: 2", "test_interval_seconds: 0"),
        ("snapshot: 5000", "snapshot: 4"),
        ("display: 100", "display: 1"),
        ('snapshot_prefix: "results/snapshots/lenet_sgd"', 'snapshot_prefix: "snap/lenet"'),
    ):
        assert old in text
        text = text.replace(old, new)
    solver.write_text(text)
    (tree / "snap").mkdir(exist_ok=True)
    assert main(["train", "-solver", str(solver), "-gpu", "0", "-no_progress"]) == 0
    err = capsys.readouterr().err
    assert "Use GPU with device ID 0" in err and "Optimization Done" in err
    log = [json.loads(x) for x in (tree / "snap" / "lenet_log.jsonl").read_text().splitlines()]
    assert [e["iter"] for e in log if e["event"] == "iter"] == [0, 1, 2, 3]
    weights = "snap/lenet_iter_4.caffemodel"
    net = "prototxt/lenet_train_test.prototxt"
    args = ["test", "-model", net, "-weights", weights, "-gpu", "0", "-iterations", "2"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Use GPU with device ID 0" in err and "accuracy = " in err
    syncs = fakecupy._standin.counters.syncs
    assert main(["time", "-model", net, "-gpu", "0", "-iterations", "2"]) == 0
    assert "Average Forward-Backward" in capsys.readouterr().err
    assert fakecupy._standin.counters.syncs > syncs, "isgd time must synchronize the device"


def test_gpu_flag_without_cupy_says_so(tree: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.chdir(tree)
    net = "prototxt/lenet_train_test.prototxt"
    assert main(["time", "-model", net, "-gpu", "0", "-iterations", "1"]) == 1
    assert "CuPy is not installed" in capsys.readouterr().err


def test_gpu_benchmark_runs_and_synchronizes(as_cupy: object, capsys) -> None:
    from scripts import gpu_bench

    args = ["--nets", "lenet64", "--iterations", "2", "--warmup", "1", "--peak-size", "64"]
    assert gpu_bench.main([*args, "--json", "--batch", "8"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["net"] == "lenet64" and row["batch"] == 8 and row["backend"] == "cupy"
    assert row["ms_per_iter"] > 0 and row["images_per_s"] > 0 and 0 < row["peak_fraction"]
    assert [ly["name"] for ly in row["layers"]][1:3] == ["conv1", "pool1"]
    assert fakecupy._standin.counters.syncs >= 2 * 2 * 2, "every timed span synchronizes"
