"""Datum layout: Caffe's wire format (fields 1-7) both ways, batch decoding and its errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from engine.datum import (
    datum_to_array,
    decode_batch,
    encoded_datum,
    make_datum,
    parse_datum,
    serialize_records,
)
from engine.errors import DataError


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def caffe_wire_datum(image: np.ndarray, label: int) -> bytes:
    """A Datum serialized by hand as Caffe's C++ writes it: fields 1,2,3 (dims), 4 (bytes), 5."""
    c, h, w = image.shape
    data = image.tobytes()
    return (
        b"\x08" + _varint(c) + b"\x10" + _varint(h) + b"\x18" + _varint(w)
        + b"\x22" + _varint(len(data)) + data + b"\x28" + _varint(label)
    )  # fmt: skip


def test_our_serialization_is_caffes_wire_format():
    img = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    assert make_datum(img, 7).SerializeToString() == caffe_wire_datum(img, 7)
    # label 0 is still written (proto2 presence), as Caffe's set_label does
    assert make_datum(img, 0).SerializeToString() == caffe_wire_datum(img, 0)
    x = np.stack([img, img[:, ::-1]])
    recs = list(serialize_records(x, np.array([1, 2]), order=[1, 0]))
    assert recs == [caffe_wire_datum(np.ascontiguousarray(x[1]), 2), caffe_wire_datum(img, 1)]


def test_decode_batch_of_caffe_records_exact():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (6, 1, 3, 4), dtype=np.uint8)
    vals = [caffe_wire_datum(im, i) for i, im in enumerate(x)]
    images, labels = decode_batch(vals, "db")
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, np.arange(6))


def test_differing_shapes_error_names_source_and_key():
    a = caffe_wire_datum(np.zeros((1, 2, 2), np.uint8), 0)
    b = caffe_wire_datum(np.zeros((1, 3, 2), np.uint8), 0)
    with pytest.raises(DataError, match=r"my_lmdb: record b'k1' has shape \(1, 3, 2\)"):
        decode_batch([a, b], "my_lmdb", keys=[b"k0", b"k1"])
    with pytest.raises(
        DataError, match=r"my_lmdb: record b'k0' has shape \(1, 2, 2\).*\(1, 3, 2\)"
    ):
        decode_batch([a], "my_lmdb", keys=[b"k0"], shape=(1, 3, 2))


def test_float_data_and_garbage():
    d = parse_datum(make_datum(np.zeros((1, 1, 2), np.uint8), 3).SerializeToString())
    d.data = b""
    d.float_data.extend([0.5, -2.0])
    images, labels = decode_batch([d.SerializeToString()], "db")
    assert images.dtype == np.float32
    np.testing.assert_array_equal(images.ravel(), [0.5, -2.0])
    with pytest.raises(DataError, match="db: record is not a Caffe Datum"):
        parse_datum(b"\xff\xff\xff", "db")


def test_encoded_png_roundtrip_is_bgr():
    """Caffe decodes encoded colour Datums with OpenCV: channel planes in B, G, R order."""
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow not installed")
    rgb = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    image_mod.fromarray(rgb).save(buf, "PNG")
    d = encoded_datum(buf.getvalue(), 4)
    assert d.encoded and d.label == 4
    chw = datum_to_array(d)
    np.testing.assert_array_equal(chw, rgb[:, :, ::-1].transpose(2, 0, 1))
    gray = datum_to_array(d, color=False)
    assert gray.shape == (1, 4, 5)
    images, labels = decode_batch([d.SerializeToString()] * 2, "db")
    assert images.shape == (2, 3, 4, 5) and labels.tolist() == [4, 4]


def test_encoded_without_pillow_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name.startswith("PIL"):
            raise ImportError("no PIL")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(DataError, match="needs Pillow"):
        datum_to_array(encoded_datum(b"\x89PNG", 0), where="db")
