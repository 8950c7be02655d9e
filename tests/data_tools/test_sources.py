"""Locating the originals: flag > $ISGD_DATA_DIR > data/raw, md5 checks, and helpful errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from data_tools import sources
from data_tools.cifar import TEST_BATCH, TRAIN_BATCHES
from engine.errors import DataError

from .conftest import shared_data


def test_raw_dir_resolution(monkeypatch):
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    assert sources.raw_dir() == Path("data/raw")
    monkeypatch.setenv(sources.ENV_VAR, "/some/where")
    assert sources.raw_dir() == Path("/some/where")
    assert sources.raw_dir("flagged") == Path("flagged")


def test_locate_mnist_layout_and_wrong_checksum(mnist_files):
    base = mnist_files["dir"]
    found = sources.locate_mnist(base, check=False)
    assert found["train_images"] == base / "mnist" / "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: wrong checksum"):
        sources.locate_mnist(base, check=True)


def test_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(DataError, match=r"missing train-images-idx3-ubyte.gz.*mnist") as e:
        sources.locate_mnist(tmp_path)
    assert str(tmp_path / "mnist") in str(e.value)
    with pytest.raises(DataError, match=r"data_batch_1\.\.5\.bin.*cifar-10-batches-bin"):
        sources.locate_cifar10(tmp_path)


def test_cifar_folder_and_tar_extraction(cifar_folder, tmp_path):
    d = cifar_folder[0]
    assert sources.locate_cifar10(d.parent.parent, check=False) == d
    with pytest.raises(DataError, match="data_batch_1.bin: wrong checksum"):
        sources.locate_cifar10(d.parent.parent, check=True)
    # the .tar.gz layout of the original archive is extracted on demand
    other = tmp_path / "tarred" / "cifar10"
    other.mkdir(parents=True)
    with tarfile.open(other / sources.CIFAR_TAR.name, "w:gz") as tf:
        for name in (*TRAIN_BATCHES, TEST_BATCH):
            data = (d / name).read_bytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    folder = sources.locate_cifar10(other.parent, check=False)
    assert folder == other / "cifar-10-batches-bin"
    assert (folder / "data_batch_4.bin").read_bytes() == (d / "data_batch_4.bin").read_bytes()


def test_gunzipped_mnist_checked_against_content_md5(tmp_path):
    spec = sources.MNIST_FILES["test_labels"]
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(np.zeros(8, np.uint8).tobytes())
    with pytest.raises(DataError, match=spec.content_md5):
        sources.verify(path, spec)


def test_real_originals_pass_checksums():
    base = shared_data()
    assert set(sources.locate_mnist(base)) == set(sources.MNIST_FILES)
    assert sources.locate_cifar10(base).name == "cifar-10-batches-bin"
