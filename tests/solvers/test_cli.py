"""The `isgd` command line: Caffe's verbs, flags and printed lines (tools/caffe.cpp)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from solvers.cli import build_parser, main

from .conftest import Tiny

ROOT = Path(__file__).resolve().parents[2]


def bodies(text: str) -> list[str]:
    return [
        re.sub(r"^[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ", "", line) for line in text.splitlines()
    ]


def test_flags_accept_caffe_single_dash_equals_and_double_dash() -> None:
    p = build_parser()
    a = p.parse_args(["train", "-solver=s.prototxt", "-weights", "a,b", "--json-log", "x.jsonl"])
    assert (a.command, a.solver, a.weights, a.json_log) == ("train", "s.prototxt", "a,b", "x.jsonl")
    b = p.parse_args(["-gpu", "all", "test", "--model", "m", "-iterations", "7"])
    assert (b.command, b.gpu, b.model, b.iterations) == ("test", "all", "m", 7)


def test_train_writes_caffe_lines_json_log_and_snapshots(tiny: Tiny, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tiny.root)  # relative paths resolve against the working directory
    solver = tiny.solver(max_iter=6, display=3, test_interval=3, snapshot_prefix="snap/lenetish")
    assert main(["train", "-solver", solver.name, "-no_progress"]) == 0
    err = capsys.readouterr().err
    lines = bodies(err)
    assert "JSON log: snap/lenetish_log.jsonl" in lines
    assert any(
        re.fullmatch(r"Iteration 3 \([\d.e+-]+ iter/s, [\d.e+-]+s/3 iters\), loss = [\d.]+", x)
        for x in lines
    )
    assert "Iteration 3, lr = 0.1" in lines and lines[-1] == "Optimization Done."
    assert (tiny.root / "snap" / "lenetish_iter_6.solverstate").is_file()
    recs = [
        json.loads(x) for x in (tiny.root / "snap" / "lenetish_log.jsonl").read_text().splitlines()
    ]
    keys = {"event", "iter", "train_s", "loss", "lr", "mean", "std", "limit", "alg2_inner_steps"}
    assert keys <= set(next(r for r in recs if r["event"] == "iter"))
    test = next(r for r in recs if r["event"] == "test")
    assert set(test) >= {"event", "iter", "train_s", "outputs"}
    assert set(test["outputs"]) == {"accuracy", "loss"}

    # Resume from the snapshot, then finetune from the weights: both run, not both at once.
    more = tiny.solver(max_iter=8, display=3, test_interval=3, snapshot_prefix="snap/lenetish")
    state = "snap/lenetish_iter_6.solverstate"
    assert main(["train", "-solver", more.name, "-snapshot", state, "-no_progress"]) == 0
    assert "Resuming from snap/lenetish_iter_6.solverstate" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "-solver",
                more.name,
                "-weights",
                "snap/lenetish_iter_6.caffemodel",
                "-no_progress",
                "-overwrite_log",  # a fresh run on the same prefix: replace the log knowingly
            ]
        )
        == 0
    )
    assert "Finetuning from snap/lenetish_iter_6.caffemodel" in capsys.readouterr().err
    assert main(["train", "-solver", more.name, "-snapshot", state, "-weights", "w"]) == 1
    assert "not both" in capsys.readouterr().err


def test_test_verb_prints_batches_and_weighted_means(tiny: Tiny, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tiny.root)
    assert main(["train", "-solver", tiny.solver(max_iter=2).name, "-no_progress"]) == 0
    capsys.readouterr()
    args = [
        "test",
        "-model",
        tiny.net.name,
        "-weights",
        "snap/solver_iter_2.caffemodel",
        "-iterations",
        "3",
    ]
    assert main(args) == 0
    lines = bodies(capsys.readouterr().err)
    batches = [x for x in lines if x.startswith("Batch ")]
    assert len(batches) == 6 and batches[0].startswith("Batch 0, accuracy = ")
    acc = [float(x.split("= ")[1]) for x in batches if "accuracy" in x]
    loss = [float(x.split("= ")[1]) for x in batches if "loss" in x]
    mean_acc = next(x for x in lines if x.startswith("accuracy = "))
    assert float(mean_acc.split("= ")[1]) == pytest.approx(np.mean(acc), rel=1e-5)
    mean_loss = next(x for x in lines if x.startswith("loss = "))
    m = re.fullmatch(r"loss = ([\d.]+) \(\* 1 = ([\d.]+) loss\)", mean_loss)
    assert m and float(m.group(1)) == pytest.approx(np.mean(loss), rel=1e-5)


def test_time_verb_reports_per_layer_and_totals(tiny: Tiny, capsys) -> None:
    assert main(["time", "-model", str(tiny.net), "-iterations", "2"]) == 0
    lines = bodies(capsys.readouterr().err)
    assert any(x.strip().startswith("ip1\tforward:") for x in lines)
    assert any(x.startswith("Average Forward-Backward: ") for x in lines)
    assert lines[-1] == "*** Benchmark ends ***"


def test_errors_are_messages_not_tracebacks(tiny: Tiny, capsys) -> None:
    assert main(["train"]) == 1
    assert "need a solver definition" in capsys.readouterr().err
    assert main(["test", "-model", str(tiny.net)]) == 1
    assert "need model weights" in capsys.readouterr().err
    assert main(["frobnicate"]) == 1
    assert "unknown action: frobnicate" in capsys.readouterr().err
    assert main(["train", "-solver", str(tiny.root / "nope.prototxt")]) == 1
    assert "nope.prototxt" in capsys.readouterr().err


def test_python_dash_m_solvers_help_names_caffe_verbs() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "solvers", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    ).stdout
    for word in (
        "train",
        "test",
        "time",
        "-solver",
        "-weights",
        "-snapshot",
        "-iterations",
        "-sigint_effect",
        "-json_log",
    ):
        assert word in out


def test_isgd_data_passes_through_to_the_data_tools(capsys):
    """`isgd data <tool> ...` is the same command line as `python -m data_tools <tool> ...`."""
    import pytest

    from solvers.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["data", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "convert_mnist_data" in out and "compute_image_mean" in out
