"""The sweep in Table 1's terms, from synthetic logs whose answers are worked out by hand: the
paired IMP (1 − exp(mean log(ISGD / SGD)) over the pairs both arms reached, with its t
interval) and the sign test under both rules, at the target and at the highest ladder level
every run reached; a pair where only one arm reaches; the paired top accuracy over all pairs;
Alg. 2's activity; the dataset's seeds; stale folders refused."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import scipy

from scripts import sweep
from scripts.profiles import PROFILES_FILE, load_profile
from scripts.runs import RunError, RunSpec
from tests.scripts.test_table1 import write_log

# (arm, seed): tests as (train_s, grad_evals, accuracy); MNIST's target is 99 %, its ladder
# 97 % to 99.4 % in steps of 0.1 %.
K2 = {
    # seed 1: SGD first reaches 99 % at 200 evals / 4 s but dips, so it stays above only from
    # 400 / 8 s; ISGD reaches and stays at 100 / 2 s.
    ("sgd", 1): [(2, 100, 0.98), (4, 200, 0.991), (6, 300, 0.989), (8, 400, 0.992)],
    ("isgd", 1): [(2, 100, 0.992), (4, 200, 0.993)],
    # seed 2: SGD at 200 / 4 s, ISGD at 150 / 3 s (both rules).
    ("sgd", 2): [(2, 100, 0.985), (4, 200, 0.992)],
    ("isgd", 2): [(3, 150, 0.991), (6, 300, 0.995)],
    # seed 3: only ISGD reaches 99 % (at 200 / 4 s); SGD tops out at 98 %.
    ("sgd", 3): [(2, 100, 0.97), (4, 200, 0.98)],
    ("isgd", 3): [(2, 100, 0.975), (4, 200, 0.991)],
}
# stop2's ISGD runs (SGD is the same Table 1 run): only seed 1's ISGD reaches the target.
STOP2 = {
    ("isgd", 1): [(2, 100, 0.991), (4, 200, 0.992)],
    ("isgd", 2): [(2, 100, 0.98), (4, 200, 0.985)],
    ("isgd", 3): [(2, 100, 0.975), (4, 200, 0.985)],
}


def _setting(name: str) -> sweep.Setting:
    return next(s for s in sweep.SETTINGS if s.name == name)


def _write(runs: Path, profile: str, dataset: str, setting: str, logs: dict) -> None:
    """Logs where the sweep looks for them: SGD is Table 1's run; ISGD is the setting's."""
    plan = load_profile(profile, [dataset]).plans[dataset]
    for (arm, seed), tests in logs.items():
        spec = sweep.setting_specs(load_profile(profile, [dataset]), plan, _setting(setting), seed)[
            arm
        ]
        assert spec.folder.is_relative_to(runs)
        if not spec.log_path.exists():
            write_log(spec.folder, seed, arm, tests)


@pytest.fixture
def runs(synthetic_runs: Path) -> Path:
    _write(synthetic_runs, "default", "mnist", "k2", K2)
    _write(synthetic_runs, "default", "mnist", "stop2", STOP2)
    return synthetic_runs


def _imp(log_ratios: list[float]) -> tuple[float, float, float]:
    """IMP and its 95 % interval from two log ratios (1 df), by hand."""
    assert len(log_ratios) == 2
    mean = sum(log_ratios) / 2
    t_975_1df = float(scipy.stats.t.ppf(0.975, 1))  # 12.706: two pairs give one degree of freedom
    half = t_975_1df * abs(log_ratios[0] - log_ratios[1]) / 2  # t * sd / sqrt(2), sd = |d|/sqrt 2
    return 1 - math.exp(mean), 1 - math.exp(mean + half), 1 - math.exp(mean - half)


def test_a_setting_gets_table1s_paired_imp_under_both_rules(runs: Path) -> None:
    """Both rules of Table 1 (first reach, MLPerf's; stays above, the paper's), the IMP a
    geometric mean of paired ratios, never a ratio of the arms' means."""
    profile = load_profile("default", ["mnist"], runs=3)
    s = sweep.summarize_setting(profile, profile.plans["mnist"], _setting("k2"))
    row = sweep.setting_record(s)
    assert (row["pairs"], row["runs_sgd"], row["runs_isgd"]) == (3, 3, 3)
    # First reach: seed 1 ISGD/SGD = 100/200 evals, 2/4 s; seed 2 150/200, 3/4 s; seed 3 only
    # ISGD reached (not in the IMP, a win for ISGD in the sign test).
    assert (row["first_pairs_both"], row["first_only_sgd"], row["first_only_isgd"]) == (2, 0, 1)
    assert (row["first_reached_sgd"], row["first_reached_isgd"]) == (2, 3)
    imp, low, high = _imp([math.log(0.5), math.log(0.75)])
    assert row["first_imp_evals"] == pytest.approx(imp)  # 1 − sqrt(0.375) = 38.8 %
    assert row["first_imp_evals_low"] == pytest.approx(low)
    assert row["first_imp_evals_high"] == pytest.approx(high)
    assert low < 0 < high  # 1 df: the interval cannot tell
    assert row["first_imp_s"] == pytest.approx(imp)  # seconds: the same ratios here
    assert row["first_sign_p"] == pytest.approx(0.25)  # ISGD wins 3 of 3: 2 * 0.5^3
    # Stays above: seed 1's SGD dips below after 200 evals, so its ratio is 100/400.
    imp, low, high = _imp([math.log(0.25), math.log(0.75)])
    assert row["stays_pairs_both"] == 2 and row["stays_only_isgd"] == 1
    assert row["stays_imp_evals"] == pytest.approx(imp)  # 1 − sqrt(0.1875) = 56.7 %
    assert (row["stays_imp_evals_low"], row["stays_imp_evals_high"]) == pytest.approx((low, high))
    assert row["stays_sign_p"] == pytest.approx(0.25)
    # The highest level every run reached: seed 3's SGD tops out at 98 %, under both rules.
    # There: seed 1 100/100 evals, seed 2 150/100, seed 3 200/200 -> IMP 1 − 1.5^(1/3);
    # SGD wins seed 2, the others tie: sign p = 1.
    for rule in ("first", "stays"):
        assert row[f"{rule}_highest_level_all_reached"] == pytest.approx(0.98)
        assert row[f"{rule}_imp_evals_at_highest"] == pytest.approx(1 - 1.5 ** (1 / 3))
        assert row[f"{rule}_imp_evals_at_highest_low"] < row[f"{rule}_imp_evals_at_highest"]
        assert row[f"{rule}_imp_s_at_highest"] == pytest.approx(1 - 1.5 ** (1 / 3))
        assert row[f"{rule}_sign_p_at_highest"] == pytest.approx(1.0)
    # Top accuracy over all three pairs: +0.1, +0.3, +1.1 points.
    assert row["paired_top_acc_pairs"] == 3
    assert row["paired_top_acc_diff_mean"] == pytest.approx(0.005)
    # Alg. 2: one trigger of 2 inner steps in each ISGD run's 2 iterations; 700 evaluations.
    assert row["alg2_trigger_rate"] == pytest.approx(0.5)
    assert row["alg2_inner_steps_per_trigger"] == pytest.approx(2.0)
    assert row["extra_evals_fraction"] == pytest.approx((700 - 6) / 700)


def test_a_pair_where_only_one_arm_reaches_leaves_too_few_for_an_interval(runs: Path) -> None:
    """stop2: only seed 1's ISGD reaches 99 %, and SGD reaches it in seeds 1 and 2: one pair
    both reached (no interval), one SGD-only pair; the reading says so in words."""
    profile = load_profile("default", ["mnist"], runs=3)
    s = sweep.summarize_setting(profile, profile.plans["mnist"], _setting("stop2"))
    row = sweep.setting_record(s)
    assert (row["first_pairs_both"], row["first_only_sgd"], row["first_only_isgd"]) == (1, 1, 0)
    assert row["first_neither"] == 1
    assert row["first_imp_evals"] is None and row["first_imp_evals_low"] is None
    assert row["first_sign_p"] == pytest.approx(1.0)  # ISGD wins seed 1, SGD seed 2: 1 to 1
    text = sweep.markdown([s], profile)
    assert "By first reach: 1 of 3 pairs reached it in both arms, too few for an interval" in text
    assert "fewer than 2 pairs reached the target in both arms" in text
    assert "mnist/stop2 1 of 3" in text


def test_the_reading_says_cannot_tell_and_the_table_gives_the_interval(runs: Path) -> None:
    profile = load_profile("default", ["mnist"], runs=3)
    s = sweep.summarize_setting(profile, profile.plans["mnist"], _setting("k2"))
    text = sweep.markdown([s], profile)
    imp, low, high = _imp([math.log(0.5), math.log(0.75)])
    cell = f"{100 * imp:+.1f} % [{100 * low:+.1f}, {100 * high:+.1f}]"
    assert f"| first reach | 2/3 / 3/3 | 2/3 | 0 / 1 | {cell} |" in text
    assert "the interval contains 0: these runs cannot tell ISGD from SGD" in text
    assert f"ISGD needs {100 * imp:.1f} % fewer gradient evaluations (IMP {100 * imp:+.1f} %, 95 % CI" in text
    assert "2 of 3 pairs, sign test p = 0.25" in text
    assert "the paper's 25.6 % is inside the interval" in text  # stays rule only
    assert "the interval contains 0 (cannot tell) in mnist/k2" in text
    assert "| mnist | k2 | first reach | 98 % | 3/3 |" in text
    assert "At 98 %, the highest level every run reached: ISGD needs" in text
    assert "| mnist | k2 | +0.50 pt [" in text
    assert "SGD" in text and "improvement" not in text.lower()


def test_no_ladder_level_reached_by_every_run_is_said(runs: Path) -> None:
    """zeta_10lr: the ISGD runs stay below the ladder's 97 %, so no level was reached by every
    run: the table says why there is no IMP there, the reading says so in words."""
    low = [(2, 100, 0.9), (4, 200, 0.95)]
    _write(runs, "default", "mnist", "zeta_10lr", {("isgd", k): low for k in (1, 2, 3)})
    profile = load_profile("default", ["mnist"], runs=3)
    s = sweep.summarize_setting(profile, profile.plans["mnist"], _setting("zeta_10lr"))
    row = sweep.setting_record(s)
    assert row["first_highest_level_all_reached"] is None
    assert row["first_imp_evals_at_highest"] is None and row["first_sign_p_at_highest"] is None
    assert (row["first_only_sgd"], row["first_pairs_both"]) == (2, 0)  # SGD seeds 1, 2 reached
    text = sweep.markdown([s], profile)
    assert "| mnist | zeta_10lr | first reach | none (a run stayed below 97 %) | — |" in text
    assert "No level of the ladder (97 % to 99.4 %) was reached by every run." in text


def test_the_dataset_s_own_pairs_decide_the_seeds(synthetic_runs: Path) -> None:
    """default's CIFAR-10 has its own pairs, fewer than the profile's: the sweep reads only
    those seeds there (profile.seeds_of), and ignores a further seed's runs."""
    profile = load_profile("default", ["cifar10"])
    own = profile.seeds_of("cifar10")
    assert profile.runs > len(own) and own == list(range(1, len(own) + 1))
    tests = {
        (arm, seed): [(5, 100, 0.5 + 0.01 * seed), (10, 200, 0.7)]
        for arm in ("sgd", "isgd")
        for seed in [*own, len(own) + 1]
    }
    _write(synthetic_runs, "default", "cifar10", "k2", tests)
    s = sweep.summarize_setting(profile, profile.plans["cifar10"], _setting("k2"))
    assert s.summary.pairs_total == len(own)
    assert s.summary.rules["first"].imp.neither == len(own)  # 75 % never reached


def test_a_stale_run_folder_is_refused(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder made with other settings is never summarized (runs.finished_log)."""

    def stale(spec: RunSpec) -> str | None:
        return "batch_size 64 -> 128" if spec.tag == "k2" else None

    monkeypatch.setattr("scripts.runs.stale_problem", stale)
    profile = load_profile("default", ["mnist"], runs=3)
    with pytest.raises(RunError, match=r"isgd-k2-seed1 was made with other settings"):
        sweep.summarize_setting(profile, profile.plans["mnist"], _setting("k2"))


def test_main_writes_csv_md_and_figure_with_the_sweep_pairs_key(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make sweep-isgd` with nothing left to train: the sweep section's `pairs` (here its old
    name `runs`, 2) sets the seeds; every setting gets a row, the absent runs counted as 0."""
    profiles = tmp_path / "profiles.toml"
    text = PROFILES_FILE.read_text()
    old = "pairs = 3                     # seeds 1-3"
    assert old in text
    profiles.write_text(text.replace(old, "runs = 2  #"))
    monkeypatch.setattr("scripts.profiles.PROFILES_FILE", profiles)
    out = tmp_path / "results"
    monkeypatch.setattr(sweep, "results_dir", lambda name: out)
    monkeypatch.setattr(sweep, "build_readme", lambda name: out / "README.md")
    with pytest.warns(FutureWarning, match="renamed `pairs`"):
        assert sweep.main(["--profile", "default", "--no-run"]) == 0
    rows = {r["setting"]: r for r in csv.DictReader(open(out / "sweep.csv"))}
    assert list(rows) == [s.name for s in sweep.SETTINGS]
    k2 = rows["k2"]
    assert k2["pairs"] == "2" and k2["first_pairs_both"] == "2" and k2["first_only_isgd"] == "0"
    imp, low, high = _imp([math.log(0.5), math.log(0.75)])
    assert float(k2["first_imp_evals"]) == pytest.approx(imp, rel=1e-5)
    header = list(rows["k2"])
    for rule in ("first", "stays"):
        for column in (
            "pairs_both",
            "imp_evals",
            "imp_evals_low",
            "imp_evals_high",
            "imp_s",
            "imp_s_low",
            "imp_s_high",
            "sign_p",
            "highest_level_all_reached",
            "imp_evals_at_highest",
            "imp_evals_at_highest_low",
            "imp_evals_at_highest_high",
        ):
            assert f"{rule}_{column}" in header
    assert not any("improvement" in c or c.startswith("time_diff") for c in header)
    assert rows["batch4x"]["runs_isgd"] == "0" and rows["batch4x"]["first_imp_evals"] == ""
    md = (out / "sweep.md").read_text()
    assert "mnist: seeds 1-2" in md and "## Reading" in md
    assert (out / "figures" / "sweep.png").stat().st_size > 5_000
