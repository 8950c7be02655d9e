"""MNIST IDX reading: exact arrays back, and clear errors naming the file for bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from data_tools.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_mnist, write_idx
from engine.errors import DataError

from .conftest import shared_data


def test_idx_roundtrip_gz_and_raw(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (7, 4, 5), dtype=np.uint8)
    for name in ("a-idx3-ubyte.gz", "a-idx3-ubyte"):
        write_idx(tmp_path / name, x)
        np.testing.assert_array_equal(read_idx(tmp_path / name, IMAGES_MAGIC), x)


def test_read_mnist_adds_channel_axis(mnist_files):
    x, y, images, labels = mnist_files["train"]
    got_x, got_y = read_mnist(images, labels)
    assert got_x.shape == (50, 1, 28, 28)
    np.testing.assert_array_equal(got_x[:, 0], x)
    np.testing.assert_array_equal(got_y, y)


def test_truncated_idx_names_file(tmp_path):
    path = tmp_path / "short-idx3-ubyte"
    write_idx(path, np.zeros((3, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="short-idx3-ubyte.*truncated"):
        read_idx(path, IMAGES_MAGIC)


def test_truncated_gzip_names_file(tmp_path):
    path = tmp_path / "cut-idx3-ubyte.gz"
    write_idx(path, np.arange(300, dtype=np.uint8).reshape(3, 10, 10))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="cut-idx3-ubyte.gz"):
        read_idx(path, IMAGES_MAGIC)


def test_wrong_magic_and_missing_file(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    write_idx(path, np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="labels-idx1-ubyte: incorrect IDX magic 2049"):
        read_idx(path, IMAGES_MAGIC)
    with pytest.raises(DataError, match="nope-idx1-ubyte: IDX file not found"):
        read_idx(tmp_path / "nope-idx1-ubyte", LABELS_MAGIC)


def test_image_label_count_mismatch(tmp_path):
    write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "l", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="3 images but .* 4 labels"):
        read_mnist(tmp_path / "i", tmp_path / "l")


def test_real_mnist_test_set_decodes():
    """The real t10k files: 10000 28x28 images, labels 0..9 with the known class counts."""
    d = shared_data() / "mnist"
    x, y = read_mnist(d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10000, 1, 28, 28)
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(y, minlength=10).tolist() == counts
    with gzip.open(d / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    np.testing.assert_array_equal(x[9999, 0].ravel(), np.frombuffer(raw[-784:], np.uint8))
