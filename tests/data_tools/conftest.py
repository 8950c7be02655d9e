"""Fixtures for the data-tool tests: small generated MNIST/CIFAR files of the real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_tools.cifar import TEST_BATCH, TRAIN_BATCHES, write_batch
from data_tools.idx import write_idx

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def mnist_files(tmp_path: Path) -> dict[str, object]:
    """A tiny MNIST in the original .gz IDX layout: 50 train and 20 test 28x28 images."""
    rng = np.random.default_rng(3)
    d = tmp_path / "raw" / "mnist"
    d.mkdir(parents=True)
    out: dict[str, object] = {"dir": tmp_path / "raw"}
    for split, n in (("train", 50), ("t10k", 20)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(d / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", y)
        out[split] = (
            x,
            y,
            d / f"{split}-images-idx3-ubyte.gz",
            d / f"{split}-labels-idx1-ubyte.gz",
        )
    return out


@pytest.fixture
def cifar_folder(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Five train batches of 40 records each (4 of every class) and a test batch of 40."""
    rng = np.random.default_rng(5)
    d = tmp_path / "cifar10" / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    xs, ys = [], []
    for name in TRAIN_BATCHES:
        y = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), 4))
        x = rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
        write_batch(d / name, x, y)
        xs.append(x)
        ys.append(y)
    xt = rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    yt = rng.integers(0, 10, 40, dtype=np.uint8)
    write_batch(d / TEST_BATCH, xt, yt)
    return d, np.concatenate(xs), np.concatenate(ys), xt, yt


def shared_data() -> Path:
    """The real originals (../shared/data), or skip with the reason."""
    if not (SHARED_DATA / "mnist").is_dir() or not (SHARED_DATA / "cifar10").is_dir():
        pytest.skip(f"real MNIST/CIFAR-10 originals not present at {SHARED_DATA}")
    return SHARED_DATA
