"""One row per finished run, computed from its JSON log alone: what table1_runs.csv writes and
what every comparison (Table 1, the sweeps, the figures) reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scripts.outcomes import Outcome, RunTests, outcome
from scripts.profiles import ROOT, Dataset
from scripts.stats import first_reach, time_to_target
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
        log=relative(log.path),
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


def relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def csv_row(row: RunRow) -> dict[str, Any]:
    values = asdict(row)
    values.pop("tests", None)
    values.pop("isgd", None)
    return values
