"""`make data` after faults: stale partial folders go, a wrong-sized known LMDB is refused, and
Ctrl-C prints one line (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from data_tools import cli
from data_tools.lmdb_io import LmdbWriter


def test_a_writer_clears_partials_of_dead_writers_but_not_live_ones(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)  # that process has exited
    stale = tmp_path / f".db_lmdb.partial-{dead_pid}"
    live = tmp_path / f".db_lmdb.partial-{os.getppid()}"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "data.mdb").write_bytes(b"half")
    with LmdbWriter(tmp_path / "db_lmdb", progress=False) as writer:
        writer.put(b"k", b"v")
    assert not stale.exists() and live.exists()
    assert (tmp_path / "db_lmdb").is_dir()


def test_a_known_lmdb_with_the_wrong_record_count_is_reported_not_used(
    tmp_path: Path, capsys
) -> None:
    target = tmp_path / "out" / "mnist" / "mnist_train_lmdb"
    target.mkdir(parents=True)
    env = lmdb.open(str(target), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for i in range(5):
            txn.put(f"{i:08d}".encode(), b"x")
    env.close()
    before = (target / "data.mdb").read_bytes()
    args = ["prepare", "--out", str(tmp_path / "out"), "--only", "mnist"]
    assert cli.main([*args, "--raw-dir", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert f"{target} holds 5 records, the original dataset has 60000" in err
    assert (target / "data.mdb").read_bytes() == before


def test_ctrl_c_prints_one_line_and_no_traceback(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import data_tools.prepare as prepare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "prepare", interrupted)
    assert cli.main(["prepare", "--out", "x"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prepare: interrupted;")
    assert "Traceback" not in "\n".join(err)
