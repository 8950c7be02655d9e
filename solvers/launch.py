"""Running under mpiexec: pick the Comm, the rank's device, check that ranks agree, abort on errors.

Launch: `mpiexec -n 4 python -m mpi4py -m solvers train -solver S [--allreduce]`. Plain `python`
(no launcher) gets a SerialComm and never initializes MPI.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import lmdb

from engine.proto_io import read_net_param, read_solver_param
from solvers.comm import Comm, SerialComm
from solvers.snapshot import file_sha256

# Set by process launchers in every rank's environment (MPICH/Hydra, PMIx, Open MPI, Slurm).
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")
_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
CUDA_AWARE_ENV = "ISGD_MPI_CUDA_AWARE"


# MPI_Abort ends the launcher's forwarding too: the message just written to the pipe can be
# lost (seen under load) unless the launcher has had a moment to pass it on.
ABORT_GRACE_S = 0.5


class StartupMismatchError(RuntimeError):
    """Ranks were started with different solver files, nets or data (refused before training)."""


class AgreedExit(SystemExit):
    """Every rank stops together for a reason all of them know (rank 0 has printed it): no
    MPI_Abort is needed, so nothing races the message to the terminal."""


def exit_together(comm: Comm, code: int) -> NoReturn:
    """End every rank with status `code`, all at once and without MPI_Abort: the ranks meet at a
    barrier and MPI is finalized, so neither `python -m mpi4py` nor run_guarded aborts the job
    over a non-zero status, and mpiexec returns `code`. Call it on every rank."""
    sys.stdout.flush()
    sys.stderr.flush()
    comm.barrier()
    world = _mpi_world()
    if world is not None:
        sys.modules["mpi4py.MPI"].Finalize()
    raise AgreedExit(code)


def launcher_world_size(environ: Mapping[str, str] | None = None) -> int:
    """Number of ranks the launcher announced in the environment (1 when not launched by MPI)."""
    env = os.environ if environ is None else environ
    for name in _SIZE_VARS:
        value = env.get(name, "")
        if value.isdigit():
            return max(int(value), 1)
    return 1


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def get_comm(cuda_aware: bool | None = None, serial: bool = False) -> Comm:
    """SerialComm for one process; MPIComm over COMM_WORLD when started by mpiexec with n > 1.

    MPI is initialized only when a launcher started us (or `python -m mpi4py` already did), so
    plain `python` stays free of MPI. `cuda_aware=None` reads ISGD_MPI_CUDA_AWARE.
    """
    if serial:
        return SerialComm()
    announced = launcher_world_size()
    if announced == 1 and "mpi4py.MPI" not in sys.modules:
        return SerialComm()
    try:
        from mpi4py import MPI
    except ImportError as exc:
        if announced > 1:
            raise RuntimeError(
                f"started by an MPI launcher with {announced} ranks but mpi4py is not installed: "
                "each rank would train alone (pip install mpi4py mpich, or `make setup`)"
            ) from exc
        return SerialComm()
    if MPI.COMM_WORLD.Get_size() == 1:
        return SerialComm()
    from solvers.mpi_comm import MPIComm

    aware = _env_flag(CUDA_AWARE_ENV) if cuda_aware is None else bool(cuda_aware)
    return MPIComm(MPI.COMM_WORLD, cuda_aware=aware)


def _mpi_world() -> Any:
    """mpi4py's COMM_WORLD if MPI is already initialized in this process, else None."""
    module = sys.modules.get("mpi4py.MPI")
    if module is None or not module.Is_initialized() or module.Is_finalized():
        return None
    return module.COMM_WORLD


def world_rank() -> int:
    """This process's rank in COMM_WORLD (0 outside MPI)."""
    world = _mpi_world()
    if world is not None:
        return int(world.Get_rank())
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def local_rank(comm: Comm) -> int:
    """This rank's index among the ranks on its own node (equal to the rank on one machine)."""
    if comm.size == 1:
        return 0
    inner = getattr(comm, "mpi_comm", None)
    if inner is not None:
        from mpi4py import MPI

        node = inner.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        try:
            return int(node.Get_rank())
        finally:
            node.Free()
    for name in _LOCAL_RANK_VARS:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return comm.rank


def rank_table(comm: Comm) -> str:
    """One line mapping every rank to its host and process id, for the log (call on every rank).

    If a rank is killed, the launcher reports only its pid; this line turns that pid into a rank.
    """
    me = (socket.gethostname(), os.getpid())
    gather = getattr(comm, "allgather_object", None)
    everyone = [me] if gather is None or comm.size == 1 else gather(me)
    return "ranks: " + ", ".join(
        f"{r} = pid {pid} on {host}" for r, (host, pid) in enumerate(everyone)
    )


# ---------------------------------------------------------------------------- devices


def parse_gpu_flag(value: str | None) -> str | list[int] | None:
    """Caffe's `-gpu` value: None/"" (CPU), "all", or a list of device ids ("0", "0,2")."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text == "all":
        return "all"
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"-gpu: expected 'all' or device ids like '0' or '0,1', got {value!r}"
        ) from None
    if any(i < 0 for i in ids):
        raise ValueError(f"-gpu: device ids must be >= 0, got {value!r}")
    return ids


def select_device(value: str | None, node_rank: int, n_visible: int) -> int | None:
    """This rank's GPU: None (CPU); r mod n_visible for "all"; list[r mod len] for a list.

    `node_rank` is the rank among the ranks on this node (the rank itself on one machine), so a
    cluster with g GPUs per node gives each node's ranks devices 0..g-1 in turn.
    """
    choice = parse_gpu_flag(value)
    if choice is None:
        return None
    if n_visible < 1:
        raise ValueError(f"-gpu {value}: no CUDA device is visible to this process")
    if choice == "all":
        return node_rank % n_visible
    device = choice[node_rank % len(choice)]
    if device >= n_visible:
        raise ValueError(f"-gpu {value}: device {device} does not exist ({n_visible} visible)")
    return device


def visible_gpu_count() -> int:
    """Number of CUDA devices CuPy sees (0 without CuPy or without a GPU)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # any failure means no usable GPU
        return 0


# ---------------------------------------------------------------------------- start-up check


def lmdb_fingerprint(path: str | os.PathLike) -> str:
    """Cheap identity of an LMDB: record count and the first and last records' keys and values."""

    try:
        env = lmdb.open(str(path), readonly=True, lock=False, subdir=True, readahead=False)
    except lmdb.Error as exc:
        return f"unreadable: {exc}"
    try:
        with env.begin(buffers=False) as txn:
            digest = hashlib.sha256(str(txn.stat()["entries"]).encode())
            cursor = txn.cursor()
            for move in (cursor.first, cursor.last):
                if move():
                    digest.update(cursor.key())
                    digest.update(cursor.value())
            return digest.hexdigest()
    finally:
        env.close()


def _file_item(path: str | os.PathLike) -> str:
    target = Path(path)
    if target.is_dir():
        return lmdb_fingerprint(target)
    if target.is_file():
        return file_sha256(target)
    return "missing"


def _net_inputs(net_param: Any, label: str, items: dict[str, tuple[str, str]]) -> None:
    """Add the data sources and mean files a net reads."""
    for layer in net_param.layer:
        if layer.HasField("data_param") and layer.data_param.source:
            source = layer.data_param.source
            items[f"{label}: data source of layer '{layer.name}'"] = (_file_item(source), source)
        if layer.HasField("transform_param") and layer.transform_param.mean_file:
            mean = layer.transform_param.mean_file
            items[f"{label}: mean file of layer '{layer.name}'"] = (_file_item(mean), mean)


def input_fingerprints(
    solver_path: str | os.PathLike, extra_files: Mapping[str, str | None] | None = None
) -> dict[str, tuple[str, str]]:
    """What a training run reads, as {role: (content hash, path)}.

    Roles: the solver file, net files, each net's data sources and mean files, and `extra_files`
    ({role: path}, e.g. {"-weights": W, "-snapshot": S}).
    """

    solver_path = os.fspath(solver_path)
    items = {"solver file": (_file_item(solver_path), solver_path)}
    solver = read_solver_param(solver_path)
    nets: list[tuple[str, Any]] = []
    for field in ("net", "train_net"):
        if solver.HasField(field):
            name = getattr(solver, field)
            items[f"{field} file"] = (_file_item(name), name)
            nets.append((field, name))
    for i, name in enumerate(solver.test_net):
        items[f"test_net #{i} file"] = (_file_item(name), name)
        nets.append((f"test_net #{i}", name))
    for field in ("net_param", "train_net_param"):
        if solver.HasField(field):
            nets.append((field, getattr(solver, field)))
    nets.extend((f"test_net_param #{i}", p) for i, p in enumerate(solver.test_net_param))
    for label, source in nets:
        try:
            _net_inputs(read_net_param(source), label, items)
        except Exception:  # the solver reports unreadable nets itself, clearly
            continue
    for role, path in (extra_files or {}).items():
        for i, part in enumerate(str(path or "").split(",")):
            if part:
                items[f"{role} #{i}" if "," in str(path) else role] = (_file_item(part), part)
    return items


def check_same_inputs(comm: Comm, items: Mapping[str, tuple[str, str]]) -> None:
    """Refuse to start unless every rank read the same contents as rank 0 (raised on every rank).

    Only contents are compared, so ranks may see the same files under different paths.
    """
    if comm.size == 1:
        return
    gather = getattr(comm, "allgather_object", None)
    if gather is None:
        raise TypeError(f"{type(comm).__name__} cannot compare inputs across ranks")
    everyone: list[dict[str, tuple[str, str]]] = gather(dict(items))
    reference = everyone[0]
    problems = []
    for rank, theirs in enumerate(everyone[1:], start=1):
        for role in sorted(set(reference) | set(theirs)):
            mine, other = reference.get(role), theirs.get(role)
            if mine is None or other is None:
                who = 0 if other is None else rank
                problems.append(f"rank {rank}: {role} is read by rank {who} only")
            elif mine[0] != other[0]:
                problems.append(
                    f"rank {rank}: {role} {other[1]} differs from rank 0's {mine[1]} "
                    f"(sha256 {other[0][:12]} vs {mine[0][:12]})"
                )
    if problems:
        raise StartupMismatchError(
            "ranks were started with different inputs, refusing to train:\n  "
            + "\n  ".join(problems)
        )


# ---------------------------------------------------------------------------- failures


def report_and_abort(exc: BaseException, code: int = 1) -> None:
    """Print "rank r: <error>" (with the traceback) and end every rank of the job with MPI_Abort."""
    rank = world_rank()
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(f"{detail}rank {rank}: {type(exc).__name__}: {exc}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    world = _mpi_world()
    if world is not None and world.Get_size() > 1:
        time.sleep(ABORT_GRACE_S)
        world.Abort(code)
    raise SystemExit(code)


@contextmanager
def abort_on_error() -> Iterator[None]:
    """Turn an exception on any one rank into the end of the whole job, so no rank waits forever.

    Outside MPI (or with one rank) exceptions propagate unchanged; a clean SystemExit passes.
    """
    try:
        yield
    except AgreedExit:
        raise
    except SystemExit as exc:
        if exc.code in (None, 0) or _mpi_world() is None or _mpi_world().Get_size() == 1:
            raise
        report_and_abort(exc, exc.code if isinstance(exc.code, int) else 1)
    except BaseException as exc:  # every failure must end every rank
        if _mpi_world() is None or _mpi_world().Get_size() == 1:
            raise
        report_and_abort(exc)


def rank_prefix() -> str:
    """ "rank r: " inside a job of several ranks, "" otherwise (for error messages)."""
    world = _mpi_world()
    if world is not None and world.Get_size() > 1:
        return f"rank {world.Get_rank()}: "
    if launcher_world_size() > 1:
        return f"rank {world_rank()}: "
    return ""


def run_guarded(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `main(*args, **kwargs)` under abort_on_error; a non-zero return status on one rank
    of several also ends the whole job (a rank that just exits would leave the others waiting)."""
    with abort_on_error():
        status = main(*args, **kwargs)
    world = _mpi_world()
    if status not in (None, 0) and world is not None and world.Get_size() > 1:
        sys.stderr.write(f"rank {world.Get_rank()}: exiting with status {status}\n")
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        world.Abort(status if isinstance(status, int) else 1)
    return status
