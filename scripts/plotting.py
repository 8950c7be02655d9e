"""Matplotlib's pyplot for the figures, loaded on first use and drawing to files only (Agg):
its import takes about 0.5 s, which a runner start or a test that draws nothing need not pay."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """matplotlib.pyplot, switched to the Agg backend (files only, no screen)."""
    import matplotlib.pyplot as plt

    if plt.get_backend().lower() != "agg":
        plt.switch_backend("Agg")
    return plt
