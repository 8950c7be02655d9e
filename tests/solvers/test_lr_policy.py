"""Caffe's GetLearningRate formulas (sgd_solver.cpp) and our loss_bands policy, on hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.proto import caffe_pb2
from solvers.lr_policy import learning_rate, loss_band_rate, validate


def solver(**fields: object) -> caffe_pb2.SolverParameter:
    p = caffe_pb2.SolverParameter(base_lr=0.01, **{k: v for k, v in fields.items() if k != "bands"})
    if "bands" in fields:
        thresholds, lrs = fields["bands"]  # type: ignore[misc]
        p.loss_bands.threshold.extend(thresholds)
        p.loss_bands.lr.extend(lrs)
    return p


def rate(p: caffe_pb2.SolverParameter, it: int, step: int = 0, loss: float | None = None) -> float:
    return float(learning_rate(p, it, step, loss).rate)


def test_fixed_returns_base_lr_as_float32() -> None:
    r = learning_rate(solver(lr_policy="fixed"), 1234, 0)
    assert r.rate.dtype == np.float32 and r.rate == np.float32(0.01)


def test_step_is_base_lr_times_gamma_to_floor_iter_over_stepsize() -> None:
    p = solver(lr_policy="step", gamma=0.1, stepsize=100)
    assert rate(p, 99) == pytest.approx(0.01, rel=1e-7)
    assert rate(p, 100) == pytest.approx(0.001, rel=1e-6)
    r = learning_rate(p, 250, 0)
    assert r.current_step == 2 and float(r.rate) == pytest.approx(0.0001, rel=1e-6)


def test_exp_is_base_lr_times_gamma_to_iter() -> None:
    p = solver(lr_policy="exp", gamma=0.99)
    assert rate(p, 10) == pytest.approx(0.01 * 0.99**10, rel=1e-6)


def test_inv_is_base_lr_times_one_plus_gamma_iter_to_minus_power() -> None:
    # LeNet's solver: base_lr 0.01, gamma 1e-4, power 0.75.
    p = solver(lr_policy="inv", gamma=0.0001, power=0.75)
    for it in (0, 100, 5000, 9900):
        assert rate(p, it) == pytest.approx(0.01 * (1 + 1e-4 * it) ** -0.75, rel=2e-7)


def test_multistep_advances_current_step_once_per_call_and_logs_it() -> None:
    p = solver(lr_policy="multistep", gamma=0.5, stepvalue=[3, 5])
    step, seen = 0, []
    for it in range(7):
        r = learning_rate(p, it, step)
        step = r.current_step
        seen.append((float(r.rate), r.message))
    assert [s[0] for s in seen] == pytest.approx([0.01] * 3 + [0.005] * 2 + [0.0025] * 2)
    assert seen[3][1] == "MultiStep Status: Iteration 3, step = 1"
    assert seen[4][1] is None


def test_multistep_resumes_from_saved_current_step() -> None:
    # Caffe restores current_step from the .solverstate; the policy continues from it.
    p = solver(lr_policy="multistep", gamma=0.1, stepvalue=[10, 20])
    assert rate(p, 15, step=1) == pytest.approx(0.001, rel=1e-6)


def test_poly_decays_to_zero_at_max_iter() -> None:
    p = solver(lr_policy="poly", power=2.0, max_iter=100)
    assert rate(p, 25) == pytest.approx(0.01 * 0.75**2, rel=1e-6)
    assert rate(p, 100) == 0.0


def test_sigmoid_is_base_lr_over_one_plus_exp() -> None:
    p = solver(lr_policy="sigmoid", gamma=-0.1, stepsize=50)
    for it in (0, 50, 80):
        want = 0.01 / (1 + math.exp(0.1 * (it - 50)))
        assert rate(p, it) == pytest.approx(want, rel=1e-6)


def test_loss_bands_pick_lr_by_average_loss_as_paper_alexnet() -> None:
    # Paper section 5.2: 0.015 for loss >= 2.0, 0.0015 in [1.2, 2.0), 0.00015 below 1.2.
    p = solver(lr_policy="loss_bands", bands=([2.0, 1.2], [0.015, 0.0015, 0.00015]))
    validate(p)
    assert rate(p, 0, loss=6.9) == pytest.approx(0.015)
    assert rate(p, 0, loss=2.0) == pytest.approx(0.015)
    assert rate(p, 0, loss=1.9999) == pytest.approx(0.0015)
    assert rate(p, 0, loss=1.2) == pytest.approx(0.0015)
    assert rate(p, 0, loss=0.3) == pytest.approx(0.00015)
    assert float(loss_band_rate([1.0], [0.1, 0.2], 0.5)) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"lr_policy": "cosine"}, "unknown lr_policy 'cosine'"),
        ({"lr_policy": "step", "gamma": 0.1}, "stepsize must be > 0"),
        ({"lr_policy": "loss_bands", "bands": ([2.0], [0.1])}, "one more lr than thresholds"),
        ({"lr_policy": "loss_bands", "bands": ([1.0, 2.0], [0.1, 0.2, 0.3])}, "descending"),
    ],
)
def test_bad_policy_settings_name_the_field(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate(solver(**fields))
