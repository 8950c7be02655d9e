"""Caffe's log line formats (what Caffe's parse_log reads) and the JSON-lines events."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np

from solvers.train_log import TrainLog, fmt, glog_prefix

GLOG = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ solver\.py:0\] ")


def test_fmt_prints_like_cpp_streams_six_significant_digits() -> None:
    assert fmt(0.01) == "0.01"
    assert fmt(np.float32(0.1)) == "0.1"
    assert fmt(1.234567891) == "1.23457"
    assert fmt(1e-5) == "1e-05"
    assert fmt(123456789.0) == "1.23457e+08"


def test_lines_have_glog_prefix_and_caffe_wording(tmp_path: Path) -> None:
    out = io.StringIO()
    log = TrainLog(stream=out, json_path=tmp_path / "a.jsonl", progress=False)
    log.iteration(100, 12.5, 8.0, 100, 0.25)
    log.output("Train", 0, "loss", 0.25, 1.0)
    log.output("Test", 0, "accuracy", 0.98, 0.0)
    log.lr(100, np.float32(0.00943729))
    lines = out.getvalue().splitlines()
    assert all(GLOG.match(line) for line in lines)
    bodies = [GLOG.sub("", line) for line in lines]
    assert bodies == [
        "Iteration 100 (12.5 iter/s, 8s/100 iters), loss = 0.25",
        "    Train net output #0: loss = 0.25 (* 1 = 0.25 loss)",
        "    Test net output #0: accuracy = 0.98",
        "Iteration 100, lr = 0.00943729",
    ]
    assert glog_prefix(when=0.5).endswith("solver.py:0] ")


def test_json_events_one_per_line_with_non_finite_as_null(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "log.jsonl"
    log = TrainLog(stream=io.StringIO(), json_path=path, progress=False)
    log.event({"event": "iter", "iter": 3, "loss": float("nan"), "lr": np.float32(0.5)})
    log.event({"event": "test", "iter": 3, "outputs": {"accuracy": 0.5}})
    log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0] == {"event": "iter", "iter": 3, "loss": None, "lr": 0.5}
    assert records[1]["outputs"] == {"accuracy": 0.5}
    TrainLog(stream=io.StringIO(), json_path=path, append=True, progress=False).close()
    assert len(path.read_text().splitlines()) == 2
