"""PENDING (fails until the Pooling rewrite lands): Pooling on a second GPU.

engine/layers/pooling.py (owned by the conv/pool rewrite on another branch) splits large batches
over host threads whatever the array module: pooling.py:132 sets buf["parts"] from the output size
alone and pooling.py:177-179 submits the halves to a ThreadPoolExecutor. CUDA's current device is
per host thread, so on device r > 0 (rank r under `-gpu all`) the worker threads run on device 0:
CuPy fails, and the strict stand-in raises "Array device must be same as the current device".
The fix is `parts = 1 unless engine.backend.host_threads_allowed(xp)`. These tests are expected to
fail in this branch and to pass once that lands; they are not skipped so the gap stays visible.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.net import Net
from scripts.bench import NETS, prepare_param
from tests.cupy_standin import fakecupy
from tests.engine.test_standin_conv import BIG_CASES, run_once


@pytest.mark.parametrize("case", ["max pool", "ave pool"])
def test_pooling_on_a_second_device(case: str, on_device_1: None) -> None:
    kind, body, shape = BIG_CASES[case]
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    cpu = run_once(kind, body, x, 3, np)
    gpu = run_once(kind, body, x, 3, fakecupy)
    for got, want in zip(gpu, cpu, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cifar10_quick_on_a_second_device(on_device_1: None) -> None:
    """CIFAR-10 quick at its batch of 100: pool1's output (100 x 32 x 16 x 16) is threaded."""
    param, inputs, _ = prepare_param(NETS["cifar100"].path(), 100, (3, 32, 32), False)
    net = Net(param, "TRAIN", xp=fakecupy, seed=1)
    rng = np.random.default_rng(0)
    net.blobs[inputs[0][0]].data[...] = fakecupy.asarray(
        rng.standard_normal(inputs[0][1]).astype(np.float32)
    )
    net.blobs[inputs[1][0]].data[...] = fakecupy.asarray(
        rng.integers(0, 10, inputs[1][1]).astype(np.float32)
    )
    assert np.isfinite(net.forward_backward())
