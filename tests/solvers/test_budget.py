"""max_grad_evals: a compute budget that gives SGD and ISGD the same gradient evaluations, exactly:
each iteration's pass (its iter_size forward/backward passes on the global batch) counts one, each
Alg. 2 inner pass one, and Alg. 2's inner loop ends when the budget is spent (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from solvers.solver import Solver

from .conftest import Tiny

FORCED_ALG2 = "isgd_param { control_limit: -1 queue_size: 3 stop: 3 }"


def _run(tiny: Tiny, quiet_log, extra: str, **fields: object) -> tuple[Solver, list[dict]]:
    log, text, json_path = quiet_log()
    fields = {"max_iter": 1000, "test_interval": 0, "snapshot_after_train": False, **fields}
    path = tiny.solver(extra, **fields)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    solver = Solver(str(path), log=log)
    solver.solve()
    log.close()
    events = [json.loads(x) for x in Path(json_path).read_text().splitlines()]
    solver.text_log = text.getvalue()  # type: ignore[attr-defined]
    return solver, [e for e in events if e["event"] == "iter"]


def test_isgd_stops_at_the_budget_exactly_inside_an_alg2_call(tiny: Tiny, quiet_log) -> None:
    """Alg. 2 forced (limit = mean - sigma, stop 3): each iteration after the first epoch costs up
    to 4 evaluations, so a budget of 22 falls inside an inner loop. The loop ends there and the
    last iteration's log says why."""
    solver, iters = _run(tiny, quiet_log, f"{FORCED_ALG2}\nmax_grad_evals: 22")
    assert solver.grad_evals == 22 == iters[-1]["grad_evals"]
    last = iters[-1]
    assert last["under_trained"] and last["alg2_end"] == "budget"
    assert last["alg2_inner_steps"] < 3
    assert "max_grad_evals spent: budget spent after" in solver.text_log
    assert all(e["alg2_end"] != "budget" for e in iters[:-1])
    assert solver.alg2_inner_steps > 0 and solver.completed


@pytest.mark.parametrize("budget", [19, 20, 21, 22, 23])
def test_isgd_never_overshoots_the_budget(tiny: Tiny, quiet_log, budget: int) -> None:
    """Wherever the budget falls (main pass or any inner pass), the run ends at it."""
    solver, iters = _run(tiny, quiet_log, f"{FORCED_ALG2}\nmax_grad_evals: {budget}")
    assert solver.grad_evals == budget == iters[-1]["grad_evals"]
    assert solver.completed


@pytest.mark.parametrize("iter_size", [1, 2])
def test_sgd_stops_at_the_budget_with_iter_size(tiny: Tiny, quiet_log, iter_size: int) -> None:
    """One iteration is one gradient evaluation on the global batch, whatever iter_size (its
    iter_size forward/backward passes make one gradient, as Caffe accumulates them): a budget
    of 7 is 7 iterations."""
    solver, iters = _run(tiny, quiet_log, "max_grad_evals: 7", iter_size=iter_size)
    assert solver.grad_evals == 7 == solver.iter == len(iters)
    assert [e["grad_evals"] for e in iters] == list(range(1, 8))
    assert all(e["alg2_end"] is None for e in iters)


def test_the_budget_holds_across_a_resume(tiny: Tiny, quiet_log) -> None:
    """A run stopped and resumed mid-budget ends at the same count (grad_evals is in the state)."""
    extra = f"{FORCED_ALG2}\nmax_grad_evals: 22"
    first, _ = _run(tiny, quiet_log, extra, max_iter=5, snapshot_after_train=True)
    state = tiny.root / "snap" / "solver_iter_5.solverstate"
    log, _, _ = quiet_log("resumed")
    path = tiny.solver(extra, max_iter=1000, test_interval=0)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    resumed = Solver(str(path), log=log)
    resumed.solve(str(state))
    log.close()
    assert first.grad_evals < 22 == resumed.grad_evals
