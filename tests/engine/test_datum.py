"""Datum layout: Caffe's wire format (fields 1-7) both ways, batch decoding and its errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from engine.datum import (
    _decode_uniform_raw,
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


def _general_decode(values, **kw):
    """decode_batch by parsing every record (the fast path switched off)."""
    import engine.datum as datum_mod

    fast = datum_mod._decode_uniform_raw
    datum_mod._decode_uniform_raw = lambda *a: None
    try:
        return decode_batch(values, "db", **kw)
    finally:
        datum_mod._decode_uniform_raw = fast


@pytest.mark.parametrize(
    "labels",
    [[0, 1, 127, 5], [128, 300, 16383, 200], [16384, 2**21 + 7, 2**28 - 1, 99999]],
    ids=["one-byte", "two-byte", "3-4-byte"],
)
def test_uniform_records_decode_as_protobuf_parses_them(labels):
    """Caffe's raw Datum layout (dims, data, label; labels of one varint length): the batch
    decoded from the joined bytes equals the record-by-record protobuf parse."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (4, 3, 5, 2), dtype=np.uint8)
    same_width = [lab for lab in labels if len(_varint(lab)) == len(_varint(labels[0]))]
    vals = [caffe_wire_datum(x[i], lab) for i, lab in enumerate(same_width)]
    assert _decode_uniform_raw(vals, "db", (3, 5, 2)) is not None  # the fast path serves it
    fast_images, fast_labels = decode_batch(vals, "db", shape=(3, 5, 2))
    images, want = _general_decode(vals, shape=(3, 5, 2))
    np.testing.assert_array_equal(fast_images, images)
    np.testing.assert_array_equal(fast_labels, want)
    assert fast_labels.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(fast_labels, same_width)


def test_records_unlike_the_first_take_the_full_parse():
    """Label varints of different lengths, an extra field after the label, a float_data record,
    a negative label and unequal prefixes all decode as protobuf parses them."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (3, 1, 2, 3), dtype=np.uint8)
    base = [caffe_wire_datum(im, 1 + i) for i, im in enumerate(x)]
    cases = {
        "label widths": [caffe_wire_datum(x[0], 5), caffe_wire_datum(x[1], 500), base[2]],
        "trailing field": [base[0] + b"\x38\x00", base[1] + b"\x38\x00", base[2] + b"\x38\x00"],
        "negative label": [caffe_wire_datum(x[0], 2**32 - 3)] * 2,  # int32 -3, 10 bytes
        "order": [
            b"\x28\x01" + b"\x08\x01\x10\x02\x18\x03\x22\x06" + x[i].tobytes() for i in range(3)
        ],
    }
    for name, vals in cases.items():
        assert _decode_uniform_raw(vals, "db", None) is None, name
        images, labels = decode_batch(vals, "db")
        want_images, want_labels = _general_decode(vals)
        np.testing.assert_array_equal(images, want_images, err_msg=name)
        np.testing.assert_array_equal(labels, want_labels, err_msg=name)
    images, labels = decode_batch(cases["negative label"], "db")
    assert labels.tolist() == [-3, -3]


def test_uniform_batch_with_a_wrong_shape_is_still_the_named_error():
    vals = [caffe_wire_datum(np.zeros((1, 2, 2), np.uint8), 0)] * 2
    with pytest.raises(DataError, match=r"db: record b'k0' has shape \(1, 2, 2\)"):
        decode_batch(vals, "db", keys=[b"k0", b"k1"], shape=(1, 3, 2))
