"""Writing result files so that a failure never leaves one half written or wipes the old one."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def cell(value: Any) -> Any:
    """A CSV cell: empty for None and non-finite floats, 6 significant digits for floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return value


def csv_text(columns: list[str], records: list[dict[str, Any]]) -> str:
    """A CSV file's text: the header, then one line per record (missing keys empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: cell(record.get(k)) for k in columns})
    return buffer.getvalue()


def write_csv(path: Path, columns: list[str], records: list[dict[str, Any]]) -> None:
    """A CSV file (temporary file and rename: never half written)."""
    write_atomic(path, csv_text(columns, records))
