"""Table 1 from the runs' JSON logs alone: one row per run, then the paper's columns per dataset
with what the paper lacks (runs reached, intervals, paired tests, Alg. 2's cost).

    python -m scripts.table1 [--profile default]      (also `make table1`)
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scripts import runs
from scripts.outputs import csv_text, write_atomic
from scripts.profiles import ROOT, Dataset, Profile, ProfileError, load_profile, results_dir
from scripts.results_readme import build as build_readme
from scripts.runs import (
    RunError,
    RunSpec,
    imagenet_sources,
    status,
    table1_spec,
    table_lock,
)
from scripts.stats import PairedTest, Summary, paired_test, summarize, time_to_target
from solvers.run_log import RunLog, RunLogError

ARMS = ("sgd", "isgd")
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
]


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
    iterations: int = 0
    wall_s: float = 0.0
    machine: str = ""

    @property
    def reached(self) -> bool:
        return self.time_to_target_s is not None


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
        alg2_inner_steps=sum(int(e.get("subproblem_iters") or 0) for e in iters),
        batch_size=start.get("batch_size"),
        ranks=int(start.get("ranks", 1)),
        device=str(start.get("device", "cpu")),
        commit=" ".join(commits),
        iterations=len(iters),
        wall_s=log.wall_s,
        machine=str(start.get("machine", "")),
    )


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


class TableError(RuntimeError):
    """Nothing to tabulate (no finished runs), or results that cannot be written."""


def table1_specs(
    profile: Profile, sources: dict[str, dict[str, str]] | None = None
) -> dict[str, list[RunSpec]]:
    """The profile's Table 1 runs per dataset: exactly its seeds and arms."""
    sources = sources or {}
    return {
        name: [
            table1_spec(profile, plan, arm, seed, sources.get(name, {}))
            for seed in profile.seeds_of(name)
            for arm in ARMS
        ]
        for name, plan in profile.plans.items()
    }


def collect(
    profile: Profile,
    sources: dict[str, dict[str, str]] | None = None,
    check: Callable[[RunSpec], str | None] | None = None,
) -> tuple[list[RunRow], list[str]]:
    """Rows of the profile's finished Table 1 runs (its seeds and arms, nothing else), and notes
    on the unfinished ones and on folders outside the profile. A run whose folder no longer
    matches the profile or its data (`check`) is refused (RunError), never tabulated."""
    check = check or runs.stale_problem
    rows, notes = [], []
    for specs in table1_specs(profile, sources).values():
        dataset = specs[0].plan.dataset if specs else None
        expected = {spec.folder for spec in specs}
        base = specs[0].folder.parent if specs else None
        for spec in specs:
            if not spec.log_path.exists():
                if spec.folder.exists() and any(spec.folder.glob("snap_iter_*")):
                    status(spec)  # raises: a log missing beside snapshots is named
                notes.append(f"{_relative(spec.folder)}: not started or no log yet")
                continue
            state, log = status(spec)
            if state != "done" or log is None:
                notes.append(
                    f"{_relative(spec.folder)}: unfinished (resume: make reproduce-table1)"
                )
                continue
            problem = check(spec)
            if problem is not None:
                raise RunError(
                    f"{_relative(spec.folder)} was made with other settings or data ({problem}): "
                    "refused. Rerun it with make reproduce-table1 REDO=1 (which moves it to "
                    "stale/ and trains it afresh), or move it away."
                )
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
    rows.sort(key=lambda r: (order.index(r.dataset), r.seed, ARMS.index(r.arm)))
    return rows, notes


# ------------------------------------------------------------------ per-dataset summary


@dataclass
class ArmSummary:
    runs: int
    reached: int
    highest_top: float | None
    average_top: float | None
    time_s: Summary
    evals: Summary
    alg2_triggers: int
    alg2_inner_steps: int
    iterations: int
    grad_evals: int


@dataclass
class DatasetSummary:
    dataset: str
    metric: str
    target: float
    arms: dict[str, ArmSummary]
    paired_s: PairedTest
    paired_evals: PairedTest
    paired_top: PairedTest  # top accuracy, ISGD - SGD, over every finished pair
    pairs_total: int
    machine: str
    commit: str
    wall_s: float


def _arm(rows: list[RunRow]) -> ArmSummary:
    tops = [r.top_acc for r in rows if r.top_acc is not None]
    reached = [r for r in rows if r.reached]
    return ArmSummary(
        runs=len(rows),
        reached=len(reached),
        highest_top=max(tops) if tops else None,
        average_top=sum(tops) / len(tops) if tops else None,
        time_s=summarize([r.time_to_target_s for r in reached]),
        evals=summarize([r.evals_to_target for r in reached if r.evals_to_target is not None]),
        alg2_triggers=sum(r.alg2_triggers for r in rows),
        alg2_inner_steps=sum(r.alg2_inner_steps for r in rows),
        iterations=sum(r.iterations for r in rows),
        grad_evals=sum(r.grad_evals for r in rows),
    )


def summarize_dataset(rows: list[RunRow], dataset: Dataset) -> DatasetSummary:
    """Per-arm statistics and the paired comparison over seeds where both arms reached."""
    mine = [r for r in rows if r.dataset == dataset.name]
    arms = {arm: _arm([r for r in mine if r.arm == arm]) for arm in ARMS}
    by_seed = {(r.arm, r.seed): r for r in mine}
    seeds = sorted({r.seed for r in mine})
    both = [
        (by_seed[("sgd", s)], by_seed[("isgd", s)])
        for s in seeds
        if ("sgd", s) in by_seed
        and ("isgd", s) in by_seed
        and by_seed[("sgd", s)].reached
        and by_seed[("isgd", s)].reached
    ]
    complete = [
        (by_seed[("sgd", s)], by_seed[("isgd", s)])
        for s in seeds
        if ("sgd", s) in by_seed and ("isgd", s) in by_seed
    ]
    pairs_total = len(complete)
    tops = [
        (a.top_acc, b.top_acc)
        for a, b in complete
        if a.top_acc is not None and b.top_acc is not None
    ]
    paired_top = paired_test([a for a, _ in tops], [b for _, b in tops])
    paired_s = paired_test(
        [a.time_to_target_s for a, _ in both], [b.time_to_target_s for _, b in both]
    )
    paired_evals = paired_test(
        [a.evals_to_target for a, _ in both], [b.evals_to_target for _, b in both]
    )
    machines = sorted({r.machine for r in mine if r.machine})
    commits = sorted({c for r in mine for c in r.commit.split() if c})
    return DatasetSummary(
        dataset=dataset.name,
        metric=dataset.metric,
        target=dataset.target,
        arms=arms,
        paired_s=paired_s,
        paired_evals=paired_evals,
        paired_top=paired_top,
        pairs_total=pairs_total,
        machine="; ".join(machines),
        commit=", ".join(commits),
        wall_s=sum(r.wall_s for r in mine),
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def summary_record(s: DatasetSummary) -> dict[str, Any]:
    """One row of table1.csv."""
    sgd, isgd = s.arms["sgd"], s.arms["isgd"]
    norm = _ratio(isgd.time_s.mean, sgd.time_s.mean)
    norm_evals = _ratio(isgd.evals.mean, sgd.evals.mean)
    record: dict[str, Any] = {
        "dataset": s.dataset,
        "metric": s.metric,
        "target": s.target,
        "pairs": s.pairs_total,
        "runs_sgd": sgd.runs,
        "runs_isgd": isgd.runs,
        "reached_sgd": sgd.reached,
        "reached_isgd": isgd.reached,
        "highest_top_sgd": sgd.highest_top,
        "highest_top_isgd": isgd.highest_top,
        "highest_top_imp": _diff(isgd.highest_top, sgd.highest_top),
        "average_top_sgd": sgd.average_top,
        "average_top_isgd": isgd.average_top,
        "average_top_imp": _diff(isgd.average_top, sgd.average_top),
        "normalized_time_sgd": 1.0 if sgd.time_s.mean else None,
        "normalized_time_isgd": norm,
        "time_imp": None if norm is None else 1.0 - norm,
        "normalized_evals_isgd": norm_evals,
        "evals_imp": None if norm_evals is None else 1.0 - norm_evals,
    }
    for arm, a in (("sgd", sgd), ("isgd", isgd)):
        for unit, summ in (("time_s", a.time_s), ("evals", a.evals)):
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


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return value


def write_csv(path: Path, columns: list[str], records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({k: _cell(record.get(k)) for k in columns})


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


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def verdict(s: DatasetSummary) -> str:
    """One honest sentence on what the runs show about time to target."""
    sgd, isgd = s.arms["sgd"], s.arms["isgd"]
    test = s.paired_s
    reached = (
        f"SGD reached the target in {sgd.reached}/{sgd.runs} runs, "
        f"ISGD in {isgd.reached}/{isgd.runs}"
    )
    top = s.paired_top
    accuracy = ""
    if top.pairs >= 2 and top.difference.low is not None:
        accuracy = (
            f" At equal gradient evaluations, top accuracy ISGD − SGD: "
            f"{100 * top.difference.mean:+.2f} points, 95 % CI [{100 * top.difference.low:.2f}, "
            f"{100 * top.difference.high:.2f}] over {top.pairs} pairs (paired t p = {_p(top.t_p)})."
        )
    if test.pairs < 2 or test.difference.low is None:
        return (
            f"{reached}; too few pairs reached it in both arms ({test.pairs}) for an interval of "
            f"the time to target.{accuracy}"
        )
    low, high, mean = test.difference.low, test.difference.high, test.difference.mean
    if low > 0:
        finding = "ISGD was slower than SGD, and the interval excludes no difference"
    elif high < 0:
        finding = "ISGD was faster than SGD, and the interval excludes no difference"
    else:
        finding = "the interval includes zero: these runs show no significant difference"
    return (
        f"{reached}. Paired difference ISGD − SGD in training time to target: {mean:+.3g} s, "
        f"95 % CI [{low:.3g}, {high:.3g}] over {test.pairs} pairs (paired t p = {_p(test.t_p)}, "
        f"Wilcoxon p = {_p(test.wilcoxon_p)}): {finding}.{accuracy}"
    )


def markdown(
    summaries: list[DatasetSummary], rows: list[RunRow], notes: list[str], profile: str
) -> str:
    """results/table1.md: the paper's table, then the statistics it lacks, then the runs."""
    out = [
        f"# Table 1, reproduced (profile `{profile}`)",
        "",
        "Generated by `make table1` from the runs' JSON logs alone "
        f"(results/runs/{profile}/table1/). Time to target is the training time (tests excluded) "
        "of the first test after which every later test stays at or above the target; runs that "
        "never get there are counted as not reached and left out of the time averages.",
        "",
        "## The paper's columns",
        "",
        "| dataset | highest top acc. SGD | ISGD | IMP | average top acc. SGD | ISGD | IMP "
        "| normalized avg. time to target SGD | ISGD | IMP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        r = summary_record(s)
        out.append(
            f"| {s.dataset} ({s.metric} ≥ {100 * s.target:g} %) | {_pct(r['highest_top_sgd'])} "
            f"| {_pct(r['highest_top_isgd'])} | {_pct(r['highest_top_imp'])} "
            f"| {_pct(r['average_top_sgd'])} | {_pct(r['average_top_isgd'])} "
            f"| {_pct(r['average_top_imp'])} | {_num(r['normalized_time_sgd'])} "
            f"| {_num(r['normalized_time_isgd'])} | {_pct(r['time_imp'])} |"
        )
    out += [
        "",
        "The paper (10 runs, 4 TITAN X): MNIST 0.744 (IMP 25.6 %), CIFAR 0.772 (22.78 %), "
        "ImageNet 0.8547 (14.53 %).",
        "",
        "## What the paper lacks: reach, spread, intervals, paired tests, cost of Alg. 2",
        "",
        "Mean ± sample std [95 % t interval of the mean] over the runs that reached the target. "
        "Paired: ISGD − SGD on the seeds where both reached it; p-values of the paired t-test and "
        "of the exact Wilcoxon signed-rank test (two-sided).",
        "",
        "| dataset | arm | reached | time to target (s) | gradient evals to target | Alg. 2 "
        "triggers / iteration | inner steps / trigger | extra evals |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        r = summary_record(s)
        for arm in ARMS:
            a = s.arms[arm]
            alg2 = (
                (
                    f"{_pct(r['alg2_trigger_rate'], 3)}",
                    _num(r["alg2_inner_steps_per_trigger"]),
                    _pct(r["extra_evals_fraction"], 3),
                )
                if arm == "isgd"
                else ("—", "—", "—")
            )
            out.append(
                f"| {s.dataset} | {arm} | {a.reached}/{a.runs} | {_interval(a.time_s)} "
                f"| {_interval(a.evals)} | {alg2[0]} | {alg2[1]} | {alg2[2]} |"
            )
    out += [
        "",
        "| dataset | pairs (both reached / all) | ISGD − SGD, seconds [95 % CI] | t p | "
        "Wilcoxon p | ISGD − SGD, gradient evals [95 % CI] | t p | Wilcoxon p | ISGD − SGD, top "
        "accuracy, all pairs [95 % CI] | t p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        ps, pe, pt = s.paired_s, s.paired_evals, s.paired_top
        out.append(
            f"| {s.dataset} | {ps.pairs}/{s.pairs_total} | {_interval(ps.difference)} "
            f"| {_p(ps.t_p)} | {_p(ps.wilcoxon_p)} | {_interval(pe.difference)} "
            f"| {_p(pe.t_p)} | {_p(pe.wilcoxon_p)} | {_points(pt.difference)} | {_p(pt.t_p)} |"
        )
    out += ["", "## Reading", ""]
    out += [f"- **{s.dataset}**: {verdict(s)}" for s in summaries]
    out += ["", "## Where and how", ""]
    for s in summaries:
        out.append(
            f"- {s.dataset}: machine {s.machine or 'unknown'}; commit {s.commit or 'unknown'}; "
            f"wall time of its runs {s.wall_s / 60:.1f} min"
        )
    if notes:
        out += ["", "Not in the table yet:", ""] + [f"- {n}" for n in notes]
    out += ["", "Per run: `table1_runs.csv` (one row per run, recomputable from its `log`)."]
    return "\n".join(out) + "\n"


def build(
    profile: str,
    datasets: list[str] | None = None,
    say: Callable[[str], None] = print,
    out: Path | None = None,
    check: Callable[[RunSpec], str | None] | None = None,
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
        rows, notes = collect(prof, sources, check)
        notes += skipped
        present = {r.dataset for r in rows}
        wanted = datasets or list(prof.plans)
        if not any(name in present for name in wanted):
            raise TableError(
                f"no finished Table 1 runs of profile '{profile}' for {', '.join(wanted)}: "
                f"nothing written (make reproduce-table1 PROFILE={profile} trains them)"
            )
        out = out or results_dir(profile)
        summaries = [
            summarize_dataset(rows, plan.dataset)
            for name, plan in prof.plans.items()
            if name in present
        ]
        records = [summary_record(s) for s in summaries]
        columns = list(records[0]) if records else ["dataset"]
        files = {
            out / "table1_runs.csv": csv_text(RUN_COLUMNS, [asdict(r) for r in rows]),
            out / "table1.csv": csv_text(columns, records),
            out / "table1.md": markdown(summaries, rows, notes, profile),
        }
        for path, text in files.items():
            write_atomic(path, text)
        say(f"wrote {_relative(out / 'table1.md')}, table1.csv, table1_runs.csv ({len(rows)} runs)")
        if out == results_dir(profile):
            say(f"wrote {_relative(build_readme(profile))}")
    return summaries


def _sources(profile: Profile) -> tuple[dict[str, dict[str, str]], list[str]]:
    """ImageNet's LMDBs from the environment; without them its rows cannot be checked (noted)."""
    if "imagenet" not in profile.plans:
        return {}, []
    found = imagenet_sources()
    if found is None:
        del profile.plans["imagenet"]
        return {}, [
            "imagenet: IMAGENET_TRAIN / IMAGENET_VAL not set, so its runs are not checked "
            "or tabulated"
        ]
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
