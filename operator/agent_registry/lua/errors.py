"""Errors raised by the Lua sandbox.

Every error a script can cause is a LuaError, so a caller that keeps the last good behavior needs
one except clause. The line is the line of the behavior script when it is known.
"""

from __future__ import annotations

from typing import Literal

LimitKind = Literal["instructions", "memory", "timeout"]

__all__ = [
    "LimitKind",
    "LuaBehaviorError",
    "LuaError",
    "LuaLimitExceeded",
    "LuaValidationError",
]


_MESSAGES: dict[str, str] = {
    "instructions": "instruction limit exceeded",
    "memory": "memory limit exceeded",
    "timeout": "timeout exceeded",
}


class LuaError(Exception):
    """Base class: anything a behavior script made go wrong."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return self.message


class LuaValidationError(LuaError):
    """The script cannot become a behavior: it does not compile, does not define on_task, or its
    top level / init / on_reload fails (including by exceeding a limit)."""


class LuaBehaviorError(LuaError):
    """A call into a loaded behavior raised a Lua error (message and line from the script), or
    its arguments or result could not be converted."""


class LuaLimitExceeded(LuaError):
    """A call ran out of its instruction budget, memory ceiling or wall-clock timeout."""

    def __init__(self, kind: LimitKind, message: str | None = None) -> None:
        super().__init__(message or _MESSAGES[kind], None)
        self.kind: LimitKind = kind
