"""Fillers follow Caffe's filler.hpp: distributions, bounds and fan_in/fan_out rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import text_format

from engine.boost_random import CaffeRNG
from engine.fillers import fan_in_out, fill
from engine.proto import caffe_pb2


def filler(text: str) -> caffe_pb2.FillerParameter:
    return text_format.Parse(text, caffe_pb2.FillerParameter())


def rng(seed: int = 0) -> CaffeRNG:
    return CaffeRNG(seed)


def test_default_filler_is_constant_zero_in_requested_dtype():
    out = fill(caffe_pb2.FillerParameter(), (3, 4), rng(), np.float32)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    assert np.all(out == 0)


def test_constant_uses_value():
    out = fill(filler('type: "constant" value: 2.5'), (5,), rng(), np.float64)
    np.testing.assert_array_equal(out, np.full(5, 2.5))


def test_uniform_stays_in_min_max_with_uniform_moments():
    out = fill(filler('type: "uniform" min: -2 max: 3'), (200, 500), rng(), np.float64)
    assert out.min() >= -2 and out.max() <= 3
    assert abs(out.mean() - 0.5) < 0.02
    assert abs(out.var() - 25 / 12) < 0.03


def test_gaussian_mean_and_std():
    out = fill(filler('type: "gaussian" mean: 1 std: 0.5'), (100_000,), rng(), np.float64)
    assert abs(out.mean() - 1.0) < 0.01
    assert abs(out.std() - 0.5) < 0.01


def test_gaussian_sparse_keeps_sparse_over_num_outputs_fraction():
    """Caffe: with sparse=k each weight is non-zero with probability k / shape[0]."""
    out = fill(filler('type: "gaussian" std: 1 sparse: 5'), (20, 10_000), rng(), np.float64)
    assert abs(np.mean(out != 0) - 5 / 20) < 0.01


def test_positive_unitball_rows_sum_to_one():
    out = fill(filler('type: "positive_unitball"'), (6, 3, 2, 2), rng(), np.float64)
    assert np.all(out >= 0) and np.all(out <= 1)
    # float32 values (Caffe's Dtype), each row divided by its float32 sum
    np.testing.assert_allclose(out.reshape(6, -1).sum(axis=1), np.ones(6), rtol=1e-6)


def test_fan_rules_are_caffes_count_over_shape0_and_shape1():
    assert fan_in_out((8, 6, 3, 3)) == (54, 72)  # fan_in = C*k*k, fan_out = N*k*k
    assert fan_in_out((10, 800)) == (800, 10)  # InnerProduct weights (out, in)
    assert fan_in_out((7,)) == (1, 7)


@pytest.mark.parametrize("norm, n", [("FAN_IN", 54.0), ("FAN_OUT", 72.0), ("AVERAGE", 63.0)])
def test_xavier_uniform_bound_sqrt_3_over_n(norm, n):
    shape = (8, 6, 3, 3)
    draws = np.concatenate(
        [
            fill(filler(f'type: "xavier" variance_norm: {norm}'), shape, rng(s), np.float64).ravel()
            for s in range(60)
        ]
    )
    bound = math.sqrt(3.0 / n)
    assert np.abs(draws).max() <= bound
    assert np.abs(draws).max() > 0.99 * bound
    assert abs(draws.var() - 1.0 / n) < 0.05 / n


def test_xavier_default_is_fan_in():
    shape = (8, 6, 3, 3)
    a = fill(filler('type: "xavier"'), shape, rng(3), np.float64)
    b = fill(filler('type: "xavier" variance_norm: FAN_IN'), shape, rng(3), np.float64)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("norm, n", [("FAN_IN", 54.0), ("FAN_OUT", 72.0), ("AVERAGE", 63.0)])
def test_msra_gaussian_std_sqrt_2_over_n(norm, n):
    shape = (8, 6, 3, 3)
    draws = np.concatenate(
        [
            fill(filler(f'type: "msra" variance_norm: {norm}'), shape, rng(s), np.float64).ravel()
            for s in range(60)
        ]
    )
    assert abs(draws.mean()) < 0.02 * math.sqrt(2 / n)
    assert abs(draws.std() / math.sqrt(2.0 / n) - 1) < 0.03


def test_bilinear_kernel_matches_hand_computation():
    """Kernel 4: f = 2, c = 0.75, line = 1 - |x/f - c| = [.25, .75, .75, .25], outer product."""
    out = fill(filler('type: "bilinear"'), (2, 1, 4, 4), rng(), np.float64)
    line = np.array([0.25, 0.75, 0.75, 0.25])
    for k in range(2):
        np.testing.assert_allclose(out[k, 0], np.outer(line, line))


def test_same_seed_same_values():
    f = filler('type: "gaussian" std: 0.01')
    np.testing.assert_array_equal(fill(f, (4, 4), rng(9)), fill(f, (4, 4), rng(9)))


def test_unknown_type_is_a_clear_error():
    with pytest.raises(ValueError, match="'glorot'"):
        fill(filler('type: "glorot"'), (2, 2), rng())


def test_sparse_only_for_gaussian_and_bilinear_needs_square_4d():
    with pytest.raises(ValueError, match="uniform"):
        fill(filler('type: "uniform" sparse: 3'), (2, 2), rng())
    with pytest.raises(ValueError, match="bilinear"):
        fill(filler('type: "bilinear"'), (2, 3), rng())
    with pytest.raises(ValueError, match="std"):
        fill(filler('type: "gaussian" std: 0'), (2, 3), rng())
