"""The generated results README: machine and commits from the table, each listed once; a
figure's note, picture and command; a figure not made yet says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import results_readme


def test_readme_lists_commits_once_and_says_what_made_each_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "smoke"
    monkeypatch.setattr(results_readme, "results_dir", lambda profile: out)
    (out / "figures").mkdir(parents=True)
    (out / "table1.md").write_text("# Table 1\n\n## Reading\n\nno gain\n")
    (out / "table1.csv").write_text(
        'dataset,machine,commit\nmnist,box,"aaa, bbb"\ncifar10,box,"bbb, ccc"\n'
    )
    (out / "figures" / "fig1_batch_losses.png").write_bytes(b"png")
    (out / "figures" / "figures.json").write_text(json.dumps({"1": "losses 2.1 to 2.7"}))
    text = results_readme.build("smoke").read_text()
    assert "- Commit(s) of the runs: aaa, bbb, ccc\n" in text
    assert "- Machine: box\n" in text and "### Reading" in text
    assert "![Fig. 1](figures/fig1_batch_losses.png)" in text
    assert (
        "Here: losses 2.1 to 2.7. When it was drawn is not recorded (an older `make figures`: its "
        "runs may be an earlier profile's). Made by `make figures` (runs results/runs/smoke/fig1/)."
        in text
    )
    assert "Not made yet. Made by `make figures` (drawn from the Table 1 runs" in text  # Fig. 2


def test_readme_states_the_sessions_wall_time_and_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each runner session that trained runs is noted (wall time, load before and after) in the
    profile's sessions file beside its tables (committed, so a fresh checkout without the run
    folders still says it); one that trained nothing is not."""
    from scripts import runner

    out = tmp_path / "smoke"
    monkeypatch.setattr(results_readme, "results_dir", lambda profile: out)
    monkeypatch.setattr("scripts.runs.results_dir", lambda profile: out)
    monkeypatch.setattr("scripts.runs.RUNS_DIR", tmp_path / "runs")
    path = runner.sessions_file("smoke")
    assert path == out / "sessions.jsonl"
    runner.record_session(path, started=0.0, load_before=0.04, trained=0, jobs=2)
    assert not path.exists()
    monkeypatch.setattr("scripts.runner.time.monotonic", lambda: 600.0)
    runner.record_session(path, started=0.0, load_before=0.04, trained=4, jobs=2)
    text = results_readme.build("smoke").read_text()
    assert "- Table 1's runs were trained in 1 session(s), 10 min of wall time" in text
    assert "4 runs, 10 min, 2 at a time, load 0.04 before" in text
    assert "Wall time of the runs, summed" not in text, "no run folders here: no sum to show"
    entry = json.loads(path.read_text())
    assert entry["group"] == "table1"
    path.write_text(json.dumps({**entry, "note": "nothing else ran (checked with ps)"}) + "\n")
    text = results_readme.build("smoke").read_text()
    assert "load 0.04 before, " in text and "after; nothing else ran (checked with ps))." in text


def test_each_command_notes_its_own_session_and_old_entries_are_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TrainingSession (what reproduce, figures and both sweeps train through) notes its group;
    the README gives one line per command. An entry of the older place inside the run folders
    (no group: Table 1) is read too, once even when also copied into the committed file."""
    from scripts import runner

    out = tmp_path / "smoke"
    monkeypatch.setattr(results_readme, "results_dir", lambda profile: out)
    monkeypatch.setattr("scripts.runs.results_dir", lambda profile: out)
    monkeypatch.setattr("scripts.runs.RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(runner, "run_all", lambda specs, display, **options: len(specs))
    said: list[str] = []
    display = runner.Display()
    monkeypatch.setattr(display, "say", said.append)
    session = runner.TrainingSession("smoke", "sweep_lr", display, {"jobs": 2})
    assert session.run([object(), object()]) == 2 and session.run([object()]) == 1  # type: ignore[list-item]
    session.close()
    assert said[0].startswith("machine load before training: ")
    old = {"ended": "2026-01-01 00:00:00", "wall_s": 120.0, "runs_trained": 2, "jobs": 1,
           "load_before": 0.1, "load_after": 1.0}
    legacy = tmp_path / "runs" / "smoke" / "table1" / "sessions.jsonl"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps(old) + "\n")
    with open(out / "sessions.jsonl", "a") as f:
        f.write(json.dumps({**old, "group": "table1"}) + "\n")
    text = results_readme.build("smoke").read_text()
    assert "- Table 1's runs were trained in 1 session(s), 2 min of wall time in all (2026-01-01" in text
    assert "- The runs of `make sweep-lr` were trained in 1 session(s)" in text
    assert ": 3 runs, " in text


def test_readme_says_when_each_figure_was_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """figures.json's `drawn` entry (date and commit of the `make figures` that drew a figure) is
    shown; a figure without one says its date is unknown, so a picture from an earlier profile's
    runs is never passed off as the current one's."""
    out = tmp_path / "smoke"
    monkeypatch.setattr(results_readme, "results_dir", lambda profile: out)
    (out / "figures").mkdir(parents=True)
    notes = {"1": "losses 2.1 to 2.7", "2": "6 epochs", "drawn": {"2": "2026-12-06, commit abc"}}
    (out / "figures" / "figures.json").write_text(json.dumps(notes))
    text = results_readme.build("smoke").read_text()
    assert "Here: 6 epochs. Drawn 2026-12-06, commit abc. Made by" in text
    assert "Here: losses 2.1 to 2.7. When it was drawn is not recorded" in text
    assert "Not made yet. Made by `make figures` (drawn from the Table 1 runs" in text  # Fig. 3
