"""The bit-identical ISGD check: LeNet ISGD with Alg. 2 forced to trigger often, 300 iterations,
snapshots at 150 and 300, and SHA-256 prefixes of what the run wrote.

Run from the repository root after the MNIST databases exist (no download):

    ISGD_DATA_DIR=/path/to/originals python -m data_tools prepare --out data --only mnist
    python -m scripts.isgd_hashcheck [--data data] [--work DIR]

It prints one line per hashed item: the two .caffemodel files (bytes), the two .solverstate
files (bytes, with the training-clock fields of our RunProgress zeroed, as they are wall-clock
time, and learned_net cut to its file name), and the JSON log's iteration events without
their timing fields. Two runs of the same code must print the same lines; a change that should
not alter the numbers must not alter them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOLVER = ROOT / "prototxt" / "lenet_isgd_solver.prototxt"
NET = ROOT / "prototxt" / "lenet_train_test.prototxt"
# Wall-clock fields of the JSON log: train_s (training clock), t_comp / t_comm (and any t_*).
TIMING_KEYS = re.compile(r"^train_s$|^t_|second|wall|elapsed")
# Alg. 2 often: limit = mean + 0.1 sigma over a 20-batch window (the paper's is 3 sigma over
# an epoch, which would not trigger before iteration 938); tests by iteration, not by seconds.
ISGD = "isgd_param { control_limit: 0.1 epsilon: 0.1 stop: 5 queue_size: 20 }"


def _prefix(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def write_solver(work: Path, data_root: Path, iters: int, snapshot: int) -> Path:
    """LeNet ISGD's solver and net, pointed at `data_root` and `work`, with Alg. 2 forced."""
    net_text = NET.read_text().replace('"data/mnist/', f'"{data_root.resolve()}/mnist/')
    net = work / "lenet_train_test.prototxt"
    net.write_text(net_text)
    lines = []
    for line in SOLVER.read_text().splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("net", "max_iter", "snapshot", "snapshot_prefix", "test_interval",
                   "test_interval_seconds", "test_iter", "display") or key.startswith("isgd_param"):
            continue
        lines.append(line)
    lines += [
        f'net: "{net}"',
        f"max_iter: {iters}",
        f"snapshot: {snapshot}",
        f'snapshot_prefix: "{work / "lenet_isgd"}"',
        "test_iter: 10",
        "test_interval: 100",
        "display: 50",
        ISGD,
    ]
    solver = work / "solver.prototxt"
    solver.write_text("\n".join(lines) + "\n")
    return solver


def state_bytes(path: Path) -> bytes:
    """A .solverstate's bytes with the wall-clock fields of RunProgress zeroed, learned_net cut
    to its file name (the run folder differs between runs), and the integrity checksum dropped
    (it covers the clock, so it differs between runs of the same code)."""
    from solvers import snapshot

    state = snapshot.load_state(str(path))
    state.learned_net = Path(state.learned_net).name
    state.ClearField("integrity")
    if state.HasField("progress"):
        state.progress.train_seconds = 0
        if state.progress.HasField("next_test_seconds"):
            state.progress.next_test_seconds = 0
    return state.SerializeToString(deterministic=True)


def iteration_events(json_log: Path) -> tuple[bytes, list[str]]:
    """The JSON log's "iter" events without timing keys, canonical JSON; and the keys dropped."""
    kept, dropped = [], set()
    for line in json_log.read_text().splitlines():
        record: dict[str, Any] = json.loads(line)
        if record.get("event") != "iter":
            continue
        for key in [k for k in record if TIMING_KEYS.search(k)]:
            dropped.add(key)
            del record[key]
        kept.append(json.dumps(record, sort_keys=True))
    return "\n".join(kept).encode(), sorted(dropped)


def run(data_root: Path, work: Path, iters: int, snapshot: int) -> list[tuple[str, str]]:
    """Train, then hash; returns (name, sha256 prefix) pairs in a fixed order."""
    from solvers.solver import Solver
    from solvers.train_log import TrainLog

    solver_file = write_solver(work, data_root, iters, snapshot)
    json_log = work / "run.jsonl"
    log = TrainLog(stream=open(work / "run.log", "w"), json_path=json_log, progress=False)
    solver = Solver(str(solver_file), log=log)
    solver.solve()
    log.close()
    rows = []
    for it in (snapshot, iters):
        model = work / f"lenet_isgd_iter_{it}.caffemodel"
        rows.append((model.name, _prefix(model.read_bytes())))
    for it in (snapshot, iters):
        state = work / f"lenet_isgd_iter_{it}.solverstate"
        rows.append((state.name + " (clock zeroed)", _prefix(state_bytes(state))))
    events, dropped = iteration_events(json_log)
    rows.append((f"iteration events (without {', '.join(dropped) or 'nothing'})", _prefix(events)))
    rows.append(("Alg. 2 triggers / inner steps", f"{solver.alg2_triggers} / "
                 f"{solver.alg2_inner_steps}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data", help="root holding mnist/ (default data)")
    parser.add_argument("--work", help="folder for the run's files (default: a temporary one)")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--snapshot", type=int, default=150)
    args = parser.parse_args(argv)
    data_root = Path(args.data)
    for name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        if not (data_root / "mnist" / name).is_dir():
            print(f"isgd_hashcheck: {data_root / 'mnist' / name} not found: build it with "
                  "`python -m data_tools prepare --out data --only mnist`", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="isgd_hashcheck_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name, value in run(data_root, work, args.iters, args.snapshot):
            print(f"{value}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
