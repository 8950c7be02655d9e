"""Pooling and a whole net on device 1 (rank 1 under `-gpu all`), on the strict CuPy stand-in.

CUDA's current device is per host thread: a layer that split its work over host worker threads
would run them on device 0, which CuPy (and the stand-in) refuse. Pooling splits large batches over
host threads on NumPy only (`engine.threads.EngineThreads` runs parts in the caller elsewhere), so on
device 1 it must give the CPU's numbers at sizes where the CPU path threads, and CIFAR-10 quick
(pool1 100 x 32 x 16 x 16, threaded on the CPU) must train a step there.
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
