"""Read CIFAR-10 binary batches: records of 1 label byte then 3072 pixels (R, G, B planes 32x32)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import DataError

SIZE = 32
CHANNELS = 3
IMAGE_BYTES = CHANNELS * SIZE * SIZE
RECORD_BYTES = 1 + IMAGE_BYTES
BATCH_RECORDS = 10000
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
NUM_CLASSES = 10


def read_batch(
    path: str | Path, records: int | None = BATCH_RECORDS
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) uint8 of one batch file.

    `records` is the expected count (10000 for the originals); None accepts any whole number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-10 batch file not found")
    raw = np.fromfile(path, np.uint8)
    if raw.size % RECORD_BYTES or (records is not None and raw.size != records * RECORD_BYTES):
        want = f"{records} records of" if records is not None else "a multiple of"
        raise DataError(
            f"{path}: truncated CIFAR-10 batch: {raw.size} bytes, expected {want} "
            f"{RECORD_BYTES} bytes"
        )
    table = raw.reshape(-1, RECORD_BYTES)
    labels = table[:, 0].copy()
    if labels.size and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{path}: record {bad} has label {labels[bad]} (CIFAR-10 labels are 0..9)")
    images = table[:, 1:].reshape(-1, CHANNELS, SIZE, SIZE)
    return images, labels


def read_batches(
    folder: str | Path, names: Sequence[str], records: int | None = BATCH_RECORDS
) -> tuple[np.ndarray, np.ndarray]:
    """The concatenation of several batch files of `folder`, in the given order."""
    parts = [read_batch(Path(folder) / n, records) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_batch(path: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images (N, 3, 32, 32) and labels (N,) in the binary batch layout (tests, tools)."""
    images = np.ascontiguousarray(images, np.uint8).reshape(len(labels), IMAGE_BYTES)
    table = np.concatenate([np.asarray(labels, np.uint8)[:, None], images], axis=1)
    table.tofile(path)
