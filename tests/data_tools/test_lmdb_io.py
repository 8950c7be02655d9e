"""LMDB writing is atomic and chunked; reading is positional, in key order, wrapping at the end."""

from __future__ import annotations

import lmdb
import pytest

from data_tools.lmdb_io import LmdbWriter
from engine.errors import DataError
from engine.lmdb_reader import LmdbReader


def _write(path, n, **kw):
    with LmdbWriter(path, total=n, progress=False, **kw) as db:
        for i in range(n):
            db.put(b"%05d" % i, b"v%d" % i)


def test_chunked_commits_and_rename(tmp_path):
    path = tmp_path / "db"
    _write(path, 7, txn_records=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    env = lmdb.open(str(path), readonly=True, lock=False)
    assert env.stat()["entries"] == 7
    env.close()


def test_interrupted_write_leaves_nothing(tmp_path):
    path = tmp_path / "db"
    with pytest.raises(RuntimeError, match="boom"):
        with LmdbWriter(path, progress=False, txn_records=2) as db:
            for i in range(5):
                db.put(b"%d" % i, b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_database_not_clobbered(tmp_path):
    path = tmp_path / "db"
    _write(path, 2)
    with pytest.raises(DataError, match="db: already exists"):
        _write(path, 3)
    _write(path, 3, overwrite=True)
    assert len(LmdbReader(path)) == 3


def test_reader_positions_wrap_and_jump(tmp_path):
    path = tmp_path / "db"
    _write(path, 5)
    r = LmdbReader(path)
    keys, vals = r.read(3, 4)
    assert keys == [b"00003", b"00004", b"00000", b"00001"]
    assert vals == [b"v3", b"v4", b"v0", b"v1"]
    assert r.read(4, 1)[0] == [b"00004"]  # forward skip
    assert r.read(1, 2)[0] == [b"00001", b"00002"]  # backward jump
    assert r.read(7, 1)[0] == [b"00002"]  # positions are taken modulo the size
    r.close()


def test_bad_sources_name_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere_lmdb: LMDB source does not exist"):
        LmdbReader(tmp_path / "nowhere_lmdb")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="plain: not an LMDB"):
        LmdbReader(tmp_path / "plain")
    with LmdbWriter(tmp_path / "empty", progress=False):
        pass
    with pytest.raises(DataError, match="empty: LMDB holds no records"):
        len(LmdbReader(tmp_path / "empty"))
