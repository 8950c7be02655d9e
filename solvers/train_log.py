"""Caffe-style glog text lines (what Caffe's log parsers read) plus one JSON line per event."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np


def fmt(value: float) -> str:
    """A number as C++ iostreams print a float by default (%g, 6 significant digits), like Caffe."""
    return f"{float(value):g}"


def glog_prefix(level: str = "I", source: str = "solver.py:0", when: float | None = None) -> str:
    """glog's line header "I0612 10:11:12.123456  4242 solver.py:0] " (parse_log reads it)."""
    now = time.time() if when is None else when
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now))
    micros = int((now - math.floor(now)) * 1e6)
    return f"{level}{stamp}.{micros:06d} {os.getpid():>6} {source}] "


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, NumPy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ends_mid_line(path: Path) -> bool:
    """True when `path` exists, is not empty and does not end with a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


class TrainLog:
    """Caffe's text lines to a stream (stderr, as glog) and events to a JSON-lines file."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        json_path: str | Path | None = None,
        append: bool = False,
        progress: bool | None = None,
        source: str = "solver.py:0",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.source = source
        self.json_path: Path | None = None
        self._json: IO[str] | None = None
        if json_path:
            self.open_json(json_path, append=append)
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.progress_enabled = bool(isatty()) if progress is None else progress
        self._progress_shown = False

    def open_json(self, path: str | Path, append: bool = False) -> None:
        """Start writing events to `path` (a resume appends; a fresh run truncates). Callers
        open it only once every start-up check has passed, so a failed start writes nothing."""
        self.json_path = Path(path)
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        cut_short = append and _ends_mid_line(self.json_path)
        self._json = open(self.json_path, "a" if append else "w", encoding="utf-8")
        if cut_short:  # a crash cut the last line: start ours on a line of its own
            self._json.write("\n")

    def info(self, message: str, level: str = "I") -> None:
        """One glog-formatted line."""
        self._clear_progress()
        self.stream.write(glog_prefix(level, self.source) + message + "\n")
        self.stream.flush()

    def warning(self, message: str) -> None:
        self.info(message, level="W")

    def error(self, message: str) -> None:
        self.info(message, level="E")

    def event(self, record: dict[str, Any]) -> None:
        """One JSON line (keys as given; non-finite numbers written as null)."""
        if self._json is not None:
            self._json.write(json.dumps(_clean(record), separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._json is not None:
            self._json.flush()
        self.stream.flush()

    def progress(self, it: int, max_iter: int, loss: float, train_s: float) -> None:
        """A one-line progress display for interactive runs (overwritten in place)."""
        if not self.progress_enabled:
            return
        width = 30
        done = int(width * it / max_iter) if max_iter else 0
        bar = "#" * done + "-" * (width - done)
        self.stream.write(f"\r[{bar}] {it}/{max_iter} loss {fmt(loss)} {train_s:.0f}s ")
        self.stream.flush()
        self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.stream.write("\r\033[K")
            self._progress_shown = False

    def close(self) -> None:
        self._clear_progress()
        if self._json is not None:
            self._json.close()
            self._json = None

    # --- Caffe's solver lines ---------------------------------------------------------------
    def iteration(self, it: int, per_s: float, lapse: float, display: int, loss: float) -> None:
        speed = f"{fmt(per_s)} iter/s, {fmt(lapse)}s/{display} iters"
        self.info(f"Iteration {it} ({speed}), loss = {fmt(loss)}")

    def output(self, kind: str, index: int, name: str, value: float, weight: float) -> None:
        """ "    Train net output #k: name = v (* w = v*w loss)" (or Test), as Caffe prints it."""
        product = np.float32(weight) * np.float32(value)  # Caffe multiplies in Dtype
        suffix = f" (* {fmt(weight)} = {fmt(product)} loss)" if weight else ""
        self.info(f"    {kind} net output #{index}: {name} = {fmt(value)}{suffix}")

    def lr(self, it: int, rate: float) -> None:
        self.info(f"Iteration {it}, lr = {fmt(rate)}")
