"""Sandboxed Lua behaviors: a fresh lua54 state per loaded script, a whitelisted environment,
per-call instruction / memory / wall-clock limits, bounded Python <-> Lua conversion.

See docs/sandbox.md for the guarantees and their limits.
"""

from .errors import LimitKind, LuaBehaviorError, LuaError, LuaLimitExceeded, LuaValidationError
from .limits import Limits
from .sandbox import Sandbox
from .validation import ValidationResult, validate_script

__all__ = [
    "LimitKind",
    "Limits",
    "LuaBehaviorError",
    "LuaError",
    "LuaLimitExceeded",
    "LuaValidationError",
    "Sandbox",
    "ValidationResult",
    "validate_script",
]
