"""Run folders of the experiment driver: generated files, bad input, half-written folders,
resume after an interruption (on tiny generated MNIST-shaped data)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from engine.proto_io import read_solver_param
from scripts import reproduce, runner
from scripts.profiles import ROOT, ProfileError, load_profile
from scripts.runs import (
    LogFollower,
    RunSpec,
    full_test_batch,
    newest_snapshot,
    run,
    status,
    write_run_files,
)
from solvers.run_log import read_run_log


def test_profile_errors_name_the_profile_and_dataset() -> None:
    with pytest.raises(
        ProfileError, match=r"unknown profile 'fast' \(known: smoke, default, paper"
    ):
        load_profile("fast")
    with pytest.raises(
        ProfileError, match=r"unknown dataset\(s\) svhn \(known: mnist, cifar10, imagenet\)"
    ):
        load_profile("default", ["svhn"])
    assert load_profile("default", ["imagenet"]).seeds_of("imagenet") == [1, 2]
    with pytest.raises(ProfileError, match="RUNS=0"):
        load_profile("smoke", runs=0)
    assert load_profile("paper").seeds == list(range(1, 11))


def test_the_driver_reports_a_bad_profile_in_one_line(capsys) -> None:
    assert reproduce.main(["--profile", "fast"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reproduce-table1: unknown profile 'fast'")


def test_missing_data_offline_names_the_files_and_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("scripts.runner.ROOT", tmp_path)
    monkeypatch.setenv("ISGD_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("ISGD_OFFLINE", "1")  # no test touches the network
    profile = load_profile("smoke", ["mnist"])
    with pytest.raises(
        Exception, match=r"MNIST files not found under .*nowhere: missing train-images"
    ):
        runner.ensure_data(profile, lambda _: None)


def test_fig1_controlled_sets_are_prepared_with_the_datasets_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh clone has no Fig. 1 LMDBs: ensure_data builds them (CI failed on exactly this)."""
    asked: list[tuple[str, ...]] = []
    monkeypatch.setattr("scripts.runner.ROOT", tmp_path)
    monkeypatch.setattr("scripts.runner.prepare", lambda **kw: asked.append(kw["only"]))
    monkeypatch.setattr("scripts.runner.check_known_lmdb", lambda path: None)
    profile = load_profile("smoke", ["mnist"])
    extra = {"controlled": ("data/cifar10/single", "data/cifar10/iid")}
    runner.ensure_data(profile, lambda _: None, extra)
    assert asked == [("controlled", "mnist")]
    for path in (*extra["controlled"], *profile.plans["mnist"].dataset.lmdbs):
        (tmp_path / path).mkdir(parents=True)
    asked.clear()
    runner.ensure_data(profile, lambda _: None, extra)
    assert asked == []


def test_a_profile_in_evaluations_replaces_the_solver_files_clock_cadence(spec: RunSpec) -> None:
    """prototxt/lenet_isgd_solver.prototxt tests every 2 s of training; a profile that tests
    every N gradient evaluations must leave exactly that cadence in the generated solver."""
    assert read_solver_param(str(ROOT / spec.plan.dataset.solver_file("isgd"))).test_interval_seconds > 0
    _, solver_path = write_run_files(replace(spec, test_interval_evals=250))
    solver = read_solver_param(str(solver_path))
    assert solver.test_interval_grad_evals == 250 and solver.test_interval_seconds == 0
    _, solver_path = write_run_files(replace(spec, test_interval_seconds=3.0))
    solver = read_solver_param(str(solver_path))
    assert solver.test_interval_grad_evals == 0 and solver.test_interval_seconds == 3.0


def test_generated_solver_and_net_carry_the_profile(spec: RunSpec) -> None:
    net_path, solver_path = write_run_files(spec)
    solver = read_solver_param(str(solver_path))
    assert solver.random_seed == 3 and solver.max_grad_evals == 6
    assert list(solver.test_iter) == [1] and solver.test_interval_seconds == 100.0
    assert solver.test_interval == 0 and solver.snapshot == 3
    assert solver.isgd_param.control_limit == 2.0 and solver.isgd_param.stop == 5
    assert solver.snapshot_prefix.endswith("isgd-seed3/snap")
    text = net_path.read_text()
    assert "batch_size: 4" in text and "batch_size: 30" in text and "test_lmdb" in text
    assert (
        full_test_batch(10000) == 100 and full_test_batch(30) == 30 and full_test_batch(50001) == 21
    )


def test_a_run_resumes_after_an_interruption_and_is_then_skipped(spec: RunSpec) -> None:
    messages: list[str] = []
    log = run(spec, messages.append, lambda p: None)
    assert log.finished and [e["iter"] for e in log.of("iter")] == list(range(6))
    whole = [(e["iter"], e["loss"]) for e in log.of("iter")]
    # Interrupt after iteration 4: the log keeps what was written, the last snapshot is gone.
    lines = spec.log_path.read_text().splitlines()
    cut = next(i for i, x in enumerate(lines) if json.loads(x).get("iter") == 4 and '"iter"' in x)
    spec.log_path.write_text("\n".join(lines[: cut + 1]) + "\n")
    for f in spec.folder.glob("snap_iter_6.*"):
        f.unlink()
    assert status(spec)[0] == "partial"
    again = run(spec, messages.append, lambda p: None)
    assert any("resuming from" in m and "snap_iter_3.solverstate" in m for m in messages)
    assert [(e["iter"], e["loss"]) for e in again.of("iter")] == whole, "resume is exact"
    size = spec.log_path.stat().st_size
    run(spec, messages.append, lambda p: None)  # done: not redone
    assert spec.log_path.stat().st_size == size


def test_an_unreadable_newest_snapshot_falls_back_to_an_older_one(spec: RunSpec) -> None:
    run(spec, lambda _: None, lambda p: None)
    (spec.folder / "snap_iter_6.caffemodel").unlink()
    said: list[str] = []
    found = newest_snapshot(spec.folder, said.append)
    assert found is not None and found.name == "snap_iter_3.solverstate"
    assert len(said) == 1 and "snap_iter_6.solverstate: unreadable snapshot" in said[0]


def test_a_started_run_without_snapshot_starts_again(spec: RunSpec) -> None:
    spec.folder.mkdir(parents=True)
    spec.log_path.write_text('{"event":"start","iter":0,"resumed_from":null}\n{"event":"iter","it')
    said: list[str] = []
    log = run(spec, said.append, lambda p: None)
    assert any("starting it again" in m for m in said)
    assert log.finished and len(read_run_log(spec.log_path).starts) == 1


def test_progress_of_a_resumed_run_starts_at_its_snapshot_and_its_eta_counts_only_new_work(
    spec: RunSpec, tmp_path: Path
) -> None:
    """Resumed at 2000 of 2150 evaluations, 100 more in 10 s: 50 left at 0.1 s each = 5 s."""
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"event": "iter", "iter": 2500, "grad_evals": 2500}) + "\n")
    follower = LogFollower(log, "accuracy")  # follows what the resumed child appends
    resumed = replace(spec, budget_grad_evals=2150)
    p = follower.poll()
    assert runner.progress_text(resumed, p) is None  # nothing from the child yet: no "iter 0"
    with open(log, "a") as out:
        for event in (
            {"event": "start", "iter": 2000, "grad_evals": 2000, "train_s": 200.0},
            {"event": "iter", "iter": 2099, "grad_evals": 2100, "train_s": 209.0},
        ):
            out.write(json.dumps(event) + "\n")
    p = follower.poll()
    assert "iter 2099, 2100/2150 grad evals" in runner.progress_text(resumed, p)
    eta = runner.Eta()
    eta.learn(resumed, 10.0, p.evals_this_process)
    assert p.evals_this_process == 100
    assert eta.remaining([resumed], resumed, p.grad_evals) == "ETA 5 s"


def test_eta_is_learned_per_image_so_batch_sizes_mix(spec: RunSpec) -> None:
    """100 passes at batch 1000 in 100 s = 1 ms per image: 500 passes at batch 100 take 50 s."""
    eta = runner.Eta()
    big, small = (
        replace(spec, batch_size=1000),
        replace(spec, batch_size=100, budget_grad_evals=500),
    )
    eta.learn(big, 100.0, 100)
    assert eta.remaining([small], None, 0) == "ETA 50 s"
    assert eta.remaining([small], small, 400) == "ETA 10 s"
