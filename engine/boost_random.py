"""Caffe's CPU random stream: boost::mt19937 and the boost distributions Caffe draws with.

Caffe draws every CPU random number (fillers, the Data layer's transformer seeds, Dropout masks)
from one boost::mt19937 per thread, seeded by the solver's random_seed (math_functions.cpp,
common.cpp). NumPy's MT19937 with legacy seeding is the same generator: seed(s) gives the same
outputs as init_genrand(s) (boost also rewrites the low bits of the first state word, which
never reach an output), and random_raw() reads its 32-bit outputs. The distributions below are
boost 1.74's, in float32 where Caffe's Dtype is float, so the same seed gives Caffe's values
bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine import ziggurat_kernels

F32 = np.float32
_U32_RANGE_F32 = F32(4294967296.0)  # float(2^32 - 1) rounds to 2^32; boost adds 1 (still 2^32)
_STATE_KIND = "mt19937"
_CHUNK = 1 << 20  # normals made per buffer of draws (bounds the buffer's memory)


class CaffeRNG:
    """One boost::mt19937 (Caffe's RNG) and Caffe's caffe_rng_* draws from it, vectorized."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed) % 2**32  # Caffe passes random_seed as an unsigned int
        self._bg = np.random.MT19937(0)
        self._bg._legacy_seeding(self.seed)
        # integers over the full uint32 range returns the generator's 32-bit outputs unchanged,
        # several times faster than random_raw (tests check both give the same outputs).
        self._draws = np.random.Generator(self._bg)

    # ------------------------------------------------------------------ raw outputs
    def raw(self, n: int) -> np.ndarray:
        """The next n 32-bit outputs (uint32), as eng() returns them."""
        return self._draws.integers(0, 2**32, int(n), dtype=np.uint32)

    def rand(self) -> int:
        """caffe_rng_rand(): one output, unchanged (seeds transformers and prefetch threads)."""
        return int(self._bg.random_raw())

    def rand_mod(self, n: int, modulus: np.ndarray | int) -> np.ndarray:
        """n outputs each taken mod `modulus` (DataTransformer::Rand, which is not uniform_int)."""
        return (self.raw(n).astype(np.int64) % np.asarray(modulus, np.int64)).astype(np.int64)

    # ------------------------------------------------------------------ distributions
    def uniform(self, n: int, a: float, b: float) -> np.ndarray:
        """caffe_rng_uniform<float>(n, a, b): boost uniform_real<float>(a, nextafter(b)), one
        draw per value, float(u) / 2^32 * (b' - a) + a in float32, redrawn if >= b'."""
        a32, b32 = F32(a), F32(b)
        if not a32 <= b32:
            raise ValueError(f"uniform: lower bound {a} exceeds upper bound {b}")
        upper = np.nextafter(b32, F32(np.inf))
        span = F32(upper - a32)
        out = np.empty(int(n), F32)
        done = 0
        while done < n:
            u = self.raw(n - done).astype(F32)
            values = u / _U32_RANGE_F32 * span + a32
            kept = values[values < upper]  # a rejected draw is skipped, in order
            out[done : done + kept.size] = kept
            done += kept.size
        return out

    def gaussian(self, n: int, mean: float, std: float) -> np.ndarray:
        """caffe_rng_gaussian<float>(n, mean, std): boost 1.74's normal_distribution<float>
        (ziggurat), z * std + mean in float32; the draws per value vary."""
        if not std > 0:
            raise ValueError(f"gaussian: std must be > 0, got {std}")
        out = np.empty(int(n), F32)
        done = 0
        pending = np.empty(0, np.uint32)  # the draws of a value the last buffer ran out in
        while done < n:
            # Every value takes at least one draw and the one in progress more than its pending
            # draws, so one new draw per value still to make never reads past what they use:
            # the stream is left exactly after the last value, with no rewinding.
            want = min(n - done, _CHUNK)
            raw = self.raw(want)
            if pending.size:
                raw = np.concatenate((pending, raw))
            made, used = ziggurat_kernels.normals_from(
                raw, out[done : done + want], F32(mean), F32(std)
            )
            pending = raw[used:]
            done += made
        return out

    def bernoulli(self, n: int, p: float) -> np.ndarray:
        """caffe_rng_bernoulli(n, double p) (Dropout): boost bernoulli_distribution<double>,
        true when double(u) <= p * (2^32 - 1); with p == 0 nothing is drawn."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"bernoulli: p must be in [0, 1], got {p}")
        if p == 0.0:
            return np.zeros(int(n), bool)
        bound = math.floor(float(p) * 4294967295.0)  # u is an integer: u <= floor(bound)
        return self.raw(n) <= np.uint32(bound)

    def bernoulli_float(self, n: int, p: float) -> np.ndarray:
        """caffe_rng_bernoulli(n, float p) (the sparse gaussian filler): true when
        float(u) <= p * 2^32 in float32; with p == 0 nothing is drawn."""
        p32 = F32(p)
        if not F32(0) <= p32 <= F32(1):
            raise ValueError(f"bernoulli: p must be in [0, 1], got {p}")
        if p32 == 0:
            return np.zeros(int(n), bool)
        return self.raw(n).astype(F32) <= F32(p32 * _U32_RANGE_F32)

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """The whole generator state, JSON-ready (restored exactly by set_state)."""
        state = self._bg.state["state"]
        return {
            "kind": _STATE_KIND,
            "seed": self.seed,
            "key": [int(k) for k in state["key"]],
            "pos": int(state["pos"]),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Put the generator back into a state taken by get_state."""
        if not isinstance(state, dict) or state.get("kind") != _STATE_KIND:
            kind = None
            if isinstance(state, dict):
                kind = state.get("kind") or state.get("bit_generator")
            raise ValueError(
                f"cannot restore Caffe's mt19937 stream from a {kind or 'foreign'} state "
                "(a snapshot from another backend or an older version?)"
            )
        key = np.asarray(state["key"], dtype=np.uint32)
        if key.shape != (624,):
            raise ValueError(f"mt19937 state needs 624 key words, got {key.size}")
        self._bg.state = {
            "bit_generator": "MT19937",
            "state": {"key": key, "pos": int(state["pos"])},
        }
        self.seed = int(state.get("seed", self.seed))


def is_caffe_rng_state(state: Any) -> bool:
    """True for a state written by CaffeRNG.get_state."""
    return isinstance(state, dict) and state.get("kind") == _STATE_KIND
