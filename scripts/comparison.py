"""One arm against a baseline on one dataset, paired by seed: per-arm statistics, time to target
under both rules (paired IMP, sign and log-rank tests), the ladder, the power of the comparison,
and what it says in words. Table 1, the sweeps and `make sweep-lr` all read their runs this way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scripts.outcomes import (
    Outcome,
    PairedImp,
    highest_level_all_reached,
    ladder_rows,
    logrank_p,
    paired_imp,
    pairs_for_half_width,
)
from scripts.profiles import DEFAULT_ARMS, DEFAULT_BASELINE, RULES, Dataset
from scripts.report_format import p_text
from scripts.run_rows import RunRow
from scripts.stats import PairedTest, Summary, paired_test, summarize

POWER_HALF_WIDTH = 0.10  # the interval the default profile aims for: IMP +- 10 points


RULE_NAMES = {"first": "first reach", "stays": "stays above (the paper's rule)"}


@dataclass
class ArmSummary:
    runs: int
    reached: int  # stays rule (the paper's)
    reached_first: int
    highest_top: float | None
    average_top: float | None
    time_s: (
        Summary  # over the runs that reached (stays); descriptive, never divided by another arm's
    )
    evals: Summary
    alg2_triggers: int
    alg2_inner_steps: int
    iterations: int
    grad_evals: int
    isgd: bool = True  # False when every run's log says ISGD was off (no Alg. 2 to report)


@dataclass
class RuleSummary:
    """One rule at the dataset's target: the paired IMP over seeds, the tests, the outcomes."""

    rule: str
    imp: PairedImp
    logrank_p_evals: float | None
    logrank_p_s: float | None
    outcomes: dict[str, list[Outcome]]  # per arm, in seed order
    highest_all: float | None  # the highest ladder level every run reached under this rule


@dataclass
class DatasetSummary:
    """One dataset's comparison of one arm against the baseline (ISGD against SGD by default);
    differences and ratios are arm - baseline, arm / baseline."""

    dataset: str
    metric: str
    target: float
    arms: dict[str, ArmSummary]
    paired_s: PairedTest  # stays rule, seconds, arm - baseline over pairs both reached
    paired_evals: PairedTest
    paired_top: PairedTest  # top accuracy, arm - baseline, over every finished pair
    pairs_total: int
    machine: str
    commit: str
    wall_s: float
    rules: dict[str, RuleSummary] = field(default_factory=dict)
    ladder: list[dict[str, Any]] = field(default_factory=list)
    paper_imp: float | None = None
    power_half_width: float | None = None  # IMP interval half-width, first reach, evaluations
    pairs_for_10_points: int | None = None
    baseline: str = DEFAULT_BASELINE
    arm: str = DEFAULT_ARMS[1]
    labels: tuple[str, str] = ("SGD", "ISGD")  # (baseline, arm) as tables name them

    @property
    def pair(self) -> tuple[str, str]:
        return self.baseline, self.arm


def _arm(rows: list[RunRow]) -> ArmSummary:
    tops = [r.top_acc for r in rows if r.top_acc is not None]
    reached = [r for r in rows if r.reached]
    return ArmSummary(
        runs=len(rows),
        reached=len(reached),
        reached_first=sum(1 for r in rows if r.first_reach_s is not None),
        highest_top=max(tops) if tops else None,
        average_top=sum(tops) / len(tops) if tops else None,
        time_s=summarize([r.time_to_target_s for r in reached]),
        evals=summarize([r.evals_to_target for r in reached if r.evals_to_target is not None]),
        alg2_triggers=sum(r.alg2_triggers for r in rows),
        alg2_inner_steps=sum(r.alg2_inner_steps for r in rows),
        iterations=sum(r.iterations for r in rows),
        grad_evals=sum(r.grad_evals for r in rows),
        isgd=not rows or any(r.isgd is not False for r in rows),
    )


def complete_pairs(
    rows: list[RunRow], dataset: str, baseline: str = "sgd", arm: str = "isgd"
) -> list[tuple[RunRow, RunRow]]:
    """(baseline, arm) rows of every seed where both arms finished, in seed order."""
    by_seed = {(r.arm, r.seed): r for r in rows if r.dataset == dataset}
    seeds = sorted({seed for _, seed in by_seed})
    return [
        (by_seed[(baseline, s)], by_seed[(arm, s)])
        for s in seeds
        if (baseline, s) in by_seed and (arm, s) in by_seed
    ]


def _rule_summary(
    pairs: list[tuple[RunRow, RunRow]],
    dataset: Dataset,
    rule: str,
    levels: list[float],
    names: tuple[str, str] = ("sgd", "isgd"),
) -> RuleSummary:
    outcomes = [
        (a.outcome(dataset.target, rule), b.outcome(dataset.target, rule)) for a, b in pairs
    ]
    by_arm = {names[0]: [a for a, _ in outcomes], names[1]: [b for _, b in outcomes]}
    run_pairs = [(a.run_tests(), b.run_tests()) for a, b in pairs]
    return RuleSummary(
        rule=rule,
        imp=paired_imp(outcomes),
        logrank_p_evals=_safe_logrank(by_arm, "evals"),
        logrank_p_s=_safe_logrank(by_arm, "seconds"),
        outcomes=by_arm,
        highest_all=highest_level_all_reached(run_pairs, levels, rule) if levels else None,
    )


def _safe_logrank(by_arm: dict[str, list[Outcome]], unit: str) -> float | None:
    try:
        return logrank_p(*by_arm.values(), unit)  # (baseline, arm)
    except ValueError:  # a reaching test without its evaluation count (an old log)
        return None


def summarize_dataset(
    rows: list[RunRow],
    dataset: Dataset,
    baseline: str = "sgd",
    arm: str = "isgd",
    labels: tuple[str, str] = ("SGD", "ISGD"),
) -> DatasetSummary:
    """Per-arm statistics of `arm` and `baseline`, their paired comparisons over seeds (both
    rules, at the target and on the ladder) and the power of the comparison. The paper's IMP
    is kept only for its own comparison, ISGD against SGD."""
    names = (baseline, arm)
    mine = [r for r in rows if r.dataset == dataset.name and r.arm in names]
    arms = {name: _arm([r for r in mine if r.arm == name]) for name in names}
    complete = complete_pairs(rows, dataset.name, baseline, arm)
    both = [(a, b) for a, b in complete if a.reached and b.reached]
    tops = [
        (a.top_acc, b.top_acc)
        for a, b in complete
        if a.top_acc is not None and b.top_acc is not None
    ]
    levels = dataset.ladder.levels if dataset.ladder else []
    rules = {rule: _rule_summary(complete, dataset, rule, levels, names) for rule in dataset.rules}
    first = rules.get("first")
    ratios = first.imp.log_ratios_evals if first is not None else ()
    machines = sorted({r.machine for r in mine if r.machine})
    commits = sorted({c for r in mine for c in r.commit.split() if c})
    run_pairs = [(a.run_tests(), b.run_tests()) for a, b in complete]
    return DatasetSummary(
        dataset=dataset.name,
        metric=dataset.metric,
        target=dataset.target,
        arms=arms,
        paired_s=paired_test(
            [a.time_to_target_s for a, _ in both], [b.time_to_target_s for _, b in both]
        ),
        paired_evals=paired_test(
            [a.evals_to_target for a, _ in both], [b.evals_to_target for _, b in both]
        ),
        paired_top=paired_test([a for a, _ in tops], [b for _, b in tops]),
        pairs_total=len(complete),
        machine="; ".join(machines),
        commit=", ".join(commits),
        wall_s=sum(r.wall_s for r in mine),
        rules=rules,
        ladder=ladder_rows(dataset.name, run_pairs, levels, dataset.rules) if levels else [],
        paper_imp=dataset.paper_imp if names == ("sgd", "isgd") else None,
        power_half_width=None if first is None else first.imp.imp_evals.half_width,
        pairs_for_10_points=pairs_for_half_width(ratios, POWER_HALF_WIDTH) if ratios else None,
        baseline=baseline,
        arm=arm,
        labels=labels,
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def summary_record(s: DatasetSummary) -> dict[str, Any]:
    """One row of table1.csv: per-arm columns carry the arm's name (`runs_sgd`, `runs_isgd`).
    The paper's "normalized time" is exp(mean log(arm / baseline)) over the pairs where both
    arms reached the target under the paper's rule (stays above)."""
    b, a = s.pair
    sgd, isgd = s.arms[b], s.arms[a]  # the (baseline, arm) slots
    stays = s.rules.get("stays")
    norm = (
        None if stays is None or stays.imp.imp_s.estimate is None else 1 - stays.imp.imp_s.estimate
    )
    norm_evals = (
        None
        if stays is None or stays.imp.imp_evals.estimate is None
        else 1 - stays.imp.imp_evals.estimate
    )
    record: dict[str, Any] = {
        "dataset": s.dataset,
        "metric": s.metric,
        "target": s.target,
        "pairs": s.pairs_total,
        f"runs_{b}": sgd.runs,
        f"runs_{a}": isgd.runs,
        f"reached_{b}": sgd.reached,
        f"reached_{a}": isgd.reached,
        f"highest_top_{b}": sgd.highest_top,
        f"highest_top_{a}": isgd.highest_top,
        "highest_top_imp": _diff(isgd.highest_top, sgd.highest_top),
        f"average_top_{b}": sgd.average_top,
        f"average_top_{a}": isgd.average_top,
        "average_top_imp": _diff(isgd.average_top, sgd.average_top),
        f"normalized_time_{b}": 1.0 if norm is not None else None,
        f"normalized_time_{a}": norm,
        "time_imp": None if norm is None else 1.0 - norm,
        f"normalized_evals_{a}": norm_evals,
        "evals_imp": None if norm_evals is None else 1.0 - norm_evals,
    }
    for arm, summaries in ((b, sgd), (a, isgd)):
        for unit, summ in (("time_s", summaries.time_s), ("evals", summaries.evals)):
            for key in ("mean", "std", "low", "high"):
                record[f"{unit}_{arm}_{key}"] = getattr(summ, key)
    for unit, test in (
        ("time_s", s.paired_s),
        ("evals", s.paired_evals),
        ("top_acc", s.paired_top),
    ):
        record[f"paired_{unit}_pairs"] = test.pairs
        record[f"paired_{unit}_diff_mean"] = test.difference.mean
        record[f"paired_{unit}_diff_low"] = test.difference.low
        record[f"paired_{unit}_diff_high"] = test.difference.high
        record[f"paired_{unit}_t_p"] = test.t_p
        record[f"paired_{unit}_wilcoxon_p"] = test.wilcoxon_p
    for rule in RULES:
        r = s.rules.get(rule)
        imp = r.imp if r is not None else None
        record[f"{rule}_pairs_both"] = None if imp is None else imp.pairs_both
        record[f"{rule}_only_{b}"] = None if imp is None else imp.only_sgd
        record[f"{rule}_only_{a}"] = None if imp is None else imp.only_isgd
        record[f"{rule}_neither"] = None if imp is None else imp.neither
        for unit, interval in (
            ("evals", None if imp is None else imp.imp_evals),
            ("s", None if imp is None else imp.imp_s),
        ):
            record[f"{rule}_imp_{unit}"] = None if interval is None else interval.estimate
            record[f"{rule}_imp_{unit}_low"] = None if interval is None else interval.low
            record[f"{rule}_imp_{unit}_high"] = None if interval is None else interval.high
        record[f"{rule}_sign_p"] = None if imp is None else imp.sign_p
        record[f"{rule}_logrank_p_evals"] = None if r is None else r.logrank_p_evals
        record[f"{rule}_highest_level_all_reached"] = None if r is None else r.highest_all
    record["power_half_width_first_evals"] = s.power_half_width
    record["pairs_for_10_points"] = s.pairs_for_10_points
    record["alg2_trigger_rate"] = _ratio(isgd.alg2_triggers, isgd.iterations)
    record["alg2_inner_steps_per_trigger"] = _ratio(isgd.alg2_inner_steps, isgd.alg2_triggers)
    extra = isgd.grad_evals - isgd.iterations
    record["extra_evals_fraction"] = _ratio(extra, isgd.grad_evals)
    record["machine"] = s.machine
    record["commit"] = s.commit
    record["wall_s"] = s.wall_s
    return record


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def imp_reading(
    imp: PairedImp, what: str, paper: float | None, labels: tuple[str, str] = ("SGD", "ISGD")
) -> str:
    """What a paired IMP interval says, in words (`labels`: baseline, compared arm)."""
    base, arm = labels
    interval = imp.imp_evals
    if interval.estimate is None or interval.low is None or interval.high is None:
        return (
            f"{what}: {imp.pairs_both} of {imp.pairs_total} pairs reached it in both arms, too "
            "few for an interval"
        )
    text = (
        f"{what}: {arm} needs {100 * abs(interval.estimate):.1f} % "
        f"{'fewer' if interval.estimate >= 0 else 'more'} gradient evaluations "
        f"(IMP {100 * interval.estimate:+.1f} %, 95 % CI [{100 * interval.low:+.1f}, "
        f"{100 * interval.high:+.1f}], "
        f"{imp.pairs_both} of {imp.pairs_total} pairs, sign test p = {p_text(imp.sign_p)})"
    )
    censored = imp.pairs_total - imp.pairs_both
    if interval.low > 0 or interval.high < 0:
        finding = (
            f"{arm} was {'faster' if interval.low > 0 else 'slower'}; "
            "the interval excludes no difference"
        )
        if censored:  # the interval sees only the pairs both reached: not the whole comparison
            finding += (
                f" over the {imp.pairs_both} pairs both reached, but {censored} of "
                f"{imp.pairs_total} pairs are censored in one arm or both (only {base} reached "
                f"it in {imp.only_sgd}, only {arm} in {imp.only_isgd}, neither in "
                f"{imp.neither}), which only the sign test counts: no finding over all pairs"
            )
    else:
        finding = f"the interval contains 0: these runs cannot tell {arm} from {base}"
    if paper is not None:
        inside = interval.low <= paper <= interval.high
        finding += (
            f"; the paper's {100 * paper:.1f} % is {'inside' if inside else 'outside'} the interval"
        )
    return f"{text}: {finding}"


def verdict(s: DatasetSummary) -> str:
    """Honest sentences on what the runs show about time to target, under both rules."""
    sgd, isgd = (s.arms[name] for name in s.pair)
    base, arm = s.labels
    parts = [
        f"{base} reached the target in {sgd.reached_first}/{sgd.runs} runs by first reach and "
        f"{sgd.reached}/{sgd.runs} staying above; {arm} in {isgd.reached_first}/{isgd.runs} and "
        f"{isgd.reached}/{isgd.runs}."
    ]
    for rule, r in s.rules.items():
        paper = s.paper_imp if rule == "stays" else None
        parts.append(imp_reading(r.imp, f"By {RULE_NAMES[rule]}", paper, s.labels) + ".")
    top = s.paired_top
    if top.pairs >= 2 and top.difference.low is not None:
        parts.append(
            f"At equal gradient evaluations, top accuracy {arm} − {base}: "
            f"{100 * top.difference.mean:+.2f} points, 95 % CI [{100 * top.difference.low:.2f}, "
            f"{100 * top.difference.high:.2f}] over {top.pairs} pairs "
            f"(paired t p = {p_text(top.t_p)})."
        )
    return " ".join(parts)


def power_line(s: DatasetSummary, title: str | None = None) -> str:
    """How precise the comparison is at the target, and what a 10-point interval would take."""
    title = title or s.dataset
    if s.power_half_width is None:
        return (
            f"- {title}: fewer than 2 pairs reached {100 * s.target:g} % in both arms (first "
            "reach): no interval, so no statement of power"
        )
    need = s.pairs_for_10_points
    enough = s.power_half_width <= POWER_HALF_WIDTH
    return (
        f"- {title}: the 95 % interval of the paired IMP at {100 * s.target:g} % (first reach, "
        f"gradient evaluations) has a half-width of {100 * s.power_half_width:.1f} points over "
        f"{s.rules['first'].imp.pairs_both} pairs; "
        + (
            "narrow enough to confirm or exclude a 10-point effect"
            if enough
            else f"a half-width of 10 points would take about {need} pairs at this spread"
        )
    )
