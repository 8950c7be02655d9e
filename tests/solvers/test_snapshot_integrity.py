"""Our binary snapshots carry SHA-256 checksums of their weights and state (issue 25): a damaged
one is refused in one line naming the file, instead of training on to NaN; Caffe's snapshots
(no checksum) load as before. Caffe itself has no such check (it trusts ReadProtoFromBinaryFile
and the blob shapes), so these are our additions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import PrototxtError
from engine.proto import caffe_pb2
from solvers import snapshot
from solvers.cli import main

from .conftest import Tiny

STATE = "snap/run_iter_4.solverstate"
MODEL = "snap/run_iter_4.caffemodel"


@pytest.fixture
def run(tiny: Tiny, monkeypatch, capsys) -> Path:
    """A 4-iteration CLI run with momentum history; the resume solver goes to 8."""
    monkeypatch.chdir(tiny.root)
    solver = tiny.solver(max_iter=4, test_interval=0, snapshot_prefix="snap/run")
    solver.write_text(solver.read_text().replace("test_iter: 2\n", ""))
    assert main(["train", "-solver", solver.name, "-no_progress"]) == 0
    more = tiny.solver(max_iter=8, test_interval=0, snapshot_prefix="snap/run", name="more")
    more.write_text(more.read_text().replace("test_iter: 2\n", ""))
    capsys.readouterr()
    return more


def _resume(solver: Path, capsys) -> tuple[int, str]:
    status = main(["train", "-solver", solver.name, "-snapshot", STATE, "-no_progress"])
    return status, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if "error" in x or "Traceback" in x]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_our_snapshot_records_its_checksums(run: Path) -> None:
    state = snapshot.load_state(STATE)
    assert state.integrity.caffemodel_sha256 == snapshot.file_sha256(MODEL)
    assert len(state.integrity.state_sha256) == 64
    snapshot.verify(STATE)


def test_the_sealed_state_file_is_protobufs_own_encoding(run: Path) -> None:
    """seal serializes the payload once and appends the integrity field (the last, 1011): the
    file must hold exactly what protobuf writes for the parsed message, byte for byte."""
    data = Path(STATE).read_bytes()
    state = caffe_pb2.SolverState()
    state.ParseFromString(data)
    assert state.HasField("integrity") and len(state.history) > 0
    assert data == state.SerializeToString(deterministic=True)
    last = max(f.number for f in caffe_pb2.SolverState.DESCRIPTOR.fields)
    assert caffe_pb2.SolverState.DESCRIPTOR.fields_by_name["integrity"].number == last


def test_a_changed_history_value_is_refused_naming_the_file(run: Path, capsys) -> None:
    """A parsable state whose payload changed (one history value): refused, not trained on."""
    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(STATE).read_bytes())
    state.history[0].data[0] += 1.0
    Path(STATE).write_bytes(state.SerializeToString())
    status, err = _resume(run, capsys)
    assert status == 1
    line = _one_error_line(err)
    assert STATE in line and "corrupt snapshot" in line


def test_random_bytes_in_the_state_are_refused_in_one_line(run: Path, capsys) -> None:
    """Random bytes written into the file: either the proto no longer parses or its checksum
    fails; each way one line names the file."""
    data = bytearray(Path(STATE).read_bytes())
    rng = np.random.default_rng(3)
    for seed_offset in range(4):
        corrupt = bytearray(data)
        at = len(data) // 3 + 7 * seed_offset
        corrupt[at : at + 6] = rng.integers(0, 256, 6, dtype=np.uint8).tobytes()
        Path(STATE).write_bytes(bytes(corrupt))
        status, err = _resume(run, capsys)
        assert status == 1
        line = _one_error_line(err)
        assert STATE in line
        assert "corrupt snapshot" in line or "not a valid binary SolverState" in line


def test_changed_weights_are_refused_naming_the_weights_file(run: Path, capsys) -> None:
    data = bytearray(Path(MODEL).read_bytes())
    data[len(data) // 2] ^= 0x40
    Path(MODEL).write_bytes(bytes(data))
    status, err = _resume(run, capsys)
    assert status == 1
    line = _one_error_line(err)
    assert MODEL in line and STATE in line and "corrupt snapshot weights" in line
    with pytest.raises(PrototxtError, match="corrupt snapshot weights"):
        snapshot.verify(STATE)


def test_a_truncated_state_is_one_clear_line(run: Path, capsys) -> None:
    Path(STATE).write_bytes(Path(STATE).read_bytes()[:-5])
    status, err = _resume(run, capsys)
    assert status == 1
    line = _one_error_line(err)
    assert STATE in line and "not a valid binary SolverState" in line


def test_a_snapshot_without_checksum_loads_as_caffes(run: Path, capsys) -> None:
    """Caffe's .solverstate has no integrity field: it is trusted, as Caffe trusts it."""
    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(STATE).read_bytes())
    state.ClearField("integrity")
    state.history[0].data[0] += 1.0  # unverifiable: loads as it is
    Path(STATE).write_bytes(state.SerializeToString())
    status, err = _resume(run, capsys)
    assert status == 0, err[-3000:]
