"""Fixtures of the experiment-script tests."""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
import pytest

from engine.proto import caffe_pb2
from scripts.profiles import Plan, load_profile
from scripts.runs import RunSpec


@pytest.fixture(autouse=True)
def sessions_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run by these tests note their sessions under tmp_path, never in the checkout's
    results/ (the committed sessions file)."""
    monkeypatch.setattr("scripts.runs.results_dir", lambda profile: tmp_path / "results" / profile)


@pytest.fixture
def synthetic_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs folder for hand-written logs: RUNS_DIR points at it, and the identity check (which
    needs the generator's files and the real data) passes, since these folders were not made by
    the runner. The check itself is tested on real run folders in test_stale_runs.py."""
    runs = tmp_path / "runs"
    monkeypatch.setattr("scripts.runs.RUNS_DIR", runs)
    monkeypatch.setattr("scripts.runs.stale_problem", lambda spec: None)
    return runs


def mnist_like(path: Path, records: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(records):
            label = int(rng.integers(0, 10))
            d = caffe_pb2.Datum(channels=1, height=28, width=28, label=label)
            d.data = rng.integers(0, 256, 28 * 28, dtype=np.uint8).tobytes()
            txn.put(f"{i:08d}".encode(), d.SerializeToString())
    env.close()


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunSpec:
    monkeypatch.setattr("scripts.runs.RUNS_DIR", tmp_path / "runs")
    mnist_like(tmp_path / "train_lmdb", 40, 1)
    mnist_like(tmp_path / "test_lmdb", 30, 2)
    dataset = load_profile("default", ["mnist"]).plans["mnist"].dataset
    plan = Plan(
        dataset,
        batch_size=4,
        budget_grad_evals=6,
        test_interval_seconds=100.0,
        snapshot_every=3,
        display=1,
    )
    return RunSpec(
        profile="t",
        group="table1",
        plan=plan,
        arm="isgd",
        seed=3,
        train_source=str(tmp_path / "train_lmdb"),
        test_source=str(tmp_path / "test_lmdb"),
        isgd={"control_limit": 2.0},
    )
