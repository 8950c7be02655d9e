"""-weights given the wrong kind of Caffe binary (issue 25): a mean file (BlobProto) or a
.solverstate is named as what it is, in one line, instead of "input_shape/input_dim given without
any `input` name" (Caffe's own ReadNetParamsFromBinaryFileOrDie would fail or copy nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from solvers.cli import main

from .conftest import Tiny


@pytest.fixture
def run(tiny: Tiny, monkeypatch, capsys) -> Path:
    """A 2-iteration run (snapshot at 2) and the train LMDB's mean file, in tiny.root."""
    monkeypatch.chdir(tiny.root)
    solver = tiny.solver(max_iter=2, test_interval=0, snapshot_prefix="snap/run")
    solver.write_text(solver.read_text().replace("test_iter: 2\n", ""))
    assert main(["train", "-solver", solver.name, "-no_progress"]) == 0
    assert main(["data", "compute_image_mean", str(tiny.train_lmdb), "mean.binaryproto"]) == 0
    capsys.readouterr()
    return solver


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "error" in x]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "input_shape/input_dim" not in err
    return lines[0]


@pytest.mark.parametrize("command", ["train", "test"])
def test_a_mean_file_given_as_weights_is_named_a_blobproto(run: Path, capsys, command) -> None:
    train = ["-solver", run.name, "-overwrite_log"]
    args = train if command == "train" else ["-model", "tiny_train_test.prototxt"]
    line = _error([command, *args, "-weights", "mean.binaryproto", "-no_progress"], capsys)
    assert "mean.binaryproto: is a BlobProto" in line and "mean file" in line
    assert ".caffemodel" in line


def test_a_solverstate_given_as_weights_points_to_snapshot(run: Path, capsys) -> None:
    state = "snap/run_iter_2.solverstate"
    args = ["train", "-solver", run.name, "-weights", state, "-overwrite_log"]
    line = _error(args, capsys)
    assert f"{state}: is a SolverState" in line
    assert f"-snapshot {state}" in line and "snap/run_iter_2.caffemodel" in line


def test_the_caffemodel_itself_still_finetunes(run: Path, capsys) -> None:
    args = ["train", "-solver", run.name, "-weights", "snap/run_iter_2.caffemodel"]
    assert main([*args, "-no_progress", "-overwrite_log"]) == 0
