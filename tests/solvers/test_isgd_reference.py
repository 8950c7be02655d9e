"""The Solver's ISGD against a plain transcription of the paper's Alg. 1 and Alg. 2, written here
from the text (section 4.2) on a tiny net: the same losses, limits, triggers and inner steps.
Also: the two switches solvers/isgd.py documents change the run the way it says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from solvers.solver import Solver, load_solver_param
from solvers.train_test_nets import build_net, train_net_param

from .conftest import Tiny

ISGD = "isgd_param {{ control_limit: -0.5 queue_size: 4 stop: 3 epsilon: 0.1 {switches} }}"
ITERS = 24


def paper_isgd(net, iters, n, k, eps, stop, lr, mults, anchor_after=False, use_mult=True):
    """Alg. 1 and Alg. 2 as printed, reading Eq. 13-16 for the limit (the n losses before the
    batch), w_{t-1} = the weights the loss was measured at, zeta = lr x lr_mult."""
    w, nw, queue, out = net.flat_data, net.flat_data.size, [], []
    for it in range(iters):
        start = net.data_cursors()
        net.clear_param_diffs()
        psi = float(net.forward_backward())  # Alg. 1 line 10
        mean = float(np.mean(queue)) if queue else 0.0  # Eq. 13
        std = float(np.std(queue)) if queue else 0.0  # Eq. 14
        limit = mean + k * std  # line 20
        queue = (queue + [psi])[-n:]  # lines 14, 17-19
        w_prev = w.copy()
        w -= np.float32(lr) * mults * net.flat_diff  # line 21
        if anchor_after:
            w_prev = w.copy()
        inner, trigger = 0, psi > limit and it > n and len(queue) == n  # line 22
        if trigger:  # Alg. 2
            after = net.data_cursors()
            for _ in range(stop):  # line 3
                net.set_data_cursors(start)
                net.clear_param_diffs()
                psi2 = float(net.forward_backward())  # line 4
                if not psi2 > limit:  # line 3
                    break
                zeta = lr * (mults if use_mult else 1.0)
                w -= (zeta * ((psi2 - limit) * net.flat_diff + eps / nw * (w - w_prev))).astype(
                    w.dtype
                )
                inner += 1
            net.set_data_cursors(after)
        out.append((psi, mean, limit, trigger, inner))
    return out


def solver_run(tiny: Tiny, quiet_log, switches: str = "") -> tuple[list, Solver]:
    extra = ISGD.format(switches=switches)
    path = tiny.solver(extra, name="s", max_iter=ITERS, momentum=0, weight_decay=0, test_interval=0)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    log, _, json_path = quiet_log("s" + switches.replace(" ", "").replace(":", ""))
    solver = Solver(str(path), log=log)
    solver.solve()
    log.close()
    events = [json.loads(x) for x in json_path.read_text().splitlines()]
    rows = [
        (e["loss"], e["mean"], e["limit"], e["under_trained"], e["alg2_inner_steps"])
        for e in events
        if e["event"] == "iter"
    ]
    return rows, solver


def reference_run(tiny: Tiny, **switches) -> list:
    path = tiny.solver(ISGD.format(switches=""), name="r", max_iter=ITERS, momentum=0)
    param, _ = load_solver_param(str(path))
    net = build_net(train_net_param(param), "TRAIN", np, int(param.random_seed))
    mults = np.concatenate(
        [
            np.full(b.count, m, np.float32)
            for b, m in zip(net.learnable_params, net.params_lr, strict=True)
        ]
    )
    return paper_isgd(net, ITERS, n=4, k=-0.5, eps=0.1, stop=3, lr=0.1, mults=mults, **switches)


def assert_same(ours: list, paper: list) -> None:
    assert len(ours) == len(paper)
    for t, (a, b) in enumerate(zip(ours, paper, strict=True)):
        assert a[0] == pytest.approx(b[0], rel=1e-5), f"loss at iteration {t}"
        assert a[1] == pytest.approx(b[1], rel=1e-5, abs=1e-7), f"mean at iteration {t}"
        assert a[2] == pytest.approx(b[2], rel=1e-5, abs=1e-7), f"limit at iteration {t}"
        assert (a[3], a[4]) == (b[3], b[4]), f"trigger / inner steps at iteration {t}"


def test_solver_matches_the_papers_algorithms(tiny: Tiny, quiet_log) -> None:
    ours, solver = solver_run(tiny, quiet_log)
    paper = reference_run(tiny)
    assert_same(ours, paper)
    assert sum(r[3] for r in paper) >= 3 and sum(r[4] for r in paper) >= 3, "Alg. 2 exercised"


def test_anchor_after_update_takes_w_t_minus_1_after_line_21(tiny: Tiny, quiet_log) -> None:
    ours, _ = solver_run(tiny, quiet_log, "anchor_after_update: true")
    assert_same(ours, reference_run(tiny, anchor_after=True))
    default, _ = solver_run(tiny, quiet_log)
    assert [r[0] for r in ours] != [r[0] for r in default], "the reading changes the run"


def test_use_lr_mult_false_gives_every_param_the_same_zeta(tiny: Tiny, quiet_log) -> None:
    """The tiny net's biases have lr_mult 2: with use_lr_mult false Alg. 2 steps them by zeta,
    not 2 zeta, as the transcription with a plain zeta does."""
    ours, _ = solver_run(tiny, quiet_log, "use_lr_mult: false")
    assert_same(ours, reference_run(tiny, use_mult=False))
    default, _ = solver_run(tiny, quiet_log)
    assert [r[0] for r in ours] != [r[0] for r in default]
