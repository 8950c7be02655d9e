"""`isgd <command> <flags>`: Caffe's command-line brew (train / test / time / device_query)."""

from __future__ import annotations

import argparse
import difflib
import io
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from data_tools.cli import main as data_main
from engine.errors import EngineError
from engine.net import Net
from engine.timing import time_layers
from solvers import launch, startup
from solvers.comm import Comm, SerialComm
from solvers.launch import StartupMismatchError, exit_together, get_comm, rank_prefix
from solvers.provenance import provenance
from solvers.scoring import loss_weights, score
from solvers.signals import SignalHandler, check_effect
from solvers.snapshot import snapshot_filename
from solvers.solver import (
    NonFiniteLossError,
    Solver,
    default_json_log_path,
    load_solver_param,
    weights_warning,
)
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

examples (from the repository root, after `make data`):
  isgd train -solver prototxt/lenet_sgd_solver.prototxt -iterations 2000
  isgd train -solver prototxt/lenet_sgd_solver.prototxt \\
      -snapshot results/snapshots/lenet_sgd_iter_2000.solverstate
  isgd train -solver prototxt/lenet_isgd_solver.prototxt \\
      -weights results/snapshots/lenet_sgd_iter_2000.caffemodel -gpu 0
  isgd test -model prototxt/lenet_train_test.prototxt \\
      -weights results/snapshots/lenet_sgd_iter_2000.caffemodel -iterations 100
  isgd time -model prototxt/lenet_train_test.prototxt -iterations 10

Flags take one dash as in Caffe (-solver S, -solver=S) or two (--solver S).
ISGD is switched on by an `isgd_param { ... }` block in the solver file.
train's exit status: 0 done, 1 error, 130 stopped at a snapshot by a signal whose effect is
`stop` or by the end of its parent (-stop_with_parent); under mpiexec every rank exits 130.
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
        help="optional; run on GPUs with CuPy (train, test and time alike): 'all' puts rank r on "
        "device r mod (visible GPUs), a list '0,2' puts rank r on list[r mod len], one id puts "
        "every rank on it; a single process is rank 0 (use mpiexec for several GPUs)",
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
        "sigterm_effect",
        "sigterm-effect",
        default=None,
        metavar="ACTION",
        help="optional; action on SIGTERM: snapshot, stop or none (default: not caught, the "
        "process ends at once, as Caffe's)",
    )
    flag(
        "stop_with_parent",
        "stop-with-parent",
        action="store_true",
        help="optional; stop at a snapshot (as a stop signal) when the process that started "
        "the trainer ends, so that it never trains on as an orphan",
    )
    flag(
        "parent_pid",
        "parent-pid",
        type=int,
        default=None,
        metavar="PID",
        help="optional, with -stop_with_parent: the process whose end stops training (default: "
        "the trainer's parent; under mpiexec give the pid of the process that runs mpiexec)",
    )
    flag(
        "json_log",
        "json-log",
        default="",
        metavar="FILE",
        help="JSON-lines log of every iteration and test (default: <snapshot_prefix>_log.jsonl)",
    )
    flag(
        "overwrite_log",
        "overwrite-log",
        action="store_true",
        help="let a fresh run replace a JSON log that holds an earlier run (default: refuse)",
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


def solver_mode_gpu(gpu: str, param: Any, log: TrainLog) -> str:
    """The -gpu value train uses: Caffe takes an explicit `solver_mode: GPU` (device_id, default
    0) when -gpu is not given; with no visible GPU we log that and run on the CPU instead."""
    if gpu or not param.HasField("solver_mode") or param.solver_mode != param.GPU:
        return gpu
    if launch.visible_gpu_count() > 0:
        return str(int(param.device_id))
    log.info("solver_mode is GPU but no GPU is visible (CuPy or CUDA missing): using the CPU")
    return ""


def train(args: argparse.Namespace, comm: Comm | None = None) -> int:
    """`isgd train`: Caffe's train(), plus the JSON log and ISGD from the solver file.

    The JSON log is opened only once every start-up check has passed (solver, nets, data,
    weights, snapshot), so a failed start writes nothing; a fresh run never replaces a log
    that holds an earlier run unless -overwrite_log is given, and a resume appends to it.
    """
    # The parent to outlive no one: taken now, so that one ending during start-up still counts.
    parent_pid = args.parent_pid if args.parent_pid is not None else os.getppid()
    if not args.solver:
        raise SystemExit("isgd train: need a solver definition to train (-solver FILE)")
    if args.snapshot and args.weights:
        raise SystemExit(
            "isgd train: give a snapshot to resume training or weights to finetune but not both"
        )
    check_effect("sigint_effect", args.sigint_effect)
    check_effect("sighup_effect", args.sighup_effect)
    if args.sigterm_effect is not None:
        check_effect("sigterm_effect", args.sigterm_effect)
    if args.parent_pid is not None and not args.stop_with_parent:
        raise SystemExit("isgd train: -parent_pid is read only with -stop_with_parent")
    param, path = load_solver_param(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(_stages(args.stage))
    where = f"-iterations {args.iterations}" if args.iterations is not None else "max_iter"
    if args.iterations is not None:
        param.max_iter = args.iterations
    if param.max_iter < 0:
        raise SystemExit(
            f"isgd train: {args.solver}: {where} is {param.max_iter}: the number of iterations "
            "must be >= 0"
        )
    if args.snapshot or args.weights:
        del param.weights[:]  # as Caffe's train(): the flags replace the solver's `weights`
    if comm is None:
        comm = _launcher_comm()
    wall_start = time.perf_counter()
    master = comm.is_master
    json_path = (args.json_log or default_json_log_path(param, path)) if master else None
    log = TrainLog(
        stream=None if master else io.StringIO(),  # workers stay quiet; rank 0 logs
        progress=False if args.no_progress or not master else None,
    )
    try:
        try:
            startup.check_inputs(comm, args.solver, args.weights, args.snapshot)
        except StartupMismatchError as exc:
            _refuse_together(comm, f"isgd train: {exc}")
        refusal = _log_refusal(json_path, bool(args.snapshot), args.overwrite_log)
        refusal = comm.bcast_object(refusal if master else None)
        if refusal:
            _refuse_together(comm, refusal)
        startup.announce(comm, log, args.allreduce)
        gpu = solver_mode_gpu(args.gpu, param, log)
        xp = startup.array_module(gpu, comm, log)  # rank r: device r mod visible GPUs
        log = startup.TimingLog(log)
        signals = SignalHandler(
            args.sigint_effect,
            args.sighup_effect,
            args.sigterm_effect,
            stop_with_parent=args.stop_with_parent,
            parent_pid=parent_pid,
        )
        with signals as handler:
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
                log.info(f"Restoring previous solver status from {args.snapshot}")
                solver.restore(args.snapshot)
            elif args.weights:
                solver.load_weights(args.weights)
            if json_path:  # every start-up check has passed: only now touch the log
                log.open_json(json_path, append=bool(args.snapshot))
                log.info(f"JSON log: {json_path}")
                log.event(_start_event(args, solver, comm, gpu))
            if param.max_iter <= solver.iter:
                log.warning(
                    f"{where} = {param.max_iter}: no training iteration will run (the run is "
                    f"at iteration {solver.iter}); as Caffe, only the snapshot and test after "
                    "training happen"
                )
            log.info("Starting Optimization")
            try:
                solver.solve()
            except NonFiniteLossError as exc:
                # Every rank stopped on the same agreed control message: rank 0 says why and
                # all end together, since an MPI_Abort could kill rank 0 before its message.
                if comm.size == 1:
                    raise
                _refuse_together(comm, f"isgd train: error: {exc}")
        if master:
            log.write_summary(comm, args.allreduce, solver, time.perf_counter() - wall_start)
        log.info("Optimization Done.")
    finally:
        log.close()
    if solver.requested_early_exit:
        return _interrupted(comm, solver, handler.stop_reason)
    return 0


INTERRUPTED = 130  # the shell's status for a process ended by SIGINT: "stopped, resumable"


def _interrupted(comm: Comm, solver: Solver, reason: str | None) -> int:
    """A run stopped by a signal or its parent's end: rank 0 says where it stopped and how to go
    on, in one line; every rank exits with 130, so mpiexec's status is 130 too."""
    if comm.is_master:
        written = solver.last_snapshot
        expected = snapshot_filename(solver.param.snapshot_prefix, solver.iter, ".solverstate")
        if written and written.startswith(expected):
            where = f"snapshot {written}; run the same command with -snapshot {written} to resume"
        else:
            where = "no snapshot at this iteration (snapshot_after_train is false)"
            if written:
                where += f"; the last one is {written}: run the same command with -snapshot "
                where += f"{written} to resume from it"
        sys.stderr.write(
            f"interrupted: training stopped at iteration {solver.iter} "
            f"({reason or 'stop request'}); {where}\n"
        )
        sys.stderr.flush()
    if comm.size == 1:
        return INTERRUPTED
    exit_together(comm, INTERRUPTED)


def _refuse_together(comm: Comm, message: str) -> None:
    """Stop every rank for a reason they all share: rank 0 prints it once, all exit with 1.

    With one process this is a plain SystemExit carrying the message."""
    if comm.size == 1:
        raise SystemExit(message)
    if comm.is_master:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    exit_together(comm, 1)


def _log_refusal(json_path: str | None, resume: bool, overwrite: bool) -> str | None:
    """Why a fresh run may not write `json_path` (it holds an earlier run), or None."""
    if not json_path or resume or overwrite:
        return None
    log = Path(json_path)
    if not log.is_file() or log.stat().st_size == 0:
        return None
    return (
        f"isgd train: the JSON log {json_path} already holds a run; a new run never overwrites "
        "it. Resume that run with -snapshot <its .solverstate>, write elsewhere with "
        "-json_log FILE (or another snapshot_prefix), or pass -overwrite_log to replace it."
    )


def _start_event(args: argparse.Namespace, solver: Any, comm: Comm, gpu: str) -> dict[str, Any]:
    """The JSON log's first line for this start: what ran, from which files, where, resumed how."""
    p = solver.param
    layers = solver.net.data_layers()
    stats = solver.isgd
    return {
        "event": "start",
        "iter": solver.iter,
        "train_s": solver.train_seconds,
        "grad_evals": solver.grad_evals,
        "resumed_from": args.snapshot or None,
        "solver": args.solver,
        "net": solver.net.name,
        "type": p.type,
        "base_lr": float(p.base_lr),
        "lr_policy": p.lr_policy,
        "momentum": float(p.momentum),
        "weight_decay": float(p.weight_decay),
        "max_iter": int(p.max_iter),
        "seed": solver.seed,
        "batch_size": int(layers[0].batch_size) if layers else None,
        "iter_size": int(p.iter_size),
        "test_interval": int(p.test_interval),
        "test_interval_seconds": float(p.test_interval_seconds),
        "test_interval_grad_evals": int(p.test_interval_grad_evals),
        "isgd": None
        if stats is None or not stats.enabled
        else {**asdict(stats.config), "queue_size": stats.queue.size},
        "ranks": comm.size,
        "mode": "serial"
        if comm.size == 1
        else ("allreduce" if args.allreduce else "master/worker"),
        "device": f"gpu:{gpu}" if gpu else "cpu",
        "weights": args.weights or None,
        **provenance(),
    }


def _iterations(command: str, args: argparse.Namespace) -> int:
    """-iterations of `isgd test` / `isgd time` (default 50); a count below 1 is refused (Caffe
    would run nothing and print an empty or undefined result)."""
    iterations = 50 if args.iterations is None else args.iterations
    if iterations < 1:
        raise SystemExit(
            f"isgd {command}: -iterations {iterations}: the number of iterations must be >= 1"
        )
    return iterations


def _launcher_comm() -> Comm:
    """MPIComm when started by mpiexec (solvers.launch decides), else SerialComm."""
    return get_comm()


def test(args: argparse.Namespace) -> int:
    """`isgd test`: score a model, printing "Batch k, name = v" and the means (Caffe's test())."""
    if not args.model:
        raise SystemExit("isgd test: need a model definition to score (-model FILE)")
    if not args.weights:
        raise SystemExit("isgd test: need model weights to score (-weights FILE)")
    iterations = _iterations("test", args)
    log = TrainLog(source="cli.py:0", progress=False)
    xp = startup.array_module(args.gpu, SerialComm(), log)
    net = Net(args.model, phase="TEST", xp=xp, stages=_stages(args.stage), level=args.level)
    left: list[str] | None = None
    for weights in args.weights.split(","):
        missing = net.copy_from(weights)
        left = missing if left is None else [name for name in left if name in missing]
    if left:
        log.warning(weights_warning(args.weights, left))
    log.info(f"Running for {iterations} iterations.")

    def each_batch(i: int, names: list[str], values: np.ndarray) -> None:
        for name, v in zip(names, values, strict=True):
            log.info(f"Batch {i}, {name} = {fmt(v)}")

    scores = score(net, iterations, on_batch=each_batch)
    assert scores is not None
    log.info(f"Loss: {fmt(scores.loss)}")
    weights = loss_weights(net)
    for name, mean in zip(scores.names, scores.means, strict=True):
        w = weights.get(name, 0.0)
        suffix = f" (* {fmt(w)} = {fmt(np.float32(w) * mean)} loss)" if w else ""
        log.info(f"{name} = {fmt(mean)}{suffix}")
    return 0


def time_(args: argparse.Namespace) -> int:
    """`isgd time`: per-layer forward/backward timing, as Caffe's time() (engine.timing)."""
    if not args.model:
        raise SystemExit("isgd time: need a model definition to time (-model FILE)")
    iterations = _iterations("time", args)
    phase = args.phase or "TRAIN"
    if phase not in ("TRAIN", "TEST"):
        raise SystemExit('isgd time: phase must be "TRAIN" or "TEST"')
    log = TrainLog(source="cli.py:0", progress=False)
    xp = startup.array_module(args.gpu, SerialComm(), log)
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
        import cupy  # optional: the GPU backend
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


def unknown_flag(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """A message for the first flag that is not exactly one of ours, else None.

    argparse matches prefixes of single-dash flags even with allow_abbrev=False (`-iter` would
    silently mean `-iterations`); Caffe's gflags never does, so neither do we."""
    known = set(parser._option_string_actions)
    for token in argv:
        if not token.startswith("-") or token in ("-", "--"):
            continue
        name = token.split("=", 1)[0]
        try:
            float(token)
            continue  # a negative number is a value, not a flag
        except ValueError:
            pass
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"isgd: unknown flag {name}{hint}; `isgd --help` lists the flags"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `isgd` console script and `python -m solvers`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:  # Caffe's converters live in data_tools; pass the rest through
        return int(data_main(argv[1:]) or 0)
    parser = build_parser()
    unknown = unknown_flag(parser, argv)
    if unknown:
        sys.stderr.write(unknown + "\n")
        return 1
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    command = COMMANDS.get(args.command)
    if command is None:
        actions = ", ".join([*COMMANDS, "data"])
        sys.stderr.write(f"isgd: unknown action: {args.command}\navailable actions: {actions}\n")
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
