"""`make sweep-lr`: each arm's lr chosen on tuning seeds (median evaluations to the target by
first reach, censored runs at their budget, ties to the smaller lr), scored on held-out seeds
as Table 1; bad sections named with their line. Synthetic logs worked by hand."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from scripts import sweep_lr
from scripts.outcomes import Outcome
from scripts.profiles import PROFILES_FILE, ProfileError, load_profile
from tests.scripts.test_table1 import write_log


def point(scale: float, evals: list[float], budget: float = 8000) -> sweep_lr.GridPoint:
    """A grid point whose runs reached the target at `evals` (None: censored at `budget`)."""
    outcomes = tuple(
        Outcome(False, budget, 99.0) if e is None else Outcome(True, e, e / 100) for e in evals
    )
    return sweep_lr.GridPoint("sgd", scale, 0.01 * scale, outcomes, (0.99,) * len(evals))


def test_the_choice_is_the_lowest_median_with_censored_runs_at_their_budget() -> None:
    """4x reaches fastest in the one run that reaches (1000) but two runs are censored at 8000:
    its median is 8000, not 1000. 1x (median 2500) and 2x (2500) tie: the smaller lr wins."""
    points = [
        point(0.5, [1000, 3000, None]),  # median 3000
        point(1.0, [2000, 2500, 2600]),  # median 2500
        point(2.0, [2400, 2500, 9000]),  # median 2500: a tie with 1x
        point(4.0, [1000, None, None]),  # median 8000
    ]
    chosen = sweep_lr.choose(points)
    assert chosen is not None and chosen.scale == 1.0
    assert points[3].quartiles()[1] == 8000 and points[3].reached == 1
    assert sweep_lr.choose([point(2.0, [500]), point(0.5, [600])]).scale == 2.0
    assert sweep_lr.choose([]) is None


def edited(tmp_path: Path, old: str, new: str) -> Path:
    text = PROFILES_FILE.read_text()
    assert old in text, old
    path = tmp_path / "profiles.toml"
    path.write_text(text.replace(old, new, 1))
    return path


SMOKE_SCORING = "scoring_seeds = [2]           # one held-out scoring pair"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("grid = [1.0, 2.0]", "grid = [1.0, -2.0]", r"grid: \[1\.0, -2\.0\] -2\.0 must be > 0"),
        ("grid = [1.0, 2.0]", "grid = []", r"grid: \[\] must be a non-empty list"),
        ("grid = [1.0, 2.0]", "grid = [1.0, 1.0]", r"grid: a learning-rate multiple is listed twice"),
        ("tuning_seeds = [1]", "tuning_seeds = []", r"tuning_seeds: \[\] must be a non-empty list"),
        (SMOKE_SCORING, "scoring_seeds = [1, 2]", r"scoring_seeds: seed\(s\) 1 also tune: scoring seeds must be held out"),
        ("tuning_seeds = [1]", "# no tuning seeds", r": lacks tuning_seeds"),
    ],
)
def test_bad_sweep_lr_sections_are_named_with_their_line(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    path = edited(tmp_path, old, new)
    with pytest.raises(ProfileError, match=rf"profiles\.toml:\d+: \[smoke\.sweep_lr\].*{problem}"):
        load_profile("smoke", path=path)


def test_tuning_then_held_out_pairs_scored_as_table1(
    synthetic_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Smoke: grid 1x, 2x; tuning seed 1; scoring seeds 2, 3. SGD reaches 99 % at 200 (1x) and
    100 (2x): it takes 2x. ISGD at 150 (1x) and never at 2x (censored at 300): it takes 1x.
    Scoring: SGD 200 / ISGD 100 (seed 2), 240 / 180 (seed 3): IMP = 1 - sqrt(0.5 * 0.75)."""
    path = edited(tmp_path, SMOKE_SCORING, "scoring_seeds = [2, 3]")
    profile = load_profile("smoke", ["mnist"], path=path)
    plan = profile.plans["mnist"]
    base = synthetic_runs / "smoke" / "sweep_lr" / "mnist"

    def reach_at(evals: int | None) -> list[tuple[float, int, float]]:
        steps = [(1, 50, 0.9), (2, 100, 0.95), (3, 150, 0.97), (4, 200, 0.98), (5, 250, 0.985), (6, 300, 0.987)]
        return [(s, g, 0.991 if evals is not None and g >= evals else a) for s, g, a in steps]

    def at(evals: int) -> list[tuple[float, int, float]]:
        return [(1, evals - 10, 0.9), (2, evals, 0.992), (3, 300, 0.993)]

    for folder, seed, arm, tests in [
        ("sgd-tune-lr1x-seed1", 1, "sgd", reach_at(200)),
        ("sgd-tune-lr2x-seed1", 1, "sgd", reach_at(100)),
        ("isgd-tune-lr1x-seed1", 1, "isgd", reach_at(150)),
        ("isgd-tune-lr2x-seed1", 1, "isgd", reach_at(None)),
        ("sgd-score-lr2x-seed2", 2, "sgd", at(200)),
        ("isgd-score-lr1x-seed2", 2, "isgd", at(100)),
        ("sgd-score-lr2x-seed3", 3, "sgd", at(240)),
        ("isgd-score-lr1x-seed3", 3, "isgd", at(180)),
    ]:
        write_log(base / folder, seed, arm, tests)
    result = sweep_lr.summarize(profile, plan)
    assert result.chosen["sgd"].scale == 2.0 and result.chosen["isgd"].scale == 1.0
    isgd_2x = result.points["isgd"][1]
    assert isgd_2x.reached == 0 and isgd_2x.quartiles()[1] == 300, "censored at the budget"
    [scored] = result.scored
    first = scored.rules["first"].imp
    assert first.pairs_both == 2 and first.pairs_total == 2
    assert first.imp_evals.estimate == pytest.approx(1 - math.sqrt(0.5 * 0.75))
    assert first.sign_p == pytest.approx(0.5)  # ISGD wins both pairs: 2 of 2
    out = tmp_path / "out"
    monkeypatch.setattr(sweep_lr, "results_dir", lambda name: out)
    monkeypatch.setattr(sweep_lr, "build_readme", lambda name: out / "README.md")
    monkeypatch.setattr("scripts.profiles.PROFILES_FILE", path)
    assert sweep_lr.main(["--profile", "smoke", "--no-run"]) == 0
    rows = list(csv.DictReader(open(out / "sweep_lr.csv")))
    assert list(rows[0]) == sweep_lr.COLUMNS
    chosen = {(r["arm"], r["lr_multiple"]) for r in rows if r["phase"] == "tune" and r["chosen"] == "1"}
    assert chosen == {("sgd", "2"), ("isgd", "1")}
    score = next(r for r in rows if r["phase"] == "score")
    assert float(score["first_imp_evals"]) == pytest.approx(1 - math.sqrt(0.375), rel=1e-5)
    md = (out / "sweep_lr.md").read_text()
    assert "isgd at 1.0x vs sgd at 2.0x" in md and "## Reading" in md
    assert (out / "figures" / "sweep_lr.png").stat().st_size > 5_000


def test_a_profile_without_the_section_is_one_line(tmp_path: Path, capsys) -> None:
    text = PROFILES_FILE.read_text()
    start = text.index("[smoke.sweep_lr]")
    end = text.index("[smoke.sweep]")
    path = tmp_path / "profiles.toml"
    path.write_text(text[:start] + text[end:])
    profile = load_profile("smoke", path=path)
    with pytest.raises(ProfileError, match=r"profile 'smoke' has no \[smoke\.sweep_lr\] section"):
        sweep_lr.seeds(profile)
