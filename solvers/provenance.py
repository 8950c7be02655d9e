"""Where a run came from: the code's commit, the machine, the package versions (for run logs)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's commit (short hash, "-dirty" with uncommitted changes), or "unknown"."""
    try:
        head = _git(root, "rev-parse", "--short=12", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if status else head


def machine() -> str:
    """A short description of this machine: host, CPU, core count."""
    cpu = platform.processor() or platform.machine()
    model = _cpu_model()
    if model:
        cpu = model
    return f"{socket.gethostname()}: {cpu}, {os.cpu_count()} cores"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def provenance() -> dict[str, Any]:
    """The fields every run log's start event carries."""
    return {
        "commit": git_commit(),
        "machine": machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
