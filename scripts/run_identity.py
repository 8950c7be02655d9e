"""What defines a run, written beside it (identity.json) and compared before any reuse or resume.

A run is its generated solver and net text, its arm, seed and profile values, and the data it
reads (fingerprints of its LMDBs and mean file). A folder whose identity differs from what the
profile would make now holds another experiment: it is refused, never reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from data_tools.fingerprint import data_fingerprint

IDENTITY_FILE = "identity.json"
VERSION = 1


def source_fingerprint(path: Path) -> dict[str, Any]:
    """An LMDB's fingerprint (data_tools.fingerprint), a file's SHA-256, or that it is missing."""
    if path.is_dir():
        return data_fingerprint(path)
    if path.is_file():
        return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"missing": True}


def flatten(value: Any, prefix: str = "") -> list[str]:
    """`a.b: value` lines of a nested identity, in a fixed order (what a mismatch names)."""
    if isinstance(value, dict):
        lines = []
        for key in sorted(value):
            lines += flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return lines
    return [f"{prefix}: {json.dumps(value, sort_keys=True)}"]


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first line where two identities differ, said as "was X, now Y"; None when equal."""
    before, after = flatten(old), flatten(new)
    keys_before = {line.split(": ", 1)[0]: line for line in before}
    keys_after = {line.split(": ", 1)[0]: line for line in after}
    for key in sorted(set(keys_before) | set(keys_after)):
        a, b = keys_before.get(key), keys_after.get(key)
        if a != b:
            was = a.split(": ", 1)[1] if a else "(absent)"
            now = b.split(": ", 1)[1] if b else "(absent)"
            return f"{key} was {was}, now {now}"
    return None


def read_identity(folder: Path) -> dict[str, Any] | None:
    """The identity recorded in a run folder; None when there is none."""
    path = folder / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"unreadable": str(path)}
    return value if isinstance(value, dict) else {"unreadable": str(path)}


def write_identity(folder: Path, identity: dict[str, Any]) -> None:
    """Record a run's identity (temporary file and rename: never half written)."""
    path = folder / IDENTITY_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(identity, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
