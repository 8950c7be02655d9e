"""Acceptance: LeNet with prototxt/lenet_sgd_solver.prototxt's settings reaches >= 98.5 % test
accuracy on real MNIST within 2 epochs (1875 iterations of batch 64) on the CPU.

Documented command (same run, by hand):
    ISGD_DATA_DIR=../shared/data python -m data_tools prepare --only mnist --out data
    isgd train -solver prototxt/lenet_sgd_solver.prototxt -iterations 1875
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from data_tools.convert_mnist import convert_mnist
from solvers.solver import Solver
from solvers.train_log import TrainLog

ROOT = Path(__file__).resolve().parents[2]
RAW = Path(os.environ.get("ISGD_DATA_DIR", ROOT.parent / "shared" / "data")) / "mnist"


@pytest.mark.slow
def test_lenet_sgd_reaches_985_on_mnist_in_two_epochs(tmp_path: Path, monkeypatch) -> None:
    if not (RAW / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST originals not found in {RAW} (set ISGD_DATA_DIR)")
    monkeypatch.chdir(tmp_path)  # the net's relative LMDB paths resolve here, as in Caffe
    for split, name in (("train", "train"), ("t10k", "test")):
        convert_mnist(
            RAW / f"{split}-images-idx3-ubyte.gz",
            RAW / f"{split}-labels-idx1-ubyte.gz",
            tmp_path / "data" / "mnist" / f"mnist_{name}_lmdb",
            progress=False,
        )
    text = (ROOT / "prototxt" / "lenet_sgd_solver.prototxt").read_text()
    text = text.replace('net: "prototxt/', f'net: "{ROOT}/prototxt/')
    text = text.replace("test_interval_seconds: 2", "test_interval_seconds: 0")
    text = text.replace("test_interval: 500", "test_interval: 1875")
    text = text.replace("max_iter: 10000", "max_iter: 1875")
    solver_path = tmp_path / "lenet_solver.prototxt"
    solver_path.write_text(text)
    log = TrainLog(json_path=tmp_path / "log.jsonl", progress=False)
    solver = Solver(str(solver_path), log=log)
    start = time.perf_counter()
    solver.solve()
    log.close()
    print(
        f"LeNet 1875 iterations: {time.perf_counter() - start:.1f} s wall, "
        f"{solver.train_seconds:.1f} s training clock; test outputs {solver.mean_scores[0]}"
    )
    accuracy = solver.mean_scores[0][0]
    assert accuracy >= 0.985
