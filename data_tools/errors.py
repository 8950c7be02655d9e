"""The one exception the data tools raise for bad input; its message names the file at fault."""

from engine.errors import EngineError


class DataError(EngineError, ValueError):
    """Missing, corrupt or inconsistent dataset file (the message names the path)."""
