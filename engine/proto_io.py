"""Reading and writing Caffe's files: prototxt text, .caffemodel/.binaryproto/.solverstate binaries.

Every failure raises PrototxtError naming the file (and for text, the line:column), never a bare
protobuf traceback. Net and solver readers return upgraded messages (see engine/upgrade.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from google.protobuf import message as pb_message
from google.protobuf import text_format

from engine import wire
from engine.errors import PrototxtError
from engine.proto import caffe_pb2
from engine.upgrade import upgrade_net_param, upgrade_solver_param

M = TypeVar("M", bound=pb_message.Message)
PathLike = str | os.PathLike


# ---------------------------------------------------------------- text format


def parse_prototxt(text: str, message: M, source: str = "<string>") -> M:
    """Parse protobuf text into `message` (cleared first); errors name `source:line:col`."""
    message.Clear()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        line, col = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        # protobuf prefixes "line:col : "; keep only the description after it.
        if line is not None and detail.startswith(f"{line}:{col} :"):
            detail = detail.split(":", 2)[2].lstrip(" :")
        where = f"{source}:{line}:{col}" if line is not None else source
        raise PrototxtError(
            f"{where}: cannot parse as {message.DESCRIPTOR.name}: {detail}"
        ) from None
    return message


def read_prototxt(path: PathLike, message: M) -> M:
    """Read a text-format proto file into `message`; PrototxtError names the file and line."""
    text = _read_text(path)
    return parse_prototxt(text, message, source=os.fspath(path))


def message_to_text(msg: pb_message.Message) -> str:
    """Render any message (e.g. a NetParameter) as prototxt text that parses back equal."""
    return text_format.MessageToString(msg)


def net_param_to_text(net_param: caffe_pb2.NetParameter) -> str:
    """A NetParameter as prototxt text (the inverse of read_net_param for text files)."""
    return message_to_text(net_param)


def write_text_proto(path: PathLike, msg: pb_message.Message) -> None:
    """Write `msg` as prototxt text to `path`."""
    _write_bytes(path, message_to_text(msg).encode("utf-8"))


# ---------------------------------------------------------------- binary format


def parse_binary_proto(data: bytes, message: M, source: str = "<bytes>") -> M:
    """Parse serialized protobuf bytes into `message`; errors name `source`."""
    message.Clear()
    if not data:
        raise PrototxtError(
            f"{source}: file is empty (expected a binary {message.DESCRIPTOR.name})"
        )
    try:
        message.ParseFromString(data)
    except (pb_message.DecodeError, RuntimeError, ValueError) as exc:
        raise PrototxtError(
            f"{source}: not a valid binary {message.DESCRIPTOR.name} "
            f"(truncated or corrupt file, {len(data)} bytes): {exc}"
        ) from None
    return message


def read_binary_proto(path: PathLike, message: M) -> M:
    """Read a binary proto file (.caffemodel, .binaryproto, .solverstate) into `message`."""
    return parse_binary_proto(_read_bytes(path), message, source=os.fspath(path))


def write_binary_proto(path: PathLike, msg: pb_message.Message) -> None:
    """Serialize `msg` to `path` (written to a temporary name first, then renamed)."""
    _write_bytes(path, msg.SerializeToString())


def write_binary_bytes(path: PathLike, data: bytes | Sequence[wire.Chunk]) -> None:
    """Write an already serialized message (bytes, or its pieces in order) to `path` as
    write_binary_proto does."""
    _write_bytes(path, data)


# ---------------------------------------------------------------- nets and solvers


def read_net_param(
    source: PathLike | caffe_pb2.NetParameter, binary: bool | None = None
) -> caffe_pb2.NetParameter:
    """A NetParameter from a prototxt/.caffemodel path or a message, upgraded as Caffe does.

    `binary=None` picks binary for .caffemodel / .binaryproto names and text otherwise.
    A message argument is copied, never modified.
    """
    if isinstance(source, caffe_pb2.NetParameter):
        param = caffe_pb2.NetParameter()
        param.CopyFrom(source)
        name = f"<NetParameter {param.name!r}>"
    else:
        name = os.fspath(source)
        if binary is None:
            binary = name.endswith((".caffemodel", ".binaryproto"))
        reader = read_binary_proto if binary else read_prototxt
        param = reader(name, caffe_pb2.NetParameter())
    return upgrade_net_param(param, source=name)


def read_net_weights(path: PathLike) -> caffe_pb2.NetParameter:
    """A trained .caffemodel (binary NetParameter), upgraded, for Net.copy_from.

    A file that holds no layers but reads as another Caffe binary (a mean file's BlobProto, a
    .solverstate) is refused naming what it is: parsed as a NetParameter its fields would
    otherwise give a misleading error (input_dim without input) or no weights at all."""
    name = os.fspath(path)
    data = _read_bytes(path)
    param = caffe_pb2.NetParameter()
    failure: PrototxtError | None = None
    try:
        parse_binary_proto(data, param, source=name)
    except PrototxtError as exc:
        failure = exc
    if failure is not None or not (len(param.layer) or len(param.layers)):
        other = _other_caffe_binary(data, name)
        if other:
            raise PrototxtError(f"{name}: {other}")
        if failure is not None:
            raise failure
    return upgrade_net_param(param, source=name)


def _other_caffe_binary(data: bytes, name: str) -> str | None:
    """What a would-be weights file is when it reads as a BlobProto or SolverState, else None."""
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(data)
        shape = blob_proto_shape(blob)
        count = len(blob.data) or len(blob.double_data)
        if count and shape and int(np.prod(shape)) == count:
            return (
                f"is a BlobProto of shape {shape} (a mean file, as compute_image_mean writes), "
                "not trained weights; -weights takes a .caffemodel (a binary NetParameter)"
            )
    except (pb_message.DecodeError, RuntimeError, ValueError):
        pass
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except (pb_message.DecodeError, RuntimeError, ValueError):
        return None
    if state.learned_net.endswith((".caffemodel", ".caffemodel.h5")):
        return (
            f"is a SolverState (a .solverstate at iteration {state.iter}), not trained weights; "
            f"resume it with -snapshot {name}, or give its weights {state.learned_net} to -weights"
        )
    return None


def read_solver_param(
    source: PathLike | caffe_pb2.SolverParameter,
) -> caffe_pb2.SolverParameter:
    """A SolverParameter from a prototxt path or a message (copied), upgraded as Caffe does."""
    if isinstance(source, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(source)
        name = "<SolverParameter>"
    else:
        name = os.fspath(source)
        param = read_prototxt(name, caffe_pb2.SolverParameter())
    return upgrade_solver_param(param, source=name)


def read_solver_state(path: PathLike) -> caffe_pb2.SolverState:
    """A binary .solverstate file."""
    return read_binary_proto(path, caffe_pb2.SolverState())


def write_solver_state(path: PathLike, state: caffe_pb2.SolverState) -> None:
    """Write a binary .solverstate file."""
    write_binary_proto(path, state)


# ---------------------------------------------------------------- blobs <-> arrays


def blob_proto_shape(bp: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """The blob's shape by Caffe's rule: legacy (num, channels, height, width) if any is set."""
    if _has_legacy_shape(bp):
        return (bp.num, bp.channels, bp.height, bp.width)
    return tuple(int(d) for d in bp.shape.dim)


def blob_proto_matches_shape(bp: caffe_pb2.BlobProto, shape: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: legacy 4-D protos match any <=4-D shape padded with leading 1s."""
    shape = tuple(int(s) for s in shape)
    if _has_legacy_shape(bp):
        if len(shape) > 4:
            return False
        return (1,) * (4 - len(shape)) + shape == blob_proto_shape(bp)
    return blob_proto_shape(bp) == shape


def blob_proto_to_array(
    bp: caffe_pb2.BlobProto,
    shape: tuple[int, ...] | None = None,
    diff: bool = False,
    name: str = "blob",
) -> np.ndarray:
    """A BlobProto's data (or diff) as a new array: float32, or float64 if stored as double.

    Shape follows Caffe (legacy 4-D if any legacy field is set, else `shape`); pass `shape` to
    get a blob's own shape when it matches by Caffe's ShapeEquals rule (e.g. legacy 1x1xNxK
    weights for an NxK InnerProduct). A count mismatch raises ValueError naming `name`.
    """
    stored = blob_proto_shape(bp)
    if shape is not None:
        if not blob_proto_matches_shape(bp, shape):
            raise ValueError(f"{name}: stored shape {stored} does not match {tuple(shape)}")
        stored = tuple(int(s) for s in shape)
    singles, doubles = (bp.diff, bp.double_diff) if diff else (bp.data, bp.double_data)
    values = (
        np.asarray(doubles, dtype=np.float64) if len(doubles) else np.asarray(singles, np.float32)
    )
    count = int(np.prod(stored, dtype=np.int64))
    if values.size != count:
        what = "diff" if diff else "data"
        raise ValueError(
            f"{name}: {what} holds {values.size} values but shape {stored} needs {count}"
        )
    return values.reshape(stored)


def blob_shape_proto(
    shape: tuple[int, ...], legacy: bool = False, out: caffe_pb2.BlobProto | None = None
) -> caffe_pb2.BlobProto:
    """A BlobProto holding only a shape: num/channels/height/width (<= 4 axes, leading 1s) as
    old Caffe wrote them when `legacy`, else `shape`. Fills `out` (cleared first) if given."""
    bp = out if out is not None else caffe_pb2.BlobProto()
    bp.Clear()
    if legacy:
        if len(shape) > 4:
            raise ValueError(f"legacy BlobProto holds at most 4 axes, got shape {shape}")
        bp.num, bp.channels, bp.height, bp.width = (1,) * (4 - len(shape)) + tuple(shape)
    else:
        bp.shape.dim.extend(int(s) for s in shape)
    return bp


def _check_diff(arr: np.ndarray, diff: np.ndarray | None) -> np.ndarray | None:
    if diff is None:
        return None
    diff = np.asarray(diff)
    if diff.shape != arr.shape:
        raise ValueError(f"diff shape {diff.shape} differs from data shape {arr.shape}")
    return diff


def array_to_blob_proto(
    arr: np.ndarray,
    diff: np.ndarray | None = None,
    legacy: bool = False,
    out: caffe_pb2.BlobProto | None = None,
) -> caffe_pb2.BlobProto:
    """A BlobProto holding `arr` (and `diff`): float64 arrays go to double_data, others to data.

    `legacy=True` writes num/channels/height/width (<= 4 axes, leading 1s) as old Caffe did;
    otherwise `shape`. Fills `out` (cleared first) if given.
    """
    arr = np.asarray(arr)
    diff = _check_diff(arr, diff)
    bp = blob_shape_proto(arr.shape, legacy, out)
    _put_values(bp, "data", arr)
    if diff is not None:
        _put_values(bp, "diff", diff)
    return bp


def blob_proto_chunks(
    arr: np.ndarray, diff: np.ndarray | None = None, legacy: bool = False
) -> list[wire.Chunk]:
    """array_to_blob_proto(arr, diff, legacy).SerializeToString() in pieces, the values read
    from the arrays in place (no copy of a big layer's weights through a message)."""
    arr = np.asarray(arr)
    diff = _check_diff(arr, diff)
    shape_only = blob_shape_proto(arr.shape, legacy).SerializeToString()
    return wire.blob_chunks(arr, diff, shape_only)


def read_blob_proto(path: PathLike) -> caffe_pb2.BlobProto:
    """A binary .binaryproto file (e.g. a mean image)."""
    return read_binary_proto(path, caffe_pb2.BlobProto())


def read_blob_array(path: PathLike) -> np.ndarray:
    """The array stored in a .binaryproto file (e.g. a mean file: 1 x C x H x W)."""
    name = os.fspath(path)
    try:
        return blob_proto_to_array(read_blob_proto(name), name=name)
    except ValueError as exc:
        raise PrototxtError(str(exc)) from None


def write_blob_array(path: PathLike, arr: np.ndarray, legacy: bool = False) -> None:
    """Write an array as a binary BlobProto (.binaryproto)."""
    write_binary_proto(path, array_to_blob_proto(arr, legacy=legacy))


# ---------------------------------------------------------------- helpers


def _has_legacy_shape(bp: caffe_pb2.BlobProto) -> bool:
    return any(bp.HasField(f) for f in ("num", "channels", "height", "width"))


def _put_values(bp: caffe_pb2.BlobProto, which: str, arr: np.ndarray) -> None:
    """Append arr's values to a packed field as raw little-endian bytes (fast for big blobs)."""
    index = 0 if which == "data" else 1
    double = arr.dtype == np.float64
    numbers, kind = (wire.DOUBLE_FIELDS, "<f8") if double else (wire.FLOAT_FIELDS, "<f4")
    payload = arr.astype(kind, copy=False).tobytes()
    if payload:
        bp.MergeFromString(wire.length_prefix(numbers[index], len(payload)) + payload)


def _read_bytes(path: PathLike) -> bytes:
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise PrototxtError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise PrototxtError(f"{name}: is a directory, not a file") from None
    except OSError as exc:
        raise PrototxtError(f"{name}: cannot read: {exc.strerror}") from None


def _read_text(path: PathLike) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrototxtError(
            f"{os.fspath(path)}: not a text prototxt (byte {exc.start} is not UTF-8; "
            "binary files need the binary reader)"
        ) from None


def _write_bytes(path: PathLike, data: bytes | Sequence[wire.Chunk]) -> None:
    name = os.fspath(path)
    tmp = f"{name}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                handle.writelines(data)
        os.replace(tmp, name)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise PrototxtError(f"{name}: cannot write: {exc.strerror}") from None
