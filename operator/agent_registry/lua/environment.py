"""The Python half of the sandbox environment: the host functions a script reaches through the
Lua wrappers of environment.lua (log, json.encode/decode, now) and the clock of the budget hook.

The script never holds these Python callables: environment.lua keeps them as upvalues of Lua
closures. They never raise into Lua (a Python exception crossing lupa would carry host details);
they return (result, error) pairs the Lua side turns into Lua errors.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from lupa import lua54

from .conversion import ConversionError, lua_to_python, python_to_lua
from .limits import Limits

__all__ = ["LogSink", "environment_chunk", "environment_source", "host_functions"]

LogSink = Callable[[str], None]

_log = logging.getLogger("agent_registry.lua")


def environment_source() -> str:
    return resources.files(__package__).joinpath("environment.lua").read_text("utf-8")


@functools.cache
def environment_chunk() -> bytes:
    """environment.lua compiled once per process (parsing it costs ~0.5 ms, loading the
    bytecode a tenth of that: it is paid on every load and reload). Our own bytecode, made by
    this very Lua: scripts never get to load bytecode (their load is text-only)."""
    compiler = lua54.LuaRuntime(register_eval=False, register_builtins=False, encoding=None)
    chunk = compiler.execute(
        b"local f = assert(load(..., '=sandbox-host', 't')) return string.dump(f, true)",
        environment_source().encode("utf-8"),
    )
    assert isinstance(chunk, bytes)
    return chunk


def host_functions(runtime: Any, limits: Limits, log: LogSink | None) -> dict[str, Any]:
    """The Python callables environment.lua receives as `py`."""

    def log_line(message: str) -> None:
        try:
            if log is None:
                _log.info("%s", message)
            else:
                log(message)
        except Exception:  # a broken sink must not become the script's error
            _log.exception("behavior log sink failed")

    def json_encode(value: Any) -> tuple[str | None, str | None]:
        try:
            data = lua_to_python(value, limits)
            return json.dumps(data, ensure_ascii=False, allow_nan=False), None
        except ConversionError as exc:
            return None, str(exc)
        except (TypeError, ValueError) as exc:  # NaN/inf, mixed key types
            return None, str(exc)

    def json_decode(text: str) -> tuple[Any, str | None]:
        try:
            data = json.loads(text)
        except RecursionError:
            return None, "nested too deeply"
        except ValueError as exc:  # includes JSONDecodeError and oversized integers
            return None, str(exc)
        try:
            return python_to_lua(runtime, data, limits), None
        except ConversionError as exc:
            return None, str(exc)
        except lua54.LuaMemoryError:
            return None, "not enough memory"

    return {
        "clock": time.monotonic,
        "now": time.time,
        "log": log_line,
        "json_encode": json_encode,
        "json_decode": json_decode,
    }
