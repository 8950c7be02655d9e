"""Nothing lost, nothing hidden: bad starts leave earlier files alone, resumes continue the clock,
ISGD shows in the text log, and every refusal names what is wrong (issue 15)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from engine.proto import caffe_pb2
from solvers.cli import main
from solvers.run_log import RunLogError, read_run_log
from solvers.solver import NonFiniteLossError, Solver
from solvers.train_log import TrainLog

from .conftest import Tiny


def digest(paths: list[Path]) -> dict[str, str]:
    """Content hash of every file under `paths` (files or folders), to prove nothing changed."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def bodies(text: str) -> list[str]:
    return [
        re.sub(r"^[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ", "", line) for line in text.splitlines()
    ]


class FakeClock:
    """A training clock that advances a fixed step per reading: every iteration costs the same."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def finished_run(tiny: Tiny, monkeypatch, capsys) -> dict:
    """One finished CLI run (snapshots at 3 and 6, a JSON log) in tiny.root."""
    monkeypatch.chdir(tiny.root)
    solver = tiny.solver(max_iter=6, snapshot=3, test_interval=3, snapshot_prefix="snap/run")
    assert main(["train", "-solver", solver.name, "-no_progress"]) == 0
    capsys.readouterr()
    return {"solver": solver.name, "log": tiny.root / "snap" / "run_log.jsonl"}


# ------------------------------------------------------------------ must fix 1: logs survive
@pytest.mark.parametrize(
    "flags, message",
    [
        (["-weights", "snap/typo.caffemodel"], "typo.caffemodel"),
        (["-snapshot", "snap/run_iter_99.solverstate"], "run_iter_99.solverstate"),
        (["-iterations", "-3"], "must be >= 0"),
        (["-sigint_effect", "explode"], "invalid sigint_effect 'explode'"),
    ],
)
def test_a_failed_start_changes_no_earlier_file(
    finished_run: dict, tiny: Tiny, capsys, flags: list[str], message: str
) -> None:
    """A start that fails its checks writes nothing, even told to replace the log: the earlier
    run's log and snapshots keep every byte."""
    before = digest([tiny.root / "snap"])
    args = ["train", "-solver", finished_run["solver"], "-no_progress", "-overwrite_log"]
    assert main([*args, *flags]) == 1
    assert message in capsys.readouterr().err
    assert digest([tiny.root / "snap"]) == before


def test_a_fresh_run_refuses_to_overwrite_a_log_and_names_the_flag(
    finished_run: dict, tiny: Tiny, capsys
) -> None:
    before = digest([tiny.root / "snap"])
    assert main(["train", "-solver", finished_run["solver"], "-no_progress"]) == 1
    err = capsys.readouterr().err
    assert "snap/run_log.jsonl already holds a run" in err and "-overwrite_log" in err
    assert digest([tiny.root / "snap"]) == before
    # Asked for explicitly, the new run replaces it and its log holds one run only.
    args = ["train", "-solver", finished_run["solver"], "-no_progress", "-overwrite_log"]
    assert main(args) == 0
    log = read_run_log(finished_run["log"])
    assert len(log.starts) == 1 and [e["iter"] for e in log.of("iter")] == list(range(6))


def test_a_resume_appends_and_the_reader_drops_what_the_resume_redid(
    finished_run: dict, tiny: Tiny, capsys
) -> None:
    """Resuming from iteration 3 appends; events the first run logged from iteration 3 on are
    superseded, so the effective log reads as one run."""
    more = tiny.solver(max_iter=8, snapshot=3, test_interval=3, snapshot_prefix="snap/run")
    first = finished_run["log"].read_text()
    args = ["train", "-solver", more.name, "-snapshot", "snap/run_iter_3.solverstate"]
    assert main([*args, "-no_progress"]) == 0
    text = finished_run["log"].read_text()
    assert text.startswith(first), "the resume must append, never rewrite"
    log = read_run_log(finished_run["log"])
    assert [e["iter"] for e in log.of("iter")] == list(range(8))
    assert [e["grad_evals"] for e in log.of("iter")] == list(range(1, 9))
    assert len(log.starts) == 2 and log.starts[1]["resumed_from"].endswith("iter_3.solverstate")
    assert log.finished


def test_run_log_reader_names_a_corrupt_line_and_skips_a_cut_short_one(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    good = '{"event":"start","iter":0}\n{"event":"iter","iter":0,"train_s":0.1}\n'
    path.write_text(good + '{"event":"iter","it')  # a crash cut the last write
    assert read_run_log(path).skipped_lines == [3]
    path.write_text(good + 'garbage\n{"event":"iter","iter":1}\n')
    with pytest.raises(RunLogError, match=r"log.jsonl:3: not a JSON event line"):
        read_run_log(path)
    with pytest.raises(RunLogError, match="run log not found"):
        read_run_log(tmp_path / "missing.jsonl")


def test_appending_after_a_cut_short_line_starts_on_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"event":"start","iter":0}\n{"event":"iter","ite')
    log = TrainLog(stream=open(tmp_path / "text", "w"), json_path=path, append=True)
    log.event({"event": "start", "iter": 0, "resumed_from": "x.solverstate"})
    log.close()
    assert read_run_log(path).skipped_lines == [2]


# ------------------------------------------------------------------ must fix 3: the clock
def _clocked_run(tiny: Tiny, name: str, iters: int, resume: str | None, **fields) -> Path:
    """A Solver run on a fake clock (0.25 s per iteration), JSON log appended across resumes."""
    path = tiny.solver(name=name, max_iter=iters, **fields)
    text = tiny.root / f"{name}.txt"
    json_path = tiny.root / f"{name}.jsonl"
    with open(text, "a") as stream:
        log = TrainLog(stream=stream, progress=False)
        solver = Solver(str(path), log=log, clock=FakeClock(0.125))
        if resume:
            solver.restore(resume)
        log.open_json(json_path, append=resume is not None)
        log.event({"event": "start", "iter": solver.iter, "resumed_from": resume, "train_s": 0.0})
        solver.solve()
        log.close()
    return json_path


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_resume_continues_training_clock_grad_evals_and_time_test_schedule(
    tiny: Tiny, fmt: str
) -> None:
    """2k iterations in one go equal k + resume + k: the same train_s and grad_evals on every
    iteration and test, tests at the same iterations (test_interval_seconds: 1 s = 8 iters)."""
    fields = dict(
        test_interval=0,
        test_interval_seconds=1.0,
        snapshot_format="=" + fmt,
        display=0,
    )
    extra = "isgd_param { control_limit: -1 queue_size: 3 stop: 2 }"
    whole = read_run_log(_clocked_run(tiny, "whole", 20, None, **fields, extra=extra))
    _clocked_run(tiny, "parts", 10, None, **fields, extra=extra)
    ext = ".h5" if fmt == "HDF5" else ""
    state = str(tiny.root / "snap" / f"parts_iter_10.solverstate{ext}")
    parts = read_run_log(_clocked_run(tiny, "parts", 20, state, **fields, extra=extra))

    def rows(log, kind: str) -> list[tuple]:
        return [(e["iter"], e["train_s"], e.get("grad_evals")) for e in log.of(kind)]

    assert rows(parts, "iter") == rows(whole, "iter")
    assert rows(parts, "test") == rows(whole, "test")
    assert all(e["grad_evals"] is not None for e in whole.of("test")), "tests carry grad_evals"
    assert [e["alg2_inner_steps"] for e in parts.of("iter")] == [
        e["alg2_inner_steps"] for e in whole.of("iter")
    ]
    assert sum(e["alg2_inner_steps"] for e in whole.of("iter")) > 0, "Alg. 2 meant to run"
    tests_at = [e["iter"] for e in whole.of("test")]
    assert tests_at[:3] == [0, 8, 16] and tests_at[-1] == 20, "every 1 s, and after the last"
    last = whole.of("iter")[-1]
    assert last["grad_evals"] > 20, "Alg. 2's inner passes count as gradient evaluations"


def test_grad_evals_cadence_tests_at_equal_compute_and_resumes_its_schedule(tiny: Tiny) -> None:
    """test_interval_grad_evals (our extension): a test at the first iteration boundary on or
    after each multiple of N gradient evaluations, Alg. 2's inner passes counted; the schedule
    survives a resume (k + resume + k tests where 2k in one go does), and a last test follows
    the last iteration."""
    fields = dict(test_interval=0, test_interval_grad_evals=7, display=0)
    extra = "isgd_param { control_limit: -1 queue_size: 3 stop: 2 }"
    whole = read_run_log(_clocked_run(tiny, "whole", 20, None, **fields, extra=extra))
    _clocked_run(tiny, "parts", 10, None, **fields, extra=extra)
    state = str(tiny.root / "snap" / "parts_iter_10.solverstate")
    parts = read_run_log(_clocked_run(tiny, "parts", 20, state, **fields, extra=extra))
    tests = [(e["iter"], e["grad_evals"]) for e in whole.of("test")]
    assert [(e["iter"], e["grad_evals"]) for e in parts.of("test")] == tests
    evals_at_iter = {0: 0} | {e["iter"] + 1: e["grad_evals"] for e in whole.of("iter")}
    assert evals_at_iter[20] > 20, "Alg. 2 meant to run (its passes count)"
    expected, due = [0], 7
    for it in range(1, 20):
        if evals_at_iter[it] >= due:
            expected.append(it)
            due = (evals_at_iter[it] // 7 + 1) * 7
    assert [it for it, _ in tests] == expected + [20]
    assert [g for _, g in tests] == [evals_at_iter[it] for it in expected + [20]]


def test_time_domain_run_tests_after_its_last_iteration(tiny: Tiny, quiet_log) -> None:
    log, text, json_path = quiet_log()
    path = tiny.solver(test_interval=0, test_interval_seconds=1000.0, max_iter=5)
    Solver(str(path), log=log).solve()
    log.close()
    tests = [json.loads(x) for x in json_path.read_text().splitlines()]
    assert [e["iter"] for e in tests if e["event"] == "test"] == [0, 5]


# ------------------------------------------------------------------ must fix 4: ISGD in the log
def test_isgd_is_announced_each_alg2_run_logged_and_summarised(
    tiny: Tiny, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tiny.root)
    extra = "isgd_param { control_limit: -1 queue_size: 3 stop: 2 epsilon: 0.2 }"
    solver = tiny.solver(extra, max_iter=8, test_interval=0, snapshot_prefix="snap/isgd")
    solver.write_text(solver.read_text().replace("test_iter: 2\n", ""))
    assert main(["train", "-solver", solver.name, "-no_progress"]) == 0
    lines = bodies(capsys.readouterr().err)
    start = [x for x in lines if x.startswith("ISGD on SGD")]
    assert len(start) == 1
    for part in ("mean + -1 sigma", "n = 3 batch losses", "epsilon = 0.2", "stop = 2"):
        assert part in start[0]
    assert (
        "zeta = the current lr x lr_mult" in start[0] and "waits one epoch (iter > 3)" in start[0]
    )
    runs = [x for x in lines if re.match(r"Iteration \d+, ISGD: loss = [\d.]+ > limit = ", x)]
    events = [json.loads(x) for x in (tiny.root / "snap" / "isgd_log.jsonl").open()]
    triggered = [e for e in events if e.get("event") == "iter" and e["under_trained"]]
    assert len(runs) == len(triggered) > 0
    assert all("Alg. 2: " in x and "inner step" in x for x in runs)
    inner = sum(e["alg2_inner_steps"] for e in triggered)
    summary = [x for x in lines if x.startswith("ISGD: Alg. 2 ran on")]
    assert summary == [
        f"ISGD: Alg. 2 ran on {len(triggered)} of 8 iterations "
        f"({100 * len(triggered) / 8:.2f} %), {inner} inner steps, "
        f"{events[-1]['grad_evals'] - 8} extra gradient evaluations "
        f"({100 * (events[-1]['grad_evals'] - 8) / events[-1]['grad_evals']:.2f} % of all)"
    ]


# ------------------------------------------------------------------ should fix: resume states
def test_a_caffe_solverstate_resumes_with_one_line_on_what_starts_afresh(
    finished_run: dict, tiny: Tiny, capsys
) -> None:
    """A state without this project's fields (as Caffe writes it) resumes, and says so once."""
    state = caffe_pb2.SolverState()
    state.ParseFromString((tiny.root / "snap" / "run_iter_3.solverstate").read_bytes())
    ours = ("isgd_state", "data_cursor", "data_rng_state", "layer_rng_state", "progress")
    for name in (*ours, "integrity"):
        state.ClearField(name)
    (tiny.root / "snap" / "caffe.solverstate").write_bytes(state.SerializeToString())
    more = tiny.solver(max_iter=5, snapshot_prefix="snap/resumed", test_interval=0)
    more.write_text(more.read_text().replace("test_iter: 2\n", ""))
    assert main(["train", "-solver", more.name, "-snapshot", "snap/caffe.solverstate"]) == 0
    notes = [x for x in bodies(capsys.readouterr().err) if "full run state" in x]
    assert len(notes) == 1
    assert "data cursor starts at record 0" in notes[0]
    assert "training clock and grad_evals start at 0" in notes[0]


def test_a_negative_iteration_in_a_solverstate_is_refused(
    finished_run: dict, tiny: Tiny, capsys
) -> None:
    state = caffe_pb2.SolverState()
    state.ParseFromString((tiny.root / "snap" / "run_iter_3.solverstate").read_bytes())
    state.iter = -4
    state.ClearField("integrity")  # edited by hand: no checksum to refuse it first
    (tiny.root / "snap" / "bad.solverstate").write_bytes(state.SerializeToString())
    before = digest([tiny.root / "snap"])
    args = ["train", "-solver", finished_run["solver"], "-snapshot", "snap/bad.solverstate"]
    assert main(args) == 1
    assert "bad.solverstate: solver state has iter = -4" in capsys.readouterr().err
    assert digest([tiny.root / "snap"]) == before


def test_zero_iterations_warn_and_negative_are_refused(tiny: Tiny, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tiny.root)
    solver = tiny.solver(max_iter=0, snapshot_prefix="snap/zero")
    assert main(["train", "-solver", solver.name, "-no_progress"]) == 0
    err = capsys.readouterr().err
    assert "max_iter = 0: no training iteration will run" in err
    negative = tiny.solver(name="neg", max_iter=-2, snapshot_prefix="snap/neg")
    assert main(["train", "-solver", negative.name]) == 1
    assert "max_iter is -2" in capsys.readouterr().err
    assert not (tiny.root / "snap" / "neg_log.jsonl").exists()


@pytest.mark.parametrize("command", ["test", "time"])
@pytest.mark.parametrize("count", ["0", "-5"])
def test_test_and_time_refuse_fewer_than_one_iteration(
    tiny: Tiny, monkeypatch, capsys, command: str, count: str
) -> None:
    """`isgd test` / `isgd time -iterations 0` would score or time nothing: refused in one line."""
    monkeypatch.chdir(tiny.root)
    args = [command, "-model", str(tiny.net), "-weights", "none.caffemodel", "-iterations", count]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"isgd {command}: -iterations {count}: the number of iterations must be >= 1"


def test_divergence_stops_with_one_message_and_no_numpy_warnings(
    tiny: Tiny, quiet_log, recwarn
) -> None:
    """A run whose weights blow up overflows long before the loss is NaN; NumPy's overflow
    warnings must not flood the terminal: the NaN stop's message is the one report."""
    log, text, _ = quiet_log()
    path = tiny.solver(max_iter=200, snapshot=1, base_lr=1e6, momentum=0.99, test_interval=0)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    with pytest.raises(NonFiniteLossError, match="is not finite; training stopped"):
        Solver(str(path), log=log).solve()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert "The last good snapshot is: " in text.getvalue()


def test_weights_that_skip_layers_warn_once_naming_them(
    finished_run: dict, tiny: Tiny, capsys
) -> None:
    """A .caffemodel cut at a layer boundary loads as Caffe does (by name), and both `isgd train
    -weights` and `isgd test` log one warning listing the layers left at their fillers."""
    model = caffe_pb2.NetParameter()
    model.ParseFromString((tiny.root / "snap" / "run_iter_6.caffemodel").read_bytes())
    kept = [layer for layer in model.layer if layer.name != "ip2"]
    del model.layer[:]
    model.layer.extend(kept)
    (tiny.root / "snap" / "cut.caffemodel").write_bytes(model.SerializeToString())
    args = ["train", "-solver", finished_run["solver"], "-weights", "snap/cut.caffemodel"]
    assert main([*args, "-json_log", "other.jsonl", "-iterations", "1"]) == 0
    warnings = [x for x in capsys.readouterr().err.splitlines() if "gives no weights" in x]
    assert len(warnings) == 1 and warnings[0].startswith("W")
    assert "1 layer(s) with params: ip2;" in warnings[0]
    args = ["test", "-model", str(tiny.net), "-weights", "snap/cut.caffemodel", "-iterations", "1"]
    assert main(args) == 0
    assert "gives no weights to 1 layer(s) with params: ip2;" in capsys.readouterr().err
    assert main([*args[:3], "-weights", "snap/run_iter_6.caffemodel", *args[5:]]) == 0
    assert "gives no weights" not in capsys.readouterr().err


@pytest.mark.parametrize("poll", [6, 7])
def test_a_stop_request_leaves_a_snapshot_that_resumes_exactly(tiny: Tiny, poll: int) -> None:
    """Every rank learns of a stop in the next iteration's one control message; that iteration's
    pass is undone (data cursor, random streams, ISGD queue, counters), so the snapshot written
    on the way out resumes into the very run that was never stopped. Poll 6 is the end of
    iteration 3, poll 7 the first batch of the test at iteration 4."""
    extra = "isgd_param { control_limit: -1 queue_size: 3 stop: 2 }"
    fields = dict(max_iter=12, display=0, test_interval=4, extra=extra)

    def solve(name: str, action=None, resume: str | None = None) -> Solver:
        path = tiny.solver(name=name, **fields)
        log = TrainLog(stream=open(tiny.root / f"{name}.txt", "a"), progress=False)
        solver = Solver(str(path), log=log, action=action)
        if resume:
            solver.restore(resume)
        log.open_json(tiny.root / f"{name}.jsonl", append=resume is not None)
        log.event({"event": "start", "iter": solver.iter, "resumed_from": resume})
        solver.solve()
        log.close()
        return solver

    whole = solve("whole")
    calls = iter(range(1, 1000))
    stopped = solve("parts", action=lambda: "stop" if next(calls) == poll else "none")
    assert stopped.requested_early_exit and stopped.iter == 4
    resumed = solve("parts", resume=stopped.last_snapshot)
    keys = ("iter", "loss", "grad_evals", "alg2_inner_steps", "limit")
    rows = {
        name: [
            tuple(e[k] for k in keys) for e in read_run_log(tiny.root / f"{name}.jsonl").of("iter")
        ]
        for name in ("whole", "parts")
    }
    assert rows["parts"] == rows["whole"] and len(rows["whole"]) == 12
    assert resumed.grad_evals == whole.grad_evals and whole.alg2_triggers > 0
