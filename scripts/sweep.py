"""`make sweep-isgd`: the readings of Alg. 1/2 that the paper leaves open, each against SGD.

    python -m scripts.sweep [--profile default] [--datasets mnist] [--runs N]

Each setting changes one thing from the paper's reading (k = 3, the limit from the losses before
the batch, zeta = the current lr, stop = 5, w_{t-1} before the update, the Table 1 batch) and
runs ISGD with the same seeds as SGD; the paired difference ISGD - SGD in time and gradient
evaluations to target, with its interval, says which readings (if any) give the paper's gains.
Runs: results/runs/<profile>/sweep/ (the paper's reading and SGD are the Table 1 runs).
Output: results[/<profile>]/sweep.md, sweep.csv and figures/sweep.png.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from engine.proto_io import read_solver_param
from scripts.profiles import ROOT, Plan, Profile, load_profile, results_dir
from scripts.reproduce import add_runner_arguments, ensure_data, runner_options, table1_spec
from scripts.results_readme import build as build_readme
from scripts.runner import Display, guarded, run_all
from scripts.runs import RunSpec, finished_log
from scripts.stats import PairedTest, paired_test, time_to_target
from scripts.table1 import test_series, write_csv
from solvers.run_log import RunLog

plt.switch_backend("Agg")


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
    common = dict(
        profile=profile.name,
        group="sweep",
        plan=plan,
        seed=seed,
        ranks=profile.ranks,
        batch_size=batch,
        budget_grad_evals=budget,
    )
    specs = {"isgd": RunSpec(arm="isgd", tag=setting.name, isgd=isgd, **common)}
    if setting.batch_factor != 1:
        specs["sgd"] = RunSpec(arm="sgd", tag=setting.name, **common)
    else:
        specs["sgd"] = table1_spec(profile, plan, "sgd", seed, {})
    return specs


def _base_lr(plan: Plan) -> float:
    return float(read_solver_param(str(ROOT / plan.dataset.solver_file("isgd"))).base_lr)


def _log(spec: RunSpec) -> RunLog | None:
    return finished_log(spec)


def summarize_setting(profile: Profile, plan: Plan, setting: Setting) -> dict[str, Any]:
    """One row of sweep.csv: reach, paired differences with intervals, Alg. 2's activity."""
    ds = plan.dataset
    sgd_t, isgd_t, sgd_e, isgd_e = [], [], [], []
    sgd_top, isgd_top = [], []
    reached = {"sgd": 0, "isgd": 0}
    runs = {"sgd": 0, "isgd": 0}
    triggers = inner = iterations = evals = 0
    for seed in profile.seeds:
        specs = setting_specs(profile, plan, setting, seed)
        logs = {arm: _log(spec) for arm, spec in specs.items()}
        hits, tops = {}, {}
        for arm, log in logs.items():
            if log is None:
                continue
            runs[arm] += 1
            series = test_series(log, ds.metric)
            hits[arm] = time_to_target(series, ds.target)
            tops[arm] = max((value for _, _, value in series), default=None)
            reached[arm] += hits[arm] is not None
            if arm == "isgd":
                its = log.of("iter")
                triggers += sum(1 for e in its if e.get("under_trained"))
                inner += sum(int(e.get("subproblem_iters") or 0) for e in its)
                iterations += len(its)
                evals += int(its[-1].get("grad_evals", 0)) if its else 0
        if tops.get("sgd") is not None and tops.get("isgd") is not None:
            sgd_top.append(tops["sgd"])
            isgd_top.append(tops["isgd"])
        if hits.get("sgd") is not None and hits.get("isgd") is not None:
            sgd_t.append(hits["sgd"].train_s)
            isgd_t.append(hits["isgd"].train_s)
            sgd_e.append(hits["sgd"].grad_evals)
            isgd_e.append(hits["isgd"].grad_evals)
    time_test, eval_test = paired_test(sgd_t, isgd_t), paired_test(sgd_e, isgd_e)
    top_test = paired_test(sgd_top, isgd_top)
    return {
        "dataset": ds.name,
        "setting": setting.name,
        "why": setting.why,
        "runs_sgd": runs["sgd"],
        "runs_isgd": runs["isgd"],
        "reached_sgd": reached["sgd"],
        "reached_isgd": reached["isgd"],
        "pairs": time_test.pairs,
        **_paired_columns("time", "time_diff_s", time_test, sgd_t),
        **_paired_columns("evals", "evals_diff", eval_test, sgd_e),
        "top_pairs": top_test.pairs,
        **_paired_columns("top_acc", "top_acc_diff", top_test),
        "trigger_rate": triggers / iterations if iterations else None,
        "inner_steps_per_trigger": inner / triggers if triggers else None,
        "extra_evals_fraction": (evals - iterations) / evals if evals else None,
    }


def _paired_columns(
    name: str, mean_key: str, test: PairedTest, sgd: list[float] | None = None
) -> dict[str, float | None]:
    """A paired difference ISGD − SGD as sweep.csv columns: mean, interval, (improvement
    −mean / SGD's mean when `sgd` is given), t-test p."""
    d = test.difference
    columns = {mean_key: d.mean, f"{name}_diff_low": d.low, f"{name}_diff_high": d.high}
    if sgd is not None:
        base = float(np.mean(sgd)) if sgd else None
        columns[f"{name}_improvement"] = None if d.mean is None or not base else -d.mean / base
    columns[f"{name}_t_p"] = test.t_p
    return columns


def _fmt(value: Any, pct: bool = False, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.1f} %" if pct else f"{value:.{digits}g}"


def markdown(rows: list[dict[str, Any]], profile: Profile) -> str:
    out = [
        f"# ISGD sweep: the readings the paper leaves open (profile `{profile.name}`)",
        "",
        f"Each setting changes one reading from the paper's; {profile.runs} seed(s), ISGD paired "
        "with SGD of the same seed. Improvement = −(ISGD − SGD) / SGD mean over the pairs where "
        "both reached the target; the interval is the 95 % t interval of the paired difference.",
        "",
        "| dataset | setting | what is open | reached SGD / ISGD | pairs | time to target: ISGD − "
        "SGD (s) [95 % CI] | improvement | t p | gradient evals: ISGD − SGD [95 % CI] | "
        "improvement | top accuracy: ISGD − SGD, all pairs (points) [95 % CI] | t p | Alg. 2 "
        "triggers / iter | inner steps / trigger | extra evals |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci_t = f"{_fmt(r['time_diff_s'])} [{_fmt(r['time_diff_low'])}, {_fmt(r['time_diff_high'])}]"
        ci_e = (
            f"{_fmt(r['evals_diff'])} [{_fmt(r['evals_diff_low'])}, {_fmt(r['evals_diff_high'])}]"
        )
        out.append(
            f"| {r['dataset']} | {r['setting']} | {r['why']} | {r['reached_sgd']}/{r['runs_sgd']} "
            f"/ {r['reached_isgd']}/{r['runs_isgd']} | {r['pairs']} | {ci_t} "
            f"| {_fmt(r['time_improvement'], True)} | {_fmt(r['time_t_p'])} | {ci_e} "
            f"| {_fmt(r['evals_improvement'], True)} | {_points(r)} | {_fmt(r['top_acc_t_p'])} "
            f"| {_fmt(r['trigger_rate'], True)} "
            f"| {_fmt(r['inner_steps_per_trigger'])} | {_fmt(r['extra_evals_fraction'], True)} |"
        )
    significant = [
        r
        for r in rows
        if r["evals_diff_high"] is not None and r["evals_diff_high"] < 0 and r["pairs"] >= 2
    ]
    out += ["", "## Reading", ""]
    if significant:
        names = ", ".join(f"{r['dataset']}/{r['setting']}" for r in significant)
        out.append(
            "- Settings whose 95 % interval of the gradient-evaluation difference lies below 0: "
            f"{names}."
        )
    else:
        out.append(
            "- No setting's 95 % interval of the gradient-evaluation difference to target lies "
            "below 0: in these runs no reading of the paper reaches the target sooner by a margin "
            "that the intervals can tell from noise."
        )
    unreached = [r for r in rows if r["pairs"] < 2]
    if unreached:
        out.append(
            f"- {len(unreached)} of {len(rows)} settings have fewer than 2 pairs that both reached "
            "the target, so no interval of the time to target: read the top-accuracy column "
            "there (the same compute for both arms)."
        )
    better = [r for r in rows if r["top_acc_diff_low"] is not None and r["top_acc_diff_low"] > 0]
    worse = [r for r in rows if r["top_acc_diff_high"] is not None and r["top_acc_diff_high"] < 0]
    for group, word in ((better, "above"), (worse, "below")):
        if group:
            names = ", ".join(f"{r['dataset']}/{r['setting']}" for r in group)
            out.append(f"- Top accuracy: the 95 % interval of ISGD − SGD lies {word} 0: {names}.")
    with_interval = [r for r in rows if r["top_acc_diff_low"] is not None]
    diffs = [100 * r["top_acc_diff"] for r in rows if r["top_acc_diff"] is not None]
    if not with_interval and diffs:
        out.append(
            f"- Top accuracy: fewer than 2 pairs per setting, so no interval; the single "
            f"differences ({min(diffs):+.2f} to {max(diffs):+.2f} points) are observations, not "
            "evidence either way."
        )
    elif not better and not worse:
        out.append("- Top accuracy: no setting's 95 % interval of ISGD − SGD excludes 0.")
    return "\n".join(out) + "\n"


def _points(r: dict[str, Any]) -> str:
    """The paired top-accuracy difference in percentage points, with its interval."""
    if r["top_acc_diff"] is None:
        return "—"

    def pts(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:+.2f}"

    return f"{pts(r['top_acc_diff'])} [{pts(r['top_acc_diff_low'])}, {pts(r['top_acc_diff_high'])}]"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.5 * len(rows) + 2.5))
    labels = [f"{r['dataset']}/{r['setting']}" for r in rows]
    y = np.arange(len(rows))
    panels = (
        ("time_diff_s", "time_diff", 1.0, "training seconds to target"),
        ("evals_diff", "evals_diff", 1.0, "gradient evaluations to target"),
        ("top_acc_diff", "top_acc_diff", 100.0, "top accuracy, points (all pairs)"),
    )
    for ax, (mean_key, key, scale, title) in zip(axes, panels, strict=True):
        drawn = 0
        for i, r in enumerate(rows):
            m, lo, hi = r[mean_key], r[f"{key}_low"], r[f"{key}_high"]
            if m is None:
                continue
            drawn += 1
            ax.plot([scale * m], [i], "o", color="tab:orange")
            if lo is not None:
                ax.plot([scale * lo, scale * hi], [i, i], color="tab:orange")
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "no pair reached the target\nin both arms",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
        ax.axvline(0, color="black", lw=1)
        if drawn:  # 0 in the middle, so the side a setting falls on reads at a glance
            ends = [
                abs(v)
                for r in rows
                for k in (mean_key, f"{key}_low", f"{key}_high")
                if (v := r[k]) is not None
            ]
            half = 1.2 * scale * max(ends) or 1.0
            ax.set_xlim(-half, half)
        ax.locator_params(axis="x", nbins=5)
        ax.set_ylim(-0.5, len(rows) - 0.5)
        ax.set_yticks(y, labels if ax is axes[0] else [""] * len(rows))
        ax.set_xlabel(f"ISGD − SGD, {title}\n(mean; 95 % CI where 2+ pairs)")
        ax.grid(alpha=0.3)
    fig.suptitle(
        "ISGD sweep: left of 0 = ISGD reaches the target sooner; right panel, right of 0 = ISGD "
        "more accurate at equal compute",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument(
        "--datasets", default="", help="comma-separated (default: the profile's sweep)"
    )
    parser.add_argument("--runs", type=int, default=None, help="seeds per setting")
    parser.add_argument("--no-run", action="store_true", help="summarize what is already logged")
    add_runner_arguments(parser)
    args = parser.parse_args(argv)

    def body(display: Display) -> int:
        profile = load_profile(args.profile, None, args.runs)
        chosen = [d for d in args.datasets.split(",") if d] or list(
            profile.sweep.get("datasets", ["mnist"])
        )
        runs = args.runs or profile.sweep.get("runs")
        profile = load_profile(args.profile, chosen, int(runs) if runs else None)
        if not args.no_run:
            ensure_data(profile, display.say)
            specs = {
                str(spec.folder): spec
                for plan in profile.plans.values()
                for setting in SETTINGS
                for seed in profile.seeds
                for spec in setting_specs(profile, plan, setting, seed).values()
            }
            run_all(list(specs.values()), display, **runner_options(args, profile))
        rows = [
            summarize_setting(profile, plan, setting)
            for plan in profile.plans.values()
            for setting in SETTINGS
        ]
        out = results_dir(profile.name)
        write_csv(out / "sweep.csv", list(rows[0]), rows)
        (out / "sweep.md").write_text(markdown(rows, profile), encoding="utf-8")
        plot(rows, out / "figures" / "sweep.png")
        display.say(f"wrote {out / 'sweep.md'}, sweep.csv, figures/sweep.png")
        display.say(f"wrote {build_readme(profile.name)}")
        return 0

    return guarded("sweep-isgd", body)


if __name__ == "__main__":
    sys.exit(main())
