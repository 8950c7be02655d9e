"""data_fingerprint: a cheap identity of an LMDB's contents and order, for refusing to resume or
reuse a run whose data changed (record count, first / middle / last records, prepare seed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import lmdb

from data_tools.prepare_record import recorded_seed
from engine.errors import DataError


def _record_sha256(key: bytes, value: bytes) -> str:
    """SHA-256 of one record: its key's length, key and value (so key/value borders count)."""
    digest = hashlib.sha256(len(key).to_bytes(8, "little"))
    digest.update(key)
    digest.update(value)
    return digest.hexdigest()


def data_fingerprint(lmdb_path: str | os.PathLike) -> dict[str, Any]:
    """{"records": n, "first"/"middle"/"last": SHA-256 of those records (None when empty),
    "prepare_seed": the FCPR seed from prepare.json beside it (None when not recorded)}.

    The middle record is record n // 2 in key order; reordering the database (another seed)
    changes it, as it changes the first and last. Raises DataError naming an unreadable path."""
    path = Path(lmdb_path)
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, subdir=True, readahead=False)
    except lmdb.Error as exc:
        raise DataError(f"{path}: cannot open as an LMDB ({exc})") from None
    try:
        with env.begin(buffers=False) as txn:
            count = int(txn.stat()["entries"])
            cursor = txn.cursor()
            picks: dict[str, str | None] = {"first": None, "middle": None, "last": None}
            if count:
                cursor.first()
                picks["first"] = _record_sha256(cursor.key(), cursor.value())
                cursor.last()
                picks["last"] = _record_sha256(cursor.key(), cursor.value())
                cursor.first()
                for _ in range(count // 2):
                    cursor.next()
                picks["middle"] = _record_sha256(cursor.key(), cursor.value())
    finally:
        env.close()
    return {"records": count, **picks, "prepare_seed": recorded_seed(path)}
