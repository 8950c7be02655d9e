"""prepare.json beside the LMDBs `prepare` writes: the FCPR seed of each output and the SHA-256 of
the originals it came from, so a later `make data DATA_SEED=k` can tell that the databases on
disk were built in another order (and a runner can tell which order a run trained on)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from engine.errors import DataError

RECORD = "prepare.json"


def record_path(output: str | os.PathLike) -> Path:
    """The record that describes `output` (an LMDB or file under data/<dataset>/)."""
    return Path(output).parent / RECORD


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's prepare.json, or None when there is none (databases made before it)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); delete it and run `make data`") from None
    if not isinstance(record, dict) or not isinstance(record.get("outputs", {}), dict):
        raise DataError(f"{path}: not a prepare record; delete it and run `make data`")
    return record


def recorded_seed(output: str | os.PathLike) -> int | None:
    """The FCPR seed `output` was built with, per its folder's record (None: not recorded)."""
    record = read_record(Path(output).parent)
    entry = (record or {}).get("outputs", {}).get(Path(output).name)
    seed = entry.get("seed") if isinstance(entry, dict) else None
    return int(seed) if seed is not None else None


def write_record(
    outputs: list[Path], seed: int, originals: list[Path], ordered: tuple[str, ...] = ()
) -> Path:
    """Add `outputs` (all in one folder) to its prepare.json: the seed (for the names in
    `ordered`, the FCPR-ordered ones; the others keep file order) and the originals' SHA-256."""
    folder = outputs[0].parent
    record = read_record(folder) or {"outputs": {}, "originals": {}}
    for out in outputs:
        record["outputs"][out.name] = {
            "seed": seed if out.name in ordered else None,
            "order": "FCPR" if out.name in ordered else "file",
        }
    for original in originals:
        record.setdefault("originals", {})[original.name] = file_sha256(original)
    path = folder / RECORD
    tmp = path.with_name(RECORD + ".part")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def check_seed(outputs: list[Path], seed: int, ordered: tuple[str, ...]) -> str | None:
    """Refuse existing FCPR-ordered `outputs` recorded with another seed (DataError, one line
    saying how to rebuild); a note (returned) when they have no record; None when they match."""
    for out in outputs:
        if out.name not in ordered:
            continue
        record = read_record(out.parent)
        if record is None or out.name not in record.get("outputs", {}):
            return (
                f"note: {out} has no {RECORD} (made before seeds were recorded): its FCPR seed "
                f"is unknown and it is kept as it is; `make data DATA_SEED={seed} "
                "DATA_ARGS=--overwrite` rebuilds it with a recorded seed"
            )
        held = recorded_seed(out)
        if held != seed:
            raise DataError(
                f"{out} was built in FCPR order of seed {held} ({out.parent / RECORD}), not "
                f"{seed}: to rebuild it run `make data DATA_SEED={seed} DATA_ARGS=--overwrite` "
                f"(python -m data_tools prepare --seed {seed} --overwrite), or keep it with "
                f"DATA_SEED={held}"
            )
    return None
