"""Data layers on a GPU (the strict stand-in, device 1): the next batch is prepared on the host
(prefetch thread, pinned buffers) and copied to the tops once per batch in the calling thread."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from google.protobuf import text_format

from data_tools.lmdb_io import LmdbWriter
from engine.backend import to_numpy
from engine.blob import Blob
from engine.datum import serialize_records
from engine.layers.data import DataLayer
from engine.layers.hdf5_data import HDF5DataLayer
from engine.proto import caffe_pb2
from tests.cupy_standin import fakecupy

COUNTERS = fakecupy._standin.counters


def lmdb_source(path: Path, n: int = 10) -> str:
    images = np.random.default_rng(0).integers(0, 256, (n, 3, 6, 5), dtype=np.uint8)
    with LmdbWriter(path, progress=False) as db:
        for i, record in enumerate(serialize_records(images, np.arange(n))):
            db.put(f"{i:08d}".encode(), record)
    return str(path)


def build(layer_cls, text: str, xp, tops: int = 2):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = layer_cls(param, "TRAIN", xp, np.float32, 0)  # same seed: same crops and mirrors
    top = [Blob((), xp) for _ in range(tops)]
    layer.setup([], top)
    return layer, top


def test_lmdb_prefetch_is_on_the_host_and_one_copy_per_top(tmp_path: Path, on_device_1) -> None:
    text = (
        'name: "d" type: "Data" transform_param { crop_size: 4 mirror: true } '
        f'data_param {{ source: "{lmdb_source(tmp_path / "db")}" batch_size: 4 }}'
    )
    gpu, gtop = build(DataLayer, text, fakecupy)
    cpu, ctop = build(DataLayer, text, np)
    assert all(fakecupy._standin.is_pinned(b) for b in gpu._bufs + gpu._label_bufs)
    for _ in range(4):  # wraps around the 10 records; the prefetch thread runs meanwhile
        COUNTERS.reset()
        gpu.forward([], gtop)
        assert COUNTERS.h2d == 2, "one host-to-device copy per top and batch"
        cpu.forward([], ctop)
        for g, c in zip(gtop, ctop, strict=True):
            np.testing.assert_array_equal(to_numpy(g.data), c.data)
    gpu.close()
    cpu.close()


def test_hdf5_data_one_copy_per_top(tmp_path: Path, on_device_1) -> None:
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.arange(14.0).reshape(7, 2)
        f["label"] = np.arange(7)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n")
    text = (
        'name: "h" type: "HDF5Data" top: "data" top: "label" '
        f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 3 }}'
    )
    layer, top = build(HDF5DataLayer, text, fakecupy)
    COUNTERS.reset()
    layer.forward([], top)
    assert COUNTERS.h2d == 2
    np.testing.assert_array_equal(to_numpy(top[1].data), [0, 1, 2])
