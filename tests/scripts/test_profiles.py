"""profiles.toml is checked on load: one message naming the file, line, section and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.profiles import PROFILES_FILE, ProfileError, load_profile


def edited(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the real profiles file with one edit."""
    text = PROFILES_FILE.read_text()
    assert old in text, old
    path = tmp_path / "profiles.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def line_of(path: Path, fragment: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


SMOKE_BUDGET = "budget_grad_evals = 300 "


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        ("budget_grad_evals = -50 ", r"-50 must be > 0"),
        ("budget_grad_evals = 300.5 ", r"300\.5 must be a whole number"),
        ('budget_grad_evals = "three hundred" ', r"'three hundred' must be a whole number"),
        ("budget_grad_evals = true ", r"True must be a whole number"),
    ],
)
def test_a_bad_value_names_the_line_section_and_key(tmp_path: Path, new: str, problem: str) -> None:
    path = edited(tmp_path, SMOKE_BUDGET, new)
    line = line_of(path, new.strip())
    with pytest.raises(ProfileError, match=rf"profiles\.toml:{line}: \[smoke\.mnist\] budget_grad_evals: {problem}"):
        load_profile("smoke", path=path)


def test_a_misspelled_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = edited(tmp_path, "snapshot_every = 100 ", "snaphot_every = 100 ")
    with pytest.raises(ProfileError, match=r"\[smoke\.mnist\] snaphot_every: unknown key \(did you mean 'snapshot_every'\?\)"):
        load_profile("smoke", path=path)


def test_pairs_must_be_a_positive_whole_number(tmp_path: Path) -> None:
    path = edited(tmp_path, "pairs = 1 ", 'pairs = "two" ')
    with pytest.raises(ProfileError, match=r":\d+: \[smoke\] pairs: 'two' must be a whole number"):
        load_profile("smoke", path=path)


def test_a_listed_dataset_without_its_section_is_named(tmp_path: Path) -> None:
    path = edited(tmp_path, "[smoke.mnist]", "[smoke.mnist_removed]")
    with pytest.raises(ProfileError, match=r"\[smoke\.mnist_removed\]: unknown dataset or section"):
        load_profile("smoke", path=path)
    text = PROFILES_FILE.read_text()
    start = text.index("[smoke.mnist]")
    end = text.index("[smoke.cifar10]")
    path.write_text(text[:start] + text[end:])
    with pytest.raises(ProfileError, match=r"\[smoke\] datasets: lists mnist but there is no \[smoke\.mnist\]"):
        load_profile("smoke", path=path)


def test_a_missing_dataset_definition_is_named(tmp_path: Path) -> None:
    path = edited(tmp_path, "[datasets.mnist]", "[datasets.mnist_old]")
    with pytest.raises(ProfileError, match=r"\[smoke\.mnist\]: unknown dataset or section"):
        load_profile("smoke", path=path)


def test_a_profile_needs_one_test_cadence(tmp_path: Path) -> None:
    path = edited(tmp_path, "test_interval_evals = 100 ", "test_interval_evals = 100\ntest_interval_seconds = 2.0\n#")
    with pytest.raises(ProfileError, match=r"give one test cadence"):
        load_profile("smoke", path=path)
    path = edited(tmp_path, "test_interval_evals = 100 ", "# no cadence ")
    with pytest.raises(ProfileError, match=r"\[smoke\.mnist\]: lacks test_interval_evals"):
        load_profile("smoke", path=path)
    path = edited(tmp_path, "test_interval_evals = 100 ", "test_interval_evals = 0 ")
    with pytest.raises(ProfileError, match=r"test_interval_evals: 0 must be > 0"):
        load_profile("smoke", path=path)


MNIST_LADDER = "ladder = { start = 0.97, stop = 0.994, step = 0.001 }"


@pytest.mark.parametrize(
    ("ladder", "problem"),
    [
        ("ladder = { start = 0.97, stop = 0.994, step = 0 }", r"step must be > 0 \(a step of 0 gives no ladder\)"),
        ("ladder = { start = 0.991, stop = 0.994, step = 0.001 }", r"target: 0\.99 is outside its ladder"),
        ("ladder = { start = 0.97, stop = 0.994, step = 0.007 }", r"no level equals the target 0\.99"),
        ("ladder = { start = 0.99, stop = 0.97, step = 0.001 }", r"start must be <= stop"),
        ("ladder = { start = 0.97, stop = 1.5, step = 0.001 }", r"stop must be in \(0, 1\]"),
        ("ladder = [0.97, 0.99]", r"must be \{ start = \.\.\., stop = \.\.\., step = \.\.\. \}"),
    ],
)
def test_bad_ladders_are_named(tmp_path: Path, ladder: str, problem: str) -> None:
    path = edited(tmp_path, MNIST_LADDER, ladder)
    with pytest.raises(ProfileError, match=rf"profiles\.toml:\d+: \[datasets\.mnist\] .*{problem}"):
        load_profile("smoke", path=path)


def test_an_unknown_rule_is_named(tmp_path: Path) -> None:
    path = edited(tmp_path, MNIST_LADDER, MNIST_LADDER + '\nrules = ["first", "fastest"]')
    line = line_of(path, 'rules = ["first", "fastest"]')
    with pytest.raises(ProfileError, match=rf"profiles\.toml:{line}: \[datasets\.mnist\] rules: .*unknown rule 'fastest'"):
        load_profile("smoke", path=path)


def test_the_ladder_levels_are_exact_and_include_the_target() -> None:
    profile = load_profile("default")
    mnist = profile.plans["mnist"].dataset
    assert mnist.ladder is not None and len(mnist.ladder.levels) == 25
    assert mnist.ladder.levels[0] == 0.97 and mnist.ladder.levels[-1] == 0.994
    assert 0.99 in mnist.ladder.levels and mnist.rules == ("first", "stays")
    assert profile.plans["cifar10"].dataset.ladder.levels[-1] == 0.76


def test_the_committed_profiles_load() -> None:
    for name in ("smoke", "default", "paper"):
        profile = load_profile(name)
        assert profile.runs >= 1 and profile.plans
        for plan in profile.plans.values():
            assert plan.budget_grad_evals > 0 and (plan.test_interval_evals or plan.test_interval_seconds)


def test_the_sweep_takes_pairs_or_its_old_name_runs_but_not_both(tmp_path: Path) -> None:
    """[<profile>.sweep] pairs (old name: runs) is the sweep's number of pairs; both at once is
    ambiguous and named with its line."""
    assert load_profile("default").sweep["pairs"] == 3
    old = edited(tmp_path, "pairs = 3                     # seeds 1-3", "runs = 3  #")
    with pytest.warns(FutureWarning, match=r"\[default\.sweep\] runs: renamed `pairs`"):
        assert load_profile("default", path=old).sweep["runs"] == 3
    both = edited(tmp_path, "pairs = 3                     # seeds 1-3", "pairs = 3\nruns = 3  #")
    line = line_of(both, "runs = 3")
    with pytest.raises(
        ProfileError, match=rf"profiles\.toml:{line}: \[default\.sweep\] runs: give `pairs` only"
    ):
        load_profile("default", path=both)
