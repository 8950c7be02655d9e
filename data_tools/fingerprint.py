"""A data set's fingerprint: record count and hashes of a few records, cheap and order-sensitive."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from engine.lmdb_reader import LmdbReader


def data_fingerprint(lmdb_path: str | os.PathLike) -> dict[str, Any]:
    """Record count and SHA-256 of the first, middle and last records (keys and values) of an
    LMDB: a changed data seed (FCPR order) or a rebuilt set changes it."""
    reader = LmdbReader(lmdb_path)
    try:
        count = len(reader)
        digest = hashlib.sha256()
        for pos in sorted({0, count // 2, count - 1}):
            keys, values = reader.read(pos, 1)
            digest.update(keys[0])
            digest.update(len(values[0]).to_bytes(8, "little"))
            digest.update(values[0])
        return {"records": count, "sha256": digest.hexdigest()}
    finally:
        reader.close()
