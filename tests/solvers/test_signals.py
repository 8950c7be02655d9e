"""SIGINT/SIGHUP become polled actions with Caffe's defaults (-sigint_effect stop, -sighup_effect
snapshot); the previous handlers come back afterwards."""

from __future__ import annotations

import os
import signal

import pytest

from solvers.signals import SignalHandler


def test_signals_map_to_effects_once_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGHUP)
    with SignalHandler() as handler:
        assert handler.requested_action() == "none"
        os.kill(os.getpid(), signal.SIGHUP)
        assert handler.requested_action() == "snapshot"
        assert handler.requested_action() == "none"
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the flag records it
        assert handler.requested_action() == "stop"
    assert signal.getsignal(signal.SIGHUP) == before


def test_custom_effects_and_bad_values() -> None:
    with SignalHandler(sigint_effect="snapshot", sighup_effect="none") as handler:
        os.kill(os.getpid(), signal.SIGINT)
        assert handler.requested_action() == "snapshot"
        os.kill(os.getpid(), signal.SIGHUP)
        assert handler.requested_action() == "none"
    with pytest.raises(ValueError, match="invalid sigint_effect 'halt'"):
        SignalHandler(sigint_effect="halt")
