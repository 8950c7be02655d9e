"""Time to a target accuracy as a censored per-run outcome, the paired improvement (IMP) of ISGD
over SGD with its interval and sign test, Kaplan-Meier "fraction reached" curves, and the
accuracy ladder (issue 21, parts 2 and 3)."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy  # scipy.stats loads on first use (SciPy's lazy submodules): 2 s a start skips

from scripts.profiles import Ladder
from scripts.stats import (
    RULES,
    Interval,
    Reached,
    TestPoint,
    sign_test_p,
    t_interval,
    t_quantile,
)

UNITS = ("evals", "seconds")
LADDER_COLUMNS = [
    "dataset",
    "rule",
    "level",
    "pairs_both",
    "pairs_total",
    "reached_sgd",
    "reached_isgd",
    "imp_evals",
    "imp_evals_low",
    "imp_evals_high",
    "imp_s",
    "imp_s_low",
    "imp_s_high",
    "sign_p",
]


@dataclass(frozen=True)
class RunTests:
    """What a run's log gives: its tests (train_s, grad_evals, accuracy) in order, and where
    it stopped (its budget in gradient evaluations and its training seconds at the end)."""

    tests: tuple[TestPoint, ...]
    budget_evals: int
    train_s: float


@dataclass(frozen=True)
class Outcome:
    """One run under one rule at one level: reached or not, and the gradient evaluations and
    training seconds at the reaching test, or at the run's end when not (right-censored).
    evals is NaN when the reaching test's log entry has no gradient-evaluation count."""

    reached: bool
    evals: float
    seconds: float


def _rule(rule: str) -> Callable[[Sequence[TestPoint], float], Reached | None]:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; the rules are {', '.join(sorted(RULES))}")
    return RULES[rule]


def outcome(run: RunTests, level: float, rule: str) -> Outcome:
    """The run's outcome at accuracy `level` under `rule` ("first" or "stays"); a run that
    did not reach it is censored at its budget, never dropped."""
    reached = _rule(rule)(run.tests, level)
    if reached is None:
        return Outcome(False, float(run.budget_evals), float(run.train_s))
    evals = math.nan if reached.grad_evals is None else float(reached.grad_evals)
    return Outcome(True, evals, reached.train_s)


def paired_outcomes(
    pairs: Sequence[tuple[RunTests, RunTests]], level: float, rule: str
) -> list[tuple[Outcome, Outcome]]:
    """(SGD, ISGD) outcomes of each seed's pair of runs."""
    return [(outcome(sgd, level, rule), outcome(isgd, level, rule)) for sgd, isgd in pairs]


# ------------------------------------------------------------------ paired IMP


@dataclass(frozen=True)
class PairedImp:
    """ISGD against SGD at one level and rule, over all seeds' pairs: how many pairs both
    reached it, only one arm did, neither did; IMP = 1 - exp(mean log(ISGD / SGD)) over the
    pairs both reached, with its t interval, in gradient evaluations and in seconds; the sign
    test's two-sided p (a pair where only one arm reached counts as that arm's win)."""

    pairs_total: int
    pairs_both: int
    only_sgd: int
    only_isgd: int
    neither: int
    reached_sgd: int
    reached_isgd: int
    imp_evals: Interval
    imp_s: Interval
    sign_p: float | None
    log_ratios_evals: tuple[float, ...]
    log_ratios_s: tuple[float, ...]


def _log_ratio(sgd: float, isgd: float) -> float | None:
    """log(isgd / sgd); None where either is unknown (NaN) or not positive."""
    if not (math.isfinite(sgd) and math.isfinite(isgd)) or sgd <= 0.0 or isgd <= 0.0:
        return None
    return math.log(isgd / sgd)


def imp_interval(log_ratios: Sequence[float], confidence: float = 0.95) -> Interval:
    """IMP = 1 - exp(mean log ratio) with the t interval of the mean log ratio mapped through
    1 - exp(.) (which reverses it, so low <= high); all None below 2 ratios. Identical ratios
    (sd 0) collapse the interval to the estimate."""
    mean = t_interval(log_ratios, confidence)
    if mean.estimate is None or mean.low is None or mean.high is None:
        return Interval(None, None, None)
    return Interval(
        1.0 - math.exp(mean.estimate), 1.0 - math.exp(mean.high), 1.0 - math.exp(mean.low)
    )


def paired_imp(pairs: Sequence[tuple[Outcome, Outcome]], confidence: float = 0.95) -> PairedImp:
    """The paired comparison of (SGD, ISGD) outcomes, one pair per seed. Log ratios use the
    pairs both reached whose values are known and positive. Sign test: ISGD wins a pair both
    reached with fewer evaluations, or one only ISGD reached; SGD likewise; equal evaluations,
    unknown ones and pairs neither reached are undecided and dropped."""
    both = only_sgd = only_isgd = neither = 0
    wins_isgd = wins_sgd = 0
    ratios_evals: list[float] = []
    ratios_s: list[float] = []
    for sgd, isgd in pairs:
        if sgd.reached and isgd.reached:
            both += 1
            for ratios, a, b in (
                (ratios_evals, sgd.evals, isgd.evals),
                (ratios_s, sgd.seconds, isgd.seconds),
            ):
                ratio = _log_ratio(a, b)
                if ratio is not None:
                    ratios.append(ratio)
            if isgd.evals < sgd.evals:
                wins_isgd += 1
            elif sgd.evals < isgd.evals:
                wins_sgd += 1
        elif sgd.reached:
            only_sgd += 1
            wins_sgd += 1
        elif isgd.reached:
            only_isgd += 1
            wins_isgd += 1
        else:
            neither += 1
    return PairedImp(
        pairs_total=len(pairs),
        pairs_both=both,
        only_sgd=only_sgd,
        only_isgd=only_isgd,
        neither=neither,
        reached_sgd=both + only_sgd,
        reached_isgd=both + only_isgd,
        imp_evals=imp_interval(ratios_evals, confidence),
        imp_s=imp_interval(ratios_s, confidence),
        sign_p=sign_test_p(wins_isgd, wins_sgd),
        log_ratios_evals=tuple(ratios_evals),
        log_ratios_s=tuple(ratios_s),
    )


def _imp_half_width(mean: float, sd: float, n: int, confidence: float) -> float:
    h = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return (math.exp(mean + h) - math.exp(mean - h)) / 2.0


def pairs_for_half_width(
    log_ratios: Sequence[float], half_width: float = 0.10, confidence: float = 0.95
) -> int | None:
    """The smallest number of pairs whose IMP interval would have at most `half_width`
    (a fraction: 0.10 = 10 points) if the log ratios kept their observed mean and sd; None
    below 2 ratios. The half-width exp(m) sinh(h) shrinks as n grows, so a bisection finds it."""
    if half_width <= 0.0:
        raise ValueError(f"half_width must be > 0, got {half_width}")
    xs = np.asarray(log_ratios, dtype=np.float64)
    if len(xs) < 2:
        return None
    mean, sd = float(xs.mean()), float(xs.std(ddof=1))
    if _imp_half_width(mean, sd, 2, confidence) <= half_width:
        return 2
    low, high = 2, 4  # half-width too wide at `low`, to be found narrow enough at `high`
    while _imp_half_width(mean, sd, high, confidence) > half_width:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if _imp_half_width(mean, sd, mid, confidence) > half_width:
            low = mid
        else:
            high = mid
    return high


# ------------------------------------------------------------------ the ladder


def ladder_levels(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ..., stop (inclusive), without float drift: profiles.Ladder's levels,
    with the bounds checked (a step of 0 or a start above the stop is a ValueError)."""
    if not step > 0.0:
        raise ValueError(f"ladder step must be > 0, got {step}")
    if start > stop:
        raise ValueError(f"ladder start {start} is above its stop {stop}")
    return Ladder(start, stop, step).levels


def ladder_rows(
    dataset: str,
    pairs: Sequence[tuple[RunTests, RunTests]],
    levels: Sequence[float],
    rules: Sequence[str] = ("first", "stays"),
) -> list[dict[str, object]]:
    """One row (keys LADDER_COLUMNS) per rule and level, from the (SGD, ISGD) runs of each
    seed; imp_* are None where fewer than 2 pairs both reached the level."""
    for rule in rules:
        _rule(rule)
    rows: list[dict[str, object]] = []
    for rule in rules:
        for level in levels:
            imp = paired_imp(paired_outcomes(pairs, level, rule))
            rows.append(
                {
                    "dataset": dataset,
                    "rule": rule,
                    "level": level,
                    "pairs_both": imp.pairs_both,
                    "pairs_total": imp.pairs_total,
                    "reached_sgd": imp.reached_sgd,
                    "reached_isgd": imp.reached_isgd,
                    "imp_evals": imp.imp_evals.estimate,
                    "imp_evals_low": imp.imp_evals.low,
                    "imp_evals_high": imp.imp_evals.high,
                    "imp_s": imp.imp_s.estimate,
                    "imp_s_low": imp.imp_s.low,
                    "imp_s_high": imp.imp_s.high,
                    "sign_p": imp.sign_p,
                }
            )
    return rows


def write_ladder_csv(path: Path, rows: Sequence[dict[str, object]]) -> Path:
    """The ladder's rows as CSV with columns LADDER_COLUMNS at full precision; None is an empty
    cell (Table 1's ladder.csv goes through its 6-digit writer instead)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LADDER_COLUMNS, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in LADDER_COLUMNS})
    return path


def highest_level_all_reached(
    pairs: Sequence[tuple[RunTests, RunTests]], levels: Sequence[float], rule: str
) -> float | None:
    """The highest of `levels` that every run of both arms reached under `rule`; None when
    there are no runs or no level all reached."""
    _rule(rule)
    if not pairs:
        return None
    best: float | None = None
    for level in levels:
        if all(s.reached and i.reached for s, i in paired_outcomes(pairs, level, rule)):
            best = level if best is None else max(best, level)
    return best


# ------------------------------------------------------------------ Kaplan-Meier, log-rank


def _censored(outcomes: Sequence[Outcome], unit: str) -> scipy.stats.CensoredData:
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; the units are {', '.join(UNITS)}")
    values = [o.evals if unit == "evals" else o.seconds for o in outcomes]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"an outcome has no {unit} count (NaN): its log lacks grad_evals at the reaching test"
        )
    return scipy.stats.CensoredData(
        uncensored=[v for v, o in zip(values, outcomes, strict=True) if o.reached],
        right=[v for v, o in zip(values, outcomes, strict=True) if not o.reached],
    )


def km_reached(outcomes: Sequence[Outcome], unit: str = "evals") -> tuple[np.ndarray, np.ndarray]:
    """The fraction of runs that have reached the target (1 - Kaplan-Meier survival) after each
    distinct value in `unit` ("evals" or "seconds"), censored runs' budgets included (flat
    steps there); with no censoring it is the empirical CDF, with all runs censored all zero,
    with no runs two empty arrays."""
    data = _censored(outcomes, unit)
    if not outcomes:
        return np.zeros(0), np.zeros(0)
    cdf = scipy.stats.ecdf(data).cdf
    return np.asarray(cdf.quantiles, dtype=np.float64), np.asarray(
        cdf.probabilities, dtype=np.float64
    )


def logrank_p(a: Sequence[Outcome], b: Sequence[Outcome], unit: str = "evals") -> float | None:
    """Two-sided log-rank test (scipy.stats.logrank) of the two arms' times to reach; None when
    it is undefined: an arm has no runs, or no run of either arm reached the target (no event,
    so its variance is 0 and SciPy's statistic NaN)."""
    x, y = _censored(a, unit), _censored(b, unit)
    if not a or not b or not any(o.reached for o in (*a, *b)):
        return None
    with np.errstate(invalid="ignore", divide="ignore"):  # the NaN case is answered below
        p = float(scipy.stats.logrank(x, y, alternative="two-sided").pvalue)
    return None if math.isnan(p) else p
