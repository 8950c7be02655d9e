"""The statistics of Table 1: when a run reached a target (two rules), mean/std/95 % intervals,
paired tests and the sign test, on SciPy (scipy.stats) rather than hand-written distributions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy  # scipy.stats loads on first use (SciPy's lazy submodules): 2 s a start skips

TestPoint = tuple[float, int | None, float]  # (train_s, grad_evals, accuracy) of one test

# The exact Wilcoxon distribution with tied |differences| is enumerated over all 2^n sign
# patterns up to this many nonzero differences; beyond it, the normal approximation.
_WILCOXON_ENUMERATE_MAX = 20


@dataclass(frozen=True)
class Reached:
    """When a run's test accuracy got to the target under a rule: training seconds and gradient
    evaluations at that test, and the test's index in the run's test sequence."""

    train_s: float
    grad_evals: int | None
    test_index: int


def _reached_at(tests: Sequence[TestPoint], index: int) -> Reached:
    train_s, evals, _ = tests[index]
    return Reached(float(train_s), None if evals is None else int(evals), index)


def first_reach(tests: Sequence[TestPoint], level: float) -> Reached | None:
    """The first test with accuracy >= `level` (MLPerf's and AlgoPerf's rule), from
    (train_s, grad_evals, accuracy) in test order; None when no test got there."""
    for index, (_, _, accuracy) in enumerate(tests):
        if accuracy >= level:
            return _reached_at(tests, index)
    return None


def stays_above(tests: Sequence[TestPoint], level: float) -> Reached | None:
    """The first test after which every later test stays at or above `level` (the paper's
    "consistently above the dashed line"); None when the last test is below it."""
    first: int | None = None
    for index, (_, _, accuracy) in enumerate(tests):
        if accuracy >= level:
            if first is None:
                first = index
        else:
            first = None
    return None if first is None else _reached_at(tests, first)


def time_to_target(tests: Sequence[TestPoint], target: float) -> Reached | None:
    """Table 1's time to target: the paper's rule, `stays_above`."""
    return stays_above(tests, target)


RULES: dict[str, Callable[[Sequence[TestPoint], float], Reached | None]] = {
    "first": first_reach,
    "stays": stays_above,
}


# ------------------------------------------------------------------ Student's t


def t_quantile(p: float, df: int) -> float:
    """The t value with P(T <= t) = p for Student's t with `df` degrees of freedom."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile needs 0 < p < 1, got {p}")
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1, got {df}")
    return float(scipy.stats.t.ppf(p, df))


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1, got {df}")
    return float(2.0 * scipy.stats.t.sf(abs(t), df))


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval (all None when there is too little data)."""

    estimate: float | None
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width, None without an interval."""
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2.0


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean and its Student-t interval; all None below 2 values. With sd 0 the interval
    collapses to the mean (the t interval's width is proportional to the sd)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    xs = np.asarray(values, dtype=np.float64)
    if len(xs) < 2:
        return Interval(None, None, None)
    mean = float(xs.mean())
    half = (
        t_quantile(0.5 + confidence / 2.0, len(xs) - 1) * float(xs.std(ddof=1)) / math.sqrt(len(xs))
    )
    return Interval(mean, mean - half, mean + half)


# ------------------------------------------------------------------ summaries


@dataclass(frozen=True)
class Summary:
    """n, mean, sample std (n-1) and the 95 % t interval of the mean (None below n = 2)."""

    n: int
    mean: float | None
    std: float | None
    low: float | None
    high: float | None


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample standard deviation and Student-t confidence interval of the mean."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = float(np.mean(xs))
    if n == 1:
        return Summary(1, mean, None, None, None)
    interval = t_interval(xs, confidence)
    return Summary(n, mean, float(np.std(xs, ddof=1)), interval.low, interval.high)


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of ISGD against SGD over the pairs where both reached the target:
    d = isgd - sgd, its mean and 95 % interval, the paired t-test's and the exact Wilcoxon
    signed-rank test's two-sided p-values (None when too few pairs)."""

    pairs: int
    difference: Summary
    t_p: float | None
    wilcoxon_p: float | None


def paired_test(sgd: Sequence[float], isgd: Sequence[float]) -> PairedTest:
    """Paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank test on isgd - sgd."""
    if len(sgd) != len(isgd):
        raise ValueError(
            f"paired samples must have the same length, got {len(sgd)} SGD and {len(isgd)} ISGD"
        )
    diffs = [float(b) - float(a) for a, b in zip(sgd, isgd, strict=True)]
    summary = summarize(diffs)
    t_p = None
    if summary.n >= 2 and summary.std is not None:
        if summary.std == 0.0:
            # Every pair differs by the same amount: SciPy's t is 0/0 or d/0 (NaN); no spread
            # means no evidence against a zero mean difference, or certainty of a nonzero one.
            t_p = 1.0 if summary.mean == 0.0 else 0.0
        else:
            test = scipy.stats.ttest_rel([float(b) for b in isgd], [float(a) for a in sgd])
            t_p = float(test.pvalue)
    return PairedTest(summary.n, summary, t_p, wilcoxon_signed_rank_p(diffs))


def wilcoxon_signed_rank_p(diffs: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p on the nonzero differences (zeros dropped, Wilcoxon's
    own procedure); exact: SciPy's exact null without ties, all 2^n sign patterns with tied
    |d| (average ranks) up to 20 pairs, normal approximation beyond; None with none nonzero."""
    nonzero = np.asarray([float(d) for d in diffs if float(d) != 0.0], dtype=np.float64)
    n = len(nonzero)
    if n == 0:
        return None
    if n == 1:
        return 1.0  # both sign patterns of one difference are as extreme as the observed one
    ties = len(np.unique(np.abs(nonzero))) < n
    if not ties:
        method: object = "exact"
    elif n <= _WILCOXON_ENUMERATE_MAX:
        # 2^n resamples: SciPy's permutation test then enumerates every sign pattern exactly.
        method = scipy.stats.PermutationMethod(n_resamples=2**n, batch=2**14)
    else:
        method = "asymptotic"
    return float(scipy.stats.wilcoxon(nonzero, method=method).pvalue)


def sign_test_p(wins_isgd: int, wins_sgd: int) -> float | None:
    """Two-sided sign test (scipy.stats.binomtest, p = 1/2) of ISGD's wins against SGD's over
    the decided pairs; None with no decided pair."""
    if wins_isgd < 0 or wins_sgd < 0:
        raise ValueError(f"win counts must be >= 0, got ISGD {wins_isgd}, SGD {wins_sgd}")
    n = wins_isgd + wins_sgd
    if n == 0:
        return None
    return float(scipy.stats.binomtest(wins_isgd, n, 0.5, alternative="two-sided").pvalue)
