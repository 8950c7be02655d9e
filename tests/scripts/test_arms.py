"""Arms as data: a profile names its arms and baseline, every run is specified by one builder,
and Table 1 reports each arm against the baseline, paired by seed, in the same tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from scripts import reproduce
from scripts.profiles import PROFILES_FILE, ProfileError, load_profile
from scripts.runs import arm_spec, render_run_files, table1_specs
from solvers.run_log import alg2_inner_steps, read_run_log
from tests.scripts.conftest import mnist_like

REAL = PROFILES_FILE.read_text(encoding="utf-8")


def profiles_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(text, encoding="utf-8")
    return path


def edited(tmp_path: Path, old: str, new: str) -> Path:
    assert old in REAL, old
    return profiles_file(tmp_path, REAL.replace(old, new, 1))


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_the_default_arms_are_sgd_and_isgd_against_sgd() -> None:
    """Without `arms`, a profile runs today's pair: SGD (the baseline) and ISGD, each on its own
    prototxt/ solver and with no isgd_param switch of its own."""
    profile = load_profile("smoke", ["mnist"])
    assert profile.arms == ("sgd", "isgd") and profile.baseline == "sgd"
    assert profile.compared == ("isgd",)
    specs = table1_specs(profile)["mnist"]
    assert [(s.arm, s.seed, s.solver_arm, s.isgd) for s in specs] == [
        ("sgd", 1, "", {}),
        ("isgd", 1, "", {}),
    ]


def test_an_arm_of_the_profiles_file_picks_its_solver_and_isgd_switches(tmp_path: Path) -> None:
    """An [arms] entry names the {arm} of the datasets' solver pattern and sets isgd_param fields
    (any set field of Caffe's optional isgd_param message turns ISGD on); the run's solver file
    says both."""
    path = edited(
        tmp_path,
        "[arms]\n",
        '[arms]\nisgd_z = { solver = "isgd", isgd = { zeta = 0.1, stop = 2 } }\n',
    )
    profile = load_profile("smoke", ["mnist"], path=path)
    spec = arm_spec(profile, profile.plans["mnist"], "isgd_z", 1, test=False)
    assert spec.solver_arm == "isgd" and spec.isgd == {"zeta": 0.1, "stop": 2}
    _, solver = render_run_files(spec)
    assert "lenet_isgd_solver.prototxt" in solver.splitlines()[0]
    assert "zeta: 0.1" in solver and "stop: 2" in solver


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        (
            'arms = ["sgd", "isgd"]    # Table 1\'s pair',
            'arms = ["sgd", "adamw"]',
            'arms = ["sgd", "adamw"]',
            r"\[smoke\] arms: unknown arm 'adamw'",
        ),
        (
            'baseline = "sgd"\nranks',
            'baseline = "nesterov"\nranks',
            'baseline = "nesterov"',
            r"\[smoke\] baseline: 'nesterov' is not one of the profile's arms \(sgd, isgd\)",
        ),
        (
            'arms = ["sgd", "isgd"]    # Table 1\'s pair',
            'arms = ["sgd"]',
            'arms = ["sgd"]',
            r"\[smoke\] arms: must list at least two different arms",
        ),
        (
            "[arms]\n",
            '[arms]\nbad = { solver = "isgd", isgd = { zetta = 1.0 } }\n',
            "bad = ",
            r"\[arms\] bad: isgd has unknown isgd_param field 'zetta'",
        ),
        (
            "[arms]\n",
            '[arms]\nbad = { solver = "isgd", isgd = { stop = "five" } }\n',
            "bad = ",
            r"\[arms\] bad: isgd stop = 'five': must be a number",
        ),
        (
            "[arms]\n",
            "[arms]\nbad = { isgd = { stop = 2 } }\n",
            "bad = ",
            r"\[arms\] bad: lacks solver",
        ),
    ],
)
def test_bad_arms_are_named_by_file_line_and_key(
    tmp_path: Path, old: str, new: str, where: str, message: str
) -> None:
    """A wrong arm, baseline or isgd_param switch stops with one line naming the file and line,
    as every other profile error (isgd_param's fields are caffe.proto's IsgdParameter)."""
    path = edited(tmp_path, old, new)
    with pytest.raises(ProfileError, match=rf"^{path}:{line_of(path, where)}: {message}"):
        load_profile("smoke", path=path)


def test_runs_is_the_old_name_of_pairs_and_warns(tmp_path: Path) -> None:
    """`runs` still counts pairs, with a one-line warning naming the file, line and new name."""
    path = edited(tmp_path, "pairs = 1                 # one pair", "runs = 2  #")
    with pytest.warns(FutureWarning, match=rf"{path}:{line_of(path, 'runs = 2')}: .*`pairs`"):
        assert load_profile("smoke", path=path).runs == 2


def test_inner_steps_are_read_under_the_new_and_the_old_log_key(tmp_path: Path) -> None:
    """New logs write `alg2_inner_steps`; logs written before say `subproblem_iters`: both read
    back under the new name."""
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    for path, key in ((old, "subproblem_iters"), (new, "alg2_inner_steps")):
        events = [{"event": "start"}, {"event": "iter", "iter": 1, key: 3}]
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        (event,) = read_run_log(path).of("iter")
        assert event["alg2_inner_steps"] == 3 and "subproblem_iters" not in event
        assert alg2_inner_steps({key: 4}) == 4
    assert alg2_inner_steps({}) == 0


def _trio_profile(tmp_path: Path) -> Path:
    """The smoke profile with a third arm (Nesterov) on tiny MNIST-like data and a tiny budget."""
    mnist_like(tmp_path / "tiny_train_lmdb", 24, 1)
    mnist_like(tmp_path / "tiny_test_lmdb", 20, 2)
    net = (Path(PROFILES_FILE).parent.parent / "prototxt/lenet_train_test.prototxt").read_text()
    net = net.replace("data/mnist/mnist_train_lmdb", str(tmp_path / "tiny_train_lmdb"))
    net = net.replace("data/mnist/mnist_test_lmdb", str(tmp_path / "tiny_test_lmdb"))
    (tmp_path / "net.prototxt").write_text(net)
    text = REAL
    for old, new in (
        ('net = "prototxt/lenet_train_test.prototxt"', f'net = "{tmp_path / "net.prototxt"}"'),
        (
            'lmdbs = ["data/mnist/mnist_train_lmdb", "data/mnist/mnist_test_lmdb"]',
            f'lmdbs = ["{tmp_path / "tiny_train_lmdb"}", "{tmp_path / "tiny_test_lmdb"}"]',
        ),
        ('arms = ["sgd", "isgd"]    # Table', 'arms = ["sgd", "isgd", "nesterov"]  #'),
        ('datasets = ["mnist", "cifar10", "imagenet"]', 'datasets = ["mnist"]'),
        ("batch_size = 64               # Caffe's", "batch_size = 4  #"),
        ("budget_grad_evals = 300 ", "budget_grad_evals = 4 "),
        ("test_interval_evals = 100 ", "test_interval_evals = 2 "),
        ("snapshot_every = 100 ", "snapshot_every = 0 "),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    return profiles_file(tmp_path, text)


def test_a_third_arm_runs_through_reproduce_and_is_reported_against_its_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's acceptance: the smoke profile with a third arm (Nesterov) trains every arm of
    each seed through `make reproduce-table1`'s command and Table 1 reports ISGD and Nesterov
    each against SGD, paired by seed, in the same tables (a `comparison` column and row names
    say which), with Nesterov's run on Caffe's Nesterov solver."""
    monkeypatch.setattr("scripts.profiles.PROFILES_FILE", _trio_profile(tmp_path))
    monkeypatch.setattr("scripts.runs.RUNS_DIR", tmp_path / "runs")
    out = tmp_path / "results"
    monkeypatch.setattr("scripts.table1_report.results_dir", lambda profile: out)
    monkeypatch.setattr("scripts.table1_report.build_readme", lambda profile: out / "README.md")
    assert reproduce.main(["--profile", "smoke"]) == 0

    with open(out / "table1_runs.csv", newline="") as handle:
        runs = list(csv.DictReader(handle))
    assert [(r["dataset"], r["arm"], r["seed"]) for r in runs] == [
        ("mnist", "sgd", "1"),
        ("mnist", "isgd", "1"),
        ("mnist", "nesterov", "1"),
    ]
    with open(out / "table1.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["dataset"], r["comparison"]) for r in table] == [
        ("mnist", "isgd vs sgd"),
        ("mnist", "nesterov vs sgd"),
    ]
    assert table[1]["runs_sgd"] == table[1]["runs_nesterov"] == "1" and table[1]["pairs"] == "1"
    assert table[1]["runs_isgd"] == "" and table[1]["first_pairs_both"] != ""
    with open(out / "ladder.csv", newline="") as handle:
        ladder = list(csv.DictReader(handle))
    assert {r["comparison"] for r in ladder} == {"isgd vs sgd", "nesterov vs sgd"}
    assert all(r["reached_nesterov"] != "" for r in ladder if r["comparison"] != "isgd vs sgd")
    md = (out / "table1.md").read_text()
    assert "| dataset | highest top acc. baseline | arm | IMP" in md
    assert "| mnist: ISGD vs SGD (accuracy" in md and "| mnist: Nesterov vs SGD (accuracy" in md
    assert "**mnist: Nesterov vs SGD**: SGD reached the target" in md
    assert "| mnist | sgd | 0/1 |" in md and md.count("| mnist | sgd |") == 1  # baseline once
    assert "| mnist | nesterov | 0/1 | 0/1 | — | — | — | — | — |" in md  # no Alg. 2 in Nesterov
    assert "| mnist | isgd | 0/1 | 0/1 | — | — | 0.000 % | — | 0.000 % |" in md
    assert (out / "figures" / "reached_mnist_nesterov.png").is_file()
    solver = tmp_path / "runs/smoke/table1/mnist/nesterov-seed1/solver.prototxt"
    assert 'type: "Nesterov"' in solver.read_text()
