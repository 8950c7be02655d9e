"""Protobuf's wire format where weights are too big to pass through messages: a BlobProto's
encoding made straight from its arrays, and a serialized message cut at a field number, so a
.caffemodel is written from the arrays themselves in the bytes SerializeToString would give
(an AlexNet's 244 MB then takes no copy into a message and none out of it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.proto import caffe_pb2

Chunk = bytes | memoryview

LENGTH_DELIMITED = 2
_BLOB = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
FLOAT_FIELDS = (_BLOB["data"].number, _BLOB["diff"].number)  # packed float32
DOUBLE_FIELDS = (_BLOB["double_data"].number, _BLOB["double_diff"].number)  # packed float64
LAYER_BLOBS = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["blobs"].number
NET_LAYERS = caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["layer"].number


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def length_prefix(number: int, size: int) -> bytes:
    """The key and length of a length-delimited field (message, bytes, packed repeated)."""
    return varint(number << 3 | LENGTH_DELIMITED) + varint(size)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def split_before(data: bytes, number: int) -> tuple[bytes, bytes]:
    """A message serialized in field-number order (as protobuf writes it), cut before its first
    field numbered above `number`: the place where field `number` itself belongs."""
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _read_varint(data, pos)
        if tag >> 3 > number:
            return data[:start], data[start:]
        wire_type = tag & 7
        if wire_type == 0:
            _, pos = _read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == LENGTH_DELIMITED:
            size, pos = _read_varint(data, pos)
            pos += size
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire_type} (groups) in a message this project writes")
    return data, b""


def chunks_size(chunks: Sequence[Chunk]) -> int:
    return sum(len(c) for c in chunks)


def _payload(arr: np.ndarray, little_endian: str) -> memoryview:
    values = np.ascontiguousarray(arr, dtype=little_endian)
    return memoryview(values.reshape(-1)).cast("B")


def blob_chunks(arr: np.ndarray, diff: np.ndarray | None, shape_only: bytes) -> list[Chunk]:
    """A BlobProto's encoding: `shape_only` (the blob's dims or shape, serialized) with the
    values of `arr` (and `diff`) placed by field number, float64 arrays in double_data as
    array_to_blob_proto puts them; empty arrays write no field, as protobuf writes none."""
    double = arr.dtype == np.float64
    numbers, kind = (DOUBLE_FIELDS, "<f8") if double else (FLOAT_FIELDS, "<f4")
    head, tail = split_before(shape_only, numbers[0])
    out: list[Chunk] = [head]
    for number, values in zip(numbers, (arr, diff), strict=True):
        if values is None or values.size == 0:
            continue
        payload = _payload(values, kind)
        out += [length_prefix(number, len(payload)), payload]
    out.append(tail)
    return out


def with_repeated(
    serialized: bytes, number: int, messages: Sequence[Sequence[Chunk]]
) -> list[Chunk]:
    """A message (serialized without field `number`) with `messages` (each one's encoding in
    pieces) as its repeated field `number`, placed where protobuf writes that field."""
    head, tail = split_before(serialized, number)
    out: list[Chunk] = [head]
    for message in messages:
        out += [length_prefix(number, chunks_size(message)), *message]
    out.append(tail)
    return out


def net_chunks(net: Any, layer_blobs: Sequence[Sequence[list[Chunk]]]) -> list[Chunk]:
    """A NetParameter's encoding: `net` (its layers without blobs) with layer i's blobs (their
    BlobProto encodings, layer_blobs[i]) placed where protobuf writes them."""
    if len(net.layer) != len(layer_blobs):
        raise ValueError(f"{len(net.layer)} layers but blobs for {len(layer_blobs)}")
    layers = []
    for layer, blobs in zip(net.layer, layer_blobs, strict=True):
        if len(layer.blobs):
            raise ValueError(f"layer '{layer.name}' already holds blobs in the message")
        layers.append(with_repeated(layer.SerializeToString(), LAYER_BLOBS, blobs))
    bare = type(net)()
    bare.CopyFrom(net)
    del bare.layer[:]
    return with_repeated(bare.SerializeToString(), NET_LAYERS, layers)
