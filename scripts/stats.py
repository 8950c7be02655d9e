"""The statistics of Table 1: time to target, mean/std/95 % intervals, paired tests.

Written out here (Student's t from the regularized incomplete beta function, the exact Wilcoxon
signed-rank distribution by enumeration) so the harness needs no SciPy; tests check them against
tabulated values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Reached:
    """When a run's test accuracy got to the target for good: training seconds and gradient
    evaluations at that test, and the test's index in the run's test sequence."""

    train_s: float
    grad_evals: int | None
    test_index: int


def time_to_target(
    tests: Sequence[tuple[float, int | None, float]], target: float
) -> Reached | None:
    """The first test after which every later test stays at or above `target` (the paper's
    "consistently above the dashed line"), from (train_s, grad_evals, accuracy) in test order;
    None when the last test is below the target (never reached for good)."""
    first: int | None = None
    for index, (_, _, accuracy) in enumerate(tests):
        if accuracy >= target:
            if first is None:
                first = index
        else:
            first = None
    if first is None:
        return None
    train_s, evals, _ = tests[first]
    return Reached(float(train_s), None if evals is None else int(evals), first)


# ------------------------------------------------------------------ Student's t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1, got {df}")
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: int) -> float:
    """The t value with P(T <= t) = p (bisection on the CDF; p in (0, 1))."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 2.0 * (1.0 - p)  # two-sided tail probability of the wanted |t|
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > tail:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_two_sided_p(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


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
    mean = sum(xs) / n
    if n == 1:
        return Summary(1, mean, None, None, None)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


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
    """Paired t-test and exact Wilcoxon signed-rank test on isgd - sgd (zeros dropped for the
    Wilcoxon test, as Wilcoxon's original procedure)."""
    if len(sgd) != len(isgd):
        raise ValueError("paired samples must have the same length")
    diffs = [float(b) - float(a) for a, b in zip(sgd, isgd, strict=True)]
    summary = summarize(diffs)
    t_p = None
    if summary.n >= 2 and summary.std is not None:
        if summary.std == 0.0:
            t_p = 1.0 if summary.mean == 0.0 else 0.0
        else:
            t = summary.mean / (summary.std / math.sqrt(summary.n))
            t_p = t_two_sided_p(t, summary.n - 1)
    return PairedTest(summary.n, summary, t_p, wilcoxon_signed_rank_p(diffs))


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of values, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def wilcoxon_signed_rank_p(diffs: Sequence[float]) -> float | None:
    """Exact two-sided p of the signed-rank statistic by enumerating all 2^n sign patterns
    (ties keep their average ranks); None with no nonzero difference; n <= 20."""
    nonzero = [d for d in diffs if d != 0.0]
    n = len(nonzero)
    if n == 0:
        return None
    if n > 20:
        raise ValueError("exact Wilcoxon enumeration is limited to 20 nonzero pairs")
    ranks = _ranks([abs(d) for d in nonzero])
    observed = sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0)
    total = sum(ranks)
    centre = total / 2.0
    extreme = abs(observed - centre)
    count = 0
    for signs in itertools.product((0, 1), repeat=n):
        w = sum(r for r, s in zip(ranks, signs, strict=True) if s)
        if abs(w - centre) >= extreme - 1e-12:
            count += 1
    return count / 2**n
