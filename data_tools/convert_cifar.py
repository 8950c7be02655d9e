"""convert_cifar_data: CIFAR-10 binary batches -> cifar10_train_lmdb (50000) and cifar10_test_lmdb.

As Caffe's tool: keys "%05d", train = data_batch_1..5 in order; here the train set is written in
FCPR order from a seed unless --no-shuffle. The test set always keeps file order.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from data_tools.cifar import TEST_BATCH, TRAIN_BATCHES, read_batches
from data_tools.convert_mnist import add_order_arguments, order_options
from data_tools.fcpr import DEFAULT_SEED, fcpr_order, write_datum_lmdb


def convert_cifar(
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    shuffle: bool = True,
    seed: int = DEFAULT_SEED,
    overwrite: bool = False,
    progress: bool = True,
    records_per_batch: int | None = 10000,
) -> tuple[Path, Path]:
    """Write <output>/cifar10_train_lmdb and <output>/cifar10_test_lmdb; their paths."""
    out = Path(output_folder)
    x, y = read_batches(input_folder, TRAIN_BATCHES, records_per_batch)
    xt, yt = read_batches(input_folder, [TEST_BATCH], records_per_batch)
    train, test = out / "cifar10_train_lmdb", out / "cifar10_test_lmdb"
    write_datum_lmdb(train, x, y, fcpr_order(len(y), seed, shuffle), "{:05d}", overwrite, progress)
    write_datum_lmdb(
        test, xt, yt, fcpr_order(len(yt), shuffle=False), "{:05d}", overwrite, progress
    )
    return train, test


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_folder", help="folder holding data_batch_1..5.bin and test_batch.bin")
    p.add_argument("output_folder")
    p.add_argument("db_type", nargs="?", default="lmdb", choices=["lmdb"])
    add_order_arguments(p)


def main(args: argparse.Namespace) -> int:
    train, test = convert_cifar(args.input_folder, args.output_folder, **order_options(args))
    print(f"wrote {train} and {test}")
    return 0
