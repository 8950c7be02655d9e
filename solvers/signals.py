"""SIGINT/SIGHUP/SIGTERM and the end of the parent process -> solver actions, polled.

Caffe's -sigint_effect / -sighup_effect (defaults stop / snapshot); Caffe leaves SIGTERM to the
system (the process ends at once), which stays our default unless -sigterm_effect is given.
With `stop_with_parent` the trainer also stops at a snapshot when the process that started it
ends (so it never trains on as an orphan beside a rerun): Linux delivers SIGTERM then
(PR_SET_PDEATHSIG), and every poll compares the parent's pid as a fallback.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from types import FrameType, TracebackType

ACTIONS = ("none", "snapshot", "stop")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 0.5  # how often a watched pid that is not our parent is looked up


def check_effect(flag: str, value: str) -> str:
    """Validate a signal-effect flag value (snapshot, stop or none)."""
    if value not in ACTIONS:
        raise ValueError(f"invalid {flag} '{value}': use snapshot, stop or none")
    return value


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send `signum` to this process when its parent ends; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (an ended process not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(pid, 0) has spoken


class SignalHandler:
    """Records SIGINT/SIGHUP/SIGTERM and parent death in flags; the solver polls
    `requested_action()` once per iteration (and between test batches).

    `sigterm_effect` None leaves SIGTERM to the system, as Caffe. `stop_with_parent` stops when
    `parent_pid` (default: our parent at entry) ends. `stop_reason` names what asked for the last
    stop. Use as a context manager: the previous handlers come back on exit.
    """

    def __init__(
        self,
        sigint_effect: str = "stop",
        sighup_effect: str = "snapshot",
        sigterm_effect: str | None = None,
        stop_with_parent: bool = False,
        parent_pid: int | None = None,
    ) -> None:
        self.effects = {
            signal.SIGINT: check_effect("sigint_effect", sigint_effect),
            signal.SIGHUP: check_effect("sighup_effect", sighup_effect),
        }
        if sigterm_effect is not None:
            self.effects[signal.SIGTERM] = check_effect("sigterm_effect", sigterm_effect)
        self.stop_with_parent = bool(stop_with_parent)
        self.parent_pid = parent_pid
        self.stop_reason: str | None = None
        self._pending: list[int] = []  # signals received, in order, not yet polled
        self._parent_gone = False
        self._parent_reported = False
        self._next_watch = 0.0
        self._own_parent = os.getppid()
        self._previous: dict[int, object] = {}

    @property
    def sigint_effect(self) -> str:
        return self.effects[signal.SIGINT]

    @property
    def sighup_effect(self) -> str:
        return self.effects[signal.SIGHUP]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM and self.stop_with_parent and self._parent_ended():
            self._parent_gone = True  # PR_SET_PDEATHSIG: our parent has just ended
            return
        if signum not in self.effects:  # SIGTERM caught only for parent death: the system's way
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._pending.append(signum)

    def _parent_ended(self) -> bool:
        """Whether the watched parent has ended (our parent pid changed, or the pid is gone)."""
        pid = self.parent_pid
        if pid is None:
            return False
        if pid == self._own_parent:
            return os.getppid() != pid
        now = time.monotonic()
        if now < self._next_watch:
            return False
        self._next_watch = now + WATCH_INTERVAL_S
        return not process_alive(pid)

    def requested_action(self) -> str:
        """The action for a signal (or parent death) since the last call, "none" if none; each
        signal is answered once. Parent death is a stop, answered once."""
        if self.stop_with_parent and not self._parent_reported:
            if self._parent_gone or self._parent_ended():
                self._parent_reported = True
                self.stop_reason = f"parent process pid {self.parent_pid} ended"
                return "stop"
        while self._pending:
            signum = self._pending.pop(0)
            action = self.effects[signum]
            if action == "stop":
                self.stop_reason = signal.Signals(signum).name
            if action != "none":
                return action
        return "none"

    def __enter__(self) -> SignalHandler:
        self._own_parent = os.getppid()
        if self.stop_with_parent and self.parent_pid is None:
            self.parent_pid = self._own_parent
        if threading.current_thread() is not threading.main_thread():
            return self
        caught = list(self.effects)
        if self.stop_with_parent and signal.SIGTERM not in caught:
            caught.append(signal.SIGTERM)
        for sig in caught:
            self._previous[sig] = signal.signal(sig, self._handle)
        if self.stop_with_parent and self.parent_pid == self._own_parent:
            set_parent_death_signal(signal.SIGTERM)
            if os.getppid() != self.parent_pid:  # it ended before the kernel could be told
                self._parent_gone = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.stop_with_parent and self.parent_pid == self._own_parent:
            set_parent_death_signal(0)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()
