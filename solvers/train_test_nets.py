"""Train/test net construction from a SolverParameter, as Caffe's InitTrainNet / InitTestNets."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from engine.errors import PrototxtError
from engine.net import Net
from engine.proto import caffe_pb2
from engine.proto_io import read_net_param


def _merged_state(phase: int, net_param: Any, override: Any | None) -> Any:
    """Caffe's NetState precedence: default phase < the net's own state < train/test_state."""
    state = caffe_pb2.NetState()
    state.phase = phase
    state.MergeFrom(net_param.state)
    if override is not None:
        state.MergeFrom(override)
    return state


def train_net_param(param: Any) -> Any:
    """The train NetParameter from exactly one of net, net_param, train_net, train_net_param."""
    fields = ("net", "net_param", "train_net", "train_net_param")
    given = [f for f in fields if param.HasField(f)]
    if len(given) != 1:
        what = "no" if not given else "more than one of"
        raise PrototxtError(
            f"solver: {what} train net field(s) given; specify exactly one of {', '.join(fields)}"
        )
    field = given[0]
    value = getattr(param, field)
    net_param = read_net_param(value)
    net_param.state.CopyFrom(_merged_state(caffe_pb2.TRAIN, net_param, param.train_state))
    return net_param


def test_net_params(param: Any) -> list[tuple[str, Any]]:
    """(source description, NetParameter) per test net: test_net_param, test_net, then generic."""
    generic = int(param.HasField("net")) + int(param.HasField("net_param"))
    if generic > 1:
        raise PrototxtError("solver: both net and net_param are given; keep only one")
    explicit = len(param.test_net_param) + len(param.test_net)
    if generic:
        if len(param.test_iter) < explicit:
            raise PrototxtError("solver: test_iter must be specified for each test network")
    elif len(param.test_iter) != explicit:
        raise PrototxtError(
            f"solver: test_iter must be specified for each test network ({len(param.test_iter)} "
            f"test_iter for {explicit} test nets)"
        )
    sources: list[tuple[str, Any]] = []
    for p in param.test_net_param:
        sources.append(("test_net_param", read_net_param(p)))
    for path in param.test_net:
        sources.append((f"test_net file: {path}", read_net_param(path)))
    remaining = len(param.test_iter) - len(sources)
    for _ in range(remaining):
        if param.HasField("net_param"):
            sources.append(("net_param", read_net_param(param.net_param)))
        else:
            sources.append((f"net file: {param.net}", read_net_param(param.net)))
    if len(param.test_state) and len(param.test_state) != len(sources):
        raise PrototxtError("solver: test_state must be unspecified or specified once per test net")
    cadence = (param.test_interval, param.test_interval_seconds, param.test_interval_grad_evals)
    if sources and all(value <= 0 for value in cadence):
        raise PrototxtError("solver: test nets are defined but test_interval is not > 0")
    for i, (_, net_param) in enumerate(sources):
        override = param.test_state[i] if len(param.test_state) else None
        net_param.state.CopyFrom(_merged_state(caffe_pb2.TEST, net_param, override))
    return sources


def build_net(
    net_param: Any, phase: str, xp: ModuleType, seed: int | None, stream: Any = None
) -> Any:
    """An engine Net for a prepared NetParameter (its state already merged), drawing from
    Caffe's `stream` when given (the solver's nets share one, as Caffe's do)."""

    return Net(net_param, phase=phase, xp=xp, seed=seed, stream=stream)


def batches_per_epoch(net: Any, iter_size: int) -> int | None:
    """ceil(records / (batch_size * iter_size)) from the train net's first data layer, if any."""
    for layer in net.data_layers():
        return max(1, math.ceil(layer.num_records / (layer.batch_size * max(iter_size, 1))))
    return None
