"""The figures' arithmetic (Eq. 21 fit, Eq. 24, per-epoch grouping) and Fig. 7 from synthetic
Table 1 logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scripts import figures
from scripts.profiles import load_profile
from tests.scripts.test_table1 import TESTS, write_log


def test_eq21_fit_recovers_known_constants() -> None:
    c1, c2 = 5000.0, 0.004
    points = [(nb, nb / c1, c2) for nb in (64, 128, 512, 1000)]
    got_c1, got_c2, error = figures.fit_eq21(points)
    assert got_c1 == pytest.approx(c1) and got_c2 == pytest.approx(c2) and error < 1e-12


def test_eq24_time_solves_the_equation_and_c2_places_the_optimum() -> None:
    batch, c1, c2, psi = np.array([100.0, 1000.0]), 2000.0, 0.01, 0.05
    t = figures.eq24_time(batch, c1, c2, psi)
    lhs = psi * t
    rhs = np.sqrt(t) * np.sqrt((batch + c1 * c2) / (batch * c1)) + batch / c1 + c2
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)
    c2 = figures.c2_for_optimum(2000.0, 500, psi)
    grid = np.linspace(10, 3000, 3000)
    best = grid[np.argmin(figures.eq24_time(grid, 2000.0, c2, psi))]
    assert best == pytest.approx(500, rel=0.02)


def test_epoch_grouping_and_rolling_mean() -> None:
    losses = np.arange(10.0)
    assert [list(e) for e in figures.per_epoch(losses, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    np.testing.assert_allclose(figures.rolling_mean(np.array([2.0, 4.0, 6.0]), 2), [2, 3, 5])


def test_fig7_plots_the_table1_runs_and_reports_reach(tmp_path: Path, synthetic_runs: Path) -> None:
    for (seed, arm), tests in TESTS.items():
        write_log(
            synthetic_runs / "default" / "table1" / "mnist" / f"{arm}-seed{seed}",
            seed,
            arm,
            tests,
        )
    profile = load_profile("default", ["mnist"], runs=3)
    note = figures.fig7(profile, tmp_path / "figs")
    assert (tmp_path / "figs" / "fig7_accuracy_loss_vs_time.png").stat().st_size > 10_000
    assert "mnist sgd: reached 3/3, mean time 4 s" in note
    assert "mnist isgd: reached 2/3, mean time 3 s" in note


def test_a_figure_without_its_table1_runs_names_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("scripts.runs.RUNS_DIR", tmp_path / "runs")
    with pytest.raises(figures.MissingRuns, match="make reproduce-table1 PROFILE=default"):
        figures.fig2(load_profile("default", ["cifar10"]), tmp_path)


def test_redrawing_one_figure_records_when_and_keeps_the_others_notes(
    tmp_path: Path, synthetic_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make figures --only 7 --no-run`: Fig. 7's note and its `drawn` date and commit replace the
    old ones; the other figures' notes (and their lack of a date) are left as they were."""
    import json

    for (seed, arm), tests in TESTS.items():
        write_log(synthetic_runs / "default" / "table1" / "mnist" / f"{arm}-seed{seed}", seed, arm, tests)
    out = tmp_path / "results"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "figures.json").write_text(json.dumps({"1": "old fig1", "7": "old fig7"}))
    monkeypatch.setattr(figures, "results_dir", lambda profile: out)
    monkeypatch.setattr(figures, "build_readme", lambda profile: out / "README.md")
    monkeypatch.setattr(figures, "git_commit", lambda: "abc123")
    assert figures.main(["--datasets", "mnist", "--runs", "3", "--only", "7", "--no-run"]) == 0
    notes = json.loads((out / "figures" / "figures.json").read_text())
    assert notes["1"] == "old fig1" and "mnist sgd: reached 3/3" in notes["7"]
    assert list(notes["drawn"]) == ["7"] and notes["drawn"]["7"].endswith(", commit abc123")
