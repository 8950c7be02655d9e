"""convert_mnist_data: an MNIST IDX image/label pair -> LMDB of Datum, keys "%08d" (as Caffe)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from data_tools.fcpr import DEFAULT_SEED, fcpr_order, write_datum_lmdb
from data_tools.idx import read_mnist


def convert_mnist(
    images: str | os.PathLike,
    labels: str | os.PathLike,
    db_path: str | os.PathLike,
    shuffle: bool = True,
    seed: int = DEFAULT_SEED,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Write the MNIST pair as 1 x rows x cols Datums, in FCPR order (or file order); the count."""
    x, y = read_mnist(images, labels)
    order = fcpr_order(len(y), seed, shuffle)
    return write_datum_lmdb(db_path, x, y, order, "{:08d}", overwrite, progress)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_image_file")
    p.add_argument("input_label_file")
    p.add_argument("output_db_file")
    add_order_arguments(p)


def add_order_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every converter shares: FCPR seed, --no-shuffle, --overwrite, --backend."""
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="FCPR permutation seed")
    p.add_argument("--no-shuffle", action="store_true", help="keep file order (as Caffe's tool)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing database")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--backend", default="lmdb", choices=["lmdb"], help="only lmdb is supported")


def order_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments every converter takes from add_order_arguments' flags."""
    return {
        "shuffle": not args.no_shuffle,
        "seed": args.seed,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
    }


def main(args: argparse.Namespace) -> int:
    n = convert_mnist(
        args.input_image_file,
        args.input_label_file,
        args.output_db_file,
        **order_options(args),
    )
    print(f"wrote {n} records to {args.output_db_file}")
    return 0
