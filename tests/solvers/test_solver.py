"""The training loop against Caffe's Solver::Step / Solve semantics, on a tiny generated problem."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.backend import to_numpy
from engine.errors import PrototxtError
from engine.proto import caffe_pb2
from solvers.comm import SerialComm
from solvers.solver import NonFiniteLossError, Solver, load_solver_param
from solvers.train_test_nets import build_net, train_net_param

from .conftest import RECORDS, Tiny

BATCHES_PER_EPOCH = RECORDS // 4


def bodies(text: str) -> list[str]:
    return [
        re.sub(r"^[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ", "", line) for line in text.splitlines()
    ]


def events(path: Path, kind: str = "iter") -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["event"] == kind]


def run(tiny: Tiny, quiet_log, name: str = "run", resume: str | None = None, **fields) -> Solver:
    log, text, json_path = quiet_log(name)
    solver = Solver(str(tiny.solver(name=name, **fields)), log=log)
    solver.solve(resume)
    log.close()
    solver.text, solver.json_path = text.getvalue(), json_path  # type: ignore[attr-defined]
    return solver


def test_one_step_equals_caffe_formulas_by_hand(tiny: Tiny, quiet_log) -> None:
    """iter_size 2 accumulation, clip on the accumulated norm, Normalize, L2 decay with decay_mult,
    lr_mult, momentum and the step policy, as SGDSolver::ApplyUpdate orders them."""
    fields = dict(
        max_iter=3,
        iter_size=2,
        clip_gradients=0.5,
        lr_policy="step",
        gamma=0.5,
        stepsize=2,
        test_interval=0,
        snapshot_after_train=False,
    )
    path = tiny.solver(name="hand", **fields)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    param, _ = load_solver_param(str(path))
    ref = build_net(train_net_param(param), "TRAIN", np, 7)
    log, _, _ = quiet_log()
    solver = Solver(str(path), log=log)
    np.testing.assert_array_equal(ref.flat_data, solver.net.flat_data)
    history = [np.zeros(b.count, np.float64) for b in ref.learnable_params]
    for it in range(3):
        ref.clear_param_diffs()
        for _ in range(2):
            ref.forward_backward()
        grads = [b.diff.astype(np.float64).ravel() for b in ref.learnable_params]
        norm = np.sqrt(sum((g**2).sum() for g in grads))
        scale = 0.5 / norm if norm > 0.5 else 1.0
        rate = 0.1 * 0.5 ** (it // 2)
        for i, blob in enumerate(ref.learnable_params):
            w = blob.data.astype(np.float64).ravel()
            g = grads[i] * scale / 2 + 0.01 * ref.params_weight_decay[i] * w
            history[i] = 0.9 * history[i] + rate * ref.params_lr[i] * g
            blob.data[...] = (w - history[i]).reshape(blob.shape)
    solver.solve()
    np.testing.assert_allclose(solver.net.flat_data, ref.flat_data, rtol=2e-5, atol=1e-7)
    assert solver.iter == 3 and solver.current_step == 1


def test_only_the_first_pass_after_a_clear_may_write_param_diffs(tiny: Tiny, quiet_log) -> None:
    """The step tells the Net its param diffs were just zeroed for the first of iter_size
    passes only (the second must add, as Caffe's accumulation), on every iteration."""
    log, _, _ = quiet_log()
    solver = Solver(str(tiny.solver(name="flag", max_iter=3, iter_size=2)), log=log)
    net, original, seen = solver.net, solver.net.forward_backward, []

    def spy(diffs_zero: bool = False) -> float:
        seen.append(diffs_zero)
        return original(diffs_zero)

    net.forward_backward = spy  # type: ignore[method-assign]
    solver.step(2)
    assert seen == [True, False, True, False]


def test_display_test_snapshot_timing_follow_solver_step(tiny: Tiny, quiet_log) -> None:
    s = run(tiny, quiet_log, display=2, test_interval=5, snapshot=4, max_iter=10)
    lines = bodies(s.text)
    tests = [int(m.group(1)) for x in lines if (m := re.match(r"Iteration (\d+), Testing", x))]
    shown = [int(m.group(1)) for x in lines if (m := re.match(r"Iteration (\d+) \(", x))]
    lrs = [int(m.group(1)) for x in lines if (m := re.match(r"Iteration (\d+), lr = ", x))]
    assert tests == [0, 5, 10]
    assert shown == [0, 2, 4, 6, 8] and lrs == shown
    assert any(re.fullmatch(r"Iteration 10, loss = [\d.e+-]+", x) for x in lines)
    assert lines[-1] == "Optimization Done."
    snaps = sorted(p.name for p in (tiny.root / "snap").iterdir())
    want = [f"run_iter_{i}.{e}" for i in (10, 4, 8) for e in ("caffemodel", "solverstate")]
    assert snaps == sorted(want)
    assert "    Train net output #0: loss = " in "\n".join(lines)
    assert re.search(r"Test net output #1: loss = [\d.]+ \(\* 1 = [\d.]+ loss\)", s.text)


def test_no_test_at_iteration_zero_without_test_initialization(tiny: Tiny, quiet_log) -> None:
    s = run(tiny, quiet_log, test_initialization=False, max_iter=5)
    assert "Iteration 0, Testing" not in s.text and "Iteration 5, Testing" in s.text
    assert [e["iter"] for e in events(s.json_path, "test")] == [5]


def weights_after(tiny: Tiny, quiet_log, name: str, extra: str = "", xp=np, **fields) -> np.ndarray:
    log, _, _ = quiet_log(name)
    solver = Solver(str(tiny.solver(extra, name=name, **fields)), log=log, xp=xp)
    solver.solve()
    return to_numpy(solver.net.flat_data).copy()


@pytest.mark.parametrize("kind", ["SGD", "Nesterov"])
def test_isgd_with_infinite_limit_is_bit_identical_to_base_solver(tiny: Tiny, quiet_log, kind):
    base = weights_after(tiny, quiet_log, "base", type=kind, max_iter=15)
    isgd = weights_after(
        tiny, quiet_log, "isgd", "isgd_param { control_limit: 1e30 }", type=kind, max_iter=15
    )
    np.testing.assert_array_equal(base, isgd)


# A limit far below every loss: each batch after the first epoch qualifies.
ISGD_EAGER = "isgd_param { control_limit: -100 stop: 3 zeta: 0.0005 }"


def test_isgd_statistics_equal_direct_computation_every_iteration(tiny: Tiny, quiet_log) -> None:
    """Eq. 13-15 over the n losses before each batch (n = 24 records / batch 4 = 6)."""
    log, _, json_path = quiet_log("stats")
    Solver(str(tiny.solver("isgd_param { }", name="stats", max_iter=20)), log=log).solve()
    log.close()
    recs = events(json_path)
    losses = np.array([r["loss"] for r in recs], np.float32).astype(np.float64)
    for t, r in enumerate(recs[1:], start=1):
        window = losses[max(0, t - BATCHES_PER_EPOCH) : t]
        assert r["mean"] == pytest.approx(window.mean(), rel=1e-9)
        assert r["std"] == pytest.approx(window.std(), rel=1e-6, abs=1e-9)
        assert r["limit"] == pytest.approx(window.mean() + 3 * window.std(), rel=1e-6)


def test_alg2_never_in_first_epoch_then_runs_to_stop(tiny: Tiny, quiet_log) -> None:
    log, _, json_path = quiet_log("eager")
    Solver(str(tiny.solver(ISGD_EAGER, name="eager", max_iter=14)), log=log).solve()
    log.close()
    recs = events(json_path)
    first = [r for r in recs if r["iter"] <= BATCHES_PER_EPOCH]
    later = [r for r in recs if r["iter"] > BATCHES_PER_EPOCH]
    assert all(not r["under_trained"] and r["alg2_inner_steps"] == 0 for r in first)
    assert later and all(r["under_trained"] for r in later)
    assert all(r["alg2_inner_steps"] == 3 for r in later)  # psi never reaches a limit this low


def test_inner_loop_reruns_the_same_batch_and_stops_under_the_limit(
    tiny: Tiny, quiet_log, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _, _ = quiet_log()
    solver = Solver(str(tiny.solver("isgd_param { stop: 5 }", max_iter=1)), log=log)
    layer = solver.net.data_layers()[0]
    layer.cursor = 8
    scripted = iter([5.0, 4.0, 0.5, 9.0])
    seen: list[int] = []

    def fake_fb() -> np.float32:
        seen.append(layer.cursor)
        solver.net.flat_diff[...] = 1.0
        return np.float32(next(scripted))

    monkeypatch.setattr(solver, "_forward_backward", fake_fb)
    layer.cursor = 12  # where the outer pass left the data
    before = solver.net.flat_data.copy()
    saved = [{"cursor": 8, "rng_state": None}]
    solver.isgd.keep_anchor(before)
    steps = solver._alg2(1.0, np.float32(0.1), saved).steps
    assert steps == 2 and seen == [8, 8, 8]  # third pass: 0.5 <= limit, no step
    assert layer.cursor == 12
    # Two Eq. 18 steps, grad 1, zeta = lr 0.1 times lr_mult: (5 - 1), then (4 - 1) plus the pull.
    moved = before - solver.net.flat_data
    mults = np.concatenate(
        [
            np.full(b.count, m)
            for b, m in zip(solver.net.learnable_params, solver.net.params_lr, strict=True)
        ]
    )
    n_w = moved.size
    first = 0.1 * mults * 4.0
    second = 0.1 * mults * (3.0 - 0.1 / n_w * first)  # the pull back toward w_{t-1}
    np.testing.assert_allclose(moved, first + second, rtol=1e-5)


@pytest.mark.parametrize("extra", ["", ISGD_EAGER])
def test_resume_from_snapshot_gives_identical_weights(
    tiny: Tiny, quiet_log, extra: str, xp
) -> None:
    """2k straight == k, snapshot, resume with the .solverstate, k more (SGD and ISGD)."""
    fields = {"max_iter": 18, "type": "Nesterov"}
    straight = weights_after(tiny, quiet_log, "straight", extra, xp, **fields)
    weights_after(tiny, quiet_log, "first", extra, xp, max_iter=9, type="Nesterov")
    state = tiny.root / "snap" / "first_iter_9.solverstate"
    log, text, _ = quiet_log("second")
    path = tiny.solver(extra, name="second", max_iter=18, type="Nesterov")
    solver = Solver(str(path), log=log, xp=xp)
    solver.solve(str(state))
    np.testing.assert_array_equal(to_numpy(solver.net.flat_data), straight)
    saved = caffe_pb2.SolverState.FromString(state.read_bytes())
    assert saved.iter == 9 and saved.HasField("data_cursor") and len(saved.history) == 4
    assert saved.HasField("isgd_state") and saved.isgd_state.seen == 9


def test_resume_from_a_caffe_state_without_cursor_starts_data_at_record_zero(
    tiny: Tiny, quiet_log
) -> None:
    s = run(tiny, quiet_log, name="c", max_iter=5)
    ours = caffe_pb2.SolverState.FromString(
        (tiny.root / "snap" / "c_iter_5.solverstate").read_bytes()
    )
    caffe_state = caffe_pb2.SolverState(iter=5, learned_net=ours.learned_net, current_step=0)
    caffe_state.history.extend(ours.history)
    path = tiny.root / "caffe.solverstate"
    path.write_bytes(caffe_state.SerializeToString())
    log, _, _ = quiet_log("resumed")
    solver = Solver(str(tiny.solver(name="resumed", max_iter=5)), log=log)
    solver.net.data_layers()[0].cursor = 12
    solver.restore(str(path))
    assert solver.iter == 5 and solver.net.data_layers()[0].cursor == 0
    np.testing.assert_array_equal(solver.net.flat_data, s.net.flat_data)
    np.testing.assert_array_equal(solver.history.flat[0], s.history.flat[0])


def test_bad_state_files_get_clear_errors(tiny: Tiny, quiet_log) -> None:
    log, _, _ = quiet_log()
    solver = Solver(str(tiny.solver(max_iter=1)), log=log)
    with pytest.raises(PrototxtError, match="solver state file not found"):
        solver.restore("x.solverstate.h5")
    with pytest.raises(PrototxtError, match="not found"):
        solver.restore(str(tiny.root / "missing.solverstate"))
    bad = caffe_pb2.SolverState(iter=1)
    bad.history.add().data.extend([1.0])
    (tiny.root / "bad.solverstate").write_bytes(bad.SerializeToString())
    with pytest.raises(PrototxtError, match="holds 1 history blobs"):
        solver.restore(str(tiny.root / "bad.solverstate"))


def test_nan_loss_stops_with_clear_message_and_keeps_last_snapshot(
    tiny: Tiny, quiet_log, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, text, _ = quiet_log()
    solver = Solver(str(tiny.solver(max_iter=10, snapshot=2)), log=log)
    original = solver._forward_backward
    calls = iter(range(100))

    def fb() -> np.float32:
        loss = original()
        return np.float32("nan") if next(calls) == 3 else loss

    monkeypatch.setattr(solver, "_forward_backward", fb)
    with pytest.raises(NonFiniteLossError, match="Iteration 3: loss = nan is not finite"):
        solver.solve()
    names = sorted(p.name for p in (tiny.root / "snap").iterdir())
    assert names == ["solver_iter_2.caffemodel", "solver_iter_2.solverstate"]
    assert "solver_iter_2.solverstate" in text.getvalue()


def test_signal_actions_snapshot_and_stop_as_caffe(tiny: Tiny, quiet_log) -> None:
    script = iter(["none", "snapshot", "none", "stop"])
    log, text, _ = quiet_log()
    path = tiny.solver(max_iter=10, test_interval=0)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    solver = Solver(str(path), log=log, action=lambda: next(script, "none"))
    solver.solve()
    names = sorted(p.name for p in (tiny.root / "snap").iterdir() if p.suffix == ".caffemodel")
    assert names == ["solver_iter_2.caffemodel", "solver_iter_4.caffemodel"]
    assert solver.iter == 4 and "Optimization stopped early." in text.getvalue()


def test_time_domain_tests_follow_the_training_clock(tiny: Tiny, quiet_log) -> None:
    log, _, _ = quiet_log()
    path = tiny.solver(test_interval=0, test_interval_seconds=2.0, max_iter=1)
    solver = Solver(str(path), log=log)
    due = []
    for it, train_s in [(0, 0.0), (1, 1.5), (2, 2.1), (3, 3.9), (4, 4.0), (5, 9.5), (6, 9.9)]:
        solver.iter, solver.train_seconds = it, train_s
        due.append(solver._test_due())
    assert due == [True, False, True, False, True, True, False]


def test_loss_bands_policy_uses_the_running_average_loss(tiny: Tiny, quiet_log) -> None:
    bands = "loss_bands { threshold: 1.1 threshold: 1.0 lr: 0.3 lr: 0.2 lr: 0.1 }"
    log, _, json_path = quiet_log("bands")
    Solver(
        str(tiny.solver(bands, name="bands", lr_policy="loss_bands", max_iter=12)), log=log
    ).solve()
    log.close()
    recs = events(json_path)
    losses = np.array([r["loss"] for r in recs], np.float32)
    for t, r in enumerate(recs):
        # The limit's window (solvers/isgd.py reading 13): the n losses before this batch; in
        # the first iteration, with nothing before it, the batch loss itself.
        window = losses[max(0, t - BATCHES_PER_EPOCH) : t] if t else losses[:1]
        mean = window.astype(np.float64).mean()
        want = 0.3 if mean >= np.float32(1.1) else 0.2 if mean >= np.float32(1.0) else 0.1
        assert r["lr"] == pytest.approx(want)
        assert r["mean"] == pytest.approx(mean if t else 0.0)  # the same mean as the limit


def test_loss_bands_read_the_limits_window_not_one_holding_the_current_loss(
    tiny: Tiny, quiet_log
) -> None:
    """Three losses of 2.5 before a batch of loss 0.1: the limit's window (before the batch)
    has mean 2.5 (band >= 2.0), a window holding the batch would have 1.7 (the next band)."""
    bands = "loss_bands { threshold: 2.0 threshold: 1.2 lr: 0.3 lr: 0.2 lr: 0.1 }"
    log, _, _ = quiet_log()
    extra = bands + "\nisgd_param { queue_size: 3 }"
    solver = Solver(str(tiny.solver(extra, lr_policy="loss_bands", max_iter=1)), log=log)
    for _ in range(3):
        solver.isgd.queue.push(2.5)
    decision = solver.isgd.observe(0.1, it=3)
    solver._average_loss = decision.average_loss
    assert decision.mean == pytest.approx(2.5) and solver.learning_rate() == pytest.approx(0.3)


def test_bad_solver_settings_are_named(tiny: Tiny, quiet_log) -> None:
    log, _, _ = quiet_log()
    with pytest.raises(PrototxtError, match="unknown lr_policy 'cosine'"):
        Solver(str(tiny.solver(lr_policy="cosine")), log=log)
    with pytest.raises(ValueError, match="unknown solver type 'Foo'"):
        Solver(str(tiny.solver(type="Foo")), log=log)


def test_alg1_line_19_reading_folds_the_current_loss_into_the_statistics(
    tiny: Tiny, quiet_log
) -> None:
    """isgd_param.limit_includes_current: mean/sigma over the n losses ending at this batch."""
    extra = "isgd_param { limit_includes_current: true anchor_after_update: true }"
    log, _, json_path = quiet_log("line19")
    Solver(str(tiny.solver(extra, name="line19", max_iter=12)), log=log).solve()
    log.close()
    recs = events(json_path)
    losses = np.array([r["loss"] for r in recs], np.float32).astype(np.float64)
    for t, r in enumerate(recs):
        window = losses[max(0, t - BATCHES_PER_EPOCH + 1) : t + 1]
        assert r["mean"] == pytest.approx(window.mean(), rel=1e-9)
        assert r["std"] == pytest.approx(window.std(), rel=1e-6, abs=1e-9)


class _FakeRank(SerialComm):
    """Rank r of a 2-rank job whose collectives are local (enough for construction); objects
    the master broadcasts reach the worker through `sent` (build the master first)."""

    def __init__(self, rank: int, sent: list) -> None:
        self.rank, self.size, self.sent = rank, 2, sent

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    def bcast_object(self, obj, root: int = 0):
        if self.is_master:
            self.sent.append(obj)
            return obj
        return self.sent.pop(0)


def test_ranks_share_weights_and_slice_the_global_batchs_dropout_masks(
    tiny: Tiny, quiet_log
) -> None:
    """Every rank builds the same net from one seed (same w_0, same crop/mirror draws per global
    batch) and, though only the master builds the test net, takes Caffe's stream where the
    master's test net left it; each rank's Dropout mask is its rows of the one-process mask."""
    text = tiny.net.read_text().replace(
        'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }',
        'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }\n'
        'layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" }',
    )
    assert "drop1" in text
    tiny.net.write_text(text)
    log, _, _ = quiet_log()
    sent: list = []
    path = str(tiny.solver(max_iter=1))
    solvers = [Solver(path, log=log, comm=_FakeRank(r, sent)) for r in (0, 1)]
    alone = Solver(path, log=log)
    assert solvers[0].test_nets and not solvers[1].test_nets
    np.testing.assert_array_equal(solvers[0].net.flat_data, solvers[1].net.flat_data)
    assert solvers[1].net.rng_state() == alone.net.rng_state()
    masks = []
    for s in (*solvers, alone):
        s.net.forward()
        masks.append(np.asarray(s.net.layer_dict["drop1"].mask).copy())
    np.testing.assert_array_equal(np.concatenate(masks[:2]), masks[2])
    assert not np.array_equal(masks[0], masks[1])


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("extra", ["", ISGD_EAGER])
def test_resume_with_dropout_is_exact(tiny: Tiny, quiet_log, extra: str, fmt: str, xp) -> None:
    """Dropout masks continue where they stopped: the layers' RNG states are in the snapshot."""
    tiny.net.write_text(
        tiny.net.read_text().replace(
            'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }',
            'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }\n'
            'layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" '
            "dropout_param { dropout_ratio: 0.3 } }",
        )
    )
    fields = {"type": "SGD", "snapshot_format": f"={fmt}"}
    straight = weights_after(tiny, quiet_log, "straight", extra, xp, max_iter=12, **fields)
    weights_after(tiny, quiet_log, "first", extra, xp, max_iter=6, **fields)
    suffix = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    state = tiny.root / "snap" / f"first_iter_6{suffix}"
    log, _, _ = quiet_log("second")
    solver = Solver(str(tiny.solver(extra, name="second", max_iter=12, **fields)), log=log, xp=xp)
    assert "drop1" in solver.net.layer_names
    solver.solve(str(state))
    np.testing.assert_array_equal(to_numpy(solver.net.flat_data), straight)
    # a run with another Dropout stream would differ: the test can fail
    other = weights_after(
        tiny,
        quiet_log,
        "other",
        extra,
        xp,
        max_iter=12,
        random_seed=8,
        **{k: v for k, v in fields.items()},
    )
    assert not np.array_equal(other, straight)


@pytest.mark.parametrize("kind", ["SGD", "Nesterov"])
@pytest.mark.parametrize("iter_size", [1, 2])
@pytest.mark.parametrize("flat_path", ["compiled", "numpy"])
def test_flat_update_is_bit_identical_to_the_per_param_loop(
    tiny: Tiny, quiet_log, kind: str, iter_size: int, flat_path: str
) -> None:
    """The flat-buffer SGD/Nesterov update (per-element lr_mult and decay_mult, blocked), as
    one compiled loop per segment (Numba) or as NumPy passes, does Caffe's per-param
    Normalize, Regularize and ComputeUpdateValue bit for bit."""
    from solvers import update_kernels

    if flat_path == "compiled" and not update_kernels.AVAILABLE:
        pytest.skip("numba is not installed: the compiled update is unavailable")
    runs = []
    for flat in (True, False):
        log, _, _ = quiet_log(f"{kind}{iter_size}{flat}")
        path = tiny.solver(
            name=f"f{flat}", type=kind, max_iter=6, iter_size=iter_size, test_interval=0
        )
        path.write_text(path.read_text().replace("test_iter: 2\n", ""))
        solver = Solver(str(path), log=log, compiled_update=flat_path == "compiled")
        assert solver._flat_update is not None
        assert solver._flat_update.compiled == (flat_path == "compiled" and solver.xp is np)
        if not flat:
            solver._flat_update = None
        solver.solve()
        runs.append((solver.net.flat_data.copy(), solver.history.flat[0].copy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_with_snapshot_diff_the_flat_update_keeps_caffes_diff_and_clears_next_iteration(
    tiny: Tiny, quiet_log
) -> None:
    """Caffe's Update leaves the update value in each param diff (snapshot_diff writes it) and
    the next Step clears it (ClearParamDiffs): the flat update must keep it and must not tell
    the step the diffs are already zero. Without snapshot_diff it zeroes them on the way and
    the step skips the clear after it (the same numbers, one pass over memory fewer)."""
    runs = []
    for flat, keep in ((True, True), (False, True), (True, False)):
        log, _, _ = quiet_log(f"keep{flat}{keep}")
        path = tiny.solver(name=f"k{flat}{keep}", type="Nesterov", max_iter=4, snapshot_diff=keep)
        solver = Solver(str(path), log=log)
        assert solver._flat_update is not None
        if not flat:
            solver._flat_update = None
        clears, clear = [], solver.net.clear_param_diffs
        solver.net.clear_param_diffs = lambda c=clears, f=clear: c.append(1) or f()  # type: ignore[method-assign]
        solver.step(4)
        runs.append((solver.net.flat_data.copy(), solver.net.flat_diff.copy(), len(clears)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert np.any(runs[0][1] != 0) and not np.any(runs[2][1] != 0)
    assert [r[2] for r in runs] == [4, 4, 1]


def test_the_compiled_update_is_compiled_before_the_training_clock(
    tiny: Tiny, quiet_log, monkeypatch
):
    """Building the solver warms the update loop up (Numba compiles on first call), so the
    first iteration's time on the training clock holds no compilation."""
    from solvers import update_kernels

    if not update_kernels.AVAILABLE:
        pytest.skip("numba is not installed: the compiled update is unavailable")
    calls = []
    monkeypatch.setattr(update_kernels, "warm_up", calls.append)
    log, _, _ = quiet_log("warm")
    path = tiny.solver(name="warm", type="SGD", max_iter=1, test_interval=0)
    path.write_text(path.read_text().replace("test_iter: 2\n", ""))
    solver = Solver(str(path), log=log)
    assert solver._flat_update is not None and solver._flat_update.compiled == (solver.xp is np)
    assert calls == ([solver.net.flat_data.dtype] if solver.xp is np else [])
