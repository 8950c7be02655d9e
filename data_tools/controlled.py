"""The controlled datasets of the paper's Fig. 1 (§3.3), drawn from the CIFAR-10 training set.

single-class: 10 batches; batch i holds `per_batch` (1000) images of class i, shuffled.
i.i.d.: 10 batches; each holds `per_batch / 10` (100) images of every class, in the fixed class
sequence 0, 1, ..., 9 (optionally shuffled within the batch). Draws are without replacement and
seeded; each LMDB holds the batches in order 0..9, so batch_size = per_batch reads them as a cycle.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from data_tools.cifar import NUM_CLASSES, TRAIN_BATCHES, read_batches
from data_tools.fcpr import DEFAULT_SEED, write_datum_lmdb
from engine.errors import DataError


def single_class_order(
    labels: np.ndarray, per_batch: int = 1000, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """Record indices of the 10 single-class batches, concatenated (batch i = class i)."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in range(NUM_CLASSES):
        pool = np.flatnonzero(labels == c)
        if pool.size < per_batch:
            raise DataError(f"class {c} has {pool.size} images, fewer than {per_batch}")
        parts.append(rng.choice(pool, per_batch, replace=False))
    return np.concatenate(parts)


def iid_order(
    labels: np.ndarray,
    per_batch: int = 1000,
    seed: int = DEFAULT_SEED,
    shuffle_within: bool = False,
) -> np.ndarray:
    """Record indices of the 10 i.i.d. batches: per_batch / 10 images of each class per batch."""
    if per_batch % NUM_CLASSES:
        raise ValueError(f"per_batch {per_batch} must be a multiple of {NUM_CLASSES}")
    k = per_batch // NUM_CLASSES
    rng = np.random.default_rng(seed)
    draws = []
    for c in range(NUM_CLASSES):
        pool = np.flatnonzero(labels == c)
        if pool.size < k * NUM_CLASSES:
            raise DataError(f"class {c} has {pool.size} images, fewer than {k * NUM_CLASSES}")
        draws.append(rng.choice(pool, (NUM_CLASSES, k), replace=False))  # [batch, item]
    batches = np.stack(draws, axis=1).reshape(NUM_CLASSES, per_batch)  # class blocks 0..9
    if shuffle_within:
        batches = rng.permuted(batches, axis=1)
    return batches.reshape(-1)


def make_controlled(
    cifar_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    per_batch: int = 1000,
    seed: int = DEFAULT_SEED,
    shuffle_within: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    records_per_batch: int | None = 10000,
) -> tuple[Path, Path]:
    """Write <out>/cifar10_single_class_lmdb and <out>/cifar10_iid_lmdb; their paths."""
    x, y = read_batches(cifar_folder, TRAIN_BATCHES, records_per_batch)
    out = Path(output_folder)
    single, iid = out / "cifar10_single_class_lmdb", out / "cifar10_iid_lmdb"
    order = single_class_order(y, per_batch, seed)
    write_datum_lmdb(single, x, y, order, "{:05d}", overwrite, progress)
    order = iid_order(y, per_batch, seed, shuffle_within)
    write_datum_lmdb(iid, x, y, order, "{:05d}", overwrite, progress)
    return single, iid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_folder", help="folder holding CIFAR-10's data_batch_1..5.bin")
    p.add_argument("output_folder")
    p.add_argument("--per-batch", type=int, default=1000, help="images per batch (1000)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--shuffle-within", action="store_true", help="shuffle i.i.d. batches inside")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> int:
    single, iid = make_controlled(
        args.input_folder,
        args.output_folder,
        args.per_batch,
        args.seed,
        args.shuffle_within,
        args.overwrite,
        not args.quiet,
    )
    print(f"wrote {single} and {iid}")
    return 0
