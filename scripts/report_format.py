"""How the reports write a number: percentages, intervals, IMPs, p-values ("—" for none)."""

from __future__ import annotations

from scripts.stats import Summary


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def interval_text(s: Summary, unit: str = "") -> str:
    if s.mean is None:
        return "—"
    text = f"{s.mean:.4g}{unit}"
    if s.std is not None:
        text += f" ± {s.std:.3g}"
    if s.low is not None:
        text += f" [{s.low:.4g}, {s.high:.4g}]"
    return text


def points_text(s: Summary) -> str:
    """A difference of accuracies in percentage points, with its interval."""
    if s.mean is None:
        return "—"
    text = f"{100 * s.mean:+.2f} pt"
    if s.low is not None:
        text += f" [{100 * s.low:+.2f}, {100 * s.high:+.2f}]"
    return text


def imp_text(estimate: float | None, low: float | None, high: float | None) -> str:
    """An IMP (fraction) in percent with its 95 % interval."""
    if estimate is None:
        return "—"
    if low is None or high is None:
        return f"{100 * estimate:+.1f} %"
    return f"{100 * estimate:+.1f} % [{100 * low:+.1f}, {100 * high:+.1f}]"


def p_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def level_text(value: float | None) -> str:
    return "none" if value is None else f"{100 * value:g} %"
