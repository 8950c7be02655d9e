"""Caffe's update formulas (sgd_solver.cpp, nesterov_solver.cpp, ...) on hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from engine.proto import caffe_pb2
from solvers.update_rules import (
    RULES,
    History,
    clip_gradients,
    make_rule,
    normalize,
    regularize,
)

f32 = np.float32


def rule(kind: str, **fields: float):
    return make_rule(caffe_pb2.SolverParameter(type=kind, **fields))


def test_sgd_momentum_two_steps_match_hand_values() -> None:
    # h1 = 0.9*0 + 0.1*g1 ; h2 = 0.9*h1 + 0.1*g2 ; the step is h (Caffe's SGD with momentum).
    r = rule("SGD", momentum=0.9)
    h = [np.zeros(2, f32)]
    d = np.array([1.0, -2.0], f32)
    r.compute(0, d, h, f32(0.1), 0)
    np.testing.assert_allclose(d, [0.1, -0.2], rtol=1e-6)
    d = np.array([0.5, 0.5], f32)
    r.compute(0, d, h, f32(0.1), 1)
    np.testing.assert_allclose(d, [0.9 * 0.1 + 0.05, 0.9 * -0.2 + 0.05], rtol=1e-6)
    np.testing.assert_array_equal(h[0], d)


def test_nesterov_step_is_one_plus_mu_h_new_minus_mu_h_old() -> None:
    r = rule("Nesterov", momentum=0.9)
    h = [np.array([0.2, -0.1], f32)]
    g = np.array([1.0, 3.0], f32)
    d = g.copy()
    r.compute(0, d, h, f32(0.01), 0)
    h_new = 0.9 * np.array([0.2, -0.1]) + 0.01 * g
    np.testing.assert_allclose(h[0], h_new, rtol=1e-6)
    np.testing.assert_allclose(d, 1.9 * h_new - 0.9 * np.array([0.2, -0.1]), rtol=1e-5)


def test_l2_regularization_adds_local_decay_times_weights() -> None:
    # local_decay = weight_decay * decay_mult (both from the proto), added to the diff.
    w = np.array([2.0, -4.0], f32)
    d = np.array([0.1, 0.1], f32)
    regularize(w, d, 0.0005 * 2, "L2")
    np.testing.assert_allclose(d, [0.1 + 0.001 * 2, 0.1 - 0.001 * 4], rtol=1e-6)


def test_l1_regularization_adds_local_decay_times_sign() -> None:
    w = np.array([2.0, -4.0, 0.0], f32)
    d = np.zeros(3, f32)
    regularize(w, d, 0.01, "L1")
    np.testing.assert_allclose(d, [0.01, -0.01, 0.0])


def test_zero_decay_mult_leaves_diff_untouched_and_bad_type_is_named() -> None:
    w, d = np.ones(2, f32), np.zeros(2, f32)
    regularize(w, d, 0.0, "L2")
    assert not d.any()
    with pytest.raises(ValueError, match="regularization_type 'L3'"):
        regularize(w, d, 0.1, "L3")


def test_clip_gradients_scales_by_clip_over_global_norm() -> None:
    # Global L2 norm over all params is 13; clip 6.5 halves every diff.
    a, b = np.array([3.0, 4.0], f32), np.array([12.0], f32)
    norm, scale = clip_gradients([a, b], 6.5)
    assert norm == pytest.approx(13.0) and scale == pytest.approx(0.5)
    np.testing.assert_allclose(a, [1.5, 2.0])
    np.testing.assert_allclose(b, [6.0])


def test_clip_gradients_off_or_under_the_limit_changes_nothing() -> None:
    a = np.array([3.0, 4.0], f32)
    assert clip_gradients([a], -1) is None
    assert clip_gradients([a], 5.0) is None
    np.testing.assert_array_equal(a, [3.0, 4.0])


def test_normalize_divides_by_iter_size_only_when_above_one() -> None:
    d = np.array([4.0, 2.0], f32)
    normalize(d, 1)
    np.testing.assert_array_equal(d, [4.0, 2.0])
    normalize(d, 4)
    np.testing.assert_allclose(d, [1.0, 0.5])


def test_adagrad_rmsprop_adadelta_adam_follow_caffe_formulas() -> None:
    g = np.array([0.5, -2.0], f32)
    # AdaGrad: h += g^2; step = lr * g / (sqrt(h) + delta)
    d, h = g.copy(), [np.full(2, 1.0, f32)]
    rule("AdaGrad", delta=1e-8).compute(0, d, h, f32(0.1), 0)
    np.testing.assert_allclose(d, 0.1 * g / (np.sqrt(1 + g**2) + 1e-8), rtol=1e-6)
    # RMSProp: h = 0.9 h + 0.1 g^2
    d, h = g.copy(), [np.full(2, 1.0, f32)]
    rule("RMSProp", rms_decay=0.9, delta=1e-8).compute(0, d, h, f32(0.1), 0)
    np.testing.assert_allclose(d, 0.1 * g / (np.sqrt(0.9 + 0.1 * g**2) + 1e-8), rtol=1e-6)
    # AdaDelta with two history sets.
    d, h = g.copy(), [np.full(2, 0.5, f32), np.full(2, 0.25, f32)]
    rule("AdaDelta", momentum=0.95, delta=1e-6).compute(0, d, h, f32(1.0), 0)
    hg = 0.95 * 0.5 + 0.05 * g**2
    upd = g * np.sqrt((0.25 + 1e-6) / (hg + 1e-6))
    np.testing.assert_allclose(d, upd, rtol=1e-5)
    np.testing.assert_allclose(h[1], 0.95 * 0.25 + 0.05 * upd**2, rtol=1e-5)
    # Adam at t = 1: correction sqrt(1-b2)/(1-b1).
    d, h = g.copy(), [np.zeros(2, f32), np.zeros(2, f32)]
    rule("Adam", momentum=0.9, momentum2=0.999, delta=1e-8).compute(0, d, h, f32(0.001), 0)
    m, v = 0.1 * g, 0.001 * g**2
    corr = np.sqrt(1 - 0.999) / (1 - 0.9)
    np.testing.assert_allclose(d, 0.001 * corr * m / (np.sqrt(v) + 1e-8), rtol=1e-5)


def test_make_rule_knows_caffe_types_and_rejects_others() -> None:
    assert set(RULES) == {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}
    with pytest.raises(ValueError, match="unknown solver type 'Foo'"):
        rule("Foo")
    with pytest.raises(ValueError, match="AdaGrad: momentum must be 0"):
        rule("AdaGrad", momentum=0.9)


def test_history_of_two_set_rules_is_written_in_caffe_order() -> None:
    """Caffe's AdamPreSolve (and AdaDelta's) appends the second set of history blobs after
    SGDSolver::PreSolve's first, one per param: a .solverstate holds m_0, m_1, ..., v_0, v_1.
    Each param's buffers are views of the rule's flat buffers, in the param's shape."""
    from types import SimpleNamespace

    blobs = [SimpleNamespace(count=6, shape=(2, 3)), SimpleNamespace(count=2, shape=(2,))]
    net = SimpleNamespace(flat_data=np.zeros(8, f32), param_offsets=[0, 6], learnable_params=blobs)
    adam = rule("Adam")
    history = adam.make_history(net)
    assert isinstance(history, History) and len(history) == 2 and len(history.flat) == 2
    history.flat[0][:] = np.arange(8)
    history.flat[1][:] = 10 + np.arange(8)
    order = history.caffe_order()
    assert [h.shape for h in order] == [(2, 3), (2,), (2, 3), (2,)]
    np.testing.assert_array_equal(order[1], [6, 7])  # m of param 1
    np.testing.assert_array_equal(order[2], [[10, 11, 12], [13, 14, 15]])  # v of param 0
    history[1][1][...] = -1  # param 1's v is a view of the flat buffer
    np.testing.assert_array_equal(history.flat[1][6:], [-1, -1])
