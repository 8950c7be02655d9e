"""The sweep's summary from synthetic logs whose answers are worked out by hand: paired time to
target where both arms reach it, and the paired top accuracy over every pair (which still says
something when the target is never reached)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import sweep
from scripts.profiles import load_profile
from scripts.runs import RunSpec
from solvers.run_log import RunLog, read_run_log
from tests.scripts.test_table1 import write_log

# (arm, seed): tests as (train_s, grad_evals, accuracy); target 99 %
TESTS = {
    ("sgd", 1): [(2, 100, 0.98), (4, 200, 0.991)],
    ("isgd", 1): [(2, 100, 0.992), (4, 200, 0.993)],
    ("sgd", 2): [(2, 100, 0.985), (4, 200, 0.992)],
    ("isgd", 2): [(2, 100, 0.991), (4, 200, 0.995)],
    ("sgd", 3): [(2, 100, 0.97), (4, 200, 0.98)],
    ("isgd", 3): [(2, 100, 0.975), (4, 200, 0.982)],
}


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, int], RunLog]:
    found = {
        key: read_run_log(write_log(tmp_path / f"{key[0]}{key[1]}", key[1], key[0], tests))
        for key, tests in TESTS.items()
    }

    def log_of(spec: RunSpec) -> RunLog | None:
        return found.get((spec.arm, spec.seed))

    monkeypatch.setattr(sweep, "_log", log_of)
    return found


def test_summary_pairs_time_to_target_and_top_accuracy(logs: dict) -> None:
    profile = load_profile("default", ["mnist"], runs=3)
    k2 = next(s for s in sweep.SETTINGS if s.name == "k2")
    row = sweep.summarize_setting(profile, profile.plans["mnist"], k2)
    assert (row["runs_sgd"], row["runs_isgd"]) == (3, 3)
    assert (row["reached_sgd"], row["reached_isgd"]) == (2, 2)  # seed 3 never gets there
    # seed 1: SGD at 4 s, ISGD at 2 s; seed 2: SGD at 4 s, ISGD at 2 s -> difference -2 s, no spread
    assert row["pairs"] == 2 and row["time_diff_s"] == pytest.approx(-2.0)
    assert row["time_improvement"] == pytest.approx(0.5)
    assert row["evals_diff"] == pytest.approx(-100.0)
    # top accuracy over all 3 pairs: +0.2, +0.3, +0.2 points
    assert row["top_pairs"] == 3
    assert row["top_acc_diff"] == pytest.approx((0.002 + 0.003 + 0.002) / 3)
    assert row["top_acc_diff_low"] > 0  # all three differences positive and close
    # Alg. 2: one trigger of 2 inner steps in each ISGD run's 2 iterations
    assert row["trigger_rate"] == pytest.approx(0.5)
    assert row["inner_steps_per_trigger"] == pytest.approx(2.0)


def test_reading_points_to_top_accuracy_when_too_few_pairs_reach_the_target(logs: dict) -> None:
    profile = load_profile("default", ["mnist"], runs=3)
    row = sweep.summarize_setting(profile, profile.plans["mnist"], sweep.SETTINGS[1])
    unreached = dict(row, pairs=1, time_diff_s=None, time_diff_low=None, time_diff_high=None)
    text = sweep.markdown([row, unreached], profile)
    assert "| +0.23 [" in text
    assert "1 of 2 settings have fewer than 2 pairs" in text
    assert "lies above 0: mnist/k2, mnist/k2" in text


def test_reading_with_one_pair_per_setting_says_there_is_no_interval(logs: dict) -> None:
    profile = load_profile("default", ["mnist"], runs=1)
    row = sweep.summarize_setting(profile, profile.plans["mnist"], sweep.SETTINGS[1])
    assert row["top_pairs"] == 1 and row["top_acc_diff_low"] is None
    text = sweep.markdown([row], profile)
    assert (
        "fewer than 2 pairs per setting, so no interval; the single differences (+0.20 to " in text
    )
