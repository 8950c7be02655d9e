"""compute_image_mean: the per-pixel mean of an LMDB's records, written as a .binaryproto.

The output is Caffe's BlobProto: num = 1, channels, height, width and C x H x W float data.
Sums are exact (int64/float64); Caffe accumulates in float32, which agrees exactly for 8-bit
data below 2^24 / 255 = 65793 records and may differ in the last bits beyond that.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from data_tools.lmdb_io import Progress
from engine.datum import decode_batch
from engine.lmdb_reader import LmdbReader
from engine.proto import caffe_pb2

CHUNK = 1000


def compute_mean(db_path: str | os.PathLike, progress: bool = True) -> np.ndarray:
    """Float32 mean image (C, H, W) over all records of the database."""
    reader = LmdbReader(db_path)
    n = len(reader)
    total: np.ndarray | None = None
    shape = None
    bar = Progress(f"mean of {db_path}", n, progress)
    for start in range(0, n, CHUNK):
        keys, values = reader.read(start, min(CHUNK, n - start))
        images, _ = decode_batch(values, str(db_path), keys, shape)
        shape = images.shape[1:]
        s = images.sum(axis=0, dtype=np.float64 if images.dtype.kind == "f" else np.int64)
        total = s if total is None else total + s
        bar.update(start + len(values))
    reader.close()
    bar.update(n, final=True)
    assert total is not None
    return total.astype(np.float32) / np.float32(n)  # Caffe: float32 sum / count


def write_mean(mean: np.ndarray, path: str | os.PathLike) -> None:
    """Write a (C, H, W) mean as Caffe's 1 x C x H x W BlobProto."""

    blob = caffe_pb2.BlobProto()
    blob.num, (blob.channels, blob.height, blob.width) = 1, mean.shape
    blob.data.extend(np.asarray(mean, np.float32).ravel().tolist())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.partial"
    with open(tmp, "wb") as f:
        f.write(blob.SerializeToString())
    os.replace(tmp, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_db")
    p.add_argument("output_file", nargs="?")
    p.add_argument("--backend", default="lmdb", choices=["lmdb"])
    p.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> int:
    mean = compute_mean(args.input_db, progress=not args.quiet)
    for c, v in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1)):
        print(f"mean_value channel [{c}]: {v}")
    if args.output_file:
        write_mean(mean, args.output_file)
        print(f"wrote {args.output_file}")
    return 0
