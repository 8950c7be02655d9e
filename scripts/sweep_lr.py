"""`make sweep-lr`: does ISGD still win when each arm gets its own best learning rate?

    python -m scripts.sweep_lr [--profile default] [--datasets mnist]

Tuning: every arm of the profile (SGD, ISGD: same momentum and weight decay) at each multiple of
its solver file's base_lr in the profile's grid, on the same tuning seeds; each arm takes the grid
point with the lowest median gradient evaluations to the target by first reach (a run that never
reaches it counts at its budget; ties go to the smaller lr). Equal tuning budget by construction:
same grid, seeds and budget for every arm. Scoring: each arm at its chosen lr on held-out seeds,
paired by seed and scored as Table 1 (both rules, paired IMP with its interval, sign test, the
ladder). Runs: results/runs/<profile>/sweep_lr/. Output: results[/<profile>]/sweep_lr.md,
sweep_lr.csv and figures/sweep_lr.png.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.proto_io import read_solver_param
from scripts.comparison import RULE_NAMES, DatasetSummary, imp_reading, summarize_dataset
from scripts.outcome_figures import save_figure
from scripts.outcomes import Outcome
from scripts.outputs import write_atomic, write_csv
from scripts.plotting import pyplot
from scripts.profiles import ROOT, Plan, Profile, ProfileError, load_profile, results_dir
from scripts.report_format import imp_text, p_text
from scripts.results_readme import build as build_readme
from scripts.run_rows import RunRow, run_row
from scripts.runner import (
    Display,
    TrainingSession,
    add_runner_arguments,
    ensure_data,
    guarded,
    runner_options,
)
from scripts.runs import RunSpec, arm_spec, finished_log

GROUP = "sweep_lr"


@dataclass(frozen=True)
class GridPoint:
    """One arm at one lr multiple over the tuning seeds: its censored outcomes (first reach)."""

    arm: str
    scale: float
    lr: float
    outcomes: tuple[Outcome, ...]
    top_accs: tuple[float, ...]

    @property
    def reached(self) -> int:
        return sum(o.reached for o in self.outcomes)

    def quartiles(self, unit: str = "evals") -> tuple[float, float, float] | None:
        """(q1, median, q3) of the time to target, a censored run at its budget; None if no run."""
        values = [o.evals if unit == "evals" else o.seconds for o in self.outcomes]
        if not values:
            return None
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return float(q1), float(median), float(q3)


def choose(points: list[GridPoint]) -> GridPoint | None:
    """The grid point with the lowest median gradient evaluations to the target (censored runs
    at their budget); ties go to the smaller lr. None when no point has runs."""
    ranked = [(q[1], p.scale, p) for p in points if (q := p.quartiles()) is not None]
    if not ranked:
        return None
    return min(ranked, key=lambda item: (item[0], item[1]))[2]


def seeds(profile: Profile) -> tuple[list[int], list[int]]:
    """The tuning and the held-out scoring seeds (checked disjoint when the profile loads)."""
    section = profile.sweep_lr
    if not section:
        raise ProfileError(f"profile '{profile.name}' has no [{profile.name}.sweep_lr] section")
    return list(section["tuning_seeds"]), list(section["scoring_seeds"])


def _budget(profile: Profile, plan: Plan) -> int:
    return int(profile.sweep_lr.get("budget_grad_evals", plan.budget_grad_evals))


def tuning_spec(profile: Profile, plan: Plan, arm: str, scale: float, seed: int) -> RunSpec:
    return arm_spec(
        profile,
        plan,
        arm,
        seed,
        GROUP,
        tag=f"tune-lr{scale:g}x",
        lr_scale=float(scale),
        budget_grad_evals=_budget(profile, plan),
    )


def scoring_spec(profile: Profile, plan: Plan, arm: str, scale: float, seed: int) -> RunSpec:
    return replace(tuning_spec(profile, plan, arm, scale, seed), tag=f"score-lr{scale:g}x")


def _base_lr(plan: Plan, profile: Profile, arm: str) -> float:
    solver = plan.dataset.solver_file(profile.arm(arm).solver)
    return float(read_solver_param(str(ROOT / solver)).base_lr)


def _row(spec: RunSpec) -> RunRow | None:
    log = finished_log(spec)
    return None if log is None else run_row(log, spec.plan.dataset, spec.arm, budget=spec.budget)


def tuning_points(profile: Profile, plan: Plan) -> dict[str, list[GridPoint]]:
    """Per arm, every grid point's outcomes over the tuning seeds (finished runs only)."""
    tuning, _ = seeds(profile)
    target = plan.dataset.target
    points: dict[str, list[GridPoint]] = {}
    for arm in profile.arms:
        base_lr = _base_lr(plan, profile, arm)
        for scale in profile.sweep_lr["grid"]:
            rows = [_row(tuning_spec(profile, plan, arm, scale, s)) for s in tuning]
            done = [r for r in rows if r is not None]
            points.setdefault(arm, []).append(
                GridPoint(
                    arm=arm,
                    scale=float(scale),
                    lr=base_lr * float(scale),
                    outcomes=tuple(r.outcome(target, "first") for r in done),
                    top_accs=tuple(r.top_acc for r in done if r.top_acc is not None),
                )
            )
    return points


@dataclass
class DatasetResult:
    dataset: str
    target: float
    points: dict[str, list[GridPoint]]
    chosen: dict[str, GridPoint | None]
    scored: list[DatasetSummary]  # each non-baseline arm against the baseline, at chosen lrs
    baseline: str


def summarize(profile: Profile, plan: Plan) -> DatasetResult:
    """The tuning table, the lr each arm chose, and the held-out pairs scored as Table 1."""
    points = tuning_points(profile, plan)
    chosen = {arm: choose(p) for arm, p in points.items()}
    _, scoring = seeds(profile)
    rows = []
    for arm, point in chosen.items():
        if point is None:
            continue
        for seed in scoring:
            row = _row(scoring_spec(profile, plan, arm, point.scale, seed))
            if row is not None:
                rows.append(row)
    scored = [
        summarize_dataset(
            rows,
            plan.dataset,
            profile.baseline,
            arm,
            (profile.arm(profile.baseline).label, profile.arm(arm).label),
        )
        for arm in profile.arms
        if arm != profile.baseline
    ]
    return DatasetResult(
        plan.dataset.name, plan.dataset.target, points, chosen, scored, profile.baseline
    )


COLUMNS = [
    "phase",
    "dataset",
    "arm",
    "lr_multiple",
    "lr",
    "runs",
    "reached",
    "evals_median",
    "evals_q1",
    "evals_q3",
    "seconds_median",
    "seconds_q1",
    "seconds_q3",
    "top_acc_median",
    "chosen",
    "compared_with",
    "pairs",
    "first_pairs_both",
    "first_imp_evals",
    "first_imp_evals_low",
    "first_imp_evals_high",
    "first_sign_p",
    "stays_pairs_both",
    "stays_imp_evals",
    "stays_imp_evals_low",
    "stays_imp_evals_high",
    "stays_sign_p",
]


def records(result: DatasetResult) -> list[dict[str, Any]]:
    """sweep_lr.csv's rows: one per arm and grid point (tuning), one per scored comparison."""
    out: list[dict[str, Any]] = []
    for arm, points in result.points.items():
        for p in points:
            q = p.quartiles("evals")
            qs = p.quartiles("seconds")
            out.append(
                {
                    "phase": "tune",
                    "dataset": result.dataset,
                    "arm": arm,
                    "lr_multiple": p.scale,
                    "lr": p.lr,
                    "runs": len(p.outcomes),
                    "reached": p.reached,
                    "evals_median": None if q is None else q[1],
                    "evals_q1": None if q is None else q[0],
                    "evals_q3": None if q is None else q[2],
                    "seconds_median": None if qs is None else qs[1],
                    "seconds_q1": None if qs is None else qs[0],
                    "seconds_q3": None if qs is None else qs[2],
                    "top_acc_median": float(np.median(p.top_accs)) if p.top_accs else None,
                    "chosen": int(result.chosen.get(arm) is p),
                }
            )
    for s in result.scored:
        arm = s.arm or "isgd"
        record: dict[str, Any] = {
            "phase": "score",
            "dataset": result.dataset,
            "arm": arm,
            "lr_multiple": _scale(result, arm),
            "compared_with": f"{result.baseline} at {_scale(result, result.baseline)}x",
            "pairs": s.pairs_total,
        }
        for rule in ("first", "stays"):
            r = s.rules.get(rule)
            if r is None:
                continue
            record[f"{rule}_pairs_both"] = r.imp.pairs_both
            record[f"{rule}_imp_evals"] = r.imp.imp_evals.estimate
            record[f"{rule}_imp_evals_low"] = r.imp.imp_evals.low
            record[f"{rule}_imp_evals_high"] = r.imp.imp_evals.high
            record[f"{rule}_sign_p"] = r.imp.sign_p
        out.append(record)
    return out


def _scale(result: DatasetResult, arm: str) -> float | None:
    point = result.chosen.get(arm)
    return None if point is None else point.scale


def markdown(results: list[DatasetResult], profile: Profile) -> str:
    tuning, scoring = seeds(profile)
    out = [
        f"# Each arm at its own best learning rate (profile `{profile.name}`)",
        "",
        f"Tuning: every arm at {', '.join(f'{g:g}x' for g in profile.sweep_lr['grid'])} its "
        f"solver file's base_lr on tuning seeds {', '.join(map(str, tuning))}; each arm takes the "
        "lr with the lowest median gradient evaluations to the target by first reach (a run that "
        "never reaches it counts at its budget; ties to the smaller lr). Scoring: each arm at its "
        f"chosen lr on held-out seeds {', '.join(map(str, scoring))}, paired by seed, as Table 1.",
        "",
        "## Tuning",
        "",
        "| dataset | arm | lr | reached | evals to target: median [IQR] | seconds: median "
        "[IQR] | top accuracy (median) | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for arm, points in result.points.items():
            for p in points:
                q, qs = p.quartiles("evals"), p.quartiles("seconds")
                evals = "—" if q is None else f"{q[1]:.0f} [{q[0]:.0f}, {q[2]:.0f}]"
                secs = "—" if qs is None else f"{qs[1]:.1f} [{qs[0]:.1f}, {qs[2]:.1f}]"
                top = f"{100 * float(np.median(p.top_accs)):.2f} %" if p.top_accs else "—"
                mark = "**yes**" if result.chosen.get(arm) is p else ""
                out.append(
                    f"| {result.dataset} | {arm} | {p.lr:g} ({p.scale:g}x) "
                    f"| {p.reached}/{len(p.outcomes)} | {evals} | {secs} | {top} | {mark} |"
                )
    out += [
        "",
        "## Scoring on held-out seeds",
        "",
        "| dataset | comparison | rule | pairs both / all | IMP, gradient evals [95 % CI] "
        "| IMP, seconds [95 % CI] | sign p |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for s in result.scored:
            arm = s.arm or "isgd"
            label = (
                f"{arm} at {_scale(result, arm)}x vs {result.baseline} at "
                f"{_scale(result, result.baseline)}x"
            )
            for rule, r in s.rules.items():
                imp = r.imp
                out.append(
                    f"| {result.dataset} | {label} | {RULE_NAMES[rule]} "
                    f"| {imp.pairs_both}/{imp.pairs_total} "
                    f"| {imp_text(imp.imp_evals.estimate, imp.imp_evals.low, imp.imp_evals.high)} "
                    f"| {imp_text(imp.imp_s.estimate, imp.imp_s.low, imp.imp_s.high)} "
                    f"| {p_text(imp.sign_p)} |"
                )
    out += ["", "## Reading", ""]
    for result in results:
        for s in result.scored:
            arm = s.arm or "isgd"
            labels = (profile.arm(result.baseline).label, profile.arm(arm).label)
            for rule, r in s.rules.items():
                reading = imp_reading(r.imp, f"{result.dataset}, {RULE_NAMES[rule]}", None, labels)
                out.append(f"- {reading}.")
    return "\n".join(out) + "\n"


def plot(results: list[DatasetResult], path: Path) -> Path:
    """Gradient evaluations to target against the lr multiple, one line per arm with its IQR
    band, censored runs as x at their budget, the chosen lr circled."""
    plt = pyplot()
    fig, axes = plt.subplots(1, max(len(results), 1), figsize=(6 * max(len(results), 1), 4))
    axes = np.atleast_1d(axes)
    for ax, result in zip(axes, results, strict=False):
        for index, (arm, points) in enumerate(result.points.items()):
            color = f"C{index}"
            rows = [(p.scale, q) for p in points if (q := p.quartiles()) is not None]
            if rows:
                xs = [x for x, _ in rows]
                ax.plot(xs, [q[1] for _, q in rows], "o-", color=color, label=arm)
                ax.fill_between(
                    xs, [q[0] for _, q in rows], [q[2] for _, q in rows], color=color, alpha=0.2
                )
            for p in points:
                censored = [o.evals for o in p.outcomes if not o.reached]
                ax.plot([p.scale] * len(censored), censored, "x", color=color)
            chosen = result.chosen.get(arm)
            if chosen is not None and (q := chosen.quartiles()) is not None:
                ax.plot([chosen.scale], [q[1]], "o", ms=16, mfc="none", mec=color, mew=2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("lr, multiple of the solver file's base_lr")
        ax.set_ylabel(f"gradient evaluations to {100 * result.target:g} % (first reach)")
        ax.set_title(f"{result.dataset}: median and IQR over tuning seeds (x: censored)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def all_specs(profile: Profile) -> list[RunSpec]:
    """Tuning runs first; scoring runs need the tuning's choice (computed when tuning is done)."""
    tuning, _ = seeds(profile)
    return [
        tuning_spec(profile, plan, arm, float(scale), seed)
        for plan in profile.plans.values()
        for seed in tuning
        for scale in profile.sweep_lr["grid"]
        for arm in profile.arms
    ]


def scoring_specs(profile: Profile) -> list[RunSpec]:
    _, scoring = seeds(profile)
    specs = []
    for plan in profile.plans.values():
        chosen = {arm: choose(p) for arm, p in tuning_points(profile, plan).items()}
        for seed in scoring:
            for arm, point in chosen.items():
                if point is None:
                    raise ProfileError(f"{plan.dataset.name}: {arm} has no finished tuning run")
                specs.append(scoring_spec(profile, plan, arm, point.scale, seed))
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument("--datasets", default="", help="comma-separated (default: the section's)")
    parser.add_argument("--no-run", action="store_true", help="summarize what is already logged")
    add_runner_arguments(parser)
    args = parser.parse_args(argv)

    def body(display: Display) -> int:
        profile = load_profile(args.profile)
        seeds(profile)  # the section exists
        chosen = [d for d in args.datasets.split(",") if d] or list(profile.sweep_lr["datasets"])
        profile = load_profile(args.profile, chosen)
        if not args.no_run:
            ensure_data(profile, display.say)
            options = runner_options(args, profile)
            with TrainingSession(profile.name, "sweep_lr", display, options) as session:
                session.run(all_specs(profile))
                session.run(scoring_specs(profile))
        results = [summarize(profile, plan) for plan in profile.plans.values()]
        out = results_dir(profile.name)
        rows = [r for result in results for r in records(result)]
        write_csv(out / "sweep_lr.csv", COLUMNS, rows)
        write_atomic(out / "sweep_lr.md", markdown(results, profile))
        plot(results, out / "figures" / "sweep_lr.png")
        display.say(f"wrote {out / 'sweep_lr.md'}, sweep_lr.csv, figures/sweep_lr.png")
        display.say(f"wrote {build_readme(profile.name)}")
        return 0

    return guarded("sweep-lr", body)


if __name__ == "__main__":
    sys.exit(main())
