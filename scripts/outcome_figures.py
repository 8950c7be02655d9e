"""The two figures of the censored time-to-target analysis: the fraction of runs that reached
the target (Kaplan-Meier, per arm) and the paired IMP against the accuracy ladder's level."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.outcomes import UNITS, Outcome, km_reached, logrank_p
from scripts.plotting import pyplot
from scripts.stats import RULES

ARM_COLORS = {"sgd": "tab:blue", "isgd": "tab:orange"}  # as scripts/figures.py
ARM_LABELS = {"sgd": "SGD", "isgd": "ISGD"}
RULE_STYLES = {"first": ("tab:purple", "-"), "stays": ("tab:green", "--")}
RULE_LABELS = {"first": "first reach", "stays": "stays above"}
UNIT_LABELS = {"evals": "gradient evaluations", "seconds": "training time (s, tests excluded)"}
DPI = 100


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write as PNG at the project's DPI (folders made), close; returns the path."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; the rules are {', '.join(sorted(RULES))}")


def _value(o: Outcome, unit: str) -> float:
    return o.evals if unit == "evals" else o.seconds


def _reached_panel(
    ax: Any,
    unit: str,
    arms: dict[str, Sequence[Outcome]],
    target: float,
    labels: tuple[str, str] = ("SGD", "ISGD"),
) -> None:
    """A step curve per arm with '+' at censored runs' budgets, log-rank p as title."""
    if not all(math.isfinite(_value(o, unit)) for runs in arms.values() for o in runs):
        ax.text(0.5, 0.5, f"no {UNIT_LABELS[unit]} in these logs", ha="center", va="center")
        ax.set_axis_off()
        return
    right = max(_value(o, unit) for runs in arms.values() for o in runs)
    for arm, runs in arms.items():
        if not runs:
            continue
        x, y = km_reached(runs, unit)
        xs = np.concatenate([[0.0], x, [right]])
        ys = np.concatenate([[0.0], y, [y[-1] if len(y) else 0.0]])
        n_reached = sum(o.reached for o in runs)
        ax.step(
            xs,
            ys,
            where="post",
            color=ARM_COLORS[arm],
            label=f"{dict(zip(ARM_LABELS, labels, strict=True))[arm]}: {n_reached}/{len(runs)} "
            "reached",
        )
        censored = [_value(o, unit) for o in runs if not o.reached]
        if censored:
            at = np.searchsorted(x, censored, side="right") - 1
            heights = np.where(at >= 0, y[np.maximum(at, 0)], 0.0)
            ax.plot(censored, heights, "+", ms=10, mew=1.5, color=ARM_COLORS[arm])
    p = logrank_p(arms["sgd"], arms["isgd"], unit)
    ax.set_title(f"log-rank p = {p:.3g}" if p is not None else "log-rank p: undefined")
    ax.set_xlabel(UNIT_LABELS[unit])
    ax.set_ylabel(f"fraction of runs at {100 * target:g} %")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    any_censored = any(not o.reached for runs in arms.values() for o in runs)
    ax.legend(
        fontsize=7, title="+ : censored at its budget" if any_censored else None, title_fontsize=7
    )


def plot_reached(
    path: Path,
    dataset: str,
    target: float,
    sgd: Sequence[Outcome],
    isgd: Sequence[Outcome],
    rule: str = "first",
    labels: tuple[str, str] = ("SGD", "ISGD"),
) -> Path:
    """Fraction of runs that reached `target` under `rule` against gradient evaluations and
    against seconds: Kaplan-Meier step curves per arm, censored runs marked, log-rank p.
    `sgd` and `isgd` are the (baseline, compared arm) slots; `labels` names them."""
    plt = pyplot()
    _check_rule(rule)
    if not sgd and not isgd:
        raise ValueError(f"{dataset}: no runs to plot in {path}")
    fig, axes = plt.subplots(1, len(UNITS), figsize=(11, 4))
    for ax, unit in zip(axes, UNITS, strict=True):
        _reached_panel(ax, unit, {"sgd": sgd, "isgd": isgd}, target, labels)
    fig.suptitle(
        f"{dataset}: runs that reached {100 * target:g} % ({RULE_LABELS[rule]} rule)", fontsize=10
    )
    return save_figure(fig, path)


def _as_float(value: Any) -> float:
    return math.nan if value is None or value == "" else float(value)


LADDER_FLOOR = -100.0  # IMP (%) below which the ladder plot cuts an interval: ISGD twice as slow


def plot_ladder(
    path: Path,
    rows: Sequence[dict[str, Any]],
    targets: dict[str, float],
    paper_imp: dict[str, float],
    unit: str = "evals",
    title: str = "ISGD over SGD",
) -> Path:
    """IMP (in `unit`, "evals" or "seconds") against the ladder's level, one panel per dataset,
    one line per rule with its 95 % interval as a band, 0 marked, and the paper's IMP at the
    paper's target (both fractions, as the rows) as a star where given."""
    plt = pyplot()
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; the units are {', '.join(UNITS)}")
    if not rows:
        raise ValueError(f"no ladder rows to plot in {path}")
    key = "imp_evals" if unit == "evals" else "imp_s"
    needed = ("dataset", "rule", "level", key, f"{key}_low", f"{key}_high")
    for index, row in enumerate(rows):
        missing = [k for k in needed if k not in row]
        if missing:
            raise ValueError(f"ladder row {index} lacks {', '.join(missing)}")
        _check_rule(str(row["rule"]))
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        shown = [0.0]  # every plotted value, to set a y range the widest interval cannot flatten
        for rule in RULES:
            mine = sorted(
                (r for r in rows if r["dataset"] == dataset and r["rule"] == rule),
                key=lambda r: float(r["level"]),
            )
            if not mine:
                continue
            level = 100 * np.array([float(r["level"]) for r in mine])
            est, low, high = (
                100 * np.array([_as_float(r[k]) for r in mine])
                for k in (key, f"{key}_low", f"{key}_high")
            )
            color, style = RULE_STYLES[rule]
            ax.plot(level, est, style, marker=".", color=color, label=RULE_LABELS[rule])
            ax.fill_between(level, low, high, color=color, alpha=0.15, lw=0)
            shown += [v for v in np.concatenate([est, low, high]) if np.isfinite(v)]
        ax.axhline(0.0, color="black", lw=1)
        if dataset in targets and dataset in paper_imp:
            ax.plot(
                100 * targets[dataset],
                100 * paper_imp[dataset],
                "*",
                ms=14,
                color="black",
                label=f"paper: {100 * paper_imp[dataset]:g} % at {100 * targets[dataset]:g} %",
            )
            ax.axvline(100 * targets[dataset], ls=":", color="gray", lw=1)
            shown.append(100 * paper_imp[dataset])
        bottom = max(min(shown), LADDER_FLOOR)
        ax.set_ylim(bottom - 5, max(shown) + 5)  # IMP is at most 100 %
        if min(shown) < LADDER_FLOOR:
            ax.text(
                0.99,
                0.01,
                f"intervals below {LADDER_FLOOR:g} % cut off (few pairs at that level)",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=7,
            )
        ax.set_title(dataset)
        ax.set_xlabel("target accuracy level (%)")
        ax.set_ylabel(f"IMP in {UNIT_LABELS[unit].split(' (')[0]} (%), 95 % CI")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Paired improvement of {title} against the target level", fontsize=10)
    return save_figure(fig, path)
