"""One loaded behavior in its own Lua state.

A Sandbox owns a fresh lua54 LuaRuntime (never shared, never reused across reloads), loads the
script into the whitelisted environment of environment.lua, and runs every entry into the script
through the host's `run`, which arms the budget hook, catches the error and disarms the hook
before control returns to Python. See docs/sandbox.md for what is and is not guaranteed.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Mapping
from typing import Any

from lupa import lua54

from .conversion import ConversionError, is_flat, lua_to_python, python_to_lua
from .environment import LogSink, environment_chunk, host_functions
from .errors import LimitKind, LuaBehaviorError, LuaError, LuaLimitExceeded, LuaValidationError
from .limits import Limits

__all__ = ["Sandbox"]

_LIMIT_KINDS: dict[str, LimitKind] = {
    "instructions": "instructions",
    "memory": "memory",
    "timeout": "timeout",
}
_CHUNK_NAME = re.compile(r"[^A-Za-z0-9_.\-/]")


class Sandbox:
    """A behavior script loaded under `limits`.

    Construction compiles the script, runs its top level, checks that `on_task` is defined,
    runs `init(config)` if defined (a table it returns becomes the initial ctx.state) and, when
    `previous_state` is given, `on_reload(previous_state)` if defined (a table it returns becomes
    ctx.state, else previous_state does). Any failure raises LuaValidationError.

    One thread at a time per Sandbox; different Sandboxes may run in parallel threads (lupa
    releases the GIL while Lua runs).
    """

    def __init__(
        self,
        source: str,
        limits: Limits | None = None,
        *,
        chunk_name: str = "behavior",
        config: Mapping[str, Any] | None = None,
        previous_state: Mapping[str, Any] | None = None,
        log: LogSink | None = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self.sha256 = hashlib.sha256(source.encode("utf-8")).hexdigest()
        self.chunk_name = _CHUNK_NAME.sub("_", chunk_name)[:60] or "behavior"
        self._closed = False
        self._timeout_s = self.limits.timeout_ms / 1000.0
        if len(source.encode("utf-8")) > self.limits.max_source_bytes:
            raise LuaValidationError(
                f"script larger than {self.limits.max_source_bytes} bytes", None
            )
        # max_memory=0: lupa tracks allocations without a ceiling until the host environment
        # is built; the ceiling set below then counts only what the script allocates.
        self._lua = lua54.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            max_memory=0,
        )
        limits_table = self._lua.table_from(
            {
                "hook_interval": self.limits.hook_interval,
                "max_instructions": self.limits.max_instructions,
                "timeout_s": self._timeout_s,
                "max_items": self.limits.max_items,
                "max_string_bytes": self.limits.max_string_bytes,
                "max_pattern_cost": self.limits.max_pattern_cost,
                "max_source_bytes": self.limits.max_source_bytes,
                "max_log_lines": self.limits.max_log_lines,
                "chunk_name": self.chunk_name,
            }
        )
        py_table = self._lua.table_from(host_functions(self._lua, self.limits, log))
        host = self._lua.execute(environment_chunk(), py_table, limits_table, mode="b")
        self._run = host["run"]
        self._run_task = host["run_task"]
        self._ident = host["ident"]
        self._get_state = host["get_state"]
        self._set_state = host["set_state"]
        self._defines = host["defines"]
        self._pattern_cost = host["pattern_cost"]
        self._pattern_plan = host["pattern_plan"]
        # The C function itself: calling it from Python runs no Lua instruction, so it clears
        # the hook even when a stop left it firing on every instruction.
        self._sethook = self._lua.globals().debug.sethook
        self._ctx = host["ctx"]()
        compile_fn = host["compile"]
        self._lua.set_max_memory(
            self._lua.get_memory_used() + self.limits.max_memory_bytes, total=True
        )
        try:
            self._load(compile_fn, source, config, previous_state)
        except LuaValidationError:
            self.close()
            raise
        except LuaError as exc:  # config/previous_state not convertible, memory while converting
            self.close()
            raise LuaValidationError(str(exc), exc.line) from exc
        except lua54.LuaError as exc:  # a host function failed (memory exhausted)
            self.close()
            raise LuaValidationError(f"sandbox error: {exc}") from exc

    # -- loading ---------------------------------------------------------------------------

    def _load(
        self,
        compile_fn: Any,
        source: str,
        config: Mapping[str, Any] | None,
        previous_state: Mapping[str, Any] | None,
    ) -> None:
        compiled = compile_fn(source)
        if isinstance(compiled, tuple):
            message = str(compiled[1])
            raise LuaValidationError(message, self._line_of(message))
        self._validating("the script's top level", compiled)
        if not self._defines("on_task"):
            raise LuaValidationError("the script does not define the function on_task(task, ctx)")
        if self._defines("init"):
            initial = self._validating("init(config)", "init", self._to_lua(dict(config or {})))
            if lua54.lua_type(initial) == "table":
                self._set_state(initial)
        if previous_state is not None:
            previous = self._to_lua(dict(previous_state))
            self._set_state(previous)
            if self._defines("on_reload"):
                replaced = self._validating("on_reload(previous_state)", "on_reload", previous)
                if lua54.lua_type(replaced) == "table":
                    self._set_state(replaced)

    def _validating(self, what: str, fn: Any, *args: Any) -> Any:
        """Run a loading step; its first result. Any failure is a validation error."""
        try:
            results = self._invoke(fn, args)
            return results[0] if results else None
        except LuaLimitExceeded as exc:
            raise LuaValidationError(f"{what}: {exc}", None) from exc
        except LuaError as exc:
            raise LuaValidationError(f"{what}: {exc}", exc.line) from exc

    # -- calling ---------------------------------------------------------------------------

    def call(self, name: str, *args: Any) -> Any:
        """Call the script's global function `name` with converted arguments. Returns None for
        no result, the converted value for one, a tuple for several."""
        self._check_open()
        lua_args = tuple(self._to_lua(a) for a in args)
        results = self._invoke(name, lua_args)
        return self._from_lua_results(results)

    def on_task(self, task: Mapping[str, Any]) -> Any:
        """on_task(task, ctx) with the sandbox's persistent ctx; the converted first result."""
        # The hot path of an agent: written flat, it is a third of the sandbox's overhead.
        if self._closed:
            raise LuaError("the sandbox is closed")
        if type(task) is dict and is_flat(task, self.limits):
            lua_task = self._lua.table_from(task)
        else:
            lua_task = self._to_lua(dict(task))
        outcome = self._call_lua(self._run_task, lua_task, self._ctx)
        if outcome[0] == "flat":
            if len(outcome) > 1 and type(outcome[1]) is not int:
                it = iter(outcome)
                next(it)
                return dict(zip(it, it, strict=False))  # Lua sent k, v pairs
            return _from_flat(outcome)
        results = self._results_of(outcome)
        return self._from_lua_results(results[:1])

    def pattern_cost(
        self, pattern: str, subject_bytes: int, function: str = "find"
    ) -> tuple[float, float]:
        """The pattern guard's worst-case estimates, in matcher steps, for
        string.<function>(s, pattern) on a subject of `subject_bytes` bytes: of the whole call
        made as one C call, and of one attempt (the pattern tried at one position). Within
        limits.max_pattern_cost the call is one C call; over it, an unanchored call whose
        attempt fits runs as a loop of attempts, and any other is refused. For diagnostics."""
        self._check_open()
        if function not in ("find", "match", "gmatch", "gsub"):
            raise ValueError(f"not a pattern function: {function!r}")
        call, attempt = self._pattern_cost(function, pattern, subject_bytes)
        return float(call), float(attempt)

    def pattern_plan(self, pattern: str, subject: str, function: str = "find") -> str:
        """How string.<function>(subject, pattern) would run: "call" (one C call), "loop" (a
        loop of anchored attempts the budget can stop) or "refused". For diagnostics."""
        self._check_open()
        if function not in ("find", "match", "gmatch", "gsub"):
            raise ValueError(f"not a pattern function: {function!r}")
        return str(self._pattern_plan(function, pattern, subject))

    @property
    def state(self) -> dict[str, Any]:
        """A Python copy of ctx.state (what a reload carries over)."""
        self._check_open()
        try:
            value = self._get_state()
        except lua54.LuaError as exc:
            raise LuaBehaviorError(f"sandbox error: {exc}") from exc
        if value is None:
            return {}
        if lua54.lua_type(value) != "table":
            raise LuaBehaviorError(
                f"ctx.state is a {lua54.lua_type(value) or 'scalar'}, not a table"
            )
        try:
            converted = lua_to_python(value, self.limits, self._ident)
        except ConversionError as exc:
            raise LuaBehaviorError(f"ctx.state cannot be converted: {exc}") from exc
        except lua54.LuaError as exc:
            raise LuaBehaviorError(f"sandbox error: {exc}") from exc
        if isinstance(converted, list):
            # A sequence as state: keep its integer keys (the next load gets the same table).
            as_map: dict[Any, Any] = {i + 1: v for i, v in enumerate(converted)}
            return as_map
        assert isinstance(converted, dict)
        return converted

    def close(self) -> None:
        """Drop the Lua state (no finalizer of the script can run: __gc is refused)."""
        self._closed = True
        for attr in (
            "_run",
            "_run_task",
            "_ident",
            "_get_state",
            "_set_state",
            "_defines",
            "_pattern_cost",
            "_pattern_plan",
            "_sethook",
            "_ctx",
            "_lua",
        ):
            self.__dict__.pop(attr, None)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LuaError("the sandbox is closed")

    def _invoke(self, fn: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Run fn (a Lua function or a global's name) under the budget; its results, or raise."""
        self._check_open()
        return self._results_of(self._call_lua(self._run, fn, *args))

    def _call_lua(self, entry: Any, *args: Any) -> tuple[Any, ...]:
        """Call a host entry point (run / run_task) with a fresh deadline; its raw outcome."""
        try:
            outcome: Any = entry(time.monotonic() + self._timeout_s, *args)
        except lua54.LuaMemoryError as exc:
            self._disarm()
            raise LuaLimitExceeded("memory") from exc
        except lua54.LuaError as exc:  # an error in the host's own frames (e.g. out of memory)
            self._disarm()
            raise LuaBehaviorError(f"sandbox error: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise LuaBehaviorError("the script returned a string that is not valid UTF-8") from exc
        if type(outcome) is not tuple:
            return (outcome,)
        return outcome

    def _disarm(self) -> None:
        """Clear the hook after an error escaped the host's entry point (it then could not)."""
        with contextlib.suppress(lua54.LuaError):
            self._sethook()

    def _results_of(self, outcome: tuple[Any, ...]) -> tuple[Any, ...]:
        """The results of an "ok" outcome; raise the error of any other."""
        status = outcome[0]
        if status == "ok":
            return tuple(outcome[1:])
        if status == "limit":
            raise LuaLimitExceeded(_LIMIT_KINDS.get(str(outcome[1]), "instructions"))
        if status == "missing":
            raise LuaBehaviorError(f"the script does not define the function {outcome[1]}")
        message = str(outcome[1])
        line = outcome[2] if len(outcome) > 2 and isinstance(outcome[2], int) else None
        raise LuaBehaviorError(message, self._line_of(message) or line)

    def _to_lua(self, value: Any) -> Any:
        try:
            return python_to_lua(self._lua, value, self.limits)
        except ConversionError as exc:
            raise LuaBehaviorError(f"argument cannot be converted: {exc}") from exc
        except lua54.LuaMemoryError as exc:
            raise LuaLimitExceeded("memory") from exc

    def _from_lua_results(self, results: tuple[Any, ...]) -> Any:
        try:
            converted = [lua_to_python(r, self.limits, self._ident) for r in results]
        except ConversionError as exc:
            raise LuaBehaviorError(f"result cannot be converted: {exc}") from exc
        except lua54.LuaError as exc:
            raise LuaBehaviorError(f"sandbox error: {exc}") from exc
        if not converted:
            return None
        if len(converted) == 1:
            return converted[0]
        return tuple(converted)

    def _line_of(self, message: str) -> int | None:
        match = re.match(re.escape(self.chunk_name) + r":(\d+):", message)
        return int(match.group(1)) if match else None


def _from_flat(flat: tuple[Any, ...]) -> Any:
    """A flat table sent as "flat", k1, v1, k2, v2, ...: a list when the keys are exactly 1..n."""
    it = iter(flat)
    next(it)
    pairs = dict(zip(it, it, strict=True))
    if len(flat) > 1 and type(flat[1]) is int and all(type(k) is int for k in pairs):
        n = len(pairs)
        if min(pairs) == 1 and max(pairs) == n:
            return [pairs[i] for i in range(1, n + 1)]
    return pairs
