"""`caffe time` for this engine: per-layer and per-iteration forward/backward times of the nets.

Data layers are swapped for Input layers holding random images and in-range labels (unless
--data lmdb), and the float32 GEMM peak is measured in the same run so that the achieved
GFLOP/s of the useful convolution/inner-product work can be reported as a fraction of it.
--phase TEST times the TEST net forward only (a test pass); --train-step times whole `isgd train`
iterations through the real Solver on the LMDB-backed net (Data layer, forward, backward, update,
ISGD bookkeeping, JSON log) beside the forward + backward of the same net in the same run, in
interleaved blocks of 10 iterations (one Solver.step(10) call, as training runs, then 10 passes).

    python scripts/bench.py [--nets lenet64,lenet1000,cifar100,alexnet32] [--iterations K] [--json]
    python scripts/bench.py --phase TEST --nets lenet64,cifar100
    python scripts/bench.py --train-step --nets lenet64,cifar100
    python scripts/bench.py --model path/to/train.prototxt --batch 32 --input-shape 3,32,32
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python scripts/bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from engine.net import Net  # noqa: E402
from engine.timing import time_layers, time_passes  # noqa: E402
from scripts.bench_nets import (  # noqa: E402  (shared with scripts/gpu_bench.py)
    NETS,
    NetSpec,
    build_net,
    format_table,
    other_phase_only,
    prepare_param,
    useful_flops,
)
from solvers.solver import Solver, load_solver_param  # noqa: E402
from solvers.train_log import TrainLog  # noqa: E402


def gemm_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best-of GFLOP/s of a square float32 matmul: this machine's BLAS peak, right now."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --- timing ------------------------------------------------------------------------------------
def time_net(net: Net, iterations: int, warmup: int = 5, backward: bool = True) -> dict[str, Any]:
    """Steady-state whole-pass times (forward, backward) and per-layer times, in ms.

    `warmup` untimed iterations first: buffers allocated, thread pools started, pages touched.
    Per-layer times come from Caffe's loop (engine.timing.time_layers, as `isgd time`).
    """
    passes = time_passes(net, iterations, warmup=max(warmup, 1), backward=backward)
    layers = time_layers(net, iterations, backward=backward)
    total = passes.iteration_ms
    return {
        "forward_ms": float(np.mean(passes.forward_ms)),
        "backward_ms": float(np.mean(passes.backward_ms)) if backward else 0.0,
        "ms_per_iter": float(np.mean(total)),
        "ms_per_iter_best": float(np.min(total)),
        "ms_per_iter_median": float(np.median(total)),
        "layers": [
            {"name": name, "type": kind, "forward_ms": f, "backward_ms": b}
            for name, kind, f, b in zip(
                layers.names, layers.types, layers.forward_ms, layers.backward_ms, strict=True
            )
        ],
    }


def bench_one(
    name: str,
    path: Path,
    batch: int | None,
    shape: tuple[int, ...] | None,
    iterations: int,
    keep_data: bool,
    peak: float,
    seed: int,
    warmup: int = 5,
    phase: str = "TRAIN",
) -> dict[str, Any]:
    """Time one net (TRAIN: forward + backward; TEST: forward only) and count its FLOPs."""
    param, inputs, classes = prepare_param(path, batch, shape, keep_data, phase)
    net = build_net(param, inputs, classes, seed, phase)
    n = _batch_size(net, inputs)
    backward = phase == "TRAIN"
    times = time_net(net, iterations, warmup, backward)
    for row, layer in zip(times["layers"], net.layers, strict=True):
        if hasattr(layer, "plan") and callable(layer.plan):  # Convolution: the chosen plan
            row["plan"] = layer.plan(0).summary()
    f_flops, b_flops = useful_flops(net)
    flops = f_flops + (b_flops if backward else 0.0)
    gflops = flops / (times["ms_per_iter"] * 1e-3) / 1e9
    return {
        "net": name,
        "phase": phase,
        "batch": int(n),
        "ms_per_iter": times["ms_per_iter"],
        "forward_ms": times["forward_ms"],
        "backward_ms": times["backward_ms"],
        "images_per_s": n / (times["ms_per_iter"] * 1e-3),
        "gemm_gflops": gflops,
        "peak_fraction": gflops / peak,
        "peak_gflops": peak,
        "gflop_per_iter": flops / 1e9,
        "ms_per_iter_best": times["ms_per_iter_best"],
        "ms_per_iter_median": times["ms_per_iter_median"],
        "source": str(path),
        "layers": times["layers"],
    }


def _batch_size(net: Net, inputs: list[tuple[str, tuple[int, ...]]]) -> int:
    """The batch: the first input's, else the first data layer's first top's."""
    if inputs:
        return int(net.blobs[inputs[0][0]].shape[0])
    return int(net.top_vecs[0][0].shape[0])


# --- a whole training step -------------------------------------------------------------------
def _missing_sources(param: Any, phase: str) -> list[str]:
    return [
        layer.data_param.source
        for layer in param.layer
        if layer.type in ("Data", "DATA")
        and not other_phase_only(layer, phase)
        and not Path(layer.data_param.source).exists()
    ]


TRAIN_STEP_BLOCK = 10  # iterations per timed Solver.step call in --train-step


def train_step_one(
    name: str, spec: NetSpec, batch: int | None, iterations: int, warmup: int, seed: int
) -> dict[str, Any]:
    """ms per `isgd train` iteration (Solver.step: Data layer, forward, backward, ISGD
    statistics, update, JSON log to a temp file) beside the bench's forward + backward of the
    same net (Input layers), both timed in this run; raises FileNotFoundError without LMDBs."""

    if spec.solver is None:
        raise FileNotFoundError(f"net '{name}' has no solver file for --train-step")
    param, _ = load_solver_param(str(ROOT / "prototxt" / spec.solver))
    net_param, _, _ = prepare_param(spec.path(), None, None, keep_data=True)
    for layer in net_param.layer:
        if layer.type in ("Data", "DATA") and not other_phase_only(layer, "TRAIN"):
            layer.data_param.batch_size = batch or spec.batch or layer.data_param.batch_size
    missing = _missing_sources(net_param, "TRAIN")
    if missing:
        raise FileNotFoundError(
            f"no LMDB at {', '.join(missing)} (build them: ISGD_DATA_DIR=../shared/data make data)"
        )
    param.ClearField("net")
    param.net_param.CopyFrom(net_param)
    param.ClearField("test_iter")  # no test net: the training clock excludes tests anyway
    param.test_interval = 0
    param.ClearField("test_interval_seconds")
    param.snapshot = 0
    param.max_iter = warmup + iterations + TRAIN_STEP_BLOCK + 1
    n = batch or spec.batch or int(net_param.layer[0].data_param.batch_size)
    bench_param, inputs, classes = prepare_param(spec.path(), n, spec.input_shape, False)
    bench_net = build_net(bench_param, inputs, classes, seed)
    steps, fb = [], []
    with tempfile.TemporaryDirectory() as tmp:
        log = TrainLog(stream=io.StringIO(), json_path=Path(tmp) / "log.jsonl", progress=False)
        try:
            solver = Solver(param, log=log)
            solver.step(max(warmup, 1))
            time_passes(bench_net, 0, warmup=max(warmup, 1))
            # Interleaved blocks, so both see the same machine; a block is one Solver.step(k)
            # call as training makes (step(1) calls would add a per-call setup and control
            # message that `isgd train` pays once), beside k bench passes.
            block = max(1, min(TRAIN_STEP_BLOCK, iterations))
            for _ in range(max(1, iterations // block)):
                t = time.perf_counter()
                solver.step(block)
                steps.append(1e3 * (time.perf_counter() - t) / block)
                fb.append(float(np.mean(time_passes(bench_net, block, warmup=0).iteration_ms)))
        finally:
            log.close()
    step_ms, fb_ms = float(np.median(steps)), float(np.median(fb))
    return {
        "net": name,
        "phase": "TRAIN",
        "batch": int(n),
        "train_step_ms": step_ms,
        "forward_backward_ms": fb_ms,
        "overhead": step_ms / fb_ms - 1.0,
        "source": str(spec.path()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--nets",
        default="lenet64,lenet1000,cifar100,alexnet32",
        help=f"comma-separated, from {', '.join(NETS)}",
    )
    ap.add_argument("--model", help="time this prototxt instead of the built-in nets")
    ap.add_argument("--batch", type=int, help="batch size (default: the net's own)")
    ap.add_argument("--input-shape", help="per-image shape C,H,W for --model")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument(
        "--warmup", type=int, default=5, help="untimed iterations before timing (default 5)"
    )
    ap.add_argument(
        "--data",
        choices=["dummy", "lmdb"],
        default="dummy",
        help="lmdb keeps the prototxt's real Data layers",
    )
    ap.add_argument(
        "--phase",
        choices=["TRAIN", "TEST"],
        default="TRAIN",
        help="TEST: the test net, forward only, at its own batch size unless --batch",
    )
    ap.add_argument(
        "--train-step",
        action="store_true",
        help="time whole `isgd train` iterations (Solver, LMDB data, update, ISGD, JSON log)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per line per net")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--gpu",
        nargs="?",
        const=0,
        type=int,
        metavar="N",
        help="time the nets on GPU N under CuPy (scripts/gpu_bench.py; default device 0)",
    )
    return ap.parse_args(argv)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print(format_table(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.iterations < 1:
        raise SystemExit("--iterations must be at least 1")
    if args.gpu is not None:
        if args.model or args.train_step or args.phase != "TRAIN" or args.data != "dummy":
            raise SystemExit("--gpu times the built-in nets' TRAIN passes only (--nets)")
        from scripts import gpu_bench  # it builds on this module: imported on use

        forwarded = ["--nets", args.nets, "--iterations", str(args.iterations)]
        forwarded += ["--warmup", str(args.warmup), "--device", str(args.gpu)]
        forwarded += ["--seed", str(args.seed)] + (
            ["--batch", str(args.batch)] if args.batch else []
        )
        return gpu_bench.main(forwarded + (["--json"] if args.json else []))
    shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None
    names = [] if args.model else [n for n in args.nets.split(",") if n]
    for name in names:
        if name not in NETS:
            raise SystemExit(f"unknown net '{name}' (known: {', '.join(NETS)})")
    if args.train_step:
        if args.model:
            raise SystemExit("--train-step times the built-in nets (--nets), not --model")
        for name in names:
            try:
                result = train_step_one(
                    name, NETS[name], args.batch, args.iterations, args.warmup, args.seed
                )
            except FileNotFoundError as exc:
                print(f"== {name}: train step skipped: {exc}", flush=True)
                continue
            _print(result, args.json)
        return 0
    jobs = []
    if args.model:
        jobs.append((Path(args.model).stem, Path(args.model), args.batch, shape))
    for name in names:
        spec = NETS[name]
        try:
            path = spec.path()
        except FileNotFoundError as exc:
            print(f"== {name}: skipped: {exc}", flush=True)
            continue
        batch = args.batch or (spec.batch if args.phase == "TRAIN" else None)
        jobs.append((name, path, batch, shape or spec.input_shape))
    peak = gemm_peak_gflops()
    for name, path, batch, image in jobs:
        result = bench_one(
            name,
            path,
            batch,
            image,
            args.iterations,
            args.data == "lmdb",
            peak,
            args.seed,
            args.warmup,
            args.phase,
        )
        _print(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
