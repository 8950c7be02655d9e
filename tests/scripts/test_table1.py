"""Table 1 from synthetic run logs whose answers are worked out by hand: a dip below the target
after reaching it, an accuracy equal to the target, a run that never stays above, a tie."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from scripts.comparison import summarize_dataset
from scripts.outcomes import LADDER_COLUMNS
from scripts.profiles import load_profile
from scripts.table1_report import build, collect
from solvers.run_log import RunLogError

# (seed, arm): [(train_s, grad_evals, accuracy)] of the tests
TESTS = {
    (1, "sgd"): [(2, 100, 0.98), (4, 200, 0.991), (6, 300, 0.989), (8, 400, 0.992)],
    (1, "isgd"): [(2, 105, 0.985), (4, 210, 0.991), (6, 315, 0.993)],
    (2, "sgd"): [(3, 150, 0.99), (6, 300, 0.995)],
    (2, "isgd"): [(3, 150, 0.99), (6, 300, 0.989)],
    (3, "sgd"): [(2, 100, 0.99), (4, 200, 0.991)],
    (3, "isgd"): [(2, 101, 0.992), (4, 202, 0.993)],
}


def write_log(folder: Path, seed: int, arm: str, tests: list, finished: bool = True) -> Path:
    folder.mkdir(parents=True)
    events = [
        {
            "event": "start",
            "iter": 0,
            "seed": seed,
            "batch_size": 64,
            "ranks": 1,
            "device": "cpu",
            "commit": "abc123",
            "machine": "test box",
            "resumed_from": None,
        }
    ]
    evals = 0
    for i, (train_s, grad_evals, accuracy) in enumerate(tests):
        triggered = arm == "isgd" and i == 1
        events.append(
            {
                "event": "iter",
                "iter": i,
                "train_s": train_s - 0.5,
                "grad_evals": grad_evals,
                "loss": 0.1,
                "under_trained": triggered,
                "subproblem_iters": 2 if triggered else 0,
            }
        )
        events.append(
            {
                "event": "test",
                "iter": i + 1,
                "train_s": train_s,
                "grad_evals": grad_evals,
                "net": 0,
                "outputs": {"accuracy": accuracy, "loss": 0.05},
            }
        )
        evals = grad_evals
    if finished:
        events.append({"event": "timing", "completed": True, "wall_s": 10.0, "grad_evals": evals})
    path = folder / "log.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


@pytest.fixture
def runs(synthetic_runs: Path) -> Path:
    for (seed, arm), tests in TESTS.items():
        write_log(
            synthetic_runs / "default" / "table1" / "mnist" / f"{arm}-seed{seed}", seed, arm, tests
        )
    return synthetic_runs


def test_rows_and_summary_match_the_hand_computation(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    [summary] = build("default", ["mnist"], say=lambda _: None, out=out)
    rows = {(int(r["seed"]), r["arm"]): r for r in csv.DictReader(open(out / "table1_runs.csv"))}
    assert (
        rows[(1, "sgd")]["time_to_target_s"] == "8" and rows[(1, "sgd")]["evals_to_target"] == "400"
    )
    assert (
        rows[(1, "isgd")]["time_to_target_s"] == "4"
        and rows[(1, "isgd")]["evals_to_target"] == "210"
    )
    assert rows[(2, "sgd")]["time_to_target_s"] == "3", "accuracy equal to the target counts"
    assert (
        rows[(2, "isgd")]["time_to_target_s"] == "" and rows[(2, "isgd")]["evals_to_target"] == ""
    )
    assert (
        rows[(1, "isgd")]["alg2_triggers"] == "1" and rows[(1, "isgd")]["alg2_inner_steps"] == "2"
    )
    assert rows[(2, "sgd")]["top_acc"] == "0.995" and rows[(2, "isgd")]["final_acc"] == "0.989"
    sgd, isgd = summary.arms["sgd"], summary.arms["isgd"]
    assert (sgd.runs, sgd.reached, isgd.runs, isgd.reached) == (3, 3, 3, 2)
    assert sgd.time_s.mean == pytest.approx(13 / 3) and isgd.time_s.mean == pytest.approx(3.0)
    assert sgd.highest_top == 0.995 and isgd.highest_top == 0.993
    assert sgd.average_top == pytest.approx((0.992 + 0.995 + 0.991) / 3)
    # Pairs where both reached: seeds 1 (4 - 8 = -4 s) and 3 (2 - 2 = 0 s: a tie).
    paired = summary.paired_s
    assert paired.pairs == 2 and paired.difference.mean == pytest.approx(-2.0)
    assert paired.difference.std == pytest.approx(8**0.5)
    assert paired.t_p == pytest.approx(0.5)  # t = -1 with 1 df: p = 1 - 2 atan(1) / pi
    assert paired.wilcoxon_p == pytest.approx(1.0)  # the tie is dropped: one difference left
    assert summary.paired_evals.difference.mean == pytest.approx((-190 + 1) / 2)
    # Top accuracy over all three pairs, reached or not: +0.001, -0.005, +0.002.
    assert summary.paired_top.pairs == 3
    assert summary.paired_top.difference.mean == pytest.approx(-0.002 / 3)
    table = list(csv.DictReader(open(out / "table1.csv")))[0]
    # The paper's column, paired: stays-rule pairs both reached are seeds 1 (4 s / 8 s) and 3
    # (2 s / 2 s): exp(mean(log 0.5, log 1)) = sqrt(0.5), never a ratio of two arms' means.
    assert float(table["normalized_time_isgd"]) == pytest.approx(0.5**0.5, rel=1e-5)
    assert float(table["time_imp"]) == pytest.approx(1 - 0.5**0.5, rel=1e-5)
    assert float(table["normalized_evals_isgd"]) == pytest.approx(
        (210 / 400 * 101 / 100) ** 0.5, rel=1e-5
    )
    assert table["reached_isgd"] == "2" and table["pairs"] == "3"
    # First reach: seed 1 200 vs 210, seed 2 150 vs 150 (a tie), seed 3 100 vs 101.
    assert table["first_pairs_both"] == "3" and table["first_only_sgd"] == "0"
    first_imp = 1 - (210 / 200 * 101 / 100) ** (1 / 3)
    assert float(table["first_imp_evals"]) == pytest.approx(first_imp, rel=1e-5)
    assert float(table["first_sign_p"]) == pytest.approx(0.5)  # SGD wins 2, the tie dropped
    # Stays: ISGD wins seed 1, only SGD stays above in seed 2, SGD wins seed 3 (100 < 101).
    assert table["stays_pairs_both"] == "2" and table["stays_only_sgd"] == "1"
    assert float(table["stays_sign_p"]) == pytest.approx(1.0)
    assert (
        rows[(1, "sgd")]["first_reach_s"] == "4" and rows[(1, "sgd")]["first_reach_evals"] == "200"
    )
    assert rows[(2, "isgd")]["first_reach_s"] == "3" and rows[(2, "isgd")][
        "budget_grad_evals"
    ] == str(load_profile("default").plans["mnist"].budget_grad_evals)
    md = (out / "table1.md").read_text()
    assert "| mnist | isgd | 2/3 | 3/3 |" in md and "the interval contains 0" in md
    ladder = list(csv.DictReader(open(out / "ladder.csv")))
    assert list(ladder[0]) == LADDER_COLUMNS and len(ladder) == 2 * 25
    at_target = next(r for r in ladder if r["rule"] == "first" and float(r["level"]) == 0.99)
    assert float(at_target["imp_evals"]) == pytest.approx(first_imp, rel=1e-5)
    assert (out / "figures" / "reached_mnist.png").stat().st_size > 5_000
    assert (out / "figures" / "ladder.png").stat().st_size > 5_000


def test_every_row_agrees_with_a_recomputation_from_its_own_log(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build("default", ["mnist"], say=lambda _: None, out=out)
    for row in csv.DictReader(open(out / "table1_runs.csv")):
        log = Path(row["log"])
        events = [json.loads(x) for x in log.read_text().splitlines()]
        accs = [e["outputs"]["accuracy"] for e in events if e["event"] == "test"]
        assert float(row["top_acc"]) == max(accs) and float(row["final_acc"]) == accs[-1]
        tests = [
            (e["train_s"], e["grad_evals"], e["outputs"]["accuracy"])
            for e in events
            if e["event"] == "test"
        ]
        first = next(((s, g) for s, g, a in tests if a >= 0.99), None)
        stays = None
        for i, (s, g, _a) in enumerate(tests):  # the first test after which all stay >= target
            if all(x >= 0.99 for _, _, x in tests[i:]):
                stays = (s, g)
                break
        cell = lambda v: "" if v is None else f"{v:.6g}"  # noqa: E731
        assert (row["first_reach_s"], row["first_reach_evals"]) == tuple(
            cell(v) for v in (first or (None, None))
        )
        assert (row["time_to_target_s"], row["evals_to_target"]) == tuple(
            cell(v) for v in (stays or (None, None))
        )


def test_the_ladder_recomputes_from_the_runs_table(runs: Path, tmp_path: Path) -> None:
    """ladder.csv from table1_runs.csv-level data: per level and rule, the runs that reached
    it and the paired IMP in evaluations (1 - exp(mean log ratio)) over pairs both reached."""
    import math

    out = tmp_path / "out"
    build("default", ["mnist"], say=lambda _: None, out=out)
    ladder = list(csv.DictReader(open(out / "ladder.csv")))
    per_run = {}
    for row in csv.DictReader(open(out / "table1_runs.csv")):
        events = [json.loads(x) for x in Path(row["log"]).read_text().splitlines()]
        per_run[(int(row["seed"]), row["arm"])] = [
            (e["grad_evals"], e["outputs"]["accuracy"]) for e in events if e["event"] == "test"
        ]

    def reach(tests, level, rule):
        for i, (g, a) in enumerate(tests):
            if rule == "first" and a >= level:
                return g
            if rule == "stays" and all(x >= level for _, x in tests[i:]):
                return g
        return None

    for row in ladder:
        level, rule = float(row["level"]), row["rule"]
        hits = {k: reach(t, level, rule) for k, t in per_run.items()}
        assert int(row["reached_sgd"]) == sum(hits[(s, "sgd")] is not None for s in (1, 2, 3))
        assert int(row["reached_isgd"]) == sum(hits[(s, "isgd")] is not None for s in (1, 2, 3))
        ratios = [
            math.log(hits[(s, "isgd")] / hits[(s, "sgd")])
            for s in (1, 2, 3)
            if hits[(s, "sgd")] is not None and hits[(s, "isgd")] is not None
        ]
        assert int(row["pairs_both"]) == len(ratios)
        if len(ratios) >= 2:
            assert float(row["imp_evals"]) == pytest.approx(
                1 - math.exp(sum(ratios) / len(ratios)), rel=1e-5
            )
        else:
            assert row["imp_evals"] == ""


def test_unfinished_runs_are_named_not_counted(runs: Path, tmp_path: Path) -> None:
    write_log(
        runs / "default" / "table1" / "mnist" / "sgd-seed4", 4, "sgd", [(1, 5, 0.5)], finished=False
    )
    rows, notes = collect(load_profile("default", ["mnist"]))
    assert len(rows) == 6 and any("sgd-seed4: unfinished" in n for n in notes)


def test_a_corrupt_log_is_named_and_nothing_is_written(runs: Path, tmp_path: Path) -> None:
    log = runs / "default" / "table1" / "mnist" / "sgd-seed1" / "log.jsonl"
    lines = log.read_text().splitlines()
    lines.insert(2, "{not json")
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(RunLogError, match=r"sgd-seed1/log.jsonl:3: not a JSON event line"):
        build("default", ["mnist"], say=lambda _: None, out=out)
    assert not out.exists()


def test_summary_of_a_dataset_without_reached_pairs_has_no_interval(runs: Path) -> None:
    profile = load_profile("default", ["mnist"])
    dataset = profile.plans["mnist"].dataset
    rows, _ = collect(profile)
    for r in rows:
        r.time_to_target_s = None
    s = summarize_dataset(rows, dataset)
    assert s.paired_s.pairs == 0 and s.paired_s.t_p is None and s.arms["sgd"].time_s.mean is None


def test_a_negative_imp_is_read_as_more_evaluations() -> None:
    """IMP = 1 - exp(mean log(ISGD / SGD)) < 0 when ISGD needs more: the reading says "more",
    with the signed IMP beside it, never "-x % fewer"."""
    from scripts.comparison import imp_reading
    from scripts.outcomes import Outcome, paired_imp

    pairs = [(Outcome(True, 100.0, 1.0), Outcome(True, 125.0, 1.25)),
             (Outcome(True, 200.0, 2.0), Outcome(True, 240.0, 2.4))]
    imp = paired_imp(pairs)
    expected = 1 - math.sqrt(1.25 * 1.2)
    text = imp_reading(imp, "By first reach", None)
    assert f"ISGD needs {-100 * expected:.1f} % more gradient evaluations (IMP {100 * expected:+.1f} %" in text
    assert "fewer" not in text


def test_an_interval_over_some_pairs_is_no_finding_over_all_pairs() -> None:
    """The IMP interval covers only the pairs both arms reached; when others are censored in one
    arm or both, an interval excluding 0 is named as such and the reading says it is no finding
    over all pairs (the sign test alone counts those). With every pair reached, no caveat."""
    from scripts.comparison import imp_reading
    from scripts.outcomes import Outcome, paired_imp

    both = [(Outcome(True, 100.0, 1.0), Outcome(True, 93.0, 0.93)),
            (Outcome(True, 200.0, 2.0), Outcome(True, 186.4, 1.864))]
    censored = [(Outcome(True, 300.0, 3.0), Outcome(False, 500.0, 5.0))] * 2 + [
        (Outcome(False, 500.0, 5.0), Outcome(False, 500.0, 5.0))
    ]
    imp = paired_imp(both + censored)
    assert imp.imp_evals.low is not None and imp.imp_evals.low > 0, "the two pairs alone exclude 0"
    text = imp_reading(imp, "By stays above", None)
    assert "ISGD was faster; the interval excludes no difference over the 2 pairs both reached" in text
    assert "3 of 5 pairs are censored in one arm or both (only SGD reached it in 2, only ISGD in 0, neither in 1)" in text
    assert text.endswith("no finding over all pairs")
    whole = imp_reading(paired_imp(both), "By stays above", None)
    assert whole.endswith("ISGD was faster; the interval excludes no difference")
