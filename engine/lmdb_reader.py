"""Reading LMDBs of Datum: lazy, read-only, positional, in key order (Caffe's cursor order).

The environment opens on first use (so after any fork); one handle per path and process is
shared by every reader of that path (py-lmdb refuses to open an environment twice).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import lmdb

from engine.errors import DataError


def check_lmdb_path(path: str | os.PathLike, what: str = "LMDB") -> Path:
    """The path if it holds an LMDB environment (a directory with data.mdb), else DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: {what} source does not exist")
    if not (p / "data.mdb").is_file():
        raise DataError(f"{p}: not an LMDB database (no data.mdb inside)")
    return p


# py-lmdb refuses to open one environment twice in a process, yet several readers (a TRAIN and a
# TEST net over one source, a layer's setup peek) need it: readers share one handle per path and
# process, reference-counted. This is the module's only mutable state.
_SHARED_ENVS: dict[tuple[str, int], list] = {}
_SHARED_LOCK = threading.Lock()


def _acquire_env(path: Path) -> lmdb.Environment:
    key = (os.path.realpath(path), os.getpid())
    with _SHARED_LOCK:
        entry = _SHARED_ENVS.get(key)
        if entry is None:
            try:
                env = lmdb.open(str(path), readonly=True, lock=False, subdir=True, max_readers=512)
            except lmdb.Error as exc:
                raise DataError(f"{path}: cannot open LMDB ({exc})") from exc
            entry = _SHARED_ENVS[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def _release_env(path: Path) -> None:
    key = (os.path.realpath(path), os.getpid())
    with _SHARED_LOCK:
        entry = _SHARED_ENVS.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                entry[0].close()
                del _SHARED_ENVS[key]


class LmdbReader:
    """Read-only positional access to an LMDB's records in key order (Caffe's cursor order).

    The environment opens lazily on first use (so after any fork), readonly and without locking;
    use each reader from one thread at a time. Sequential reads are cheap; a jump backwards
    rescans keys from the start.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_lmdb_path(path)
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._cur: lmdb.Cursor | None = None
        self._pos = 0  # position the cursor stands on
        self._pid = -1
        self._size = -1

    def _open(self) -> lmdb.Cursor:
        if self._cur is None or self._pid != os.getpid():
            self._env = _acquire_env(self.path)
            self._pid = os.getpid()
            self._txn = self._env.begin(buffers=False)
            self._size = self._txn.stat()["entries"]
            if self._size == 0:
                raise DataError(f"{self.path}: LMDB holds no records")
            self._cur = self._txn.cursor()
            self._cur.first()
            self._pos = 0
        return self._cur

    def __len__(self) -> int:
        self._open()
        return self._size

    def _seek(self, pos: int) -> lmdb.Cursor:
        cur = self._open()
        pos %= self._size
        if pos < self._pos:
            cur.first()
            self._pos = 0
        while self._pos < pos:
            cur.next()
            self._pos += 1
        return cur

    def read(self, pos: int, count: int) -> tuple[list[bytes], list[bytes]]:
        """Keys and values of `count` records from position `pos`, wrapping past the end."""
        cur = self._seek(pos)
        keys, values = [], []
        for _ in range(count):
            keys.append(cur.key())
            values.append(cur.value())
            self._pos += 1
            if self._pos == self._size or not cur.next():
                cur.first()
                self._pos = 0
        return keys, values

    def close(self) -> None:
        if self._env is not None and self._pid == os.getpid():
            self._cur = None
            if self._txn is not None:
                self._txn.abort()
            _release_env(self.path)
        self._env = self._txn = self._cur = None
