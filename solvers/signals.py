"""SIGINT/SIGHUP -> solver actions, as Caffe's -sigint_effect / -sighup_effect (flags, polled)."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

ACTIONS = ("none", "snapshot", "stop")


def check_effect(flag: str, value: str) -> str:
    """Validate a signal-effect flag value (snapshot, stop or none)."""
    if value not in ACTIONS:
        raise ValueError(f"invalid {flag} '{value}': use snapshot, stop or none")
    return value


class SignalHandler:
    """Records SIGINT/SIGHUP in flags; the solver polls `requested_action()` once per iteration.

    Use as a context manager: the previous handlers come back on exit.
    """

    def __init__(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot") -> None:
        self.sigint_effect = check_effect("sigint_effect", sigint_effect)
        self.sighup_effect = check_effect("sighup_effect", sighup_effect)
        self._got_sigint = False
        self._got_sighup = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            self._got_sigint = True
        else:
            self._got_sighup = True

    def requested_action(self) -> str:
        """The action for a signal received since the last call ("none" if none); clears it."""
        if self._got_sigint:
            self._got_sigint = False
            return self.sigint_effect
        if self._got_sighup:
            self._got_sighup = False
            return self.sighup_effect
        return "none"

    def __enter__(self) -> SignalHandler:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()
