"""Converters: Caffe's keys and Datum layout, FCPR order from a seed, exact pixels and labels."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.cli import main as cli_main
from data_tools.convert_cifar import convert_cifar
from data_tools.convert_mnist import convert_mnist
from data_tools.fcpr import fcpr_order
from engine.datum import decode_batch
from engine.errors import DataError
from engine.lmdb_reader import LmdbReader

from .conftest import shared_data


def read_all(path):
    r = LmdbReader(path)
    keys, values = r.read(0, len(r))
    images, labels = decode_batch(values, str(path), keys)
    r.close()
    return keys, images, labels


def test_fcpr_order_is_a_seeded_permutation():
    np.testing.assert_array_equal(fcpr_order(9, 4), np.random.default_rng(4).permutation(9))
    np.testing.assert_array_equal(fcpr_order(9, shuffle=False), np.arange(9))
    assert not np.array_equal(fcpr_order(50, 1), fcpr_order(50, 2))
    with pytest.raises(ValueError, match="explicit seed"):
        fcpr_order(5, None)


def test_convert_mnist_fcpr_and_file_order(mnist_files, tmp_path):
    x, y, images, labels = mnist_files["train"]
    n = convert_mnist(images, labels, tmp_path / "fcpr", seed=7, progress=False)
    keys, got_x, got_y = read_all(tmp_path / "fcpr")
    perm = np.random.default_rng(7).permutation(50)
    assert n == 50 and keys == [b"%08d" % i for i in range(50)]
    np.testing.assert_array_equal(got_x[:, 0], x[perm])
    np.testing.assert_array_equal(got_y, y[perm])
    convert_mnist(images, labels, tmp_path / "plain", shuffle=False, progress=False)
    _, got_x, got_y = read_all(tmp_path / "plain")
    np.testing.assert_array_equal(got_x[:, 0], x)
    np.testing.assert_array_equal(got_y, y)


def test_convert_cifar_train_is_batches_1_to_5_permuted(cifar_folder, tmp_path):
    d, x, y, xt, yt = cifar_folder
    train, test = convert_cifar(d, tmp_path, seed=3, progress=False, records_per_batch=40)
    assert train == tmp_path / "cifar10_train_lmdb" and test == tmp_path / "cifar10_test_lmdb"
    keys, got_x, got_y = read_all(train)
    perm = np.random.default_rng(3).permutation(200)
    assert keys[:2] == [b"00000", b"00001"] and len(keys) == 200
    np.testing.assert_array_equal(got_x, x[perm])
    np.testing.assert_array_equal(got_y, y[perm])
    _, got_xt, got_yt = read_all(test)  # the test set keeps file order
    np.testing.assert_array_equal(got_xt, xt)
    np.testing.assert_array_equal(got_yt, yt)


def test_cli_convert_and_mean(mnist_files, tmp_path, capsys):
    x, y, images, labels = mnist_files["t10k"]
    db = tmp_path / "db"
    assert cli_main(["convert_mnist_data", str(images), str(labels), str(db), "--quiet"]) == 0
    out = tmp_path / "mean.binaryproto"
    assert cli_main(["compute_image_mean", str(db), str(out), "--quiet"]) == 0
    from engine.proto import caffe_pb2

    blob = caffe_pb2.BlobProto.FromString(out.read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 1, 28, 28)
    want = (x.astype(np.float32).sum(0) / np.float32(20)).ravel()
    np.testing.assert_array_equal(np.asarray(blob.data, np.float32), want)
    # bad input: one line naming the file, exit status 1
    assert cli_main(["convert_mnist_data", str(tmp_path / "no"), str(labels), str(db)]) == 1
    assert "no: IDX file not found" in capsys.readouterr().err


def test_prepare_uses_env_dir_and_default_paths(mnist_files, tmp_path, monkeypatch):
    from data_tools.prepare import prepare

    monkeypatch.setenv("ISGD_DATA_DIR", str(mnist_files["dir"]))
    out = tmp_path / "data"
    written = prepare(out=str(out), only=("mnist",), verify=False, progress=False, seed=2)
    assert written == [out / "mnist/mnist_train_lmdb", out / "mnist/mnist_test_lmdb"]
    _, _, yt = read_all(out / "mnist/mnist_test_lmdb")
    np.testing.assert_array_equal(yt, mnist_files["t10k"][1])  # test set in file order
    assert prepare(out=str(out), only=("mnist",), verify=False, progress=False, seed=2) == []


def _png_folder(tmp_path, n=5):
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow not installed")
    rng = np.random.default_rng(9)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    rgbs, lines = [], []
    for i in range(n):
        rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image_mod.fromarray(rgb).save(root / "sub" / f"im {i}.png")
        rgbs.append(rgb)
        lines.append(f"sub/im {i}.png {i % 3}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return root, rgbs


def test_convert_imageset_raw_bgr_keys_and_order(tmp_path):
    from data_tools.convert_imageset import convert_imageset

    root, rgbs = _png_folder(tmp_path)
    convert_imageset(root, tmp_path / "list.txt", tmp_path / "db", seed=5, progress=False)
    keys, images, labels = read_all(tmp_path / "db")
    perm = np.random.default_rng(5).permutation(5)
    assert keys == [b"%08d_sub/im %d.png" % (i, k) for i, k in enumerate(perm)]
    for got, k in zip(images, perm, strict=True):
        np.testing.assert_array_equal(got, rgbs[k][:, :, ::-1].transpose(2, 0, 1))
    assert labels.tolist() == [k % 3 for k in perm]


def test_convert_imageset_encoded_gray_resize(tmp_path):
    from data_tools.convert_imageset import convert_imageset

    root, rgbs = _png_folder(tmp_path, 3)
    lst = tmp_path / "list.txt"
    convert_imageset(root, lst, tmp_path / "enc", shuffle=False, encoded=True, progress=False)
    r = LmdbReader(tmp_path / "enc")
    _, values = r.read(0, 3)
    from engine.datum import parse_datum

    d = parse_datum(values[1])
    assert d.encoded and d.data == (root / "sub" / "im 1.png").read_bytes()  # original bytes
    _, images, _ = read_all(tmp_path / "enc")
    np.testing.assert_array_equal(images[2], rgbs[2][:, :, ::-1].transpose(2, 0, 1))
    convert_imageset(
        root, lst, tmp_path / "g", gray=True, resize_height=3, resize_width=4, progress=False
    )
    _, images, _ = read_all(tmp_path / "g")
    assert images.shape == (3, 1, 3, 4)


def test_convert_imageset_bad_input(tmp_path):
    from data_tools.convert_imageset import convert_imageset, read_list

    (tmp_path / "bad.txt").write_text("a.png x\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected"):
        read_list(tmp_path / "bad.txt")
    pytest.importorskip("PIL.Image", reason="Pillow not installed")
    (tmp_path / "l.txt").write_text("missing.png 1\n")
    with pytest.raises(DataError, match="missing.png: image file not found"):
        convert_imageset(tmp_path, tmp_path / "l.txt", tmp_path / "db", progress=False)
    assert not (tmp_path / "db").exists()


def test_controlled_batches(cifar_folder, tmp_path):
    """Fig. 1: batch i of single-class is all class i; each i.i.d. batch has k of every class."""
    from data_tools.controlled import make_controlled

    d, x, y, _, _ = cifar_folder
    single, iid = make_controlled(d, tmp_path, per_batch=10, progress=False, records_per_batch=40)
    _, images, labels = read_all(single)
    assert labels.tolist() == np.repeat(np.arange(10), 10).tolist()
    _, iid_images, iid_labels = read_all(iid)
    batches = iid_labels.reshape(10, 10)
    assert (batches == np.arange(10)).all()  # classes 0..9 in a fixed sequence in every batch
    flat = np.concatenate([x.reshape(200, -1), iid_images.reshape(100, -1)])
    assert len(np.unique(flat, axis=0)) == 200  # i.i.d. draws are distinct training images
    assert len(np.unique(images.reshape(100, -1), axis=0)) == 100


def test_real_mnist_conversion_counts():
    """Real MNIST: 60000 / 10000 records, per-class counts, and record pixels equal the IDX file."""
    base = shared_data() / "mnist"
    import tempfile

    from data_tools.idx import read_mnist

    with tempfile.TemporaryDirectory() as tmp:
        for split, n in (("train", 60000), ("t10k", 10000)):
            imgs, labs = (
                base / f"{split}-images-idx3-ubyte.gz",
                base / f"{split}-labels-idx1-ubyte.gz",
            )
            db = f"{tmp}/{split}"
            assert convert_mnist(imgs, labs, db, seed=1, progress=False) == n
            _, images, labels = read_all(db)
            x, y = read_mnist(imgs, labs)
            perm = np.random.default_rng(1).permutation(n)
            assert np.bincount(labels).tolist() == np.bincount(y).tolist()
            np.testing.assert_array_equal(images[:100], x[perm[:100]])
            np.testing.assert_array_equal(labels, y[perm])


@pytest.mark.slow
def test_real_cifar_conversion_counts(tmp_path):
    """Real CIFAR-10: 50000 / 10000 records with 5000 / 1000 of each class."""
    folder = shared_data() / "cifar10" / "cifar-10-batches-bin"
    train, test = convert_cifar(folder, tmp_path, progress=False)
    _, _, labels = read_all(train)
    assert np.bincount(labels).tolist() == [5000] * 10
    _, _, labels = read_all(test)
    assert np.bincount(labels).tolist() == [1000] * 10
