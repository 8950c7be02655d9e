"""Censored time-to-target outcomes, the paired IMP, the ladder and Kaplan-Meier / log-rank,
against hand-worked synthetic logs and tabulated values.

The synthetic runs test every 100 gradient evaluations (100..500) at evals / 100 seconds and
stop at 500 evaluations, 5.0 s. At level 0.99 (first reach / stays above, in evaluations):

    seed  SGD            ISGD           note
    1     400 / 400      200 / 400      ISGD dips below after its first reach
    2     400 / 400      200 / 200
    3     300 / 300      300 / 300      a tie
    4     censored 500   400 / 400      only ISGD reaches
    5     censored 500   censored 500   neither reaches
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from scripts.outcomes import (
    LADDER_COLUMNS,
    Outcome,
    RunTests,
    highest_level_all_reached,
    imp_interval,
    km_reached,
    ladder_levels,
    ladder_rows,
    logrank_p,
    outcome,
    paired_imp,
    paired_outcomes,
    pairs_for_half_width,
    write_ladder_csv,
)
from scripts.stats import Interval, t_quantile

T_975_2 = 4.302653  # Student's t, 0.975 quantile, 2 df (table)
LN2 = math.log(2.0)


def run(*accuracy: float) -> RunTests:
    tests = tuple((i / 1.0, 100 * i, a) for i, a in enumerate(accuracy, start=1))
    return RunTests(tests, budget_evals=500, train_s=5.0)


PAIRS = [
    (run(0.95, 0.98, 0.985, 0.991, 0.993), run(0.97, 0.991, 0.985, 0.992, 0.995)),
    (run(0.95, 0.98, 0.985, 0.990, 0.993), run(0.97, 0.991, 0.992, 0.993, 0.995)),
    (run(0.95, 0.98, 0.991, 0.992, 0.993), run(0.95, 0.98, 0.991, 0.994, 0.992)),
    (run(0.90, 0.95, 0.97, 0.98, 0.985), run(0.95, 0.97, 0.98, 0.99, 0.991)),
    (run(0.90, 0.95, 0.97, 0.98, 0.985), run(0.90, 0.95, 0.97, 0.98, 0.98)),
]


def test_outcome_reached_or_censored_at_the_budget() -> None:
    sgd, isgd = PAIRS[0]
    assert outcome(isgd, 0.99, "first") == Outcome(True, 200.0, 2.0)
    assert outcome(isgd, 0.99, "stays") == Outcome(True, 400.0, 4.0)  # dip at 300
    assert outcome(PAIRS[3][0], 0.99, "first") == Outcome(False, 500.0, 5.0)
    assert outcome(RunTests((), 700, 9.5), 0.5, "stays") == Outcome(False, 700.0, 9.5)


def test_an_unknown_rule_is_named() -> None:
    with pytest.raises(ValueError, match="'last'.*first, stays"):
        outcome(PAIRS[0][0], 0.99, "last")
    with pytest.raises(ValueError, match="'best'"):
        ladder_rows("mnist", PAIRS, [0.99], rules=("first", "best"))


def test_paired_imp_by_hand_first_reach() -> None:
    """First reach: log ratios ln(200/400), ln(200/400), ln(300/300) = (-a, -a, 0), a = ln 2.
    Mean -2a/3: IMP = 1 - 2^(-2/3) = 0.370. sd = a / sqrt(3), so h = 4.302653 * a / 3 = 0.994;
    the IMP interval is [1 - exp(m + h), 1 - exp(m - h)] = [-0.702, 0.767]. Sign test: ISGD wins
    seeds 1, 2, 4 (4 only ISGD reached), the tie and seed 5 are dropped: p = 2 / 2^3 = 0.25."""
    imp = paired_imp(paired_outcomes(PAIRS, 0.99, "first"))
    assert (imp.pairs_total, imp.pairs_both, imp.only_sgd, imp.only_isgd, imp.neither) == (
        5,
        3,
        0,
        1,
        1,
    )
    assert (imp.reached_sgd, imp.reached_isgd) == (3, 4)
    assert imp.log_ratios_evals == pytest.approx((-LN2, -LN2, 0.0))
    m, h = -2 * LN2 / 3, T_975_2 * LN2 / 3
    for got in (imp.imp_evals, imp.imp_s):  # seconds are evals / 100: same ratios
        assert got.estimate == pytest.approx(1 - 2 ** (-2 / 3))
        assert got.low == pytest.approx(1 - math.exp(m + h), abs=1e-6)
        assert got.high == pytest.approx(1 - math.exp(m - h), abs=1e-6)
        assert got.low == pytest.approx(-0.70246, abs=1e-4)
        assert got.high == pytest.approx(0.76690, abs=1e-4)
    assert imp.sign_p == pytest.approx(0.25)


def test_paired_imp_stays_rule_sees_the_dip() -> None:
    """Stays: seed 1 becomes a tie (400 vs 400): ratios (0, -a, 0), IMP = 1 - 2^(-1/3);
    ISGD wins seeds 2 and 4 only: p = 2 / 2^2 = 0.5."""
    imp = paired_imp(paired_outcomes(PAIRS, 0.99, "stays"))
    assert imp.pairs_both == 3 and imp.log_ratios_evals == pytest.approx((0.0, -LN2, 0.0))
    assert imp.imp_evals.estimate == pytest.approx(1 - 2 ** (-1 / 3))
    assert imp.sign_p == pytest.approx(0.5)


def test_only_sgd_reaching_is_an_sgd_win() -> None:
    swapped = [(i, s) for s, i in PAIRS]
    imp = paired_imp(paired_outcomes(swapped, 0.99, "first"))
    assert (imp.only_sgd, imp.only_isgd, imp.reached_sgd, imp.reached_isgd) == (1, 0, 4, 3)
    assert imp.imp_evals.estimate == pytest.approx(1 - 2 ** (2 / 3))  # ISGD slower: negative
    assert imp.sign_p == pytest.approx(0.25)


def test_a_single_pair_has_no_interval_and_identical_ratios_collapse_it() -> None:
    one = paired_imp(paired_outcomes(PAIRS[:1], 0.99, "first"))
    assert one.pairs_both == 1 and one.imp_evals == Interval(None, None, None)
    assert one.sign_p == pytest.approx(1.0)  # one win of one: 2 * 1/2
    same = paired_imp(paired_outcomes(PAIRS[:2], 0.99, "first"))  # both ratios ln(1/2)
    assert same.imp_evals == Interval(pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    assert same.imp_evals.half_width == pytest.approx(0.0)


def test_empty_and_all_censored_pairs() -> None:
    empty = paired_imp([])
    assert (empty.pairs_total, empty.pairs_both, empty.sign_p) == (0, 0, None)
    assert empty.imp_evals == empty.imp_s == Interval(None, None, None)
    never = paired_imp(paired_outcomes(PAIRS, 0.999, "first"))
    assert (never.neither, never.reached_sgd, never.reached_isgd, never.sign_p) == (5, 0, 0, None)


def test_unknown_gradient_evaluations_leave_seconds_usable() -> None:
    """A reaching test without grad_evals: evals NaN, dropped from the eval ratios and undecided
    in the sign test, while the seconds ratio stays."""
    blind = RunTests(((1.0, None, 0.995),), budget_evals=500, train_s=5.0)
    got = outcome(blind, 0.99, "first")
    assert got.reached and math.isnan(got.evals) and got.seconds == 1.0
    imp = paired_imp([(outcome(PAIRS[0][0], 0.99, "first"), got)])
    assert imp.log_ratios_evals == () and imp.log_ratios_s == pytest.approx((math.log(1 / 4),))
    assert imp.sign_p is None
    with pytest.raises(ValueError, match="no evals"):
        km_reached([got], "evals")
    assert km_reached([got], "seconds")[1].tolist() == [1.0]


def test_imp_interval_maps_the_log_interval_in_order() -> None:
    got = imp_interval([-0.5, 0.1, -0.2])
    assert got.low is not None and got.high is not None and got.estimate is not None
    assert got.low < got.estimate < got.high


def test_pairs_for_half_width_against_a_direct_search() -> None:
    """The smallest n with exp(m) sinh(t_{n-1} s / sqrt n) <= 0.10, found by walking n up."""
    ratios = [-0.5, 0.1, -0.2, -0.4, 0.05]
    m, s = float(np.mean(ratios)), float(np.std(ratios, ddof=1))

    def width(n: int) -> float:
        return math.exp(m) * math.sinh(t_quantile(0.975, n - 1) * s / math.sqrt(n))

    n = 2
    while width(n) > 0.10:
        n += 1
    assert pairs_for_half_width(ratios) == n and n > len(ratios)
    assert pairs_for_half_width(ratios, half_width=0.05) > n
    assert pairs_for_half_width([0.3, 0.3]) == 2  # sd 0: any n is narrow enough
    assert pairs_for_half_width([0.3]) is None
    with pytest.raises(ValueError, match="half_width"):
        pairs_for_half_width(ratios, half_width=0.0)


def test_ladder_levels_are_inclusive_and_do_not_drift() -> None:
    mnist = ladder_levels(0.970, 0.994, 0.001)
    assert len(mnist) == 25 and mnist[0] == 0.97 and mnist[-1] == 0.994 and mnist[3] == 0.973
    assert (
        len(ladder_levels(0.50, 0.76, 0.01)) == 27 and ladder_levels(0.50, 0.76, 0.01)[-1] == 0.76
    )
    assert len(ladder_levels(0.60, 0.82, 0.01)) == 23
    assert ladder_levels(0.5, 0.5, 0.1) == [0.5]
    with pytest.raises(ValueError, match="step must be > 0"):
        ladder_levels(0.9, 0.99, 0.0)
    with pytest.raises(ValueError, match="above its stop"):
        ladder_levels(0.99, 0.9, 0.01)


def test_ladder_rows_and_csv(tmp_path: Path) -> None:
    rows = ladder_rows("mnist", PAIRS, [0.99, 0.994])
    assert [(r["rule"], r["level"]) for r in rows] == [
        ("first", 0.99),
        ("first", 0.994),
        ("stays", 0.99),
        ("stays", 0.994),
    ]
    assert all(list(r) == LADDER_COLUMNS for r in rows)
    first = rows[0]
    assert (first["pairs_both"], first["pairs_total"], first["reached_sgd"]) == (3, 5, 3)
    assert first["imp_evals"] == pytest.approx(1 - 2 ** (-2 / 3))
    assert first["sign_p"] == pytest.approx(0.25)
    high = rows[1]  # 0.994: no SGD run got there, ISGD seeds 1 and 2 (0.995) and 3 (first)
    assert (high["pairs_both"], high["reached_sgd"], high["reached_isgd"]) == (0, 0, 3)
    assert high["imp_evals"] is None and high["imp_s_high"] is None
    assert high["sign_p"] == pytest.approx(0.25)
    assert rows[3]["reached_isgd"] == 2  # stays: seed 3 ends at 0.992

    path = write_ladder_csv(tmp_path / "results" / "ladder.csv", rows)
    with path.open() as f:
        table = list(csv.reader(f))
    assert table[0] == LADDER_COLUMNS and len(table) == 5
    assert table[2][LADDER_COLUMNS.index("imp_evals")] == ""
    assert float(table[1][LADDER_COLUMNS.index("imp_evals")]) == pytest.approx(1 - 2 ** (-2 / 3))


def test_highest_level_every_run_reached() -> None:
    """Seeds 1-3: every run's best test is >= 0.993 (first reach); under stays seed 3's ISGD
    ends at 0.992, so 0.992."""
    levels = ladder_levels(0.98, 0.995, 0.001)
    assert highest_level_all_reached(PAIRS[:3], levels, "first") == 0.993
    assert highest_level_all_reached(PAIRS[:3], levels, "stays") == 0.992
    assert highest_level_all_reached(PAIRS, levels, "first") == 0.98  # seed 5's ISGD tops there
    assert highest_level_all_reached(PAIRS, [0.99, 0.995], "first") is None
    assert highest_level_all_reached([], levels, "first") is None


def test_kaplan_meier_by_hand() -> None:
    """Reached at 1, 3, 4, censored at 2, 5 (n = 5): S = 4/5 at 1; 3 at risk at 3, S = 8/15;
    2 at risk at 4, S = 4/15. Reached = 1 - S: 0.2, 0.2, 7/15, 11/15, 11/15."""
    sample = [
        Outcome(True, 1.0, 10.0),
        Outcome(False, 2.0, 20.0),
        Outcome(True, 3.0, 30.0),
        Outcome(True, 4.0, 40.0),
        Outcome(False, 5.0, 50.0),
    ]
    x, y = km_reached(sample)
    assert x.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert y == pytest.approx([0.2, 0.2, 7 / 15, 11 / 15, 11 / 15])
    xs, ys = km_reached(sample, "seconds")
    assert xs.tolist() == [10.0, 20.0, 30.0, 40.0, 50.0] and ys == pytest.approx(y)


def test_kaplan_meier_of_the_synthetic_logs_with_ties() -> None:
    """ISGD, first reach at 0.99: 200, 200, 300, 400, censored 500: 2/5 at 200, then 1 of 3,
    then 1 of 2: reached 0.4, 0.6, 0.8, 0.8. SGD: 400, 400, 300, censored 500 (x2): 0.2 at 300,
    2 of 4 at 400: 0.6."""
    outcomes = paired_outcomes(PAIRS, 0.99, "first")
    x, y = km_reached([i for _, i in outcomes])
    assert x.tolist() == [200.0, 300.0, 400.0, 500.0] and y == pytest.approx([0.4, 0.6, 0.8, 0.8])
    x, y = km_reached([s for s, _ in outcomes])
    assert x.tolist() == [300.0, 400.0, 500.0] and y == pytest.approx([0.2, 0.6, 0.6])


def test_kaplan_meier_without_censoring_is_the_ecdf_and_all_censored_is_zero() -> None:
    x, y = km_reached([Outcome(True, v, v) for v in (1.0, 2.0, 2.0, 3.0)])
    assert x.tolist() == [1.0, 2.0, 3.0] and y == pytest.approx([0.25, 0.75, 1.0])
    x, y = km_reached([Outcome(False, 5.0, 1.0), Outcome(False, 7.0, 1.0)])
    assert x.tolist() == [5.0, 7.0] and y.tolist() == [0.0, 0.0]
    x, y = km_reached([])
    assert len(x) == len(y) == 0
    with pytest.raises(ValueError, match="unknown unit 'hours'"):
        km_reached([Outcome(True, 1.0, 1.0)], "hours")


def test_logrank_by_hand() -> None:
    """A reached at 1 and 3, B at 2 and censored at 4. At 1: 2 + 2 at risk, E_A = 1/2,
    V = 1/4; at 2: 1 + 2, E_A = 1/3, V = 2/9; at 3: 1 + 1, E_A = 1/2, V = 1/4.
    Z = (2 - 4/3) / sqrt(13/18), p = erfc(Z / sqrt 2) = 0.4328."""
    a = [Outcome(True, 1.0, 1.0), Outcome(True, 3.0, 3.0)]
    b = [Outcome(True, 2.0, 2.0), Outcome(False, 4.0, 4.0)]
    z = (2 - 4 / 3) / math.sqrt(13 / 18)
    assert logrank_p(a, b) == pytest.approx(math.erfc(z / math.sqrt(2)), abs=1e-12)
    assert logrank_p(a, b, "seconds") == pytest.approx(logrank_p(a, b))


def test_logrank_is_none_where_undefined() -> None:
    """No event in either arm (all censored) or an empty arm: no test, None."""
    censored = [Outcome(False, 5.0, 5.0), Outcome(False, 6.0, 6.0)]
    assert logrank_p(censored, censored) is None
    assert logrank_p([], [Outcome(True, 1.0, 1.0)]) is None
    assert logrank_p([Outcome(True, 1.0, 1.0)], [Outcome(False, 0.5, 0.5)]) is None  # no overlap
    with pytest.raises(ValueError, match="unknown unit"):
        logrank_p(censored, censored, "epochs")
