"""Caffe's random streams under mpiexec: every rank draws the global batch's mirror coins and
Dropout masks from Caffe's one stream and uses its slice, so n = 1, 2, 4 train as one process.

The workers build no test net, yet Caffe's stream passes through the test net's fillers before
training: they take the stream from the master. Without that, or with per-rank streams, the
ranks' masks would differ from the one-process masks and the losses by far more than rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from solvers.comm import SerialComm
from tests.solvers.conftest import NET, write_lmdb
from tests.solvers.mpi_scripts.runner import have_mpi, run_mpi
from tests.solvers.mpi_scripts.train_tiny import run as train_serial

MPI_OK, MPI_WHY = have_mpi()
pytestmark = [pytest.mark.mpi, pytest.mark.skipif(not MPI_OK, reason=MPI_WHY)]

ITERS = 6
SOLVER = """net: "{net}"
test_iter: 1
test_interval: 3
base_lr: 0.1
momentum: 0.9
lr_policy: "fixed"
display: 0
max_iter: {iters}
random_seed: 1701
snapshot_after_train: true
"""
MIRROR = "transform_param {{ scale: 0.00390625 mirror: true }}"
DROPOUT = (
    'layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}\n'
    'layer {{ name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" '
    "dropout_param {{ dropout_ratio: 0.4 }} }}"
)


def losses(folder: Path) -> list[float]:
    events = map(json.loads, (folder / "log.jsonl").read_text().splitlines())
    return [e["loss"] for e in events if e.get("event") == "iter"]


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("streams")
    write_lmdb(root / "train_lmdb", 1, records=48)
    write_lmdb(root / "test_lmdb", 2, records=8)
    text = NET.replace("transform_param {{ scale: 0.00390625 }}", MIRROR, 1)
    text = text.replace('layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}', DROPOUT)
    assert "mirror" in text and "drop1" in text
    net = root / "net.prototxt"
    net.write_text(text.format(train=root / "train_lmdb", test=root / "test_lmdb", batch=8,
                               classes=3))
    solver = root / "solver.prototxt"
    solver.write_text(SOLVER.format(net=net, iters=ITERS))
    train_serial(str(solver), str(root / "serial"), "mw", ITERS, None, SerialComm())
    return {"root": root, "solver": solver}


@pytest.mark.parametrize("n", [2, 4])
def test_ranks_see_the_one_process_stream(problem: dict, n: int) -> None:
    """Same mirror coins and Dropout masks per global batch: every loss to 1e-5 of n = 1."""
    out = problem["root"] / f"n{n}"
    job = {"solver": str(problem["solver"]), "out": str(out), "max_iter": ITERS}
    result = run_mpi(n, "train_tiny.py", "mw", json.dumps([job]), timeout=120)
    assert result.returncode == 0, result.output[-4000:]
    serial = losses(problem["root"] / "serial")
    assert len(serial) == ITERS
    np.testing.assert_allclose(losses(out), serial, rtol=1e-5, atol=0)
