"""Snapshots in Caffe's formats: <prefix>_iter_N.caffemodel[.h5] and .solverstate[.h5] (+ ISGD,
cursor); BINARYPROTO or HDF5 by the file name, as Caffe."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine import hdf5_io, wire
from engine.backend import copy_to_device, to_numpy
from engine.errors import PrototxtError
from engine.hdf5_io import is_hdf5_path
from engine.proto import caffe_pb2
from engine.proto_io import (
    array_to_blob_proto,
    blob_proto_chunks,
    blob_proto_to_array,
    read_solver_state,
    write_binary_bytes,
    write_solver_state,
)


def snapshot_filename(prefix: str, it: int, extension: str) -> str:
    """Caffe's SnapshotFilename: prefix + "_iter_" + N + extension."""
    return f"{prefix}_iter_{it}{extension}"


def default_snapshot_prefix(solver_path: str | None, prefix: str | None) -> str | None:
    """Caffe's UpgradeSnapshotPrefixProperty: no prefix -> the solver file without its extension;
    a prefix naming a directory -> that directory / the solver file's stem."""
    if not prefix:
        return str(Path(solver_path).with_suffix("")) if solver_path else None
    if solver_path and Path(prefix).is_dir():
        return str(Path(prefix) / Path(solver_path).stem)
    return prefix


def check_writable(prefix: str) -> None:
    """Caffe's CheckSnapshotWritePermissions: fail early if the snapshot folder is not writable
    (a missing folder is created first)."""
    probe = snapshot_filename(prefix, 0, f".tempfile{os.getpid()}")
    try:
        Path(probe).parent.mkdir(parents=True, exist_ok=True)  # a convenience Caffe lacks
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise PrototxtError(
            f"cannot write to snapshot_prefix '{prefix}': make sure the directory exists and is "
            f"writable ({exc.strerror})"
        ) from None


_HISTORY = caffe_pb2.SolverState.DESCRIPTOR.fields_by_name["history"].number


def history_to_state(state: Any, history: list[Any]) -> None:
    """Append one BlobProto per history buffer, in learnable-param order (Caffe's layout)."""
    del state.history[:]
    for h in history:
        array_to_blob_proto(to_numpy(h), out=state.history.add())


def history_from_state(state: Any, history: list[Any], where: str) -> None:
    """Copy a state's history blobs into the solver's buffers (count and size must match)."""
    if len(state.history) != len(history):
        raise PrototxtError(
            f"{where}: solver state holds {len(state.history)} history blobs, this solver and net "
            f"need {len(history)} (different net or solver type?)"
        )
    for i, (bp, h) in enumerate(zip(state.history, history, strict=True)):
        try:
            array = blob_proto_to_array(bp, name=f"{where}: history blob {i}")
        except ValueError as exc:
            raise PrototxtError(str(exc)) from None
        if array.size != h.size:
            raise PrototxtError(
                f"{where}: history blob {i} holds {array.size} values, the net's param {i} has "
                f"{h.size}"
            )
        copy_to_device(h, np.ascontiguousarray(array.reshape(h.shape), dtype=h.dtype))


def file_sha256(path: str | os.PathLike) -> str:
    """Lowercase hex SHA-256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _state_sha256(state: Any) -> str:
    """SHA-256 of a SolverState serialized (deterministically) without its `integrity` field.

    The field is taken out and put back rather than the state copied: a state holds a copy of
    every weight (the history), so a copy would cost as much as the write."""
    saved = None
    if state.HasField("integrity"):
        saved = type(state.integrity)()
        saved.CopyFrom(state.integrity)
        state.ClearField("integrity")
    try:
        return hashlib.sha256(state.SerializeToString(deterministic=True)).hexdigest()
    finally:
        if saved is not None:
            state.integrity.CopyFrom(saved)


def seal(state: Any, history: list[Any], model_path: str) -> list[wire.Chunk]:
    """Record the checksums of a binary snapshot in `state.integrity`: the .caffemodel's bytes
    (already written) and the state's own payload, so a damaged snapshot is refused on load.

    Returns the sealed state's encoding in pieces, `history` (one array per learnable param, in
    Caffe's order) placed as history_to_state would put it and read from the arrays in place:
    the payload is encoded once, for its checksum and the file alike. `integrity` is the
    state's last field (1011), so the payload followed by that field alone is the message's own
    encoding."""
    del state.history[:]
    state.ClearField("integrity")
    payload = wire.with_repeated(
        state.SerializeToString(deterministic=True),
        _HISTORY,
        [blob_proto_chunks(to_numpy(h)) for h in history],
    )
    digest = hashlib.sha256()
    for chunk in payload:
        digest.update(chunk)
    state.integrity.caffemodel_sha256 = file_sha256(model_path)
    state.integrity.state_sha256 = digest.hexdigest()
    seal_only = type(state)()
    seal_only.integrity.CopyFrom(state.integrity)
    return [*payload, seal_only.SerializeToString(deterministic=True)]


def check_state(state: Any, path: str) -> None:
    """Refuse a state whose payload differs from the checksum it was written with (ours only:
    Caffe's files, and ours from before the checksum, carry none and load as they are)."""
    if not state.HasField("integrity") or not state.integrity.state_sha256:
        return
    if _state_sha256(state) != state.integrity.state_sha256:
        raise PrototxtError(
            f"{path}: corrupt snapshot: its contents do not match the SHA-256 written with it "
            "(damaged or edited file); resume from an earlier snapshot"
        )


def check_model(state: Any, model_path: str, state_path: str) -> None:
    """Refuse a .caffemodel that is not the one the state was written with (when it says)."""
    expected = state.integrity.caffemodel_sha256 if state.HasField("integrity") else ""
    if expected and file_sha256(model_path) != expected:
        raise PrototxtError(
            f"{model_path}: corrupt snapshot weights: the file does not match the SHA-256 "
            f"recorded in {state_path} (damaged, or replaced); resume from an earlier snapshot"
        )


def load_state(path: str) -> Any:
    """Read a .solverstate (Caffe's or ours): binary proto, or HDF5 when the name ends ".h5";
    ours are checked against their checksum."""
    if not Path(path).is_file():
        raise PrototxtError(f"{path}: solver state file not found")
    if is_hdf5_path(path):
        return hdf5_io.read_solver_state(path)
    state = read_solver_state(path)
    check_state(state, path)
    return state


def write_state(path: str, state: Any, sealed: list[wire.Chunk] | None = None) -> None:
    """Write a SolverState as Caffe does: HDF5 when the name ends ".h5", else binary proto
    (`sealed`, when given, is the state's encoding already made, as seal returns it)."""
    if is_hdf5_path(path):
        hdf5_io.write_solver_state(path, state)
    elif sealed is not None:
        write_binary_bytes(path, sealed)
    else:
        write_solver_state(path, state)


def resolve_learned_net(learned_net: str, state_path: str) -> str:
    """The state's caffemodel: as written (relative to the CWD, as Caffe), else beside the state."""
    if Path(learned_net).is_file():
        return learned_net
    beside = Path(state_path).parent / Path(learned_net).name
    if beside.is_file():
        return str(beside)
    raise PrototxtError(
        f"{state_path}: learned_net '{learned_net}' not found (paths resolve against the working "
        "directory, as in Caffe)"
    )


def verify(path: str) -> None:
    """Check a snapshot before resuming from it (a runner picking the newest good one): the state
    reads back and matches its checksum, its weights file exists and matches. Raises
    PrototxtError naming the file at fault."""
    state = load_state(path)
    if state.HasField("learned_net") and state.learned_net:
        check_model(state, resolve_learned_net(state.learned_net, path), path)
