"""Caffe's CPU stream (engine.boost_random): boost::mt19937 and boost 1.74's distributions as
Caffe calls them, against known answers. The filler values below are Caffe 1.0's own initial
weights for random_seed 1701 (caffe-reference/random-streams/fillers, blobs.txt: the first
values print with %.9g, which round-trips float32; the SHA-256 is of the float32 bytes)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from engine import ziggurat_kernels
from engine.boost_random import CaffeRNG

F32 = np.float32


def sha(values: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(values, "<f4").tobytes()).hexdigest()


def test_mt19937_known_answers() -> None:
    """The standard mt19937 check (10000th output of seed 5489 is 4123659995, C++11
    [rand.predef]) and the first outputs boost gives Caffe for seeds 1701 and 42."""
    assert int(CaffeRNG(5489).raw(10000)[-1]) == 4123659995
    first = [384112814, 2227967492, 495543390, 3464664558, 2227988250]
    assert CaffeRNG(1701).raw(5).tolist() == first
    rng = CaffeRNG(42)
    assert [rng.rand() for _ in range(5)] == [
        1608637542,
        3421126067,
        4083286876,
        787846414,
        3143890026,
    ]


def test_raw_draws_are_the_generators_outputs_unchanged() -> None:
    """raw() reads the outputs through Generator.integers over the full uint32 range (faster):
    the same values as MT19937.random_raw, and the generator left in the same state."""
    rng = CaffeRNG(1701)
    reference = np.random.MT19937(0)
    reference._legacy_seeding(1701)
    for n in (1, 5, 623, 624, 625, 10007):
        np.testing.assert_array_equal(rng.raw(n), reference.random_raw(n).astype(np.uint32))
        assert rng.get_state()["pos"] == reference.state["state"]["pos"]
        np.testing.assert_array_equal(rng.get_state()["key"], reference.state["state"]["key"])


def test_seed_is_taken_as_unsigned_int() -> None:
    """Caffe seeds with (unsigned int) random_seed: seeds equal mod 2^32 give one stream."""
    assert CaffeRNG(2**32 + 7).raw(3).tolist() == CaffeRNG(7).raw(3).tolist()


def test_state_round_trips_through_json() -> None:
    rng = CaffeRNG(3)
    rng.raw(700)  # past one block of 624
    state = json.loads(json.dumps(rng.get_state()))
    want = rng.gaussian(50, 0.0, 1.0)
    other = CaffeRNG(99)
    other.set_state(state)
    np.testing.assert_array_equal(other.gaussian(50, 0.0, 1.0), want)
    with pytest.raises(ValueError, match="PCG64"):
        other.set_state({"bit_generator": "PCG64", "state": {}})


def test_rand_mod_is_u_mod_n() -> None:
    """DataTransformer::Rand(n) is caffe_rng_rand() % n on the transformer's generator (not
    boost's uniform_int): seeded 2227967492 (seed 1701's transformer) it gives record 0 of the
    transform case no mirror, h_off 5, w_off 0."""
    rng = CaffeRNG(2227967492)
    assert CaffeRNG(2227967492).raw(3).tolist() == [3481802584, 1524196175, 546066792]
    assert rng.rand_mod(3, np.array([2, 9, 9])).tolist() == [0, 5, 0]


def test_uniform_is_caffes_conv_uniform_blob() -> None:
    """caffe_rng_uniform: boost uniform_real<float>(a, nextafter(b)), one draw per value,
    float(u) / 2^32 * (b' - a) + a in float32. Caffe's first conv_uniform weights, U[-0.3, 0.7]."""
    values = CaffeRNG(1701).uniform(2400, -0.3, 0.7)
    want = [-0.210566789, 0.218739092, -0.184622318, 0.506680071, 0.21874392, 0.231870234]
    np.testing.assert_array_equal(values[:6], np.array(want, F32))
    assert sha(values) == "ba96449cf47498725ce9c92e7e452bfbf357f8e70f6e698b2be5ed2dd0413618"


def test_uniform_rejects_a_value_at_the_open_bound() -> None:
    """boost redraws when the value reaches b' = nextafter(b), skipping that draw: with a == b
    about half the draws round up to b', and the stream moves past exactly the draws used."""
    rng = CaffeRNG(0)
    raw = CaffeRNG(0).raw(4000)
    values = rng.uniform(1000, 1.0, 1.0)
    assert np.all(values == F32(1.0))
    upper = np.nextafter(F32(1), F32(2))
    accepted = raw.astype(F32) / F32(2.0**32) * (upper - F32(1)) + F32(1) < upper
    used = int(np.flatnonzero(accepted)[999]) + 1
    assert used > 1500
    assert rng.get_state() == _after(0, used)


def _after(seed: int, draws: int) -> dict:
    rng = CaffeRNG(seed)
    rng.raw(draws)
    return rng.get_state()


def test_gaussian_is_boost_ziggurat_with_caffes_draw_count() -> None:
    """caffe_rng_gaussian: boost 1.74's normal_distribution<float> (ziggurat), z * std + mean.
    Caffe's ip_gaussian weights (std 0.1) follow 2432 uniform draws and take 3191 draws for
    3072 values (wedges need a second draw, the tail several)."""
    rng = CaffeRNG(1701)
    rng.raw(2400 + 32)
    values = rng.gaussian(3072, 0.0, 0.1)
    want = [0.111824468, 0.0141809499, -0.0288763996, -0.0446393862, 0.0426251441]
    np.testing.assert_array_equal(values[:5], np.array(want, F32))
    assert sha(values) == "bf450231cd2362fcd80203781f1d01d6fb3154d7a28425108d6c00899ee48cbd"
    assert rng.get_state() == _after(1701, 2432 + 3191)


def test_gaussian_values_made_across_buffer_refills_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Values are made from buffers of draws; a value that a buffer cuts off carries its draws
    into the next one, so neither the split into calls nor the buffer size changes the values
    or where the stream is left."""
    whole_rng = CaffeRNG(5)
    whole = whole_rng.gaussian(4000, 1.0, 2.0)
    rng = CaffeRNG(5)
    parts = np.concatenate([rng.gaussian(n, 1.0, 2.0) for n in (1, 7, 992, 3000)])
    np.testing.assert_array_equal(parts, whole)
    assert rng.get_state() == whole_rng.get_state()
    for chunk in (1, 2, 3, 64):  # buffers of one draw per value: wedges and tails cross them
        monkeypatch.setattr("engine.boost_random._CHUNK", chunk)
        small = CaffeRNG(5)
        np.testing.assert_array_equal(small.gaussian(4000, 1.0, 2.0), whole)
        assert small.get_state() == whole_rng.get_state()
    raw = CaffeRNG(5).raw(10)
    out = np.empty(10, F32)
    made, used = ziggurat_kernels.normals_from(raw, out, F32(0), F32(1))
    assert made < 10 or used <= 10
    assert 0 < made <= used <= 10


def test_ziggurat_tail_uses_the_exponential_pairs() -> None:
    """Layer 0 (tail, bit pattern u & 0xFE == 0): boost draws Exp(x1)/Exp(1) pairs until
    2y > x^2 and returns x1 + x, beyond table_x[1] = 3.4426."""
    raw = np.array([0xFFFFFF01, *CaffeRNG(11).raw(64)], np.uint32)  # layer 0, sign +, x > x1
    out = np.empty(1, F32)
    made, used = ziggurat_kernels.normals_from(raw, out, F32(0), F32(1))
    assert made == 1 and used >= 3 and out[0] > F32(3.4426198558966521214)
    raw[0] = 0xFFFFFF00  # sign bit clear: the negative tail, same draws
    neg = np.empty(1, F32)
    assert ziggurat_kernels.normals_from(raw, neg, F32(0), F32(1)) == (1, used)
    assert neg[0] == -out[0]


def test_dropout_bernoulli_compares_in_double() -> None:
    """bernoulli_distribution<double>(p): kept when double(u) <= p * (2^32 - 1). With Caffe's
    float ratio 0.3, p = 1 - double(float(0.3)), so u <= 3006477055; ratio 0.5: u <= 2^31 - 1."""
    raw = CaffeRNG(8).raw(5000)
    p = 1.0 - float(F32(0.3))
    np.testing.assert_array_equal(CaffeRNG(8).bernoulli(5000, p), raw <= 3006477055)
    np.testing.assert_array_equal(CaffeRNG(8).bernoulli(5000, 0.5), raw <= 2147483647)
    assert math.floor(p * 4294967295.0) == 3006477055
    rng = CaffeRNG(8)
    assert not rng.bernoulli(10, 0.0).any() and rng.get_state() == _after(8, 0)


def test_sparse_bernoulli_compares_in_float() -> None:
    """bernoulli_distribution<float>(p) for the sparse gaussian filler: float(u) <= p * 2^32
    in float32 (p = 0.15f: bound 644245120f); p == 0 draws nothing."""
    raw = CaffeRNG(9).raw(5000)
    keep = CaffeRNG(9).bernoulli_float(5000, F32(3) / F32(20))
    np.testing.assert_array_equal(keep, raw.astype(F32) <= F32(644245120.0))
    rng = CaffeRNG(9)
    assert not rng.bernoulli_float(10, 0.0).any() and rng.get_state() == _after(9, 0)


def test_pure_python_ziggurat_equals_the_compiled_one() -> None:
    """Where Numba is off (ISGD_JIT=0, as where it has no wheel) the kernels run as plain
    Python: the same values and draws, and Numba is never imported."""
    import os
    import subprocess
    import sys

    if not ziggurat_kernels.AVAILABLE:
        pytest.skip("this process runs without Numba too: nothing compiled to compare with")
    code = (
        "import sys\n"
        "from engine import ziggurat_kernels; assert not ziggurat_kernels.AVAILABLE\n"
        "from engine.boost_random import CaffeRNG\n"
        "r = CaffeRNG(42); v = r.gaussian(3000, 0.5, 2.0)\n"
        "assert 'numba' not in sys.modules\n"
        "print(v.tobytes().hex(), r.get_state()['pos'])\n"
    )
    env = dict(os.environ, ISGD_JIT="0")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    rng = CaffeRNG(42)
    values = rng.gaussian(3000, 0.5, 2.0)
    assert out.stdout.split() == [values.tobytes().hex(), str(rng.get_state()["pos"])]
