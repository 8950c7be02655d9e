"""ISGD's loss-queue statistics (paper Eq. 13-15, Alg. 1) and the Alg. 2 / Eq. 18 step."""

from __future__ import annotations

import numpy as np
import pytest

from engine.proto import caffe_pb2
from solvers.isgd import Isgd, IsgdConfig, LossQueue, subproblem_step


def test_running_mean_and_std_equal_direct_computation_at_every_push() -> None:
    """Eq. 13/14 over the last n losses, kept in O(1) per push, match NumPy over the window."""
    rng = np.random.default_rng(0)
    losses = rng.gamma(2.0, 1.0, 200) * np.linspace(3, 0.1, 200)
    q = LossQueue(7)
    for t, loss in enumerate(losses):
        q.push(loss)
        window = losses[max(0, t - 6) : t + 1]
        assert q.count == len(window)
        assert q.mean() == pytest.approx(window.mean(), rel=1e-12, abs=1e-12)
        assert q.std() == pytest.approx(window.std(), rel=1e-9, abs=1e-12)
        limit = q.mean() + 3.0 * q.std()  # Eq. 15
        assert limit == pytest.approx(window.mean() + 3 * window.std(), rel=1e-9)


def test_queue_replaces_the_oldest_loss_once_full() -> None:
    q = LossQueue(3)
    for v in (1.0, 2.0, 3.0):
        q.push(v)
    assert q.full and q.mean() == pytest.approx(2.0)
    q.push(7.0)  # drops 1.0
    assert q.mean() == pytest.approx(4.0)
    assert q.std() == pytest.approx(np.std([2.0, 3.0, 7.0]))


def test_empty_queue_and_bad_size() -> None:
    assert LossQueue(4).mean() == 0.0 and LossQueue(4).std() == 0.0
    with pytest.raises(ValueError, match="queue size must be >= 1"):
        LossQueue(0)


def test_queue_state_round_trips_through_isgd_state_proto() -> None:
    q = LossQueue(5)
    for v in np.linspace(0.5, 3.0, 8):
        q.push(v)
    state = caffe_pb2.IsgdState()
    q.to_proto(state)
    r = LossQueue(5)
    r.from_proto(caffe_pb2.IsgdState.FromString(state.SerializeToString()))
    for v in (9.0, 0.1, 2.5):
        q.push(v)
        r.push(v)
        assert (r.mean(), r.std(), r.head, r.seen) == (q.mean(), q.std(), q.head, q.seen)


def test_restoring_a_queue_of_another_size_is_a_clear_error() -> None:
    q = LossQueue(3)
    for v in (1.0, 2.0, 3.0):
        q.push(v)
    state = caffe_pb2.IsgdState()
    q.to_proto(state)
    with pytest.raises(ValueError, match="queue size is 4"):
        LossQueue(4).from_proto(state)


def _observed(loss: float, it: int, queued: int) -> bool:
    """Alg. 1's verdict on `loss` at iteration `it` after `queued` losses of 1.0 (limit 1.0)."""
    isgd = Isgd(IsgdConfig(), queue_size=10, n_weights=1)
    for _ in range(queued):
        isgd.queue.push(1.0)
    return isgd.observe(loss, it).under_trained


def test_under_trained_needs_loss_above_limit_after_the_first_epoch() -> None:
    # Alg. 1 line 22: loss > limit and iter > n (and a full queue, e.g. after a Caffe resume).
    assert not _observed(5.0, it=10, queued=10)
    assert _observed(5.0, it=11, queued=10)
    assert not _observed(1.0, it=11, queued=10)
    assert not _observed(5.0, it=50, queued=3)


def test_subproblem_step_is_eq_18() -> None:
    # w <- w - zeta * ((psi - limit) * grad + eps / n_w * (w - w_prev))
    w = np.array([1.0, -2.0, 0.5])
    grad = np.array([0.2, 0.4, -1.0])
    anchor = np.array([0.9, -2.0, 0.0])
    expected = w - 0.05 * ((3.0 - 2.5) * grad + 0.1 / 3 * (w - anchor))
    subproblem_step(w, grad, anchor, 3.0, 2.5, 0.05, 0.1, 3)
    np.testing.assert_allclose(w, expected, rtol=1e-14)


def test_config_defaults_are_the_papers() -> None:
    cfg = IsgdConfig.from_proto(caffe_pb2.IsgdParameter())
    assert (cfg.control_limit, cfg.epsilon, cfg.stop, cfg.zeta) == (3.0, pytest.approx(0.1), 5, 0)
    with pytest.raises(ValueError, match="isgd_param.stop"):
        IsgdConfig.from_proto(caffe_pb2.IsgdParameter(stop=-1))
