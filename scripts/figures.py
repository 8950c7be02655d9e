"""`make figures`: the paper's figures 1, 2, 3, 5, 6, 7, 8 and 9 from logged runs.

    python -m scripts.figures [--profile default] [--only 1,6] [--no-run]

Figures 2, 3 and 7 read the Table 1 runs (`make reproduce-table1` first); figures 1, 5, 6, 8 and
9 run what they need first (budgets in scripts/profiles.toml, resumable). Each figure is written
to results[/<profile>]/figures/figN_<name>.png, with a line of numbers printed and kept in
figures.json for results/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scripts import figure_runs
from scripts.outcome_figures import save_figure
from scripts.plotting import pyplot
from scripts.profiles import BUILTIN_ARMS, Profile, ProfileError, load_profile, results_dir
from scripts.results_readme import build as build_readme
from scripts.run_rows import test_series
from scripts.runner import (
    Display,
    TrainingSession,
    add_runner_arguments,
    ensure_data,
    guarded,
    runner_options,
)
from scripts.runs import RunSpec, finished_log, table1_spec
from scripts.stats import time_to_target
from solvers.provenance import git_commit
from solvers.run_log import RunLog

COLORS = {
    "sgd": "tab:blue",
    "isgd": "tab:orange",
    "nesterov": "tab:green",
    "isgd_nesterov": "tab:red",
}
LABELS = {name: arm.title for name, arm in BUILTIN_ARMS.items()}  # "SGD", "ISGD", "Nesterov", ...


class MissingRuns(RuntimeError):
    """A figure's runs are not there and are not this command's to make; names the command."""


# ------------------------------------------------------------------ reading logs


def iter_array(log: RunLog, key: str) -> np.ndarray:
    """One field of every iteration event, as floats (NaN where missing)."""
    return np.array(
        [np.nan if e.get(key) is None else float(e[key]) for e in log.of("iter")], np.float64
    )


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (fewer at the start)."""
    if len(values) == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def per_epoch(losses: np.ndarray, batches: int) -> list[np.ndarray]:
    """Batch losses grouped by epoch (complete epochs only)."""
    epochs = len(losses) // batches
    return [losses[e * batches : (e + 1) * batches] for e in range(epochs)]


def _logs(specs: list[RunSpec]) -> list[tuple[RunSpec, RunLog]]:
    out = []
    for spec in specs:
        log = finished_log(spec)
        if log is not None:
            out.append((spec, log))
    return out


def _table1_logs(profile: Profile, dataset: str) -> list[tuple[RunSpec, RunLog]]:
    plan = profile.plans.get(dataset)
    if plan is None:
        return []
    specs = [
        table1_spec(profile, plan, arm, s, {})
        for s in profile.seeds_of(dataset)
        for arm in ("sgd", "isgd")
    ]
    return _logs(specs)


def _need_table1(profile: Profile, datasets: list[str]) -> dict[str, list[tuple[RunSpec, RunLog]]]:
    found = {d: _table1_logs(profile, d) for d in datasets if d in profile.plans}
    found = {d: v for d, v in found.items() if v}
    if not found:
        raise MissingRuns(
            f"no finished Table 1 runs of profile '{profile.name}' yet: run `make "
            f"reproduce-table1 PROFILE={profile.name}` first"
        )
    return found


def _batches_per_epoch(spec: RunSpec) -> int:
    return max(1, math.ceil(spec.plan.dataset.train_records / spec.batch))


# ------------------------------------------------------------------ the figures


def fig1(profile: Profile, out: Path) -> str:
    """Fig. 1: loss of each of the 10 controlled batches over epochs (single-class, i.i.d.)."""
    plt = pyplot()
    runs = _logs(figure_runs.fig1_specs(profile))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    spreads = {}
    for ax, (spec, log) in zip(axes, runs, strict=False):
        losses = iter_array(log, "loss")
        for b in range(10):
            series = losses[b::10]
            ax.plot(
                np.arange(len(series)), series, lw=1.0, color=plt.cm.tab10(b), label=f"batch {b}"
            )
        last = losses[-10:] if len(losses) >= 10 else losses
        spreads[spec.tag] = (float(np.min(last)), float(np.max(last)))
        kind = "single-class" if spec.tag == "single_class" else "i.i.d."
        ax.set_title(f"{'a' if spec.tag == 'single_class' else 'b'}: 10 {kind} batches of 1000")
        ax.set_xlabel("epoch (10 iterations)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("batch loss (cross entropy)")
    axes[1].legend(fontsize=7, ncol=2, loc="upper right")
    fig.suptitle("Fig. 1: CIFAR-10 quick, SGD, loss of each batch (section 3.3)", fontsize=10)
    save_figure(fig, out / "fig1_batch_losses.png")
    parts = [
        f"{k}: last-epoch batch losses {lo:.3g} to {hi:.3g}" for k, (lo, hi) in spreads.items()
    ]
    return "; ".join(parts)


def fig2(profile: Profile, out: Path) -> str:
    """Fig. 2: the distribution of batch losses in each epoch (SGD, CIFAR-10)."""
    plt = pyplot()
    runs = _need_table1(profile, ["cifar10"])["cifar10"]
    spec, log = next((s, lg) for s, lg in runs if s.arm == "sgd")
    n = _batches_per_epoch(spec)
    epochs = per_epoch(iter_array(log, "loss"), n)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    rng = np.random.default_rng(0)
    for e, losses in enumerate(epochs):
        ax.scatter(
            e + 1 + rng.uniform(-0.3, 0.3, len(losses)), losses, s=2, color="tab:blue", alpha=0.3
        )
    means = [float(np.mean(x)) for x in epochs]
    ax.plot(np.arange(1, len(epochs) + 1), means, color="black", lw=1.5, label="epoch mean")
    ax.set_xlabel(f"epoch ({n} batches of {spec.batch})")
    ax.set_ylabel("batch loss")
    ax.set_title(f"Fig. 2: batch losses by epoch, SGD on CIFAR-10 quick (seed {spec.seed})")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, out / "fig2_loss_distribution.png")
    stds = [float(np.std(x)) for x in epochs]
    return (
        f"{len(epochs)} epochs; epoch mean loss {means[0]:.3g} -> {means[-1]:.3g}, within-epoch "
        f"std {stds[0]:.3g} -> {stds[-1]:.3g}"
        if epochs
        else "no complete epoch"
    )


def fig3(profile: Profile, out: Path) -> str:
    """Fig. 3: batch loss, running mean and upper control limit; Alg. 2's batches marked."""
    plt = pyplot()
    found = _need_table1(profile, ["mnist", "cifar10", "imagenet"])
    panels = [
        (d, next((s, lg) for s, lg in v if s.arm == "isgd"))
        for d, v in found.items()
        if any(s.arm == "isgd" for s, _ in v)
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    notes = []
    for ax, (dataset, (spec, log)) in zip(axes[:, 0], panels, strict=True):
        loss, mean, limit = (iter_array(log, k) for k in ("loss", "mean", "limit"))
        it = np.arange(len(loss))
        hit = np.array([bool(e.get("under_trained")) for e in log.of("iter")])
        n = _batches_per_epoch(spec)
        ax.plot(it, loss, lw=0.5, color="tab:blue", label="batch loss")
        valid = it >= n  # the limit means something once the queue holds an epoch
        ax.plot(it[valid], mean[valid], lw=1.2, color="gold", label="running mean (last epoch)")
        ax.plot(it[valid], limit[valid], lw=1.2, color="tab:green", label="upper control limit")
        ax.scatter(
            it[hit], loss[hit], s=14, color="red", zorder=3, label="Alg. 2 ran (loss > limit)"
        )
        ax.set_title(
            f"{dataset}: ISGD seed {spec.seed}, {int(hit.sum())} triggers in {len(it)} iterations"
        )
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
        notes.append(f"{dataset}: {int(hit.sum())} Alg. 2 triggers in {len(it)} iterations")
    fig.suptitle("Fig. 3: the upper control limit supervising training (section 4.1)", fontsize=10)
    save_figure(fig, out / "fig3_control_limit.png")
    return "; ".join(notes)


def eq24_time(batch: np.ndarray, c1: float, c2: float, psi: float) -> np.ndarray:
    """Eq. 24 solved for t at a fixed loss psi: psi t = sqrt(t) a + b with a, b of the system."""
    a = np.sqrt(1.0 / c1 + c2 / batch)
    b = batch / c1 + c2
    x = (a + np.sqrt(a * a + 4.0 * psi * b)) / (2.0 * psi)
    return x * x


def c2_for_optimum(c1: float, optimum: float, psi: float) -> float:
    """The C2 whose Eq. 24 curve has its minimum at batch `optimum` (bisection on log C2)."""
    grid = np.linspace(10, 4 * optimum, 4000)
    lo, hi = -9.0, 3.0
    for _ in range(80):
        mid = (lo + hi) / 2
        best = grid[np.argmin(eq24_time(grid, c1, 10**mid, psi))]
        lo, hi = (mid, hi) if best < optimum else (lo, mid)
    return 10 ** ((lo + hi) / 2)


def fit_eq21(points: list[tuple[int, float, float]]) -> tuple[float, float, float]:
    """C1 (images/s) and C2 (s) of t_iter = nb / C1 + C2 from (nb, t_comp, t_comm), and the
    relative RMS error of the fitted t_iter."""
    nb = np.array([p[0] for p in points], np.float64)
    comp = np.array([p[1] for p in points], np.float64)
    comm = np.array([p[2] for p in points], np.float64)
    c1 = float(np.dot(nb, nb) / np.dot(nb, comp))  # least squares through the origin
    c2 = float(np.mean(comm))
    measured = comp + comm
    error = float(np.sqrt(np.mean(((nb / c1 + c2) - measured) ** 2 / measured**2)))
    return c1, c2, error


def fig5(profile: Profile, out: Path) -> str:
    """Fig. 5: Eq. 24's predicted training time against batch size, C1 and C2 fitted here."""
    plt = pyplot()
    by_ranks: dict[int, list[tuple[int, float, float]]] = {}
    for spec, log in _logs(figure_runs.fig5_specs(profile)):
        events = log.of("iter")[3:] or log.of("iter")  # the first iterations warm caches
        comp = float(np.median([e.get("t_comp") or 0.0 for e in events]))
        comm = float(np.median([e.get("t_comm") or 0.0 for e in events]))
        by_ranks.setdefault(spec.ranks, []).append((spec.batch, comp, comm))
    psi = 0.05
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    grid = np.geomspace(1, 3000, 600)

    def best(t: np.ndarray) -> str:
        i = int(np.argmin(t))
        return "the smallest (C2 = 0: no fixed cost)" if i == 0 else f"{grid[i]:.0f}"

    lines = []
    for ranks, points in sorted(by_ranks.items()):
        points.sort()
        c1, c2, error = fit_eq21(points)
        nb = np.array([p[0] for p in points])
        left.scatter(nb, [p[1] + p[2] for p in points], label=f"measured, {ranks} rank(s)")
        left.plot(
            grid, grid / c1 + c2, lw=1, label=f"fit: C1 = {c1:.0f} img/s, C2 = {1e3 * c2:.2f} ms"
        )
        t = eq24_time(grid, c1, max(c2, 1e-6), psi)
        right.plot(
            grid,
            t / t.min(),
            label=f"this machine, {ranks} rank(s): best batch {best(t)}",
        )
        lines.append(
            f"{ranks} rank(s): C1 = {c1:.0f} images/s, C2 = {1e3 * c2:.3g} ms, fit error "
            f"{100 * error:.1f} % (relative RMS of t_iter), Eq. 24's best batch {best(t)}"
        )
    for name, c1, optimum, style in (
        ("paper system 1", 2000.0, 500, "--"),
        ("paper system 2", 4000.0, 1000, ":"),
    ):
        c2 = c2_for_optimum(c1, optimum, psi)
        t = eq24_time(grid, c1, c2, psi)
        right.plot(
            grid,
            t / t.min(),
            style,
            color="gray",
            label=f"{name} (reconstructed): best batch {best(t)}",
        )
    left.set_xlabel("batch size n_b (LeNet)")
    left.set_ylabel("t_iter = t_comp + t_comm (s)")
    left.set_title("Eq. 21 fitted to measured iterations")
    left.legend(fontsize=7)
    right.set_xlabel("batch size n_b")
    right.set_ylabel("predicted time to loss ψ, / its minimum")
    right.set_title(f"Eq. 24 at ψ = {psi}")
    right.set_ylim(0.9, 4)
    right.set_xscale("log")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(
        "Fig. 5: training time predicted by Eq. 24 (the paper gives only its systems' optima, "
        "500 and 1000; their C1 is assumed, C2 solved)",
        fontsize=9,
    )
    save_figure(fig, out / "fig5_batch_size_model.png")
    text = "; ".join(lines)
    return text


def _epoch_stats(log: RunLog, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    epochs = per_epoch(iter_array(log, "loss"), n)
    return epochs, np.array([np.std(x) for x in epochs]), np.array([np.mean(x) for x in epochs])


def fig6(profile: Profile, out: Path) -> str:
    """Fig. 6: batch 2500 on CIFAR-10: loss distributions, their std and mean, accuracy."""
    plt = pyplot()
    runs = {spec.arm: (spec, log) for spec, log in _logs(figure_runs.fig6_specs(profile))}
    if set(runs) != {"sgd", "isgd"}:
        raise MissingRuns("Fig. 6's runs did not finish")
    fig = plt.figure(figsize=(12, 6.5))
    grid = fig.add_gridspec(2, 6)
    ax_a, ax_b = fig.add_subplot(grid[0, :3]), fig.add_subplot(grid[0, 3:])
    ax_c, ax_d, ax_e = (fig.add_subplot(grid[1, 2 * i : 2 * i + 2]) for i in range(3))
    summary = {}
    for arm, ax, letter in (("sgd", ax_a, "a"), ("isgd", ax_b, "b")):
        spec, log = runs[arm]
        n = _batches_per_epoch(spec)
        epochs, stds, means = _epoch_stats(log, n)
        for e, losses in enumerate(epochs):
            ax.scatter(np.full(len(losses), e + 1), losses, s=4, color=COLORS[arm], alpha=0.5)
        ax.set_title(f"{letter}: {LABELS[arm]}, the {n} batch losses of each epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("batch loss")
        ax_c.plot(np.arange(1, len(stds) + 1), stds, color=COLORS[arm], label=LABELS[arm])
        ax_d.plot(np.arange(1, len(means) + 1), means, color=COLORS[arm], label=LABELS[arm])
        tests = test_series(log, spec.plan.dataset.metric)
        ax_e.plot(
            [t[1] for t in tests],
            [100 * t[2] for t in tests],
            "o-",
            ms=3,
            color=COLORS[arm],
            label=LABELS[arm],
        )
        summary[arm] = (stds, means, tests)
    ax_c.set_title("c: std of batch losses per epoch")
    ax_d.set_title("d: average loss per epoch")
    ax_e.set_title("e: validation accuracy")
    ax_c.set_xlabel("epoch")
    ax_d.set_xlabel("epoch")
    ax_e.set_xlabel("gradient evaluations")  # seconds vary with load, even between identical runs
    ax_e.set_ylabel("accuracy (%)")
    for ax in (ax_a, ax_b, ax_c, ax_d, ax_e):
        ax.grid(alpha=0.3)
    for ax in (ax_c, ax_d, ax_e):
        ax.legend(fontsize=7)
    fig.suptitle(
        "Fig. 6: CIFAR-10 quick at batch 2500, 20 batches per epoch (section 5.1)", fontsize=10
    )
    save_figure(fig, out / "fig6_batch2500.png")
    (s_std, s_mean, s_tests), (i_std, i_mean, i_tests) = summary["sgd"], summary["isgd"]
    k = min(len(s_std), len(i_std))
    lower_std = int(np.sum(i_std[:k] < s_std[:k]))
    lower_mean = int(np.sum(i_mean[:k] < s_mean[:k]))
    acc = (
        f"final accuracy SGD {100 * s_tests[-1][2]:.2f} %, ISGD {100 * i_tests[-1][2]:.2f} %"
        if s_tests and i_tests
        else ""
    )
    isgd_iters = runs["isgd"][1].of("iter")
    triggers = sum(1 for e in isgd_iters if e.get("under_trained"))
    alg2 = f"Alg. 2 ran on {triggers} of {len(isgd_iters)} ISGD iterations"
    if triggers == 0:
        return f"{alg2}, so the ISGD run is the SGD run ({k} epoch{'s' if k != 1 else ''}); {acc}"
    return (
        f"{alg2}; ISGD's per-epoch loss std below SGD's in {lower_std} of {k} epochs, its mean "
        f"loss in {lower_mean} of {k}; {acc}"
    )


def _curves(ax_acc: Any, ax_loss: Any, runs: list[tuple[RunSpec, RunLog]], target: float) -> None:
    for spec, log in runs:
        tests = test_series(log, spec.plan.dataset.metric)
        label = LABELS[spec.arm] if spec.seed == 1 else None
        ax_acc.plot(
            [t[0] for t in tests],
            [100 * t[2] for t in tests],
            lw=0.9,
            color=COLORS[spec.arm],
            label=label,
            alpha=0.8,
        )
        train_s, loss = iter_array(log, "train_s"), iter_array(log, "loss")
        window = max(1, _batches_per_epoch(spec) // 10)
        ax_loss.plot(
            train_s,
            rolling_mean(loss, window),
            lw=0.9,
            color=COLORS[spec.arm],
            label=label,
            alpha=0.8,
        )
    ax_acc.axhline(100 * target, ls="--", color="black", lw=1, label=f"target {100 * target:g} %")
    ax_acc.set_ylim(100 * target - 10, min(100, 100 * target + 5))
    ax_acc.set_ylabel("test accuracy (%)")
    ax_loss.set_ylabel("training loss (rolling mean)")
    ax_loss.set_yscale("log")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("training time (s, tests excluded)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


def fig7(profile: Profile, out: Path) -> str:
    """Fig. 7: validation accuracy and training loss against training time, SGD vs ISGD."""
    plt = pyplot()
    found = _need_table1(profile, list(profile.plans))
    fig, axes = plt.subplots(2, len(found), figsize=(5.5 * len(found), 7), squeeze=False)
    notes = []
    for col, (dataset, runs) in enumerate(found.items()):
        target = runs[0][0].plan.dataset.target
        _curves(axes[0, col], axes[1, col], runs, target)
        axes[0, col].set_title(f"{dataset}: {len(runs)} runs (all seeds)")
        for arm in ("sgd", "isgd"):
            times = [
                time_to_target(test_series(lg, s.plan.dataset.metric), target)
                for s, lg in runs
                if s.arm == arm
            ]
            got = [r.train_s for r in times if r is not None]
            mean = f"{np.mean(got):.0f} s" if got else "—"
            pace = [
                1000 * float(iters[-1]["train_s"]) / int(iters[-1]["grad_evals"])
                for s, lg in runs
                if s.arm == arm and (iters := lg.of("iter")) and iters[-1].get("grad_evals")
            ]
            clock = (
                f", {min(pace):.0f}-{max(pace):.0f} s per 1000 gradient evaluations" if pace else ""
            )
            notes.append(
                f"{dataset} {arm}: reached {len(got)}/{len(times)}, mean time {mean}{clock}"
            )
    fig.suptitle(
        "Fig. 7: SGD vs ISGD, accuracy and training loss against training time", fontsize=10
    )
    save_figure(fig, out / "fig7_accuracy_loss_vs_time.png")
    return "; ".join(notes)


def fig8(profile: Profile, out: Path) -> str:
    """Fig. 8: time to target against batch size, SGD and ISGD (seed 1)."""
    plt = pyplot()
    specs = figure_runs.fig8_specs(profile)
    datasets = sorted({s.dataset for s in specs}, key=list(profile.plans).index)
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 7), squeeze=False)
    notes = []
    for ax, ax_top, dataset in zip(axes[0], axes[1], datasets, strict=True):
        plan = profile.plans[dataset]
        runs = _logs([s for s in specs if s.dataset == dataset])
        runs += [(s, lg) for s, lg in _table1_logs(profile, dataset) if s.seed == 1]
        ceiling = 0.0
        points: dict[str, list[tuple[int, float | None]]] = {"sgd": [], "isgd": []}
        tops: dict[str, list[tuple[int, float]]] = {"sgd": [], "isgd": []}
        for spec, log in runs:
            series = test_series(log, plan.dataset.metric)
            reached = time_to_target(series, plan.dataset.target)
            points[spec.arm].append((spec.batch, None if reached is None else reached.train_s))
            if series:
                tops[spec.arm].append((spec.batch, 100 * max(v for _, _, v in series)))
            ceiling = max(ceiling, float(iter_array(log, "train_s")[-1]))
        for arm, top in tops.items():
            top.sort()
            ax_top.plot(
                [b for b, _ in top], [a for _, a in top], "o-", color=COLORS[arm], label=LABELS[arm]
            )
        ax_top.axhline(100 * plan.dataset.target, color="gray", ls="--", lw=1, label="target")
        ax_top.set_xlabel("batch size")
        ax_top.set_ylabel(f"top {plan.dataset.metric} (%)")
        ax_top.set_title(f"{dataset}: top accuracy at the same epochs")
        ax_top.grid(alpha=0.3)
        ax_top.legend(fontsize=7)
        for arm, values in points.items():
            values.sort()
            got = [(b, t) for b, t in values if t is not None]
            ax.plot(
                [b for b, _ in got], [t for _, t in got], "o-", color=COLORS[arm], label=LABELS[arm]
            )
            missed = [b for b, t in values if t is None]
            if missed:
                ax.scatter(
                    missed,
                    [ceiling] * len(missed),
                    marker="x",
                    color=COLORS[arm],
                    label=f"{LABELS[arm]}: not reached (drawn at the longest run's length)",
                )
            top_of = dict(tops[arm])
            notes.append(
                f"{dataset} {arm}: "
                + ", ".join(
                    f"b{b} {'—' if t is None else f'{t:.0f} s'}"
                    + (f" (top {top_of[b]:.2f} %)" if b in top_of else "")
                    for b, t in values
                )
            )
        batches = sorted({spec.batch for spec, _ in runs})
        for axis in (ax, ax_top):
            axis.set_xscale("log")
            axis.set_xticks(batches, [str(b) for b in batches])
            axis.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"time to {100 * plan.dataset.target:g} % (s)")
        ax.set_title(f"{dataset}: same epochs per run, seed 1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fig. 8: the effect of batch size on time to target", fontsize=10)
    save_figure(fig, out / "fig8_batch_size.png")
    return "; ".join(notes)


def fig9(profile: Profile, out: Path) -> str:
    """Fig. 9: Nesterov against ISGD on Nesterov, accuracy and loss against training time."""
    plt = pyplot()
    runs = _logs(figure_runs.fig9_specs(profile))
    datasets = sorted({s.dataset for s, _ in runs}, key=list(profile.plans).index)
    if not datasets:
        raise MissingRuns("Fig. 9's runs did not finish")
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 7), squeeze=False)
    notes = []
    for col, dataset in enumerate(datasets):
        mine = [(s, lg) for s, lg in runs if s.dataset == dataset]
        target = mine[0][0].plan.dataset.target
        _curves(axes[0, col], axes[1, col], mine, target)
        axes[0, col].set_title(f"{dataset}: Nesterov vs ISGD-Nesterov (seed 1)")
        for spec, log in mine:
            reached = time_to_target(test_series(log, spec.plan.dataset.metric), target)
            notes.append(
                f"{dataset} {spec.arm}: "
                + ("not reached" if reached is None else f"{reached.train_s:.0f} s")
            )
    fig.suptitle("Fig. 9: the inconsistent Nesterov accelerated gradient", fontsize=10)
    save_figure(fig, out / "fig9_nesterov.png")
    return "; ".join(notes)


FIGURES: dict[
    int, tuple[Callable[[Profile, Path], str], Callable[[Profile], list[RunSpec]] | None]
] = {
    1: (fig1, figure_runs.fig1_specs),
    2: (fig2, None),
    3: (fig3, None),
    5: (fig5, figure_runs.fig5_specs),
    6: (fig6, figure_runs.fig6_specs),
    7: (fig7, None),
    8: (fig8, figure_runs.fig8_specs),
    9: (fig9, figure_runs.fig9_specs),
}

DRAWN = "drawn"  # figures.json: figure -> "date, commit" of the `make figures` that drew it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument("--datasets", default="", help="comma-separated (default: the profile's)")
    parser.add_argument("--runs", type=int, default=None, help="Table 1 pairs the figures read")
    parser.add_argument("--only", default="", help="comma-separated figure numbers")
    parser.add_argument("--no-run", action="store_true", help="plot only what is already logged")
    add_runner_arguments(parser)
    args = parser.parse_args(argv)

    def body(display: Display) -> int:
        profile = load_profile(
            args.profile, [d for d in args.datasets.split(",") if d] or None, args.runs
        )
        wanted = [int(x) for x in args.only.split(",") if x] or list(FIGURES)
        unknown = [n for n in wanted if n not in FIGURES]
        if unknown:
            raise ProfileError(f"no figure {unknown} (figures: {', '.join(map(str, FIGURES))})")
        out = results_dir(profile.name) / "figures"
        notes_path = out / "figures.json"
        notes = json.loads(notes_path.read_text()) if notes_path.exists() else {}
        drawn = dict(notes.get(DRAWN, {}))  # figure -> when and by which commit it was drawn
        if not args.no_run:
            controlled = {"controlled": tuple(figure_runs.CONTROLLED.values())}
            ensure_data(profile, display.say, controlled if 1 in wanted else None)
            specs = [s for n in wanted if FIGURES[n][1] is not None for s in FIGURES[n][1](profile)]
            fig8_base = (
                [
                    table1_spec(profile, profile.plans[d], arm, 1, {})
                    for d in (s.dataset for s in figure_runs.fig8_specs(profile))
                    for arm in ("sgd", "isgd")
                ]
                if 8 in wanted
                else []
            )
            unique = {str(spec.folder): spec for spec in fig8_base + specs}
            options = runner_options(args, profile)
            with TrainingSession(profile.name, "figures", display, options) as session:
                session.run(list(unique.values()))
        failed = 0
        # one git call for every figure drawn now
        stamp = f"{time.strftime('%Y-%m-%d')}, commit {git_commit()}"
        for number in wanted:
            plot, _ = FIGURES[number]
            try:
                note = plot(profile, out)
            except MissingRuns as exc:
                display.say(f"Fig. {number}: skipped: {exc}")
                failed += 1
                continue
            notes[str(number)] = note
            drawn[str(number)] = stamp
            display.say(f"Fig. {number}: {note}")
        notes[DRAWN] = drawn
        out.mkdir(parents=True, exist_ok=True)
        notes_path.write_text(json.dumps(notes, indent=1, sort_keys=True) + "\n")
        display.say(f"wrote {build_readme(profile.name)}")
        return 1 if failed else 0

    return guarded("figures", body)


if __name__ == "__main__":
    sys.exit(main())
