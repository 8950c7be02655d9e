"""Time to target, intervals and paired tests against answers worked out by hand or tabulated."""

from __future__ import annotations

import math

import pytest

from scripts.stats import (
    Reached,
    paired_test,
    summarize,
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


def test_identical_pairs_give_no_evidence() -> None:
    result = paired_test([5.0, 6.0], [5.0, 6.0])
    assert result.t_p == 1.0 and result.wilcoxon_p is None
