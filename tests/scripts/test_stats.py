"""Time to target (both rules), intervals and paired tests (SciPy-backed) against answers worked
out by hand or tabulated."""

from __future__ import annotations

import math

import pytest

from scripts.stats import (
    RULES,
    Interval,
    Reached,
    first_reach,
    paired_test,
    sign_test_p,
    stays_above,
    summarize,
    t_interval,
    t_quantile,
    t_two_sided_p,
    time_to_target,
    wilcoxon_signed_rank_p,
)

TESTS = [
    (2.0, 100, 0.98),
    (4.0, 200, 0.991),
    (6.0, 300, 0.989),
    (8.0, 400, 0.992),
    (10.0, 500, 0.995),
]


def test_time_to_target_is_the_first_test_after_which_all_stay_above() -> None:
    """Reached at 4 s, dipped at 6 s: only the test at 8 s starts the run of tests >= 0.99."""
    assert time_to_target(TESTS, 0.99) == Reached(8.0, 400, 3)


def test_accuracy_equal_to_the_target_counts_as_reached() -> None:
    tests = [(1.0, 10, 0.5), (2.0, 20, 0.75), (3.0, 30, 0.75)]
    assert time_to_target(tests, 0.75) == Reached(2.0, 20, 1)


def test_a_run_ending_below_the_target_has_not_reached_it() -> None:
    assert time_to_target([*TESTS, (12.0, 600, 0.989)], 0.99) is None
    assert time_to_target([], 0.99) is None
    assert time_to_target([(1.0, None, 1.0)], 0.99) == Reached(1.0, None, 0)


def test_first_reach_is_the_first_test_at_or_above_the_level() -> None:
    """MLPerf's rule: the test at 4 s already counts, the dip at 6 s does not undo it."""
    assert first_reach(TESTS, 0.99) == Reached(4.0, 200, 1)
    assert first_reach(TESTS, 0.98) == Reached(2.0, 100, 0)  # equal to the level counts
    assert first_reach(TESTS, 0.996) is None and first_reach([], 0.5) is None


def test_the_rules_differ_only_after_a_dip_below_the_level() -> None:
    """stays == time_to_target (the paper's rule); first <= stays whenever stays reached."""
    assert RULES["stays"] is stays_above and RULES["first"] is first_reach
    assert stays_above(TESTS, 0.99) == time_to_target(TESTS, 0.99) == Reached(8.0, 400, 3)
    for level in (0.98, 0.99, 0.991, 0.992, 0.995):
        first, stays = first_reach(TESTS, level), stays_above(TESTS, level)
        assert first is not None and stays is not None
        assert first.test_index <= stays.test_index
    assert stays_above(TESTS, 0.991) == Reached(8.0, 400, 3)  # 0.989 at 6 s breaks the run
    assert first_reach(TESTS, 0.991) == Reached(4.0, 200, 1)


@pytest.mark.parametrize(
    "p, df, expected",
    [
        (0.975, 1, 12.7062),
        (0.975, 4, 2.7764),
        (0.975, 10, 2.2281),
        (0.975, 30, 2.0423),
        (0.95, 5, 2.0150),
    ],
)
def test_t_quantiles_match_the_table(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-4)


def test_t_p_values_match_closed_forms() -> None:
    # df = 1 is Cauchy: p = 1 - 2 atan(t) / pi; df = 2: p = 1 - t / sqrt(t^2 + 2).
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    assert t_two_sided_p(3.0, 2) == pytest.approx(1 - 3 / math.sqrt(11), abs=1e-12)
    assert t_two_sided_p(2.0, 10) == pytest.approx(0.073388, abs=1e-6)
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)


def test_summary_mean_sample_std_and_interval() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))
    half = 3.182446 * math.sqrt(5 / 3) / 2
    assert (s.low, s.high) == (
        pytest.approx(2.5 - half, abs=1e-5),
        pytest.approx(2.5 + half, abs=1e-5),
    )
    assert summarize([7.0]).std is None and summarize([]).mean is None


def test_t_interval_by_hand_and_its_edges() -> None:
    """(1, 2, 3): mean 2, sd 1, t(0.975, 2) = 4.302653 (table): 2 -/+ 4.302653 / sqrt(3)."""
    got = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert got.estimate == pytest.approx(2.0)
    assert (got.low, got.high) == (
        pytest.approx(2 - half, abs=1e-6),
        pytest.approx(2 + half, abs=1e-6),
    )
    assert got.half_width == pytest.approx(half, abs=1e-6)
    assert t_interval([5.0, 5.0, 5.0]) == Interval(5.0, 5.0, 5.0)  # sd 0: collapses
    assert t_interval([1.0]) == Interval(None, None, None) and t_interval([]).half_width is None
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)


def test_paired_t_test_by_hand() -> None:
    """d = isgd - sgd = (-2, -1, -3): mean -2, sd 1, t = -2 sqrt(3), df 2."""
    result = paired_test([10.0, 12.0, 14.0], [8.0, 11.0, 11.0])
    t = 2 * math.sqrt(3)
    assert result.pairs == 3 and result.difference.mean == pytest.approx(-2.0)
    assert result.t_p == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-10)
    assert result.wilcoxon_p == pytest.approx(2 / 8)  # all three negative: 2 of 8 sign patterns


def test_exact_wilcoxon_by_enumeration_with_ties_and_zeros() -> None:
    assert wilcoxon_signed_rank_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert wilcoxon_signed_rank_p([-1, 2, 3]) == pytest.approx(4 / 8)
    assert wilcoxon_signed_rank_p([1, 1, -2]) == pytest.approx(1.0)  # W+ = 3 = its mean
    assert wilcoxon_signed_rank_p([0, 0, 4]) == pytest.approx(1.0)  # zeros dropped: n = 1
    assert wilcoxon_signed_rank_p([0.0]) is None


def test_wilcoxon_with_tied_magnitudes_is_enumerated_exactly() -> None:
    """d = (-1, 1, 1, 2, 3): |d| ranks 2, 2, 2, 4, 5 (ties averaged); W+ = 13 of 15, centre 7.5.
    Subset sums of {2, 2, 2, 4, 5} with |W - 7.5| >= 5.5 are W = 0, 2 (x3), 13 (x3), 15: 8 / 32.
    (SciPy's "exact" null ignores ties and would say 6 / 32.)"""
    assert wilcoxon_signed_rank_p([-1, 1, 1, 2, 3]) == pytest.approx(8 / 32)
    assert wilcoxon_signed_rank_p([1, 1, 2]) == pytest.approx(2 / 8)  # W+ = 6: W in {0, 6}


def test_wilcoxon_beyond_enumeration_uses_the_normal_approximation() -> None:
    """28 tied differences (15 of +1, 10 of -1, 3 of +2): no 2^28 enumeration, a p in (0, 1)."""
    p = wilcoxon_signed_rank_p([1.0] * 15 + [-1.0] * 10 + [2.0] * 3)
    assert p is not None and 0.0 < p < 1.0


def test_sign_test_against_the_binomial() -> None:
    """9 wins of 10: 2 * (C(10,9) + C(10,10)) / 2^10 = 22 / 1024 = 0.021484375."""
    assert sign_test_p(9, 1) == pytest.approx(0.021484375, abs=1e-12)
    assert sign_test_p(1, 9) == pytest.approx(0.021484375, abs=1e-12)
    assert sign_test_p(3, 0) == pytest.approx(0.25)  # 2 / 2^3
    assert sign_test_p(2, 2) == pytest.approx(1.0)
    assert sign_test_p(0, 0) is None
    with pytest.raises(ValueError, match="win counts"):
        sign_test_p(-1, 2)


def test_identical_pairs_give_no_evidence() -> None:
    result = paired_test([5.0, 6.0], [5.0, 6.0])
    assert result.t_p == 1.0 and result.wilcoxon_p is None


def test_a_constant_nonzero_difference_is_certain() -> None:
    """SciPy's t is d / 0 here (NaN p); the harness calls a spread-free shift p = 0."""
    result = paired_test([5.0, 6.0, 7.0], [4.0, 5.0, 6.0])
    assert result.t_p == 0.0 and result.difference.low == result.difference.high == -1.0
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0], [1.0, 2.0])
