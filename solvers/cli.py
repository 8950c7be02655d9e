"""`isgd <command> <flags>`: Caffe's command-line brew (train / test / time / device_query)."""

from __future__ import annotations

import argparse
import io
import sys
from types import ModuleType
from typing import Any

import numpy as np

from engine.backend import get_array_module
from engine.errors import EngineError
from solvers import mpi_train
from solvers.comm import Comm, SerialComm
from solvers.launch import rank_prefix
from solvers.signals import SignalHandler, check_effect
from solvers.train_log import TrainLog, fmt

USAGE = """\
isgd: command line brew (Caffe's `caffe` tool, with Inconsistent SGD)
usage: isgd <command> <args>

commands:
  train           train or finetune a model
  test            score a model
  time            benchmark model execution time
  device_query    show GPU diagnostic information
  data            data tools: convert_mnist_data, convert_cifar_data, convert_imageset,
                  compute_image_mean, make_controlled, prepare, fetch (isgd data --help)

examples:
  isgd train -solver prototxt/lenet_solver.prototxt
  isgd train -solver prototxt/lenet_solver.prototxt -snapshot lenet_iter_5000.solverstate
  isgd train -solver S -weights pretrained.caffemodel -gpu 0
  isgd test -model prototxt/lenet_train_test.prototxt -weights lenet_iter_10000.caffemodel \\
      -iterations 100
  isgd time -model prototxt/lenet_train_test.prototxt -iterations 10

Flags take one dash as in Caffe (-solver S, -solver=S) or two (--solver S).
ISGD is switched on by an `isgd_param { ... }` block in the solver file.
"""


def build_parser() -> argparse.ArgumentParser:
    """One parser for every command, with Caffe's flag names (gflags-style single dash)."""
    parser = argparse.ArgumentParser(
        prog="isgd",
        usage=argparse.SUPPRESS,
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)

    def flag(name: str, *aliases: str, **kwargs: Any) -> None:
        names = [f"-{name}", f"--{name}"]
        for alias in aliases:
            names += [f"-{alias}", f"--{alias}"]
        parser.add_argument(*dict.fromkeys(names), dest=name, **kwargs)

    flag(
        "solver", default="", metavar="FILE", help="the solver definition protocol buffer text file"
    )
    flag("model", default="", metavar="FILE", help="the model definition protocol buffer text file")
    flag(
        "weights",
        default="",
        metavar="W[,W2]",
        help="optional; the pretrained weights to initialize finetuning, separated by ','. "
        "Cannot be set simultaneously with snapshot.",
    )
    flag(
        "snapshot",
        default="",
        metavar="FILE",
        help="optional; the snapshot solver state to resume training",
    )
    flag(
        "gpu",
        default="",
        metavar="N|all",
        help="optional; run in GPU mode (CuPy) on the given device ID ('all' = device 0: one "
        "process drives one device; use mpirun for several)",
    )
    flag(
        "iterations",
        type=int,
        default=None,
        metavar="K",
        help="the number of iterations to run (test/time; default 50). For train it overrides "
        "max_iter when given.",
    )
    flag("phase", default="", metavar="TRAIN|TEST", help="optional; network phase (only for time)")
    flag("level", type=int, default=0, help="optional; network level")
    flag(
        "stage",
        default="",
        metavar="S1,S2",
        help="optional; network stages (not to be confused with phase), separated by ','",
    )
    flag(
        "sigint_effect",
        "sigint-effect",
        default="stop",
        metavar="ACTION",
        help="optional; action on SIGINT: snapshot, stop or none (default stop)",
    )
    flag(
        "sighup_effect",
        "sighup-effect",
        default="snapshot",
        metavar="ACTION",
        help="optional; action on SIGHUP: snapshot, stop or none (default snapshot)",
    )
    flag(
        "json_log",
        "json-log",
        default="",
        metavar="FILE",
        help="JSON-lines log of every iteration and test (default: <snapshot_prefix>_log.jsonl)",
    )
    flag(
        "allreduce",
        action="store_true",
        help="under mpiexec: every rank updates after one Allreduce (default: the paper's "
        "master/worker reduce-update-broadcast)",
    )
    flag(
        "no_progress",
        "no-progress",
        action="store_true",
        help="no progress display, even on a terminal",
    )
    return parser


def _stages(value: str) -> list[str]:
    return [s for s in value.split(",") if s] if value else []


def _array_module(gpu: str, log: TrainLog) -> ModuleType:
    """NumPy for CPU; CuPy on the requested device for -gpu N / -gpu all."""
    if not gpu:
        log.info("Use CPU.")
        return np
    device = 0 if gpu == "all" else int(gpu.split(",")[0])
    xp = get_array_module("cupy")
    xp.cuda.Device(device).use()
    log.info(f"Using GPUs {device}")
    return xp


def solver_mode_gpu(gpu: str, param: Any, log: TrainLog) -> str:
    """The -gpu value train uses: Caffe takes an explicit `solver_mode: GPU` (device_id, default
    0) when -gpu is not given; with no visible GPU we log that and run on the CPU instead."""
    if gpu or not param.HasField("solver_mode") or param.solver_mode != param.GPU:
        return gpu
    from solvers.launch import visible_gpu_count  # noqa: PLC0415

    if visible_gpu_count() > 0:
        return str(int(param.device_id))
    log.info("solver_mode is GPU but no GPU is visible (CuPy or CUDA missing): using the CPU")
    return ""


def train(args: argparse.Namespace, comm: Comm | None = None) -> int:
    """`isgd train`: Caffe's train(), plus the JSON log and ISGD from the solver file."""
    from solvers.solver import Solver, default_json_log_path, load_solver_param  # noqa: PLC0415

    if not args.solver:
        raise SystemExit("isgd train: need a solver definition to train (-solver FILE)")
    if args.snapshot and args.weights:
        raise SystemExit(
            "isgd train: give a snapshot to resume training or weights to finetune but not both"
        )
    check_effect("sigint_effect", args.sigint_effect)
    check_effect("sighup_effect", args.sighup_effect)
    param, path = load_solver_param(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(_stages(args.stage))
    if args.iterations is not None:
        param.max_iter = args.iterations
    if args.snapshot or args.weights:
        del param.weights[:]  # as Caffe's train(): the flags replace the solver's `weights`
    if comm is None:
        comm = _launcher_comm()
    master = comm.is_master
    json_path = (args.json_log or default_json_log_path(param, path)) if master else None
    log = TrainLog(
        stream=None if master else io.StringIO(),  # workers stay quiet; rank 0 logs
        json_path=json_path,
        append=bool(args.snapshot),
        progress=False if args.no_progress or not master else None,
    )
    try:
        if json_path:
            log.info(f"JSON log: {json_path}")
        mpi_train.check_inputs(comm, args.solver, args.weights, args.snapshot)
        mpi_train.announce(comm, log, args.allreduce)
        gpu = solver_mode_gpu(args.gpu, param, log)
        xp = mpi_train.array_module(gpu, comm, log)  # rank r: device r mod visible GPUs
        log = mpi_train.TimingLog(log)
        with SignalHandler(args.sigint_effect, args.sighup_effect) as handler:
            solver = Solver(
                param,
                comm=comm,
                xp=xp,
                log=log,
                action=handler.requested_action,
                allreduce=args.allreduce,
            )
            solver.solver_path = path
            if args.snapshot:
                log.info(f"Resuming from {args.snapshot}")
            elif args.weights:
                solver.load_weights(args.weights)
            log.info("Starting Optimization")
            solver.solve(args.snapshot or None)
        if master:
            log.write_summary(comm, args.allreduce)
        log.info("Optimization Done.")
    finally:
        log.close()
    return 0


def _launcher_comm() -> Comm:
    """MPIComm when started by mpiexec (solvers.launch decides), else SerialComm."""
    try:
        from solvers.launch import get_comm  # noqa: PLC0415
    except ImportError:
        return SerialComm()
    return get_comm()


def _output_weights(net: Any) -> dict[str, float]:
    by_id = {id(blob): float(w) for blob, w in getattr(net, "loss_tops", [])}
    return {name: by_id.get(id(net.blobs[name]), 0.0) for name in net.output_blob_names}


def test(args: argparse.Namespace) -> int:
    """`isgd test`: score a model, printing "Batch k, name = v" and the means (Caffe's test())."""
    from engine.net import Net  # noqa: PLC0415

    if not args.model:
        raise SystemExit("isgd test: need a model definition to score (-model FILE)")
    if not args.weights:
        raise SystemExit("isgd test: need model weights to score (-weights FILE)")
    iterations = 50 if args.iterations is None else args.iterations
    log = TrainLog(source="cli.py:0", progress=False)
    xp = _array_module(args.gpu, log)
    net = Net(args.model, phase="TEST", xp=xp, stages=_stages(args.stage), level=args.level)
    for weights in args.weights.split(","):
        net.copy_from(weights)
    log.info(f"Running for {iterations} iterations.")
    scores: np.ndarray | None = None
    names: list[str] = []
    loss = np.float32(0.0)
    for i in range(iterations):
        loss = np.float32(loss + np.float32(net.forward_loss()))
        values, names = [], []
        for name in net.output_blob_names:
            data = net.blobs[name].data
            host = data.get() if hasattr(data, "get") else np.asarray(data)
            flat = np.asarray(host, np.float32).reshape(-1)
            values.append(flat)
            for v in flat:
                names.append(name)
                log.info(f"Batch {i}, {name} = {fmt(v)}")
        batch = np.concatenate(values) if values else np.zeros(0, np.float32)
        scores = batch.copy() if scores is None else (scores + batch).astype(np.float32)
    log.info(f"Loss: {fmt(np.float32(loss / np.float32(max(iterations, 1))))}")
    weights = _output_weights(net)
    if scores is not None:
        for name, total in zip(names, scores, strict=True):
            mean = np.float32(total / np.float32(iterations))
            w = weights.get(name, 0.0)
            suffix = f" (* {fmt(w)} = {fmt(np.float32(w) * mean)} loss)" if w else ""
            log.info(f"{name} = {fmt(mean)}{suffix}")
    return 0


def time_(args: argparse.Namespace) -> int:
    """`isgd time`: per-layer forward/backward timing, as Caffe's time() (engine.timing)."""
    from engine.net import Net  # noqa: PLC0415
    from engine.timing import time_layers  # noqa: PLC0415

    if not args.model:
        raise SystemExit("isgd time: need a model definition to time (-model FILE)")
    iterations = 50 if args.iterations is None else args.iterations
    phase = args.phase or "TRAIN"
    if phase not in ("TRAIN", "TEST"):
        raise SystemExit('isgd time: phase must be "TRAIN" or "TEST"')
    log = TrainLog(source="cli.py:0", progress=False)
    xp = _array_module(args.gpu, log)
    net = Net(args.model, phase=phase, xp=xp, stages=_stages(args.stage), level=args.level)
    log.info("Performing Forward")
    log.info(f"Initial loss: {fmt(net.forward_loss())}")
    log.info("Performing Backward")
    net.backward()
    log.info("*** Benchmark begins ***")
    log.info(f"Testing for {iterations} iterations.")
    times = time_layers(
        net,
        iterations,
        on_iteration=lambda j, ms: log.info(f"Iteration: {j} forward-backward time: {fmt(ms)} ms."),
    )
    k = max(iterations, 1)
    log.info("Average time per layer: ")
    for i, name in enumerate(times.names):
        log.info(f"{name:>10}\tforward: {fmt(times.forward_ms[i])} ms.")
        log.info(f"{name:>10}\tbackward: {fmt(times.backward_ms[i])} ms.")
    log.info(f"Average Forward pass: {fmt(times.forward_pass_ms)} ms.")
    log.info(f"Average Backward pass: {fmt(times.backward_pass_ms)} ms.")
    log.info(f"Average Forward-Backward: {fmt(times.total_ms / k)} ms.")
    log.info(f"Total Time: {fmt(times.total_ms)} ms.")
    log.info("*** Benchmark ends ***")
    return 0


def device_query(args: argparse.Namespace) -> int:
    """`isgd device_query`: what CuPy sees (or that only the CPU is available)."""
    log = TrainLog(source="cli.py:0", progress=False)
    try:
        import cupy  # noqa: PLC0415
    except ImportError:
        log.info("CuPy is not installed: CPU only (NumPy)")
        return 0
    for device in range(cupy.cuda.runtime.getDeviceCount()):
        props = cupy.cuda.runtime.getDeviceProperties(device)
        log.info(
            f"Device id: {device}, name: {props['name'].decode()}, "
            f"memory: {props['totalGlobalMem'] / 2**30:.1f} GiB"
        )
    return 0


COMMANDS = {"train": train, "test": test, "time": time_, "device_query": device_query}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `isgd` console script and `python -m solvers`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:  # Caffe's converters live in data_tools; pass the rest through
        from data_tools.cli import main as data_main  # noqa: PLC0415

        return int(data_main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    command = COMMANDS.get(args.command)
    if command is None:
        sys.stderr.write(
            f"isgd: unknown action: {args.command}\navailable actions: {', '.join(COMMANDS)}\n"
        )
        return 1
    try:
        return command(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code + "\n")
            return 1
        raise
    except (EngineError, ValueError, OSError) as exc:
        sys.stderr.write(f"{rank_prefix()}isgd {args.command}: error: {exc}\n")
        return 1
