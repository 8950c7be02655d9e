"""max_grad_evals: a compute budget that gives SGD and ISGD the same gradient evaluations."""

from __future__ import annotations

import json

from solvers.solver import Solver

from .conftest import Tiny


def test_training_stops_at_the_gradient_evaluation_budget_with_alg2_counted(
    tiny: Tiny, quiet_log
) -> None:
    log, _, json_path = quiet_log()
    extra = "isgd_param { control_limit: -1 queue_size: 3 stop: 3 }\nmax_grad_evals: 20"
    path = tiny.solver(extra, max_iter=1000, test_interval=0, snapshot_after_train=False)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    solver = Solver(str(path), log=log)
    solver.solve()
    log.close()
    events = [json.loads(x) for x in json_path.read_text().splitlines()]
    iters = [e for e in events if e["event"] == "iter"]
    assert 20 <= solver.grad_evals <= 20 + 3, "stops at the first iteration boundary past 20"
    assert iters[-2]["grad_evals"] < 20 <= iters[-1]["grad_evals"] == solver.grad_evals
    assert solver.iter < 20 and solver.alg2_inner_steps > 0
    assert solver.completed
