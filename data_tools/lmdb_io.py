"""Writing LMDBs of Datum: atomic chunked writing with progress (reading is engine.lmdb_reader).

Writers fill a temporary directory beside the target and rename it into place only on success, so
an interrupted conversion never leaves a half-written database under the real name.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from types import TracebackType

import lmdb

from engine.errors import DataError

MAP_SIZE = 1 << 40  # 1 TB, sparse, as Caffe's tools reserve
TXN_RECORDS = 1000  # records per write transaction, as Caffe's converters commit


class Progress:
    """Throttled progress lines on stderr for long writes."""

    def __init__(self, label: str, total: int | None, enabled: bool = True, every_s: float = 2.0):
        self.label, self.total, self.enabled, self.every_s = label, total, enabled, every_s
        self.start = self.last = time.monotonic()

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < self.every_s):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        end = "\n" if final else ""
        print(f"\r{self.label}: {done}{of} records ({rate:.0f}/s)", end=end, file=sys.stderr)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete `.<name>.partial-<pid>` folders beside `path` left by writers that are gone (a
    conversion killed or interrupted); a live writer's folder is left alone."""
    removed = []
    for partial in path.parent.glob(f".{path.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


class LmdbWriter:
    """Context manager writing key/value records into a new LMDB at `path`, atomically."""

    def __init__(
        self,
        path: str | os.PathLike,
        total: int | None = None,
        overwrite: bool = False,
        progress: bool = True,
        txn_records: int = TXN_RECORDS,
        map_size: int = MAP_SIZE,
    ) -> None:
        self.path = Path(path)
        self.total, self.overwrite, self.txn_records = total, overwrite, txn_records
        self.map_size = map_size
        self.count = 0
        self._progress = Progress(f"writing {self.path}", total, progress)
        self._tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None

    def __enter__(self) -> LmdbWriter:
        if self.path.exists() and not self.overwrite:
            raise DataError(f"{self.path}: already exists (delete it or pass --overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.path)
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._env = lmdb.open(str(self._tmp), map_size=self.map_size, subdir=True, meminit=False)
        self._txn = self._env.begin(write=True)
        return self

    def put(self, key: bytes, value: bytes) -> None:
        """Store one record; commits every `txn_records` records."""
        assert self._txn is not None and self._env is not None, "use LmdbWriter as a context"
        if not self._txn.put(key, value, overwrite=False):
            raise DataError(f"{self.path}: duplicate key {key!r}")
        self.count += 1
        if self.count % self.txn_records == 0:
            self._txn.commit()
            self._txn = self._env.begin(write=True)
            self._progress.update(self.count)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._txn is not None and self._env is not None
        if exc_type is not None:
            self._txn.abort()
            self._env.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        self._txn.commit()
        self._env.sync(True)
        self._env.close()
        self._progress.update(self.count, final=True)
        if self.path.exists():
            shutil.rmtree(self.path)
        self._tmp.rename(self.path)
