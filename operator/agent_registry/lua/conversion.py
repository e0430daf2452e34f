"""Python <-> Lua value conversion, bounded.

Only JSON-like values cross: None, bool, int (64-bit), float, str (bytes too, into Lua), and
dicts / lists / tuples of them. Anything else is refused: a Python object handed to Lua as
userdata would give the script a handle on the host. Both directions bound nesting depth and the
total number of values, and refuse cycles; Lua tables are read with raw iteration (lua_next), so
a script's __index / __pairs metamethods never run outside its budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lupa import lua54

from .limits import Limits

__all__ = ["ConversionError", "is_flat", "lua_to_python", "python_to_lua"]

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


class ConversionError(ValueError):
    """A value cannot cross the Python/Lua boundary (type, depth, size, cycle, encoding)."""


def is_flat(value: Any, limits: Limits) -> bool:
    """Fast path for the common task: a dict of string keys to scalars."""
    if type(value) is not dict or 1 + 2 * len(value) > limits.max_items:
        return False
    for key, item in value.items():
        if type(key) is not str:
            return False
        kind = type(item)
        if kind is str or kind is float or kind is bool or item is None:
            continue
        if kind is int and _INT_MIN <= item <= _INT_MAX:
            continue
        return False
    return True


def _check_python(value: Any, limits: Limits) -> None:
    """Validate a Python value before lupa converts it (lupa's own converter has no bounds)."""
    items = 0
    active: set[int] = set()

    def visit(v: Any, depth: int) -> None:
        nonlocal items
        items += 1
        if items > limits.max_items:
            raise ConversionError(f"more than {limits.max_items} values")
        if v is None or isinstance(v, bool | float | str | bytes):
            return
        if isinstance(v, int):
            if not _INT_MIN <= v <= _INT_MAX:
                raise ConversionError(f"integer {v} does not fit in 64 bits")
            return
        if isinstance(v, dict | list | tuple):
            if depth >= limits.max_depth:
                raise ConversionError(f"nested deeper than {limits.max_depth} levels")
            if id(v) in active:
                raise ConversionError("cyclic value")
            active.add(id(v))
            if isinstance(v, dict):
                for key, item in v.items():
                    if isinstance(key, bool) or not isinstance(key, str | int | float):
                        raise ConversionError(f"unsupported key type {type(key).__name__}")
                    visit(key, depth + 1)
                    visit(item, depth + 1)
            else:
                for item in v:
                    visit(item, depth + 1)
            active.discard(id(v))
            return
        raise ConversionError(f"unsupported type {type(v).__name__}")

    visit(value, 0)


def python_to_lua(runtime: Any, value: Any, limits: Limits) -> Any:
    """A Lua value (a Lua table for dicts and lists) for a JSON-like Python value."""
    if is_flat(value, limits):
        return runtime.table_from(value)
    _check_python(value, limits)
    if isinstance(value, dict | list | tuple):
        return runtime.table_from(value, recursive=True)
    return value


def lua_to_python(value: Any, limits: Limits, ident: Callable[[Any], str] | None = None) -> Any:
    """A Python value for a Lua value. A table whose keys are exactly 1..n becomes a list, any
    other table a dict (an empty table is an empty dict). `ident` (a Lua function returning a
    table's address) makes a cycle's error message precise; without it a cycle is refused as
    too deep."""
    items = 0

    def visit(v: Any, depth: int) -> Any:
        nonlocal items
        items += 1
        if items > limits.max_items:
            raise ConversionError(f"more than {limits.max_items} values")
        kind = lua54.lua_type(v)
        if kind is None:
            if v is None or isinstance(v, bool | int | float | str):
                return v
            if isinstance(v, bytes):  # only with a runtime without an encoding
                return v.decode("utf-8", "replace")
            raise ConversionError(f"unsupported value {type(v).__name__}")
        if kind != "table":
            raise ConversionError(f"a Lua {kind} cannot be converted")
        if depth >= limits.max_depth:
            if ident is None:
                raise ConversionError(f"nested deeper than {limits.max_depth} levels (or cyclic)")
            if _has_cycle(v, ident, limits):
                raise ConversionError("cyclic table")
            raise ConversionError(f"nested deeper than {limits.max_depth} levels")
        pairs: list[tuple[Any, Any]] = []
        try:
            for key, item in v.items():
                if lua54.lua_type(key) is not None or isinstance(key, bool) or key is None:
                    raise ConversionError("table keys must be strings or numbers")
                items += 1
                pairs.append((key, visit(item, depth + 1)))
        except UnicodeDecodeError as exc:
            raise ConversionError("string is not valid UTF-8") from exc
        if pairs and all(isinstance(k, int) for k, _ in pairs):
            keys = sorted(k for k, _ in pairs)
            if keys[0] == 1 and keys[-1] == len(keys):
                ordered = dict(pairs)
                return [ordered[i] for i in range(1, len(keys) + 1)]
        return dict(pairs)

    try:
        return visit(value, 0)
    except UnicodeDecodeError as exc:
        raise ConversionError("string is not valid UTF-8") from exc


def _has_cycle(root: Any, ident: Callable[[Any], str], limits: Limits) -> bool:
    """Whether a table reaches itself again (only asked once the depth bound was hit)."""
    on_path: set[str] = set()
    budget = limits.max_items

    def visit(t: Any) -> bool:
        nonlocal budget
        budget -= 1
        if budget < 0:
            return False
        tid = ident(t)
        if tid in on_path:
            return True
        on_path.add(tid)
        for _, item in t.items():
            if lua54.lua_type(item) == "table" and visit(item):
                return True
        on_path.discard(tid)
        return False

    try:
        return visit(root)
    except (UnicodeDecodeError, RecursionError):
        return False
