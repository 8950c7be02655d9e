"""CIFAR-10 binary batches: exact records back, real-data class counts, truncation errors."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.cifar import TEST_BATCH, TRAIN_BATCHES, read_batch, read_batches
from engine.errors import DataError

from .conftest import shared_data


def test_batches_roundtrip_in_order(cifar_folder):
    d, x, y, xt, yt = cifar_folder
    got_x, got_y = read_batches(d, TRAIN_BATCHES, records=40)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    got_xt, got_yt = read_batch(d / TEST_BATCH, records=None)
    np.testing.assert_array_equal(got_xt, xt)
    np.testing.assert_array_equal(got_yt, yt)


def test_truncated_batch_names_file(cifar_folder):
    d = cifar_folder[0]
    path = d / TRAIN_BATCHES[2]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="data_batch_3.bin: truncated CIFAR-10 batch"):
        read_batches(d, TRAIN_BATCHES, records=40)
    with pytest.raises(DataError, match="data_batch_3.bin: truncated"):
        read_batch(path, records=None)


def test_wrong_record_count_and_bad_label(cifar_folder):
    d = cifar_folder[0]
    with pytest.raises(DataError, match="expected 10000 records"):
        read_batch(d / TEST_BATCH)
    raw = bytearray((d / TEST_BATCH).read_bytes())
    raw[0] = 12
    (d / TEST_BATCH).write_bytes(bytes(raw))
    with pytest.raises(DataError, match="test_batch.bin: record 0 has label 12"):
        read_batch(d / TEST_BATCH, records=None)


def test_real_cifar_class_counts_and_pixels():
    """Real batches: the README's per-class counts; record 0 is the label byte + R,G,B planes."""
    d = shared_data() / "cifar10" / "cifar-10-batches-bin"
    x, y = read_batch(d / "data_batch_1.bin")
    counts = [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    assert np.bincount(y, minlength=10).tolist() == counts
    with open(d / "data_batch_1.bin", "rb") as f:
        rec = f.read(3073)
    assert y[0] == rec[0]
    np.testing.assert_array_equal(x[0].ravel(), np.frombuffer(rec[1:], np.uint8))
    _, yt = read_batch(d / TEST_BATCH)
    assert np.bincount(yt, minlength=10).tolist() == [1000] * 10
