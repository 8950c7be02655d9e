"""Exceptions for bad input; each message names the file, line or layer at fault."""


class EngineError(Exception):
    """Base class for the engine's clear, user-facing errors."""


class PrototxtError(EngineError):
    """A malformed .prototxt or binary proto file (the message names the file and line)."""


class NetError(EngineError):
    """An inconsistent net definition: unknown type, missing producer, bad shape, bad weights."""


class UnknownLayerTypeError(NetError):
    """A layer `type` string that no registered Layer class handles."""


class DataError(EngineError, ValueError):
    """Missing, corrupt or inconsistent dataset file (the message names the path)."""
