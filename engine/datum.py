"""Caffe Datum <-> NumPy arrays: raw C x H x W bytes (BGR for colour, as OpenCV) or encoded images.

Batches decode vectorized: the records' byte strings are joined and viewed with np.frombuffer.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from engine.errors import DataError
from engine.proto import caffe_pb2


def make_datum(image: np.ndarray, label: int) -> Any:
    """A raw (unencoded) Datum holding a uint8 C x H x W image and its label."""
    if image.ndim != 3:
        raise ValueError(f"a Datum image must be C x H x W, got shape {image.shape}")
    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = (int(s) for s in image.shape)
    d.data = np.ascontiguousarray(image, np.uint8).tobytes()
    d.label = int(label)
    return d


def serialize_records(
    images: np.ndarray, labels: np.ndarray, order: Iterable[int] | None = None
) -> Iterable[bytes]:
    """Serialized raw Datum messages of images (N, C, H, W) uint8 with labels, in `order`."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    d = caffe_pb2.Datum()
    _, c, h, w = images.shape
    d.channels, d.height, d.width = int(c), int(h), int(w)
    for i in range(len(labels)) if order is None else order:
        d.data = images[i].tobytes()
        d.label = int(labels[i])
        yield d.SerializeToString()


def encoded_datum(payload: bytes, label: int) -> Any:
    """An encoded Datum (PNG/JPEG bytes, encoded=true), as convert_imageset --encoded writes."""
    d = caffe_pb2.Datum()
    d.data = payload
    d.label = int(label)
    d.encoded = True
    return d


def decode_image(payload: bytes, color: bool | None = None, where: str = "") -> np.ndarray:
    """Decode PNG/JPEG bytes to uint8 C x H x W (BGR for colour, as Caffe's OpenCV path).

    `color` True forces 3 channels, False forces gray, None keeps the image's own.
    """
    try:
        from PIL import Image  # optional dependency
    except ImportError as exc:
        raise DataError(
            f"{where}: encoded Datum (PNG/JPEG) needs Pillow to decode: pip install pillow"
        ) from exc
    try:
        img = Image.open(io.BytesIO(payload))
        img.load()
    except Exception as exc:  # Pillow raises many types for bad images
        raise DataError(f"{where}: cannot decode encoded image ({exc})") from exc
    if color is None:
        color = img.mode not in ("L", "1", "I", "I;16", "F")
    arr = np.asarray(img.convert("RGB" if color else "L"))
    if color:
        return np.ascontiguousarray(arr[:, :, ::-1].transpose(2, 0, 1))
    return arr[None, :, :].copy()


def datum_to_array(datum: Any, color: bool | None = None, where: str = "") -> np.ndarray:
    """The datum's image as C x H x W: uint8 for byte data, float32 for float_data."""
    if datum.encoded:
        return decode_image(datum.data, color, where)
    shape = (datum.channels, datum.height, datum.width)
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        if len(datum.data) != count:
            raise DataError(f"{where}: Datum has {len(datum.data)} data bytes, shape {shape}")
        return np.frombuffer(datum.data, np.uint8).reshape(shape)
    if len(datum.float_data) != count:
        raise DataError(f"{where}: Datum has {len(datum.float_data)} float_data, shape {shape}")
    return np.asarray(datum.float_data, np.float32).reshape(shape)


def parse_datum(value: bytes, where: str = "") -> Any:
    """Parse one serialized Datum; a DataError naming `where` if it is not one."""
    d = caffe_pb2.Datum()
    try:
        d.ParseFromString(bytes(value))
    except Exception as exc:  # protobuf's DecodeError
        raise DataError(f"{where}: record is not a Caffe Datum ({exc})") from exc
    return d


def decode_batch(
    values: Sequence[bytes],
    where: str,
    keys: Sequence[bytes] | None = None,
    shape: tuple[int, int, int] | None = None,
    color: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, C, H, W) and labels (n,) of serialized Datums that must all share one shape.

    Raw byte records are joined and decoded with one np.frombuffer; `shape` (if given) is the
    shape every record must have (the one the layer was set up with).
    """
    fast = _decode_uniform_raw(values, where, shape)
    if fast is not None:
        return fast
    datums = [parse_datum(v, where) for v in values]
    labels = np.fromiter((d.label for d in datums), np.int64, len(datums))

    def name(i: int) -> str:
        return f"{where}: record {keys[i]!r}" if keys is not None else f"{where}: record {i}"

    if any(d.encoded for d in datums):
        images = [datum_to_array(d, color, name(i)) for i, d in enumerate(datums)]
        _check_shapes([im.shape for im in images], shape, name)
        return np.stack(images), labels
    shapes = [(d.channels, d.height, d.width) for d in datums]
    _check_shapes(shapes, shape, name)
    c, h, w = shapes[0]
    if all(d.data for d in datums):
        joined = b"".join(d.data for d in datums)
        if len(joined) != len(datums) * c * h * w:
            bad = next(i for i, d in enumerate(datums) if len(d.data) != c * h * w)
            raise DataError(f"{name(bad)}: {len(datums[bad].data)} data bytes, shape {(c, h, w)}")
        return np.frombuffer(joined, np.uint8).reshape(len(datums), c, h, w), labels
    images = [datum_to_array(d, None, name(i)) for i, d in enumerate(datums)]
    return np.stack(images).astype(np.float32, copy=False), labels


def _fields(record: bytes) -> list[tuple[int, int, int, int]] | None:
    """(field number, wire type, payload start, end) of each field of a serialized message,
    or None where it does not walk cleanly (the full parser then reports the fault)."""
    fields, pos, size = [], 0, len(record)

    def varint(at: int) -> tuple[int, int]:
        value = shift = 0
        while at < size and shift < 64:
            byte = record[at]
            value |= (byte & 0x7F) << shift
            at += 1
            if byte < 0x80:
                return value, at
            shift += 7
        raise ValueError

    try:
        while pos < size:
            key, start = varint(pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, end = varint(start)
            elif wire == 2:
                length, start = varint(start)
                end = start + length
            elif wire in (1, 5):
                end = start + (8 if wire == 1 else 4)
            else:
                return None
            if end > size:
                return None
            fields.append((number, wire, start, end))
            pos = end
    except ValueError:
        return None
    return fields


_LABEL_KEY = 5 << 3  # Datum.label, a varint


def _decode_uniform_raw(
    values: Sequence[bytes], where: str, shape: tuple[int, int, int] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The batch without parsing each record, where every record is laid out as the first:
    identical bytes up to and including the data field's header, the C*H*W data bytes, then
    only a label of the same varint length (how Caffe's converters and ours write raw Datums).
    The first record is parsed in full; the others are checked byte-wise, in one pass over the
    joined records. None where the batch is not like that (the general path decides it)."""
    if not values:
        return None
    first = values[0]
    size = len(first)
    joined = b"".join(values)
    if len(joined) != size * len(values):
        return None
    datum = parse_datum(first, where)
    c, h, w = datum.channels, datum.height, datum.width
    fields = _fields(first)
    if datum.encoded or not datum.data or fields is None or len(fields) < 2:
        return None
    number, wire, d0, d1 = fields[-2]
    label_number, label_wire, l0, l1 = fields[-1]
    if (number, wire, label_number, label_wire) != (4, 2, 5, 0) or d1 - d0 != c * h * w:
        return None
    if shape is not None and tuple(shape) != (c, h, w) or l1 - l0 > 4 or l1 != size:
        return None  # wrong shape (reported by the general path) or a label of 2**28 or more
    records = np.frombuffer(joined, np.uint8).reshape(len(values), size)
    tail = records[:, l0:]
    if not (
        (records[:, :d0] == records[0, :d0]).all()
        and (records[:, d1] == _LABEL_KEY).all()
        and (tail[:, :-1] >= 0x80).all()
        and (tail[:, -1] < 0x80).all()
    ):
        return None
    labels = np.zeros(len(values), np.int64)
    for i in range(tail.shape[1]):
        labels |= (tail[:, i].astype(np.int64) & 0x7F) << (7 * i)
    return records[:, d0:d1].reshape(len(values), c, h, w), labels


def _check_shapes(shapes: list[tuple[int, ...]], want: tuple[int, ...] | None, name) -> None:
    ref = tuple(want) if want is not None else tuple(shapes[0])
    for i, s in enumerate(shapes):
        if tuple(s) != ref:
            raise DataError(
                f"{name(i)} has shape {tuple(s)} but the records before it have {ref}: all "
                "records of a Data layer's source must share one shape"
            )
