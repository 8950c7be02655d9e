"""`make sweep-isgd`: the readings of Alg. 1/2 that the paper leaves open, each against SGD.

    python -m scripts.sweep [--profile default] [--datasets mnist] [--runs N]

Each setting changes one thing from the paper's reading (k = 3, the limit from the losses before
the batch, zeta = the current lr, stop = 5, w_{t-1} before the update, the Table 1 batch) and
runs ISGD with the same seeds as SGD (the dataset's pairs, or the sweep section's `pairs`).
Each setting is reported as Table 1 reports a dataset: the paired IMP in gradient evaluations
and seconds with its 95 % interval and the sign test, under both rules (first reach, stays
above), at the target and at the highest ladder level every run reached; the paired top
accuracy at equal compute; Alg. 2's activity.
Runs: results/runs/<profile>/sweep/ (the paper's reading and SGD are the Table 1 runs).
Output: results[/<profile>]/sweep.md, sweep.csv and figures/sweep.png.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.proto_io import read_solver_param
from scripts.comparison import (
    RULE_NAMES,
    DatasetSummary,
    complete_pairs,
    imp_reading,
    summarize_dataset,
    summary_record,
)
from scripts.outcomes import PairedImp, paired_imp, paired_outcomes
from scripts.outputs import write_atomic, write_csv
from scripts.plotting import pyplot
from scripts.profiles import ROOT, RULES, Plan, Profile, ProfileError, load_profile, results_dir
from scripts.report_format import imp_text, level_text, num, p_text, pct, points_text
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
from scripts.runs import RunSpec, arm_spec, finished_log, table1_spec


@dataclass(frozen=True)
class Setting:
    """One reading of the paper: isgd_param changes (and a batch size) and why it is open."""

    name: str
    why: str
    isgd: dict[str, Any] = field(default_factory=dict)
    batch_factor: int = 1
    zeta_lr_multiple: float | None = None  # zeta as a multiple of the solver's base_lr


SETTINGS = [
    Setting("paper", "k = 3, limit from the n losses before the batch, zeta = lr, stop = 5"),
    Setting("k2", "Sec. 4.2: 'a soft margin, 2 or 3 sigma'", {"control_limit": 2.0}),
    Setting(
        "limit_with_current",
        "Alg. 1 line 19 folds the current loss into the mean before the test",
        {"limit_includes_current": True},
    ),
    Setting(
        "zeta_10lr", "zeta is 'a constant learning rate', its value unstated", zeta_lr_multiple=10
    ),
    Setting("stop2", "stop: 'a few iterations, 5 for example'", {"stop": 2}),
    Setting("stop10", "stop: 'a few iterations, 5 for example'", {"stop": 10}),
    Setting(
        "anchor_after_update",
        "w_{t-1} of Eq. 17 read as the weights Alg. 2 starts from",
        {"anchor_after_update": True},
    ),
    Setting("batch4x", "the batch size of Table 1 is not given", batch_factor=4),
]


def setting_specs(profile: Profile, plan: Plan, setting: Setting, seed: int) -> dict[str, RunSpec]:
    """The SGD and ISGD runs of one setting and seed (Table 1's where the setting is Table 1's)."""
    if setting.name == "paper":
        return {arm: table1_spec(profile, plan, arm, seed, {}) for arm in ("sgd", "isgd")}
    isgd = dict(setting.isgd)
    if setting.zeta_lr_multiple is not None:
        isgd["zeta"] = _base_lr(plan) * setting.zeta_lr_multiple
    batch = plan.batch_size * setting.batch_factor
    budget = max(1, plan.budget_grad_evals * plan.batch_size // batch)
    common: dict[str, Any] = dict(batch_size=batch, budget_grad_evals=budget)
    specs = {
        "isgd": arm_spec(
            profile, plan, "isgd", seed, "sweep", tag=setting.name, isgd=isgd, **common
        )
    }
    if setting.batch_factor != 1:
        specs["sgd"] = arm_spec(profile, plan, "sgd", seed, "sweep", tag=setting.name, **common)
    else:
        specs["sgd"] = table1_spec(profile, plan, "sgd", seed, {})
    return specs


def _base_lr(plan: Plan) -> float:
    return float(read_solver_param(str(ROOT / plan.dataset.solver_file("isgd"))).base_lr)


@dataclass
class SettingSummary:
    """One setting of one dataset, in Table 1's terms: its runs' summary (both rules' paired IMP
    at the target, the sign tests, the top-accuracy difference, Alg. 2's cost) and, per rule,
    the paired IMP at the highest ladder level that every run of its pairs reached."""

    setting: Setting
    summary: DatasetSummary
    at_highest: dict[str, PairedImp | None]
    ladder: tuple[float, ...] = ()  # the dataset's ladder levels (none: only the target)

    @property
    def label(self) -> str:
        return f"{self.summary.dataset}/{self.setting.name}"


def summarize_setting(profile: Profile, plan: Plan, setting: Setting) -> SettingSummary:
    """The setting's finished runs on the dataset's seeds, summarized as Table 1 summarizes a
    dataset (a stale run folder is refused, never summarized)."""
    ds = plan.dataset
    rows: list[RunRow] = []
    for seed in profile.seeds_of(ds.name):
        for arm, spec in setting_specs(profile, plan, setting, seed).items():
            log = finished_log(spec)
            if log is not None:
                rows.append(run_row(log, ds, arm, budget=spec.budget))
    summary = summarize_dataset(rows, ds)
    pairs = [(a.run_tests(), b.run_tests()) for a, b in complete_pairs(rows, ds.name)]
    at_highest = {
        rule: None
        if r.highest_all is None
        else paired_imp(paired_outcomes(pairs, r.highest_all, rule))
        for rule, r in summary.rules.items()
    }
    return SettingSummary(
        setting, summary, at_highest, tuple(ds.ladder.levels if ds.ladder else ())
    )


def _imp_columns(prefix: str, suffix: str, imp: PairedImp | None) -> dict[str, Any]:
    """A paired IMP as CSV columns, in gradient evaluations and seconds, with the sign test."""
    columns: dict[str, Any] = {}
    for unit in ("evals", "s"):
        interval = None if imp is None else getattr(imp, f"imp_{unit}")
        for key in ("estimate", "low", "high"):
            name = f"{prefix}_imp_{unit}{suffix}{'' if key == 'estimate' else '_' + key}"
            columns[name] = None if interval is None else getattr(interval, key)
    columns[f"{prefix}_sign_p{suffix}"] = None if imp is None else imp.sign_p
    return columns


def setting_record(s: SettingSummary) -> dict[str, Any]:
    """One row of sweep.csv: Table 1's column names (table1.csv) for the paired comparisons,
    and per rule the paired IMP at the highest level every run reached (`*_at_highest`)."""
    table = summary_record(s.summary)
    record: dict[str, Any] = {
        "dataset": s.summary.dataset,
        "setting": s.setting.name,
        "why": s.setting.why,
        "metric": s.summary.metric,
        "target": s.summary.target,
        "pairs": s.summary.pairs_total,
        "runs_sgd": table["runs_sgd"],
        "runs_isgd": table["runs_isgd"],
    }
    for rule in RULES:
        r = s.summary.rules.get(rule)
        imp = None if r is None else r.imp
        record[f"{rule}_reached_sgd"] = None if imp is None else imp.reached_sgd
        record[f"{rule}_reached_isgd"] = None if imp is None else imp.reached_isgd
        for key in ("pairs_both", "only_sgd", "only_isgd", "neither"):
            record[f"{rule}_{key}"] = table[f"{rule}_{key}"]
        record.update(_imp_columns(rule, "", imp))
        record[f"{rule}_logrank_p_evals"] = table[f"{rule}_logrank_p_evals"]
        record[f"{rule}_highest_level_all_reached"] = table[f"{rule}_highest_level_all_reached"]
        record.update(_imp_columns(rule, "_at_highest", s.at_highest.get(rule)))
    for key in ("pairs", "diff_mean", "diff_low", "diff_high", "t_p", "wilcoxon_p"):
        record[f"paired_top_acc_{key}"] = table[f"paired_top_acc_{key}"]
    for key in ("alg2_trigger_rate", "alg2_inner_steps_per_trigger", "extra_evals_fraction"):
        record[key] = table[key]
    return record


# ------------------------------------------------------------------ sweep.md


def _reach(imp: PairedImp) -> str:
    return f"{imp.reached_sgd}/{imp.pairs_total} / {imp.reached_isgd}/{imp.pairs_total}"


def _imp_cells(imp: PairedImp | None) -> str:
    if imp is None:
        return "— | — | —"
    e, t = imp.imp_evals, imp.imp_s
    return (
        f"{imp_text(e.estimate, e.low, e.high)} | {imp_text(t.estimate, t.low, t.high)} "
        f"| {p_text(imp.sign_p)}"
    )


def _seeds_line(summaries: list[SettingSummary], profile: Profile) -> str:
    datasets = list(dict.fromkeys(s.summary.dataset for s in summaries))
    return "; ".join(f"{d}: seeds 1-{len(profile.seeds_of(d))}" for d in datasets)


def markdown(summaries: list[SettingSummary], profile: Profile) -> str:
    """results[/profile]/sweep.md: per setting, Table 1's paired statistics, then in words."""
    out = [
        f"# ISGD sweep: the readings the paper leaves open (profile `{profile.name}`)",
        "",
        "Each setting changes one reading from the paper's; ISGD is paired with SGD of the same "
        f"seed ({_seeds_line(summaries, profile)}). As in Table 1, time to target is a censored "
        "outcome under two rules: **first reach** (the first test at or above the level) and "
        "**stays above** (the paper's: every later test stays at or above it). IMP = 1 − exp(mean "
        "log(ISGD / SGD)) over the pairs where both arms reached the level, with the 95 % t "
        "interval of the log ratios; positive = ISGD sooner, and an interval containing 0 means "
        "these runs cannot tell the arms apart. Sign test: two-sided, over the decided pairs "
        "(reaching when the other arm did not is a win).",
        "",
        "## At the target",
        "",
        "| dataset | setting | what is open | rule | reached SGD / ISGD | pairs both / all "
        "| only SGD / only ISGD | IMP, gradient evals [95 % CI] | IMP, seconds [95 % CI] "
        "| sign p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for rule, r in s.summary.rules.items():
            imp = r.imp
            out.append(
                f"| {s.summary.dataset} ({100 * s.summary.target:g} %) | {s.setting.name} "
                f"| {s.setting.why} | {RULE_NAMES[rule]} | {_reach(imp)} "
                f"| {imp.pairs_both}/{imp.pairs_total} | {imp.only_sgd} / {imp.only_isgd} "
                f"| {_imp_cells(imp)} |"
            )
    out += [
        "",
        "## At the highest level every run reached",
        "",
        "The highest level of the dataset's accuracy ladder that every run of the setting's "
        "pairs (both arms) reached under the rule, so every pair counts in the IMP there.",
        "",
        "| dataset | setting | rule | level | pairs | IMP, gradient evals [95 % CI] "
        "| IMP, seconds [95 % CI] | sign p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for rule, r in s.summary.rules.items():
            imp = s.at_highest.get(rule)
            pairs = "—" if imp is None else f"{imp.pairs_both}/{imp.pairs_total}"
            out.append(
                f"| {s.summary.dataset} | {s.setting.name} | {RULE_NAMES[rule]} "
                f"| {_highest(s, r.highest_all)} | {pairs} | {_imp_cells(imp)} |"
            )
    out += [
        "",
        "## At equal compute, and Alg. 2's activity",
        "",
        "Top accuracy ISGD − SGD over every pair (both arms spend the same gradient "
        "evaluations), in percentage points with the paired t interval; Alg. 2's triggers per "
        "iteration, inner steps per trigger and the share of gradient evaluations it spent.",
        "",
        "| dataset | setting | top accuracy: ISGD − SGD, all pairs [95 % CI] | pairs | t p "
        "| Alg. 2 triggers / iteration | inner steps / trigger | extra evals |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        r = setting_record(s)
        top = s.summary.paired_top
        out.append(
            f"| {s.summary.dataset} | {s.setting.name} | {points_text(top.difference)} "
            f"| {top.pairs} | {p_text(top.t_p)} | {pct(r['alg2_trigger_rate'], 1)} "
            f"| {num(r['alg2_inner_steps_per_trigger'])} "
            f"| {pct(r['extra_evals_fraction'], 1)} |"
        )
    out += ["", "## Reading", ""]
    out += reading(summaries)
    return "\n".join(out) + "\n"


def _highest(s: SettingSummary, level: float | None) -> str:
    """The highest level every run reached, or why there is none."""
    if level is not None:
        return level_text(level)
    if not s.ladder:
        return "no ladder"
    if not s.summary.pairs_total:
        return "no finished pair"
    return f"none (a run stayed below {level_text(min(s.ladder))})"


def _interval_side(imp: PairedImp | None) -> str | None:
    """ "above" / "below" when the IMP interval (evaluations) excludes 0, "contains" when it
    does not, None without an interval."""
    if imp is None or imp.imp_evals.low is None or imp.imp_evals.high is None:
        return None
    if imp.imp_evals.low > 0:
        return "above"
    if imp.imp_evals.high < 0:
        return "below"
    return "contains"


def _setting_reading(s: SettingSummary) -> str:
    """One setting in words: each rule's IMP at the target and at the highest level all reached."""
    if not s.summary.pairs_total:
        sgd, isgd = s.summary.arms["sgd"].runs, s.summary.arms["isgd"].runs
        return (
            f"- **{s.label}**: no finished pair yet ({sgd} SGD and {isgd} ISGD runs finished): "
            "nothing to compare."
        )
    parts = []
    for rule, r in s.summary.rules.items():
        paper = s.summary.paper_imp if rule == "stays" else None
        parts.append(imp_reading(r.imp, f"By {RULE_NAMES[rule]}", paper) + ".")
        high = s.at_highest.get(rule)
        if high is not None and r.highest_all is not None:
            if abs(r.highest_all - s.summary.target) > 1e-9:
                what = f"At {level_text(r.highest_all)}, the highest level every run reached"
                parts.append(imp_reading(high, what, None) + ".")
    if s.ladder and all(r.highest_all is None for r in s.summary.rules.values()):
        parts.append(
            f"No level of the ladder ({level_text(min(s.ladder))} to "
            f"{level_text(max(s.ladder))}) was reached by every run."
        )
    return f"- **{s.label}**: {' '.join(parts)}"


def _across(summaries: list[SettingSummary], rule: str) -> list[str]:
    """One rule across the settings: where the IMP interval lies above 0, below, around it, and
    where there is none (how many pairs both reached)."""
    chosen = [s for s in summaries if rule in s.summary.rules and s.summary.pairs_total]
    sides = {s.label: _interval_side(s.summary.rules[rule].imp) for s in chosen}
    name = RULE_NAMES[rule]
    faster = [k for k, v in sides.items() if v == "above"]
    lines = [
        f"- {name}: ISGD reached the target with fewer gradient evaluations, the 95 % interval "
        f"of the IMP above 0, in {', '.join(faster)}."
        if faster
        else f"- {name}: in no setting does the 95 % interval of the IMP lie above 0: no reading "
        "of the paper reached the target sooner by a margin these runs can tell from noise."
    ]
    slower = [k for k, v in sides.items() if v == "below"]
    if slower:
        lines.append(f"- {name}: ISGD was slower, the interval below 0, in {', '.join(slower)}.")
    unclear = [k for k, v in sides.items() if v == "contains"]
    if unclear:
        lines.append(f"- {name}: the interval contains 0 (cannot tell) in {', '.join(unclear)}.")
    few = [s for s in chosen if sides[s.label] is None]
    if few:
        counts = ", ".join(
            f"{s.label} {s.summary.rules[rule].imp.pairs_both} of {s.summary.pairs_total}"
            for s in few
        )
        lines.append(
            f"- {name}: fewer than 2 pairs reached the target in both arms, so no interval, in "
            f"{len(few)} of {len(chosen)} settings with finished pairs (pairs both reached: "
            f"{counts})."
        )
    return lines


def reading(summaries: list[SettingSummary]) -> list[str]:
    """sweep.md's reading, in words: per setting what each rule's interval says, then across
    settings which (if any) reach the target sooner and what top accuracy shows."""
    lines = [_setting_reading(s) for s in summaries]
    lines.append("")
    for rule in RULES:
        lines += _across(summaries, rule)
    tops = [(s, s.summary.paired_top.difference) for s in summaries]
    better = [s.label for s, d in tops if d.low is not None and d.low > 0]
    worse = [s.label for s, d in tops if d.high is not None and d.high < 0]
    for group, word in ((better, "above"), (worse, "below")):
        if group:
            lines.append(
                f"- Top accuracy: the 95 % interval of ISGD − SGD lies {word} 0: "
                f"{', '.join(group)}."
            )
    with_interval = [s for s, d in tops if d.low is not None]
    diffs = [100 * d.mean for _, d in tops if d.mean is not None]
    if not with_interval and diffs:
        lines.append(
            f"- Top accuracy: fewer than 2 pairs per setting, so no interval; the single "
            f"differences ({min(diffs):+.2f} to {max(diffs):+.2f} points) are observations, not "
            "evidence either way."
        )
    elif with_interval and not better and not worse:
        lines.append(
            "- Top accuracy: no setting's 95 % interval of ISGD − SGD excludes 0 (cannot tell)."
        )
    return lines


# ------------------------------------------------------------------ figures/sweep.png


IMP_AXIS_PERCENT = 100.0  # the IMP panel's half-width at most: IMP <= 100 %, its low end unbounded


def plot(summaries: list[SettingSummary], path: Path) -> None:
    """figures/sweep.png: per setting the IMP in gradient evaluations by first reach with its
    95 % interval (at the target, and at the highest level every run reached), and the paired
    top-accuracy difference; 0 marked on both."""
    plt = pyplot()
    rows = len(summaries)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.55 * rows + 2.8))
    _imp_panel(left, summaries)
    tops = []
    for i, s in enumerate(summaries):
        d = s.summary.paired_top.difference
        if d.mean is None:
            continue
        right.plot([100 * d.mean], [i], "o", color="tab:green")
        tops.append(100 * d.mean)
        if d.low is not None and d.high is not None:
            right.plot([100 * d.low, 100 * d.high], [i, i], color="tab:green")
            tops += [100 * d.low, 100 * d.high]
    right.set_xlabel("top accuracy ISGD − SGD, points, all pairs\n(mean; 95 % CI where 2+ pairs)")
    half = 1.2 * max((abs(v) for v in tops), default=0.0) or 1.0
    right.set_xlim(-half, half)
    for ax in (left, right):
        ax.axvline(0, color="black", lw=1)
        ax.locator_params(axis="x", nbins=5)
        ax.set_ylim(-0.6, rows - 0.4)
        ax.set_yticks(np.arange(rows), [s.label for s in summaries] if ax is left else [""] * rows)
        ax.invert_yaxis()
        ax.grid(alpha=0.3)
    fig.suptitle(
        "ISGD sweep: left, right of 0 = ISGD reaches the level with fewer gradient evaluations; "
        "right, right of 0 = ISGD more accurate at equal compute",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _imp_panel(ax: Any, summaries: list[SettingSummary]) -> None:
    """IMP (%) by first reach with its interval, at the target (orange) and at the highest level
    every run reached (blue, level named); 0 in the middle. An interval reaching past the
    panel's left edge (IMP is at most 100 % but unbounded below) ends in '<' with its value."""
    marks = []  # (row, estimate, low, high, colour, level)
    for i, s in enumerate(summaries):
        first = s.summary.rules.get("first")
        high = s.at_highest.get("first")
        for imp, dy, color, level in (
            (first.imp if first else None, -0.15, "tab:orange", None),
            (high, 0.15, "tab:blue", first.highest_all if first else None),
        ):
            e = None if imp is None else imp.imp_evals
            if (
                e is not None
                and e.estimate is not None
                and e.low is not None
                and e.high is not None
            ):
                marks.append((i + dy, 100 * e.estimate, 100 * e.low, 100 * e.high, color, level))
        if first is None or first.imp.imp_evals.estimate is None:
            text = (
                "no finished pair"
                if not s.summary.pairs_total
                else f"target: {0 if first is None else first.imp.pairs_both} of "
                f"{s.summary.pairs_total} pairs both reached, no interval"
            )
            ax.annotate(
                text,
                (0, i - 0.15),
                xytext=(4, -3),
                textcoords="offset points",
                fontsize=7,
                color="gray",
            )
    ends = [abs(v) for m in marks for v in m[1:4]]
    half = min(IMP_AXIS_PERCENT, 1.2 * max(ends, default=0.0)) or 1.0
    for y, estimate, low, high, color, level in marks:
        ax.plot([max(estimate, -half)], [y], "<" if estimate < -half else "o", color=color)
        ax.plot([max(low, -half), high], [y, y], color=color)
        if low < -half:
            ax.plot([-half], [y], "<", color=color)
            ax.annotate(
                f"{low:.0f} %",
                (-half, y),
                xytext=(8, 2),
                textcoords="offset points",
                fontsize=7,
                color=color,
            )
        if level is not None:
            ax.annotate(
                level_text(level),
                (max(estimate, -half), y),
                xytext=(0, -10),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=color,
            )
    ax.set_xlim(-half, half)
    ax.plot([], [], "o-", color="tab:orange", label="at the target")
    ax.plot([], [], "o-", color="tab:blue", label="at the highest level every run reached")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel(
        "IMP by first reach, gradient evaluations (%)\n1 − exp(mean log(ISGD / SGD)), 95 % CI"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument(
        "--datasets", default="", help="comma-separated (default: the profile's sweep)"
    )
    parser.add_argument("--runs", type=int, default=None, help="pairs (seeds) per setting")
    parser.add_argument("--no-run", action="store_true", help="summarize what is already logged")
    add_runner_arguments(parser)
    args = parser.parse_args(argv)

    def body(display: Display) -> int:
        profile = load_profile(args.profile, None, args.runs)
        chosen = [d for d in args.datasets.split(",") if d] or list(
            profile.sweep.get("datasets", ["mnist"])
        )
        pairs = args.runs or profile.sweep.get("pairs", profile.sweep.get("runs"))
        profile = load_profile(args.profile, chosen, int(pairs) if pairs else None)
        if not args.no_run:
            ensure_data(profile, display.say)
            specs = {
                str(spec.folder): spec
                for name, plan in profile.plans.items()
                for setting in SETTINGS
                for seed in profile.seeds_of(name)
                for spec in setting_specs(profile, plan, setting, seed).values()
            }
            options = runner_options(args, profile)
            with TrainingSession(profile.name, "sweep", display, options) as session:
                session.run(list(specs.values()))
        summaries = [
            summarize_setting(profile, plan, setting)
            for plan in profile.plans.values()
            for setting in SETTINGS
        ]
        if not summaries:
            raise ProfileError(f"profile '{profile.name}': no dataset to sweep")
        out = results_dir(profile.name)
        records = [setting_record(s) for s in summaries]
        write_csv(out / "sweep.csv", list(records[0]), records)
        write_atomic(out / "sweep.md", markdown(summaries, profile))
        plot(summaries, out / "figures" / "sweep.png")
        display.say(f"wrote {out / 'sweep.md'}, sweep.csv, figures/sweep.png")
        display.say(f"wrote {build_readme(profile.name)}")
        return 0

    return guarded("sweep-isgd", body)


if __name__ == "__main__":
    sys.exit(main())
