"""GPU timing of the benchmark nets: `scripts/bench.py`'s nets and report, run under CuPy.

    python scripts/gpu_bench.py [--nets lenet64,lenet1000,cifar100,alexnet32] [--iterations K]
                                [--warmup W] [--device N] [--json]

Data layers are replaced by Input layers holding random images and in-range labels (uploaded
once), as bench.py does. GPU work is asynchronous: every timed span ends with a synchronization
of the device stream (engine.backend.synchronize) before the host clock is read, or the time of
kernels still queued would be missed. Whole iterations (forward + backward) are timed first, then
each layer in a second pass (a sync per layer, so the per-layer sum slightly exceeds the
iteration). The float32 GEMM peak is measured on the device in the same run (square matmul).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python scripts/gpu_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from engine.backend import get_array_module, synchronize, use_device  # noqa: E402
from engine.net import Net  # noqa: E402
from scripts.bench_nets import NETS, format_table, prepare_param, useful_flops  # noqa: E402


def timed(xp: ModuleType, fn: Callable[[], Any]) -> float:
    """Seconds from launching `fn`'s device work to its end (the stream is drained first)."""
    synchronize(xp)
    start = time.perf_counter()
    fn()
    synchronize(xp)
    return time.perf_counter() - start


def device_peak_gflops(xp: ModuleType, size: int, repeats: int = 5) -> float:
    """Best-of GFLOP/s of a square float32 matmul on the current device."""
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((size, size), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((size, size), dtype=np.float32))
    c = xp.empty((size, size), np.float32)
    xp.matmul(a, b, out=c)
    best = min(timed(xp, lambda: xp.matmul(a, b, out=c)) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def build(xp: ModuleType, name: str, batch: int | None, seed: int) -> tuple[Net, int]:
    """The TRAIN net of a bench.py spec on `xp`, inputs filled once on the device."""
    spec = NETS[name]
    param, inputs, classes = prepare_param(
        spec.path(), batch or spec.batch, spec.input_shape, False
    )
    net = Net(param, phase="TRAIN", xp=xp, seed=seed)
    rng = np.random.default_rng(seed)
    for i, (top, shape) in enumerate(inputs):
        host = (
            rng.standard_normal(shape, dtype=np.float32)
            if i == 0
            else rng.integers(0, classes, shape).astype(np.float32)
        )
        net.blobs[top].data[...] = xp.asarray(host)
    return net, int(inputs[0][1][0]) if inputs else int(batch or spec.batch or 1)


def time_net(xp: ModuleType, net: Net, iterations: int, warmup: int) -> dict[str, Any]:
    """Steady-state ms of forward, backward and each layer, synchronized."""
    for _ in range(max(warmup, 1)):
        net.forward_backward()
    synchronize(xp)
    fwd = [timed(xp, net.forward_loss) for _ in range(iterations)]
    bwd = [timed(xp, net.backward) for _ in range(iterations)]
    n_layers = len(net.layers)
    layer_f, layer_b = np.zeros(n_layers), np.zeros(n_layers)
    for _ in range(iterations):
        for i in range(n_layers):
            layer_f[i] += timed(xp, lambda i=i: net.forward_from_to(i, i))
        for i in reversed(range(n_layers)):
            layer_b[i] += timed(xp, lambda i=i: net.backward_from_to(i, i))
    total = np.add(fwd, bwd)
    return {
        "forward_ms": 1e3 * float(np.mean(fwd)),
        "backward_ms": 1e3 * float(np.mean(bwd)),
        "ms_per_iter": 1e3 * float(np.mean(total)),
        "ms_per_iter_best": 1e3 * float(np.min(total)),
        "ms_per_iter_median": 1e3 * float(np.median(total)),
        "layers": [
            {
                "name": net.layer_names[i],
                "type": net.layers[i].type_name,
                "forward_ms": 1e3 * layer_f[i] / iterations,
                "backward_ms": 1e3 * layer_b[i] / iterations,
            }
            for i in range(n_layers)
        ],
    }


def bench_one(
    xp: ModuleType, name: str, batch: int | None, iterations: int, warmup: int, peak: float, seed
) -> dict[str, Any]:
    net, n = build(xp, name, batch, seed)
    times = time_net(xp, net, iterations, warmup)
    f_flops, b_flops = useful_flops(net)
    gflops = (f_flops + b_flops) / (times["ms_per_iter"] * 1e-3) / 1e9
    return {
        "net": name,
        "batch": n,
        "backend": "cupy",
        "device": int(xp.cuda.Device().id),
        **{k: v for k, v in times.items() if k != "layers"},
        "images_per_s": n / (times["ms_per_iter"] * 1e-3),
        "gemm_gflops": gflops,
        "peak_fraction": gflops / peak,
        "peak_gflops": peak,
        "gflop_per_iter": (f_flops + b_flops) / 1e9,
        "source": str(NETS[name].path()),
        "layers": times["layers"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="lenet64,lenet1000,cifar100,alexnet32")
    ap.add_argument("--batch", type=int, help="batch size (default: each net's own)")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", type=int, default=0, help="CUDA device id (default 0)")
    ap.add_argument("--peak-size", type=int, default=4096, help="matmul size for the GEMM peak")
    ap.add_argument("--json", action="store_true", help="one JSON object per line per net")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in args.nets.split(",") if n]
    unknown = [n for n in names if n not in NETS]
    if unknown or args.iterations < 1:
        raise SystemExit(
            f"unknown nets {unknown} (known: {', '.join(NETS)})"
            if unknown
            else "--iterations must be at least 1"
        )
    xp = get_array_module("cupy")
    use_device(xp, args.device)
    peak = device_peak_gflops(xp, args.peak_size)
    for name in names:
        result = bench_one(xp, name, args.batch, args.iterations, args.warmup, peak, args.seed)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(format_table(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
