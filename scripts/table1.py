"""Table 1 from the runs' JSON logs alone: one row per run, then per dataset and compared arm
(every arm of the profile against its baseline, paired by seed; ISGD against SGD by default)
the paper's columns and what the paper lacks: time to target as a censored outcome under two
rules (first reach, stays above), paired improvement with intervals, sign and log-rank tests,
the accuracy ladder, the power of the comparison, Alg. 2's cost.

    python -m scripts.table1 [--profile default] [--datasets mnist]     (also `make table1`)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scripts import runs
from scripts.outcome_figures import plot_ladder, plot_reached
from scripts.outcomes import (
    LADDER_COLUMNS,
    Outcome,
    PairedImp,
    RunTests,
    highest_level_all_reached,
    ladder_rows,
    logrank_p,
    outcome,
    paired_imp,
    pairs_for_half_width,
)
from scripts.outputs import csv_text, write_atomic
from scripts.profiles import (
    DEFAULT_ARMS,
    DEFAULT_BASELINE,
    ROOT,
    RULES,
    Dataset,
    Profile,
    ProfileError,
    load_profile,
    results_dir,
)
from scripts.results_readme import build as build_readme
from scripts.runs import (
    RunError,
    imagenet_sources,
    status,
    table1_specs,
    table_lock,
)
from scripts.stats import PairedTest, Summary, first_reach, paired_test, summarize, time_to_target
from solvers.run_log import RunLog, RunLogError, alg2_inner_steps

RUN_COLUMNS = [
    "dataset",
    "arm",
    "seed",
    "metric",
    "target",
    "log",
    "time_to_target_s",
    "evals_to_target",
    "top_acc",
    "final_acc",
    "grad_evals",
    "train_s",
    "alg2_triggers",
    "alg2_inner_steps",
    "batch_size",
    "ranks",
    "device",
    "commit",
    "first_reach_s",
    "first_reach_evals",
    "budget_grad_evals",
]
POWER_HALF_WIDTH = 0.10  # the interval the default profile aims for: IMP +- 10 points
RULE_NAMES = {"first": "first reach", "stays": "stays above (the paper's rule)"}


@dataclass
class RunRow:
    """One finished run, as table1_runs.csv writes it (None = empty cell)."""

    dataset: str
    arm: str
    seed: int
    metric: str
    target: float
    log: str
    time_to_target_s: float | None
    evals_to_target: int | None
    top_acc: float | None
    final_acc: float | None
    grad_evals: int
    train_s: float
    alg2_triggers: int
    alg2_inner_steps: int
    batch_size: int | None
    ranks: int
    device: str
    commit: str
    first_reach_s: float | None = None
    first_reach_evals: int | None = None
    budget_grad_evals: int = 0
    iterations: int = 0
    wall_s: float = 0.0
    machine: str = ""
    tests: RunTests | None = field(default=None, repr=False)  # for the ladder; not a CSV column
    isgd: bool | None = None  # ISGD on (its start event's isgd settings); None: not logged

    @property
    def reached(self) -> bool:
        return self.time_to_target_s is not None

    def run_tests(self) -> RunTests:
        """The run's tests and where it stopped (its budget, its training seconds)."""
        assert self.tests is not None, "rows made by run_row carry their tests"
        return self.tests

    def outcome(self, level: float, rule: str) -> Outcome:
        return outcome(self.run_tests(), level, rule)


def test_series(log: RunLog, metric: str) -> list[tuple[float, int | None, float]]:
    """(train_s, grad_evals, value of `metric`) of the run's tests on test net 0, in order."""
    series = []
    for event in log.of("test"):
        if int(event.get("net", 0)) != 0:
            continue
        value = event.get("outputs", {}).get(metric)
        if isinstance(value, list):
            value = value[0]
        if not isinstance(value, (int, float)):
            raise RunLogError(f"{log.path}: test at iteration {event.get('iter')} has no {metric}")
        series.append((float(event["train_s"]), event.get("grad_evals"), float(value)))
    return series


def run_row(log: RunLog, dataset: Dataset, arm: str, budget: int | None = None) -> RunRow:
    """The row of one finished run, computed from its log."""
    tests = test_series(log, dataset.metric)
    reached = time_to_target(tests, dataset.target)
    first = first_reach(tests, dataset.target)
    iters = log.of("iter")
    last = iters[-1] if iters else {}
    start = log.start
    commits = sorted({str(s.get("commit", "unknown")) for s in log.starts}) or ["unknown"]
    accuracies = [value for _, _, value in tests]
    return RunRow(
        dataset=dataset.name,
        arm=arm,
        seed=int(start.get("seed", -1)),
        metric=dataset.metric,
        target=dataset.target,
        log=_relative(log.path),
        time_to_target_s=None if reached is None else reached.train_s,
        evals_to_target=None if reached is None else reached.grad_evals,
        top_acc=max(accuracies) if accuracies else None,
        final_acc=accuracies[-1] if accuracies else None,
        grad_evals=int(last.get("grad_evals", 0)),
        train_s=float(last.get("train_s", 0.0)),
        alg2_triggers=sum(1 for e in iters if e.get("under_trained")),
        alg2_inner_steps=sum(alg2_inner_steps(e) for e in iters),
        batch_size=start.get("batch_size"),
        ranks=int(start.get("ranks", 1)),
        device=str(start.get("device", "cpu")),
        commit=" ".join(commits),
        first_reach_s=None if first is None else first.train_s,
        first_reach_evals=None if first is None else first.grad_evals,
        budget_grad_evals=int(budget if budget is not None else last.get("grad_evals", 0)),
        iterations=len(iters),
        wall_s=log.wall_s,
        machine=str(start.get("machine", "")),
        isgd=None if "isgd" not in start else start["isgd"] is not None,
        tests=RunTests(
            tests=tuple(tests),
            budget_evals=int(budget if budget is not None else last.get("grad_evals", 0)),
            train_s=float(last.get("train_s", 0.0)),
        ),
    )


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


class TableError(RuntimeError):
    """Nothing to tabulate (no finished runs), or results that cannot be written."""


def collect(
    profile: Profile,
    sources: dict[str, dict[str, str]] | None = None,
) -> tuple[list[RunRow], list[str]]:
    """Rows of the profile's finished Table 1 runs (its seeds and arms, nothing else), and notes
    on the unfinished ones and on folders outside the profile. A run whose folder no longer
    matches the profile or its data is refused (RunError), never tabulated."""
    rows, notes = [], []
    for specs in table1_specs(profile, sources).values():
        specs.sort(key=lambda spec: (spec.seed, profile.arms.index(spec.arm)))
        dataset = specs[0].plan.dataset if specs else None
        expected = {spec.folder for spec in specs}
        base = specs[0].folder.parent if specs else None
        for spec in specs:
            try:
                state, log = status(spec)
            except RunError as exc:  # a log missing beside snapshots, a run of 0 evaluations
                notes.append(f"left out: {exc}")
                continue
            if state == "new":
                if spec.folder.exists():
                    notes.append(f"{_relative(spec.folder)}: not started or no log yet")
                continue
            if state != "done" or log is None:
                notes.append(
                    f"{_relative(spec.folder)}: unfinished (resume: make reproduce-table1)"
                )
                continue
            runs.refuse_if_stale(spec)
            assert dataset is not None
            row = run_row(log, dataset, spec.arm, budget=spec.budget)
            if row.grad_evals <= 0:
                notes.append(f"{_relative(spec.folder)}: no gradient evaluation logged: left out")
                continue
            rows.append(row)
        if base is not None and base.exists():
            others = sorted(p.name for p in base.iterdir() if p.is_dir() and p not in expected)
            if others:
                notes.append(
                    f"{_relative(base)}: not in profile '{profile.name}' (its seeds and arms), "
                    f"not used: {', '.join(others)}"
                )
    order = list(profile.plans)
    rows.sort(key=lambda r: (order.index(r.dataset), r.seed, profile.arms.index(r.arm)))
    return rows, notes


# ------------------------------------------------------------------ per-dataset summary


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


# ------------------------------------------------------------------ writers


def write_csv(path: Path, columns: list[str], records: list[dict[str, Any]]) -> None:
    """A CSV file (temporary file and rename: never half written)."""
    write_atomic(path, csv_text(columns, records))


def _pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _interval(s: Summary, unit: str = "") -> str:
    if s.mean is None:
        return "—"
    text = f"{s.mean:.4g}{unit}"
    if s.std is not None:
        text += f" ± {s.std:.3g}"
    if s.low is not None:
        text += f" [{s.low:.4g}, {s.high:.4g}]"
    return text


def _points(s: Summary) -> str:
    """A difference of accuracies in percentage points, with its interval."""
    if s.mean is None:
        return "—"
    text = f"{100 * s.mean:+.2f} pt"
    if s.low is not None:
        text += f" [{100 * s.low:+.2f}, {100 * s.high:+.2f}]"
    return text


def _imp(estimate: float | None, low: float | None, high: float | None) -> str:
    """An IMP (fraction) in percent with its 95 % interval."""
    if estimate is None:
        return "—"
    if low is None or high is None:
        return f"{100 * estimate:+.1f} %"
    return f"{100 * estimate:+.1f} % [{100 * low:+.1f}, {100 * high:+.1f}]"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _level(value: float | None) -> str:
    return "none" if value is None else f"{100 * value:g} %"


def _imp_reading(
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
        f"{what}: {arm} needs {100 * interval.estimate:+.1f} % fewer gradient evaluations "
        f"(IMP, 95 % CI [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}], "
        f"{imp.pairs_both} of {imp.pairs_total} pairs, sign test p = {_p(imp.sign_p)})"
    )
    if interval.low > 0:
        finding = f"{arm} was faster; the interval excludes no difference"
    elif interval.high < 0:
        finding = f"{arm} was slower; the interval excludes no difference"
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
        parts.append(_imp_reading(r.imp, f"By {RULE_NAMES[rule]}", paper, s.labels) + ".")
    top = s.paired_top
    if top.pairs >= 2 and top.difference.low is not None:
        parts.append(
            f"At equal gradient evaluations, top accuracy {arm} − {base}: "
            f"{100 * top.difference.mean:+.2f} points, 95 % CI [{100 * top.difference.low:.2f}, "
            f"{100 * top.difference.high:.2f}] over {top.pairs} pairs (paired t p = {_p(top.t_p)})."
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


def _naming(
    summaries: list[DatasetSummary],
) -> tuple[str, str, Callable[[DatasetSummary], str]]:
    """(baseline label, arm label, row name): the arms' labels when every row compares the same
    two arms, else "baseline", "arm" and rows named "<dataset>: <arm> vs <baseline>"."""
    if len({s.pair for s in summaries}) <= 1:
        base, arm = summaries[0].labels if summaries else ("SGD", "ISGD")
        return base, arm, lambda s: s.dataset
    return "baseline", "arm", lambda s: f"{s.dataset}: {s.labels[1]} vs {s.labels[0]}"


def markdown(
    summaries: list[DatasetSummary], rows: list[RunRow], notes: list[str], profile: str
) -> str:
    """results/table1.md: the paper's table, then the statistics it lacks, then the runs. With
    one comparison the columns name its arms (SGD, ISGD); with several, each row names its own."""
    B, A, name = _naming(summaries)
    out = [
        f"# Table 1, reproduced (profile `{profile}`)",
        "",
        "Generated by `make table1` from the runs' JSON logs alone "
        f"(results/runs/{profile}/table1/). Time to target is a censored outcome under two rules: "
        "**first reach** (the first test at or above the target, MLPerf's rule) and **stays** "
        "(the first test after which every later test stays at or above it, the paper's "
        '"consistently above the dashed line"). A run that does not get there is censored at its '
        "budget, counted and shown, never dropped. Arms are compared pairwise by seed.",
        "",
        "## The paper's columns",
        "",
        f"| dataset | highest top acc. {B} | {A} | IMP | average top acc. {B} | {A} | IMP "
        f"| normalized avg. time to target {B} | {A} | IMP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        r, (b, a) = summary_record(s), s.pair
        out.append(
            f"| {name(s)} ({s.metric} ≥ {100 * s.target:g} %) | {_pct(r[f'highest_top_{b}'])} "
            f"| {_pct(r[f'highest_top_{a}'])} | {_pct(r['highest_top_imp'])} "
            f"| {_pct(r[f'average_top_{b}'])} | {_pct(r[f'average_top_{a}'])} "
            f"| {_pct(r['average_top_imp'])} | {_num(r[f'normalized_time_{b}'])} "
            f"| {_num(r[f'normalized_time_{a}'])} | {_pct(r['time_imp'])} |"
        )
    out += [
        "",
        f"Normalized time here is paired: exp(mean over seeds of log({A} time / {B} time)), "
        "training seconds, over the pairs where both arms reached the target by the paper's "
        "rule (stays); IMP = 1 − that. The paper (10 runs, 4 TITAN X): MNIST 0.744 (IMP "
        "25.6 %), CIFAR 0.772 (22.78 %), ImageNet 0.8547 (14.53 %).",
        "",
        "## Time to target, censored, paired by seed",
        "",
        f"IMP = 1 − exp(mean log({A} / {B})) over the pairs where both arms reached the target, "
        f"with the 95 % t interval of the log ratios; positive = {A} sooner. Only {B} / only "
        f"{A}: pairs where one arm reached it and the other did not. Sign test: two-sided, over "
        "all decided pairs (reaching when the other did not is a win). Log-rank: the two arms' "
        "Kaplan-Meier curves in gradient evaluations (figures/reached_<dataset>.png).",
        "",
        f"| dataset | rule | reached {B} | reached {A} | pairs both / all | only {B} | only {A} "
        "| IMP, gradient evals [95 % CI] | IMP, seconds [95 % CI] | sign p | log-rank p |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for rule, r in s.rules.items():
            imp = r.imp
            out.append(
                f"| {name(s)} | {RULE_NAMES[rule]} | {imp.reached_sgd}/{imp.pairs_total} "
                f"| {imp.reached_isgd}/{imp.pairs_total} | {imp.pairs_both}/{imp.pairs_total} "
                f"| {imp.only_sgd} | {imp.only_isgd} "
                f"| {_imp(imp.imp_evals.estimate, imp.imp_evals.low, imp.imp_evals.high)} "
                f"| {_imp(imp.imp_s.estimate, imp.imp_s.low, imp.imp_s.high)} "
                f"| {_p(imp.sign_p)} | {_p(r.logrank_p_evals)} |"
            )
    out += ["", "### Power", ""]
    out += [power_line(s, name(s)) for s in summaries]
    if any(s.ladder for s in summaries):
        out += [
            "",
            "## The accuracy ladder",
            "",
            "The same paired IMP at every level of each dataset's ladder (`ladder.csv`, "
            "`figures/ladder.png`); here the paper's target and the highest level every run "
            "reached under each rule.",
            "",
            "| dataset | rule | level | pairs both / all | IMP, gradient evals [95 % CI] "
            "| IMP, seconds [95 % CI] | sign p |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in summaries:
            for rule, r in s.rules.items():
                wanted = [("target", s.target)]
                if r.highest_all is not None and abs(r.highest_all - s.target) > 1e-9:
                    wanted.append(("highest all reached", r.highest_all))
                for label, level in wanted:
                    row = next(
                        (
                            x
                            for x in s.ladder
                            if x["rule"] == rule and abs(float(x["level"]) - level) < 1e-9
                        ),
                        None,
                    )
                    if row is None:
                        continue
                    out.append(
                        f"| {name(s)} | {RULE_NAMES[rule]} | {100 * level:g} % ({label}) "
                        f"| {row['pairs_both']}/{row['pairs_total']} "
                        f"| {_imp(row['imp_evals'], row['imp_evals_low'], row['imp_evals_high'])} "
                        f"| {_imp(row['imp_s'], row['imp_s_low'], row['imp_s_high'])} "
                        f"| {_p(row['sign_p'])} |"
                    )
            levels = ", ".join(
                f"{RULE_NAMES[rule].split(' (')[0]} {_level(r.highest_all)}"
                for rule, r in s.rules.items()
            )
            out.append(f"| {name(s)} | highest level every run reached: {levels} | | | | | |")
    out += [
        "",
        "## Reach, spread, Alg. 2's cost",
        "",
        "Mean ± sample std [95 % t interval of the mean] over the runs that stayed above the "
        "target (descriptive; the comparison is the paired one above).",
        "",
        "| dataset | arm | reached (stays) | reached (first) | time to target (s) | gradient evals "
        "to target | Alg. 2 triggers / iteration | inner steps / trigger | extra evals |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    shown = set()  # a baseline shared by several comparisons is listed once
    for s in summaries:
        r = summary_record(s)
        for arm in s.pair:
            if (s.dataset, arm) in shown:
                continue
            shown.add((s.dataset, arm))
            a = s.arms[arm]
            alg2 = (
                (
                    f"{_pct(r['alg2_trigger_rate'], 3)}",
                    _num(r["alg2_inner_steps_per_trigger"]),
                    _pct(r["extra_evals_fraction"], 3),
                )
                if arm == s.arm and a.isgd
                else ("—", "—", "—")
            )
            out.append(
                f"| {s.dataset} | {arm} | {a.reached}/{a.runs} | {a.reached_first}/{a.runs} "
                f"| {_interval(a.time_s)} | {_interval(a.evals)} | {alg2[0]} | {alg2[1]} "
                f"| {alg2[2]} |"
            )
    out += [
        "",
        f"Paired differences {A} − {B} (stays rule, pairs where both reached; top accuracy over "
        "all pairs), with the paired t-test's and the exact Wilcoxon signed-rank test's p:",
        "",
        f"| dataset | pairs (both reached / all) | {A} − {B}, seconds [95 % CI] | t p | "
        f"Wilcoxon p | {A} − {B}, gradient evals [95 % CI] | t p | Wilcoxon p | {A} − {B}, top "
        "accuracy, all pairs [95 % CI] | t p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        ps, pe, pt = s.paired_s, s.paired_evals, s.paired_top
        out.append(
            f"| {name(s)} | {ps.pairs}/{s.pairs_total} | {_interval(ps.difference)} "
            f"| {_p(ps.t_p)} | {_p(ps.wilcoxon_p)} | {_interval(pe.difference)} "
            f"| {_p(pe.t_p)} | {_p(pe.wilcoxon_p)} | {_points(pt.difference)} | {_p(pt.t_p)} |"
        )
    out += ["", "## Reading", ""]
    out += [f"- **{name(s)}**: {verdict(s)}" for s in summaries]
    out += ["", "## Where and how", ""]
    for s in summaries:
        out.append(
            f"- {name(s)}: machine {s.machine or 'unknown'}; commit {s.commit or 'unknown'}; "
            f"wall time of its runs {s.wall_s / 60:.1f} min"
        )
    if notes:
        out += ["", "Not in the table:", ""] + [f"- {n}" for n in notes]
    out += ["", "Per run: `table1_runs.csv` (one row per run, recomputable from its `log`)."]
    return "\n".join(out) + "\n"


def build(
    profile: str,
    datasets: list[str] | None = None,
    say: Callable[[str], None] = print,
    out: Path | None = None,
) -> list[DatasetSummary]:
    """Rebuild results[/profile]/table1_runs.csv, table1.csv and table1.md from the logs of the
    profile's runs. Every dataset of the profile that has finished runs keeps its rows (a
    `datasets` subset only says which must have some); with none, nothing is written."""
    prof = load_profile(profile)
    for name in datasets or []:
        if name not in prof.plans:
            raise ProfileError(f"profile '{profile}' has no dataset {name}")
    sources, skipped = _sources(prof)
    with table_lock(profile):
        rows, notes = collect(prof, sources)
        notes += skipped
        present = {r.dataset for r in rows}
        wanted = datasets or list(prof.plans)
        if not any(name in present for name in wanted):
            raise TableError(
                f"no finished Table 1 runs of profile '{profile}' for {', '.join(wanted)}: "
                f"nothing written (make reproduce-table1 PROFILE={profile} trains them)"
            )
        for note in notes:
            say(f"note: {note}")
        out = out or results_dir(profile)
        summaries = [
            summarize_dataset(rows, plan.dataset, prof.baseline, arm, _labels(prof, arm))
            for name, plan in prof.plans.items()
            if name in present
            for arm in prof.compared
        ]
        plain = prof.baseline == DEFAULT_BASELINE and prof.compared == DEFAULT_ARMS[1:]
        records = [_named(summary_record(s), s, plain) for s in summaries]
        ladder = [_named(_ladder_row(row, s), s, plain) for s in summaries for row in s.ladder]
        files = {
            out / "table1_runs.csv": csv_text(RUN_COLUMNS, [_csv_row(r) for r in rows]),
            out / "table1.csv": csv_text(_columns(records, ["dataset"]), records),
            out / "ladder.csv": csv_text(_columns(ladder, LADDER_COLUMNS), ladder),
            out / "table1.md": markdown(summaries, rows, notes, profile),
        }
        for path, text in files.items():
            write_atomic(path, text)
        figures = write_figures(summaries, prof, out / "figures")
        say(
            f"wrote {_relative(out / 'table1.md')}, table1.csv, table1_runs.csv ({len(rows)} "
            f"runs), ladder.csv, {', '.join(p.name for p in figures)}"
        )
        if out == results_dir(profile):
            say(f"wrote {_relative(build_readme(profile))}")
    return summaries


def _labels(profile: Profile, arm: str) -> tuple[str, str]:
    return profile.arm(profile.baseline).title, profile.arm(arm).title


def _named(record: dict[str, Any], s: DatasetSummary, plain: bool) -> dict[str, Any]:
    """A CSV row; unless the profile compares ISGD with SGD only, a `comparison` column
    ("isgd vs sgd") after `dataset` says which arm the row compares with the baseline."""
    if plain:
        return record
    first, *rest = record.items()
    return dict([first, ("comparison", f"{s.arm} vs {s.baseline}"), *rest])


def _ladder_row(row: dict[str, Any], s: DatasetSummary) -> dict[str, Any]:
    """A ladder.csv row with its reached_<arm> columns named after the comparison's arms."""
    names = {"reached_sgd": f"reached_{s.baseline}", "reached_isgd": f"reached_{s.arm}"}
    return {names.get(key, key): value for key, value in row.items()}


def _columns(records: list[dict[str, Any]], default: list[str]) -> list[str]:
    """Every key of the records, in the order they first appear (default when none)."""
    return list(dict.fromkeys(k for r in records for k in r)) or default


def _csv_row(row: RunRow) -> dict[str, Any]:
    values = asdict(row)
    values.pop("tests", None)
    values.pop("isgd", None)
    return values


def write_figures(summaries: list[DatasetSummary], profile: Profile, folder: Path) -> list[Path]:
    """figures/reached_<dataset>.png (first reach; reached_<dataset>_<arm>.png for a dataset's
    further comparisons) and figures/ladder.png (a panel per dataset and comparison)."""
    made = []
    base, arm, name = _naming(summaries)
    seen: set[str] = set()
    for s in summaries:
        first = s.rules.get("first")
        if first is None or not s.pairs_total:
            continue
        file = f"reached_{s.dataset}{'_' + s.arm if s.dataset in seen else ''}.png"
        seen.add(s.dataset)
        try:
            made.append(
                plot_reached(
                    folder / file,
                    name(s),
                    s.target,
                    *first.outcomes.values(),  # (baseline, arm)
                    labels=s.labels,
                )
            )
        except ValueError as exc:  # e.g. an old log without evaluation counts at its tests
            raise TableError(f"figures/{file}: {exc}") from None
    ladder = [{**row, "dataset": name(s)} for s in summaries for row in s.ladder]
    if ladder:
        targets = {name(s): s.target for s in summaries}
        paper = {name(s): s.paper_imp for s in summaries if s.paper_imp is not None}
        title = f"{arm} over {base}" if base != "baseline" else "each arm over its baseline"
        made.append(plot_ladder(folder / "ladder.png", ladder, targets, paper, title=title))
    return made


def _sources(profile: Profile) -> tuple[dict[str, dict[str, str]], list[str]]:
    """ImageNet's LMDBs from the environment; without them its rows cannot be checked (noted)."""
    if "imagenet" not in profile.plans:
        return {}, []
    found = imagenet_sources()
    if found is None:
        del profile.plans["imagenet"]
        return {}, ["ImageNet: not in the table (IMAGENET_TRAIN / IMAGENET_VAL not set)"]
    return {"imagenet": found}, []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument("--datasets", default="", help="comma-separated (default: the profile's)")
    args = parser.parse_args(argv)
    try:
        build(args.profile, [d for d in args.datasets.split(",") if d] or None)
    except (ProfileError, RunLogError, RunError, TableError) as exc:
        print(f"table1: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"table1: cannot write the tables: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
