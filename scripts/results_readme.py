"""results[/<profile>]/README.md: Table 1, the figures inline, how each was made, and one
paragraph per figure setting what it shows beside what the paper's figure claims.

Written from the files the other scripts leave (table1.md, table1.csv, figures/figures.json,
sweep.md, sweep_lr.md) and the sessions file beside them; `make table1`, `make figures`,
`make sweep-isgd` and `make sweep-lr` call it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from scripts.outputs import write_atomic
from scripts.profiles import ROOT, ProfileError, load_profile, results_dir
from scripts.runs import legacy_sessions_file, sessions_file

FIGURES = {
    1: (
        "fig1_batch_losses.png",
        "Fig. 1 (section 3.3): CIFAR-10 quick trained by SGD on 10 single-class batches (a) and on "
        "10 i.i.d. batches (b), loss of each batch over epochs",
        "The paper shows each batch's loss falling at its own rate, widely apart for single-class "
        "batches (sampling bias) and still apart for i.i.d. ones (intrinsic image difference).",
        "make figures (runs results/runs/{profile}/fig1/)",
    ),
    2: (
        "fig2_loss_distribution.png",
        "Fig. 2: the batch losses of each epoch, SGD on CIFAR-10 (the Table 1 run of seed 1)",
        "The paper reads the per-epoch losses as roughly normal around a mean that falls epoch "
        "by epoch, the assumption behind the 3-sigma limit.",
        "make figures (drawn from the Table 1 runs of make reproduce-table1)",
    ),
    3: (
        "fig3_control_limit.png",
        "Fig. 3: batch loss, running mean and upper control limit of an ISGD run; batches that "
        "triggered Alg. 2 in red (the Table 1 ISGD runs of seed 1)",
        "The paper (AlexNet) shows a handful of outliers above the limit, each then accelerated "
        "by Alg. 2.",
        "make figures (drawn from the Table 1 runs of make reproduce-table1)",
    ),
    5: (
        "fig5_batch_size_model.png",
        "Fig. 5: Eq. 21 fitted to LeNet iterations timed here (left), Eq. 24's predicted time "
        "against batch size for this machine and the paper's two systems (right)",
        "The paper's two systems have their best batch at 500 and 1000; it gives no constants, so "
        "its curves are reconstructed from those optima (C1 assumed, C2 solved).",
        "make figures (runs results/runs/{profile}/fig5/)",
    ),
    6: (
        "fig6_batch2500.png",
        "Fig. 6 (section 5.1): CIFAR-10 quick at batch 2500 (20 batches): per-epoch loss "
        "distributions of SGD (a) and ISGD (b), their std (c), mean (d), and test accuracy (e)",
        "The paper reports ISGD's per-epoch std well below SGD's for iterations 1000-6000, a "
        "lower mean loss after iteration 7000, and higher test accuracy.",
        "make figures (runs results/runs/{profile}/fig6/)",
    ),
    7: (
        "fig7_accuracy_loss_vs_time.png",
        "Fig. 7: test accuracy and training loss against training time, SGD vs ISGD, every "
        "Table 1 run",
        "The paper shows ISGD above SGD in accuracy and below it in loss throughout, reaching the "
        "target 23-29 % sooner.",
        "make figures (drawn from the Table 1 runs of make reproduce-table1)",
    ),
    8: (
        "fig8_batch_size.png",
        "Fig. 8: time to target against batch size (seed 1, the same epochs per run)",
        "The paper (4 GPUs) finds a moderate batch fastest, with very large batches slower.",
        "make figures (runs results/runs/{profile}/fig8/)",
    ),
    9: (
        "fig9_nesterov.png",
        "Fig. 9: Nesterov against ISGD on Nesterov (seed 1)",
        "The paper (ImageNet) finds the inconsistent Nesterov 13.4 % faster to 58 % top-1.",
        "make figures (runs results/runs/{profile}/fig9/)",
    ),
}


SESSION_GROUPS = {
    "table1": "Table 1's runs",
    "figures": "The figures' runs (`make figures`)",
    "sweep": "The ISGD sweep's runs (`make sweep-isgd`)",
    "sweep_lr": "The runs of `make sweep-lr`",
}


def _session_entries(profile: str) -> list[dict[str, Any]]:
    """Every noted session of the profile: the committed file, then any older Table 1 entries
    still inside the run folders (group table1; an entry in both is read once)."""
    entries: list[dict[str, Any]] = []
    for path in (sessions_file(profile), legacy_sessions_file(profile)):
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            entry.setdefault("group", "table1")
            if not any(e.get("ended") == entry.get("ended") for e in entries):
                entries.append(entry)
    return entries


def _sessions(profile: str) -> list[str]:
    """The runner sessions that trained the profile's runs, one line per command (Table 1, the
    figures, the sweeps): wall time, the machine's load, and the note a person added to an
    entry (`"note"`: what the load alone cannot say, e.g. that nothing else ran)."""
    entries = _session_entries(profile)
    lines = []
    for group, title in SESSION_GROUPS.items():
        mine = [e for e in entries if e["group"] == group]
        if not mine:
            continue
        wall = sum(float(e.get("wall_s", 0)) for e in mine) / 60
        loads = "; ".join(
            f"{e.get('ended', '?')}: {e.get('runs_trained')} runs, "
            f"{float(e.get('wall_s', 0)) / 60:.0f} min, {e.get('jobs')} at a time, "
            f"load {e.get('load_before')} before, {e.get('load_after')} after"
            + (f"; {e['note']}" if e.get("note") else "")
            for e in mine
        )
        lines.append(
            f"- {title} were trained in {len(mine)} session(s), {wall:.0f} min of wall time in "
            f"all ({loads})."
        )
    if not lines:
        return []
    return [
        *lines,
        "- The load before a session is the machine's 1-min load average: near 0 means nothing "
        "else ran; after, it is the runs' own.",
        "",
    ]


def build(profile: str) -> Path:
    """Write the README of a profile's results; returns its path."""
    prof = load_profile(profile)
    out = results_dir(profile)
    arg = "" if profile == "default" else f" PROFILE={profile}"
    lines = [
        f"# Results (profile `{profile}`)",
        "",
        f"{prof.about}. Everything here is regenerated from the runs' JSON logs "
        f"(results/runs/{profile}/, not tracked): `make table1{arg}`, `make figures{arg}`, "
        f"`make sweep-isgd{arg}` rebuild it without training what is already logged.",
        "",
    ]
    table_csv = out / "table1.csv"
    machine = commit = ""
    if table_csv.exists():
        rows = list(csv.DictReader(open(table_csv, encoding="utf-8")))
        machine = "; ".join(sorted({r.get("machine", "") for r in rows if r.get("machine")}))
        commit = ", ".join(
            sorted({c for r in rows for c in r.get("commit", "").replace(",", " ").split()})
        )
    lines += [
        f"- Made by: `make reproduce-table1{arg}`, then `make figures{arg}`, "
        f"`make sweep-isgd{arg}` and `make sweep-lr{arg}`",
        f"- Machine: {machine or 'see the run logs'}",
        f"- Commit(s) of the runs: {commit or 'see the run logs'}",
        "",
    ]
    lines += _sessions(profile)
    table_md = out / "table1.md"
    if table_md.exists():
        body = table_md.read_text(encoding="utf-8").split("\n", 1)[1]
        lines += ["## Table 1", body.replace("\n## ", "\n### ")]
        for name in sorted((out / "figures").glob("reached_*.png")) + [
            out / "figures" / "ladder.png"
        ]:
            if name.exists():
                lines += [f"![{name.stem}](figures/{name.name})", ""]
    else:
        lines += ["## Table 1", "", f"Not run yet: `make reproduce-table1{arg}`.", ""]
    notes_path = out / "figures" / "figures.json"
    notes = json.loads(notes_path.read_text()) if notes_path.exists() else {}
    lines += ["## Figures", ""]
    for number, (name, caption, paper, how) in FIGURES.items():
        lines += [f"### {caption}", ""]
        if (out / "figures" / name).exists():
            lines += [f"![Fig. {number}](figures/{name})", ""]
        note = notes.get(str(number))
        measured = f" Here: {note}." if note else " Not made yet."
        if note:
            when = notes.get("drawn", {}).get(str(number))
            measured += (
                f" Drawn {when}."
                if when
                else " When it was drawn is not recorded (an older `make figures`: its runs may "
                "be an earlier profile's)."
            )
        command, _, where = how.format(profile=profile).partition(" (")
        made = f"`{command}`" + (f" ({where}" if where else "")
        lines += [f"{paper}{measured} Made by {made}.", ""]
    sweep = out / "sweep.md"
    if sweep.exists():
        body = sweep.read_text(encoding="utf-8").split("\n", 1)[1]
        lines += ["## The ISGD sweep", body.replace("\n## ", "\n### ")]
        if (out / "figures" / "sweep.png").exists():
            lines += ["![sweep](figures/sweep.png)", ""]
    sweep_lr = out / "sweep_lr.md"
    if sweep_lr.exists():  # does the claim survive when each arm gets its own best lr?
        body = sweep_lr.read_text(encoding="utf-8").split("\n", 1)[1]
        lines += [
            "## Each arm at its own best learning rate (`make sweep-lr`)",
            "Beside Table 1 at the paper's fixed lr: the Reading below says in words whether "
            "ISGD's gain survives an equal tuning budget, scored on held-out seeds.",
            body.replace("\n## ", "\n### "),
        ]
        if (out / "figures" / "sweep_lr.png").exists():
            lines += ["![sweep-lr](figures/sweep_lr.png)", ""]
    path = out / "README.md"
    write_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="default")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {build(args.profile).relative_to(ROOT)}")
    except ProfileError as exc:
        print(f"results-readme: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
