"""A run in a snapshot: Caffe's Snapshot / Restore (weights, iter, current_step, the update rule's
history) plus this project's ISGD queue, data cursors, random streams and run progress, and on
resume, what a state without them starts afresh. File names, formats and checks: snapshot.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.errors import PrototxtError
from engine.net import STREAM_STATE_KEY
from engine.proto import caffe_pb2
from solvers import snapshot
from solvers.isgd import Isgd
from solvers.train_log import TrainLog
from solvers.update_rules import History


@dataclass(frozen=True)
class Resumed:
    """What a restore hands back to the Solver: Caffe's two counters and, when the state holds
    them, the run's clock and counters (None: a Caffe state, they start at 0)."""

    iter: int
    current_step: int
    progress: Any  # caffe_pb2.RunProgress | None


def save(
    param: Any,
    it: int,
    current_step: int,
    net: Any,
    history: History,
    isgd: Isgd | None,
    progress: Any,
    log: TrainLog,
) -> str:
    """Write <prefix>_iter_N.caffemodel and .solverstate (history, ISGD queue, data cursors,
    random streams, `progress`: a RunProgress); the state's path."""
    if not param.snapshot_prefix:
        raise PrototxtError("solver: cannot snapshot: snapshot_prefix is not set")
    h5 = param.snapshot_format == caffe_pb2.SolverParameter.HDF5  # Caffe's names and log lines
    kind, ext = ("HDF5", ".h5") if h5 else ("binary proto", "")
    model = snapshot.snapshot_filename(param.snapshot_prefix, it, ".caffemodel" + ext)
    log.info(f"Snapshotting to {kind} file {model}")
    net.save(model, write_diff=bool(param.snapshot_diff))
    state = caffe_pb2.SolverState()
    state.iter = it
    state.learned_net = model
    state.current_step = current_step
    if isgd is not None:
        isgd.queue.to_proto(state.isgd_state)
    cursors = net.data_cursors()
    if cursors:  # the first also in Caffe-era fields, which older readers know
        state.data_cursor = cursors[0]["cursor"]
        if cursors[0]["rng_state"] is not None:
            state.data_rng_state = json.dumps(cursors[0]["rng_state"])
        state.data_cursors = json.dumps(cursors)
    layer_rngs = net.rng_state()
    if layer_rngs:
        state.layer_rng_state = json.dumps(layer_rngs)
    state.progress.CopyFrom(progress)
    path = snapshot.snapshot_filename(param.snapshot_prefix, it, ".solverstate" + ext)
    log.info(f"Snapshotting solver state to {kind} file {path}")
    if h5:
        snapshot.history_to_state(state, history.caffe_order())
        snapshot.write_state(path, state)
    else:
        snapshot.write_state(path, state, snapshot.seal(state, history.caffe_order(), model))
    log.flush()
    return path


def restore(
    path: str, net: Any, history: History, isgd: Isgd | None, log: TrainLog | None
) -> Resumed:
    """Resume from a .solverstate (Caffe's or ours): weights, history, and when present the ISGD
    queue, random streams and data cursors (absent: data restart at record 0); `log`: where to
    say what differs from the run that wrote it (None: say nothing, as a worker rank)."""
    state = snapshot.load_state(path)
    if state.iter < 0:
        raise PrototxtError(f"{path}: solver state has iter = {state.iter} (must be >= 0)")
    if state.HasField("learned_net") and state.learned_net:
        model = snapshot.resolve_learned_net(state.learned_net, path)
        snapshot.check_model(state, model, path)
        net.copy_from(model)
    snapshot.history_from_state(state, history.caffe_order(), path)
    if isgd is not None and state.HasField("isgd_state"):
        isgd.queue.from_proto(state.isgd_state)
    if state.layer_rng_state:
        skipped = net.set_rng_state(json.loads(state.layer_rng_state))
        if skipped and log is not None:
            log.info(
                f"Snapshot {path} holds the random streams of layers {', '.join(skipped)} "
                "from the other backend (CPU vs GPU): they restart from their seeds"
            )
    if state.data_cursors:
        cursors = json.loads(state.data_cursors)
    else:  # Caffe's or an older snapshot: one cursor for all (none: from the first record)
        cursor = int(state.data_cursor) if state.HasField("data_cursor") else 0
        rng_state = json.loads(state.data_rng_state) if state.data_rng_state else None
        cursors = [{"cursor": cursor, "rng_state": rng_state}] * len(net.data_layers())
    older = net.set_data_cursors(cursors)
    if older and log is not None:
        log.info(
            f"{path} holds crop/mirror generator states of an older version (not Caffe's "
            f"mt19937) for {', '.join(older)}: their transforms draw from their seeds"
        )
    afresh = what_starts_afresh(state, net, isgd)
    if afresh and log is not None:
        log.info(
            f"{path} does not hold this project's full run state (written by Caffe, or "
            f"cut short?): {'; '.join(afresh)}"
        )
    progress = state.progress if state.HasField("progress") else None
    return Resumed(int(state.iter), int(state.current_step), progress)


def what_starts_afresh(state: Any, net: Any, isgd: Isgd | None) -> list[str]:
    """What a resume from `state` cannot restore and therefore starts anew, in words."""
    afresh = []
    if net.data_layers() and not state.HasField("data_cursor"):
        afresh.append(
            "the data cursor starts at record 0 and the crop/mirror draws from their seed, "
            "as in Caffe"
        )
    if isgd is not None and not state.HasField("isgd_state"):
        what = "ISGD's loss queue" if isgd.enabled else "the average-loss window"
        afresh.append(f"{what} starts empty (one epoch to refill)")
    saved_rngs = json.loads(state.layer_rng_state) if state.layer_rng_state else {}
    if STREAM_STATE_KEY not in saved_rngs:
        afresh.append(
            "Caffe's random stream is not in it: like Caffe, the run replays the stream from "
            "the seed (Dropout masks and DummyData draws as from iteration 0)"
        )
    if not state.HasField("progress"):
        afresh.append(
            f"the training clock and grad_evals start at 0 (iteration {int(state.iter)})"
        )
    return afresh
