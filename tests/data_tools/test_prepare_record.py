"""`make data DATA_SEED=k` over LMDBs built with another seed (issue 25): the seed is recorded in
prepare.json beside them and a different one is refused in one line saying how to rebuild;
data_fingerprint tells databases apart by count, order and recorded seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.cli import main as data_main
from data_tools.fingerprint import data_fingerprint
from data_tools.prepare import prepare
from data_tools.prepare_record import RECORD, file_sha256
from engine.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def _prepare(raw: Path, out: Path, seed: int, **kw: object) -> list[Path]:
    return prepare(str(raw), str(out), ("mnist",), seed, verify=False, progress=False, **kw)


def test_prepare_records_the_seed_and_the_originals(mnist_files, tmp_path: Path) -> None:
    out = tmp_path / "data"
    _prepare(mnist_files["dir"], out, 2)
    record = json.loads((out / "mnist" / RECORD).read_text())
    assert record["outputs"]["mnist_train_lmdb"] == {"seed": 2, "order": "FCPR"}
    assert record["outputs"]["mnist_test_lmdb"]["order"] == "file"
    images = mnist_files["train"][2]
    assert record["originals"][images.name] == file_sha256(images)


def test_another_seed_over_recorded_lmdbs_is_refused_with_the_rebuild_command(
    mnist_files, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "data"
    _prepare(mnist_files["dir"], out, 1)
    before = data_fingerprint(out / "mnist" / "mnist_train_lmdb")
    with pytest.raises(DataError, match="built in FCPR order of seed 1") as caught:
        _prepare(mnist_files["dir"], out, 2)
    assert "make data DATA_SEED=2 DATA_ARGS=--overwrite" in str(caught.value)
    args = ["prepare", "--raw-dir", str(mnist_files["dir"]), "--out", str(out)]
    assert data_main([*args, "--only", "mnist", "--no-verify", "--seed", "2", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DATA_ARGS=--overwrite" in err[0]
    assert data_fingerprint(out / "mnist" / "mnist_train_lmdb") == before  # kept as it was
    # The same seed is "already there"; --overwrite rebuilds in the new order and records it.
    assert _prepare(mnist_files["dir"], out, 1) == []
    assert _prepare(mnist_files["dir"], out, 2, overwrite=True)
    after = data_fingerprint(out / "mnist" / "mnist_train_lmdb")
    assert after["prepare_seed"] == 2 and after["records"] == before["records"]
    assert after != before


def test_lmdbs_without_a_record_are_kept_with_a_note(mnist_files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "data"
    _prepare(mnist_files["dir"], out, 1)
    (out / "mnist" / RECORD).unlink()
    written = prepare(str(mnist_files["dir"]), str(out), ("mnist",), 2, verify=False)
    assert written == []
    assert "has no prepare.json" in capsys.readouterr().err
    assert data_fingerprint(out / "mnist" / "mnist_train_lmdb")["prepare_seed"] is None


def test_data_fingerprint_changes_with_the_order_not_with_a_copy(
    mnist_files, tmp_path: Path
) -> None:
    one, two, again = tmp_path / "one", tmp_path / "two", tmp_path / "again"
    for root, seed in ((one, 1), (two, 2), (again, 1)):
        _prepare(mnist_files["dir"], root, seed)
    a, b, c = (data_fingerprint(r / "mnist" / "mnist_train_lmdb") for r in (one, two, again))
    assert a["records"] == b["records"] == 50
    assert a == c  # same data, same order
    assert (a["first"], a["middle"], a["last"]) != (b["first"], b["middle"], b["last"])
    assert (a["prepare_seed"], b["prepare_seed"]) == (1, 2)
    with pytest.raises(DataError, match="cannot open as an LMDB"):
        data_fingerprint(tmp_path / "nowhere")


def test_the_missing_originals_hint_names_what_a_make_user_types(tmp_path: Path) -> None:
    env = {"ISGD_DATA_DIR": str(tmp_path / "empty"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_tools",
            "prepare",
            "--out",
            str(tmp_path / "d"),
            "--only",
            "mnist",
            "--quiet",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "make data DATA_ARGS=--download" in result.stderr
