"""Caffe's HDF5 file layouts: net weights (.caffemodel.h5) and solver states (.solverstate.h5).

Weights (Net::ToHDF5 / CopyTrainedLayersFromHDF5): group "data" holds one group per layer with
datasets "0", "1", ... (only params a layer owns; shared ones are written by their owner), and an
optional group "diff" laid out alike. Solver state (SnapshotSolverStateToHDF5): int datasets
"iter" and "current_step", string "learned_net", group "history" with "0".."k-1". Our extensions
beside them, which Caffe's reader ignores: "data_cursor", "data_rng_state", "data_cursors",
"layer_rng_state", and "isgd_state" / "progress" (the serialized IsgdState / RunProgress messages
as opaque bytes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.backend import to_numpy
from engine.errors import NetError, PrototxtError
from engine.proto import caffe_pb2
from engine.proto_io import array_to_blob_proto, blob_proto_to_array

MAX_BLOB_AXES = 32  # Caffe's kMaxBlobAxes


def is_hdf5_path(path: Any) -> bool:
    """Caffe picks the HDF5 reader/writer when a file name ends with ".h5"."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".h5")


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise RuntimeError("HDF5 files need the h5py package (pip install 'h5py>=3.8')") from exc
    return h5py


def open_h5(path: Any, mode: str, error: type[Exception] = NetError, what: str = "HDF5") -> Any:
    """Open an HDF5 file, turning h5py's OSError into `error` naming the file."""
    h5py = _h5py()
    name = os.fspath(path)
    if mode == "r" and not Path(name).is_file():
        raise error(f"{name}: {what} file not found")
    try:
        return h5py.File(name, mode)
    except OSError as exc:
        verb = "read" if mode == "r" else "write"
        raise error(f"{name}: cannot {verb} as an HDF5 file ({exc})") from None


def read_array(group: Any, key: str, where: str, error: type[Exception] = NetError) -> np.ndarray:
    """A float or integer dataset as a host array (Caffe accepts both classes, nothing else)."""
    h5py = _h5py()
    item = group.get(key)
    if not isinstance(item, h5py.Dataset):
        raise error(f"{where}: no dataset '{key}'")
    if item.dtype.kind not in "fiu" or item.ndim > MAX_BLOB_AXES:
        raise error(
            f"{where}: dataset '{key}' has type {item.dtype} and {item.ndim} axes; Caffe reads "
            f"float or integer datasets of at most {MAX_BLOB_AXES} axes"
        )
    return item[()]


# ---------------------------------------------------------------- net weights


def save_net_weights(net: Any, path: Any, write_diff: bool = False) -> None:
    """Net::ToHDF5: every layer gets a group under "data" (and "diff" when asked)."""
    name = os.fspath(path)
    owned = {id(b) for b in net.learnable_params}
    with open_h5(name, "w") as f:
        data = f.create_group("data")
        diff = f.create_group("diff") if write_diff else None
        for layer_name, layer in zip(net.layer_names, net.layers, strict=True):
            # a "/" in a name nests groups; load_net_weights looks names up as paths alike
            layer_data = data.require_group(layer_name)
            layer_diff = diff.require_group(layer_name) if diff is not None else None
            for j, blob in enumerate(layer.blobs):
                if str(j) in layer_data:
                    raise NetError(
                        f"{name}: two layers with params are named '{layer_name}'; HDF5 weights "
                        "need unique names"
                    )
                if id(blob) in owned:  # a shared param is saved once, by its owner
                    layer_data.create_dataset(str(j), data=to_numpy(blob.data))
                if layer_diff is not None:  # diffs are written for sharers too, as Caffe
                    layer_diff.create_dataset(str(j), data=to_numpy(blob.diff))


def load_net_weights(net: Any, path: Any) -> set[int]:
    """Net::CopyTrainedLayersFromHDF5: copy "data/<layer>/<j>" into same-named layers.

    Unknown layers are ignored; shapes must match exactly; a missing dataset is allowed only
    for a param the net shares from another layer. Returns the ids of the blobs written.
    """
    name = os.fspath(path)
    written: set[int] = set()
    owned = {id(b) for b in net.learnable_params}
    by_name = net.layer_dict
    with open_h5(name, "r", what="weights") as f:
        data = f.get("data")
        if data is None or not hasattr(data, "keys"):
            raise NetError(f"{name}: no group 'data' (not a Caffe .caffemodel.h5 weights file)")
        # Caffe walks the file's layer groups and skips names the net lacks; walking the net's
        # names (the last of repeated ones, as Caffe's index) and looking each up is the same,
        # and also finds names holding "/" (stored as nested groups).
        for layer_name, target in by_name.items():
            group = data.get(layer_name)
            if group is None:
                continue
            where = f"{name}: layer '{layer_name}'"
            if not hasattr(group, "keys"):
                raise NetError(f"{where}: expected a group of param datasets")
            stored = sum(1 for key in group if not hasattr(group[key], "keys"))
            if stored > len(target.blobs):
                raise NetError(
                    f"{where}: incompatible number of blobs: {stored} in the file, "
                    f"{len(target.blobs)} in the net"
                )
            for j, dst in enumerate(target.blobs):
                if str(j) not in group:
                    if id(dst) not in owned:  # weight-shared in the net: its owner loads it
                        continue
                    raise NetError(
                        f"{where}: incompatible number of blobs: param {j} is missing in the file"
                    )
                array = read_array(group, str(j), where)
                if tuple(array.shape) != tuple(dst.shape):
                    raise NetError(
                        f"{where}: cannot copy param {j}: shape mismatch, the file has "
                        f"{tuple(array.shape)}, the net expects {tuple(dst.shape)} (rename the "
                        "layer to learn it from scratch)"
                    )
                dst.data[...] = net.xp.asarray(array, dtype=dst.data.dtype)
                written.add(id(dst))
    return written


# ---------------------------------------------------------------- solver state


def _write_int(f: Any, key: str, value: int, dtype: type = np.int32) -> None:
    f.create_dataset(key, data=np.array([value], dtype=dtype))  # H5LTmake_dataset_int: 1-D, 1


def _write_string(f: Any, key: str, text: str) -> None:
    """A scalar fixed-length, NUL-terminated string, as H5LTmake_dataset_string writes it."""
    h5py = _h5py()
    raw = text.encode("utf-8")
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(raw) + 1)
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    dataset = h5py.h5d.create(f.id, key.encode(), tid, space)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw + b"\0", dtype=f"S{len(raw) + 1}"))


def _read_int(f: Any, key: str, where: str) -> int:
    item = f.get(key)
    if item is None or getattr(item, "dtype", None) is None or item.size != 1:
        raise PrototxtError(f"{where}: missing or malformed integer dataset '{key}'")
    return int(np.asarray(item[()]).reshape(-1)[0])


def _read_string(f: Any, key: str) -> str:
    value = f[key][()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes):
        value = value.split(b"\0", 1)[0].decode("utf-8")
    return str(value)


def write_solver_state(path: Any, state: Any) -> None:
    """SnapshotSolverStateToHDF5 from a SolverState message (history as its BlobProtos)."""

    name = os.fspath(path)
    with open_h5(name, "w", error=PrototxtError) as f:
        _write_int(f, "iter", int(state.iter))
        if state.HasField("learned_net"):
            _write_string(f, "learned_net", state.learned_net)
        _write_int(f, "current_step", int(state.current_step))
        history = f.create_group("history")
        for i, bp in enumerate(state.history):
            history.create_dataset(str(i), data=blob_proto_to_array(bp, name=f"history {i}"))
        if state.HasField("data_cursor"):
            _write_int(f, "data_cursor", int(state.data_cursor), np.int64)
        if state.HasField("data_rng_state"):
            _write_string(f, "data_rng_state", state.data_rng_state)
        if state.HasField("layer_rng_state"):
            _write_string(f, "layer_rng_state", state.layer_rng_state)
        if state.HasField("data_cursors"):
            _write_string(f, "data_cursors", state.data_cursors)
        for key in ("isgd_state", "progress"):
            if state.HasField(key):
                f.create_dataset(key, data=np.void(getattr(state, key).SerializeToString()))


def read_solver_state(path: Any) -> Any:
    """RestoreSolverStateFromHDF5 into a SolverState message (history as BlobProtos)."""

    name = os.fspath(path)
    state = caffe_pb2.SolverState()
    with open_h5(name, "r", error=PrototxtError, what="solver state") as f:
        where = f"{name}"
        state.iter = _read_int(f, "iter", where)
        if "learned_net" in f:
            state.learned_net = _read_string(f, "learned_net")
        state.current_step = _read_int(f, "current_step", where)
        history = f.get("history")
        if history is None or not hasattr(history, "keys"):
            raise PrototxtError(f"{name}: no group 'history' (not a Caffe .solverstate.h5 file)")
        for i in range(len(history)):
            array = read_array(history, str(i), f"{name}: history", PrototxtError)
            array_to_blob_proto(np.asarray(array), out=state.history.add())
        if "data_cursor" in f:
            state.data_cursor = _read_int(f, "data_cursor", where)
        if "data_rng_state" in f:
            state.data_rng_state = _read_string(f, "data_rng_state")
        if "layer_rng_state" in f:
            state.layer_rng_state = _read_string(f, "layer_rng_state")
        if "data_cursors" in f:
            state.data_cursors = _read_string(f, "data_cursors")
        for key, kind in (("isgd_state", "an IsgdState"), ("progress", "a RunProgress")):
            if key not in f:
                continue
            raw = f[key][()]
            try:
                getattr(state, key).ParseFromString(
                    raw.tobytes() if hasattr(raw, "tobytes") else raw
                )
            except Exception as exc:  # protobuf's DecodeError, re-raised named
                raise PrototxtError(f"{name}: dataset '{key}' is not {kind}") from exc
    return state
