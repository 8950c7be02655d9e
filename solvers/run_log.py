"""Reading a run's JSON-lines log back: the events of the run as if it had never been stopped.

`isgd train` appends to the log when it resumes from a snapshot at iteration k, after a "start"
event with `resumed_from`; whatever the interrupted run logged from iteration k on was redone by
the resumed run, so those earlier events are superseded and dropped here. A line cut short by a
crash (the last line of a start, before a resume) is skipped; any other bad line is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INNER_STEPS = "alg2_inner_steps"  # an "iter" event's count of Alg. 2's inner steps
OLD_INNER_STEPS = "subproblem_iters"  # its name in logs written before the rename


class RunLogError(ValueError):
    """A run log that cannot be read (missing, corrupt); the message names the file and line."""


@dataclass
class RunLog:
    """The effective events of one run, its start events, and the lines skipped as cut short."""

    path: Path
    events: list[dict[str, Any]]
    starts: list[dict[str, Any]]
    skipped_lines: list[int] = field(default_factory=list)
    wall_s: float = 0.0  # wall time of every start of the run (superseded parts included)

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The effective events of one kind ("iter", "test", "timing", ...), in order."""
        return [e for e in self.events if e.get("event") == kind]

    @property
    def start(self) -> dict[str, Any]:
        """The first start event (the run's settings); {} for a log written before they existed."""
        return self.starts[0] if self.starts else {}

    @property
    def finished(self) -> bool:
        """True when the run's last (re)start ended with a summary saying it completed its
        budget (a run stopped early by a signal writes a summary too, marked incomplete)."""
        last = self.events[-1] if self.events else {}
        return last.get("event") == "timing" and bool(last.get("completed", True))


def _parse(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[int]]:
    """(line number, event) for every JSON line; lines cut short by a crash are listed apart."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunLogError(f"{path}: run log not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunLogError(f"{path}: cannot read the run log ({exc})") from None
    lines = text.split("\n")
    parsed: list[tuple[int, dict[str, Any] | None]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if event is not None and not isinstance(event, dict):
            event = None
        parsed.append((number, event))
    good: list[tuple[int, dict[str, Any]]] = []
    skipped: list[int] = []
    for i, (number, event) in enumerate(parsed):
        if event is not None:
            good.append((number, event))
            continue
        following = parsed[i + 1][1] if i + 1 < len(parsed) else None
        cut_short = following is None and i + 1 == len(parsed)
        resumed_next = (
            following is not None
            and following.get("event") == "start"
            and following.get("resumed_from")
        )
        if cut_short or resumed_next:
            skipped.append(number)
            continue
        raise RunLogError(
            f"{path}:{number}: not a JSON event line (the log is corrupt; rebuild it by "
            "re-running this run, or move the file away)"
        )
    return good, skipped


def alg2_inner_steps(event: dict[str, Any]) -> int:
    """Alg. 2's inner steps taken in one "iter" event (under either name; 0 when absent)."""
    return int(event.get(INNER_STEPS, event.get(OLD_INNER_STEPS)) or 0)


def read_run_log(path: str | Path) -> RunLog:
    """The run's events with those superseded by a resume dropped (see the module docstring)."""
    path = Path(path)
    good, skipped = _parse(path)
    events: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    wall = 0.0
    for number, event in good:
        kind = event.get("event")
        if kind == "timing":
            wall += float(event.get("wall_s") or 0.0)
        if kind is None:
            raise RunLogError(f"{path}:{number}: JSON line without an 'event' key")
        if OLD_INNER_STEPS in event and INNER_STEPS not in event:
            event[INNER_STEPS] = event.pop(OLD_INNER_STEPS)  # an old log, read as a new one
        if kind == "start":
            if event.get("resumed_from"):
                resumed_at = int(event.get("iter", 0))
                events = [
                    e
                    for e in events
                    if e.get("event") not in ("timing",) and int(e.get("iter", -1)) < resumed_at
                ]
            else:
                events = []  # a fresh start (-overwrite_log truncates, but be safe)
                starts = []
            starts.append(event)
        events.append(event)
    return RunLog(path=path, events=events, starts=starts, skipped_lines=skipped, wall_s=wall)
