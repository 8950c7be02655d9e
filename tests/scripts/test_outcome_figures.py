"""The reached-fraction and ladder figures are written as PNGs and refuse bad input clearly
(no pixel tests: what they plot is tested in test_outcomes.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from scripts.outcome_figures import plot_ladder, plot_reached
from scripts.outcomes import Outcome, ladder_levels, ladder_rows
from tests.scripts.test_outcomes import PAIRS

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_plot_reached_writes_a_png_with_censored_runs(tmp_path: Path) -> None:
    sgd = [Outcome(True, 400.0, 4.0), Outcome(False, 500.0, 5.0)]
    isgd = [Outcome(True, 200.0, 2.0), Outcome(True, 300.0, 3.0)]
    path = plot_reached(tmp_path / "figures" / "reached_mnist.png", "mnist", 0.99, sgd, isgd)
    assert path == tmp_path / "figures" / "reached_mnist.png" and _is_png(path)


def test_plot_reached_all_censored_one_arm_empty_and_unknown_evals(tmp_path: Path) -> None:
    """No log-rank test (None) and no gradient-evaluation counts still make a figure."""
    censored = [Outcome(False, 500.0, 5.0)] * 3
    assert _is_png(plot_reached(tmp_path / "a.png", "cifar10", 0.75, censored, censored, "stays"))
    assert _is_png(plot_reached(tmp_path / "b.png", "cifar10", 0.75, [], censored))
    blind = [Outcome(True, math.nan, 2.0)]
    assert _is_png(plot_reached(tmp_path / "c.png", "mnist", 0.99, blind, censored))


def test_plot_reached_rejects_a_bad_rule_and_no_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown rule 'last'"):
        plot_reached(tmp_path / "x.png", "mnist", 0.99, [Outcome(True, 1.0, 1.0)], [], "last")
    with pytest.raises(ValueError, match="mnist: no runs"):
        plot_reached(tmp_path / "x.png", "mnist", 0.99, [], [])
    assert not (tmp_path / "x.png").exists()


def test_plot_ladder_writes_a_png(tmp_path: Path) -> None:
    """Two datasets, both rules, levels where no interval exists (None cells)."""
    rows = ladder_rows("mnist", PAIRS, ladder_levels(0.98, 0.995, 0.001))
    rows += ladder_rows("cifar10", PAIRS[:3], ladder_levels(0.98, 0.995, 0.001))
    path = plot_ladder(
        tmp_path / "ladder.png", rows, {"mnist": 0.99, "cifar10": 0.985}, {"mnist": 0.2}
    )
    assert _is_png(path)
    assert _is_png(plot_ladder(tmp_path / "s.png", rows, {}, {}, unit="seconds"))


def test_plot_ladder_rejects_bad_units_rules_and_rows(tmp_path: Path) -> None:
    rows = ladder_rows("mnist", PAIRS, [0.99])
    with pytest.raises(ValueError, match="unknown unit 'epochs'"):
        plot_ladder(tmp_path / "x.png", rows, {}, {}, unit="epochs")
    with pytest.raises(ValueError, match="unknown rule 'best'"):
        plot_ladder(tmp_path / "x.png", [{**rows[0], "rule": "best"}], {}, {})
    with pytest.raises(ValueError, match="ladder row 0 lacks imp_evals_low"):
        plot_ladder(
            tmp_path / "x.png", [{k: v for k, v in rows[0].items() if k != "imp_evals_low"}], {}, {}
        )
    with pytest.raises(ValueError, match="no ladder rows"):
        plot_ladder(tmp_path / "x.png", [], {}, {})
    assert not (tmp_path / "x.png").exists()


def test_plot_ladder_cuts_an_interval_below_the_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A level that two pairs barely reached can have an interval down to -12000 %: the y axis
    stops at LADDER_FLOOR (and says so) so the other levels stay readable; IMP tops at 100 %."""
    from scripts import outcome_figures

    kept = {}

    def keep(fig, path):  # noqa: ANN001, ANN202
        kept["fig"] = fig
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(outcome_figures, "save_figure", keep)
    rows = [
        {"dataset": "mnist", "rule": "first", "level": 0.98, "imp_evals": 0.1,
         "imp_evals_low": -0.2, "imp_evals_high": 0.3},
        {"dataset": "mnist", "rule": "first", "level": 0.99, "imp_evals": -0.5,
         "imp_evals_low": -120.0, "imp_evals_high": 0.9},
    ]
    plot_ladder(tmp_path / "ladder.png", rows, {"mnist": 0.99}, {"mnist": 0.256})
    ax = kept["fig"].axes[0]
    assert ax.get_ylim() == pytest.approx((outcome_figures.LADDER_FLOOR - 5, 95.0))
    assert any("cut off" in t.get_text() for t in ax.texts)
