"""Read MNIST's IDX files (raw or .gz) into NumPy arrays, checking magic, dims and length."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from engine.errors import DataError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dims
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dim


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: IDX file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc}); truncated or corrupt?") from exc


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array stored in an IDX file whose big-endian magic number must be `magic`."""
    path = Path(path)
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    got = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if got != magic:
        raise DataError(f"{path}: incorrect IDX magic {got} (expected {magic})")
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, header needs {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    need = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != need:
        raise DataError(
            f"{path}: truncated or padded IDX file: {len(raw)} bytes, header {dims} needs {need}"
        )
    return np.frombuffer(raw, np.uint8, need - header, header).reshape(dims)


def read_mnist(images: str | Path, labels: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 1, rows, cols) uint8 and labels (N,) uint8, with matching counts."""
    x = read_idx(images, IMAGES_MAGIC)
    y = read_idx(labels, LABELS_MAGIC)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images} has {x.shape[0]} images but {labels} has {y.shape[0]} labels")
    return x[:, None, :, :], y


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped if the name ends in .gz); for tests and tools."""
    path = Path(path)
    array = np.ascontiguousarray(array, np.uint8)
    head = (0x0800 | array.ndim).to_bytes(4, "big") + np.asarray(array.shape, ">u4").tobytes()
    data = head + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
