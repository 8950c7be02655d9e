"""Fixed Cycle Pseudo Random order (paper §3.4): permute once from a seed, write sequentially."""

from __future__ import annotations

import os

import numpy as np

from data_tools.lmdb_io import LmdbWriter
from engine.datum import serialize_records

DEFAULT_SEED = 1


def fcpr_order(n: int, seed: int | None = DEFAULT_SEED, shuffle: bool = True) -> np.ndarray:
    """Record order: np.random.default_rng(seed).permutation(n), or file order if not shuffle."""
    if not shuffle:
        return np.arange(n)
    if seed is None:
        raise ValueError("FCPR shuffling needs an explicit seed (or pass shuffle=False)")
    return np.random.default_rng(seed).permutation(n)


def write_datum_lmdb(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    key_format: str = "{:08d}",
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Write images[order[i]] under key key_format(i) for i = 0.. (keys sort in write order).

    Returns the number of records written. Images are N x C x H x W uint8.
    """
    with LmdbWriter(path, total=len(order), overwrite=overwrite, progress=progress) as db:
        records = serialize_records(images, labels, order)
        for i, value in enumerate(records):
            db.put(key_format.format(i).encode("ascii"), value)
    return len(order)
