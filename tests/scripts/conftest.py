"""Fixtures of the experiment-script tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def synthetic_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs folder for hand-written logs: RUNS_DIR points at it, and the identity check (which
    needs the generator's files and the real data) passes, since these folders were not made by
    the runner. The check itself is tested on real run folders in test_stale_runs.py."""
    runs = tmp_path / "runs"
    monkeypatch.setattr("scripts.runs.RUNS_DIR", runs)
    monkeypatch.setattr("scripts.runs.stale_problem", lambda spec: None)
    return runs
