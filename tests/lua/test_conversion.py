"""Python <-> Lua conversion through Sandbox.call: nested values, bounds, cycles, types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_registry.lua import Limits, LuaBehaviorError, Sandbox

pytestmark = pytest.mark.timeout(30, method="thread")

SCRIPT = """
function on_task(task, ctx) return task end
function echo(...) return ... end
function describe(v)
  if type(v) ~= "table" then return type(v) end
  local keys = {}
  for k, item in pairs(v) do
    keys[#keys + 1] = type(k) .. ":" .. tostring(k) .. "=" .. describe(item)
  end
  table.sort(keys)
  return "{" .. table.concat(keys, ",") .. "}"
end
function make_cycle() local t = {a = {}} t.a.back = t return t end
function make_deep(n)
  local t = {} local cur = t
  for i = 1, n do cur.next = {} cur = cur.next end
  return t
end
function make_wide(n) local t = {} for i = 1, n do t[i] = i end return t end
function make_mixed() return {1, 2, x = "y"} end
function make_sparse() return {[1] = "a", [3] = "c"} end
function make_bad_key() return {[{}] = 1} end
function make_bool_key() return {[true] = 1} end
function make_shared() local s = {v = 1} return {a = s, b = s} end
function make_float_key() return {[1.5] = "x"} end
"""


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(SCRIPT, Limits(max_depth=8, max_items=200))
    yield box
    box.close()


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**63 - 1,
        1.5,
        "",
        "héllo ✓",
        [1, 2, 3],
        {"a": 1, "b": [True, "x", {"c": 2.5}]},
        {"nested": {"list": [[1], [2, [3]]]}},
        {1: "a", 2: "b"},
    ],
)
def test_round_trip(sandbox: Sandbox, value: Any) -> None:
    expected = value
    if value == {1: "a", 2: "b"}:
        expected = ["a", "b"]  # a table with keys 1..n is a sequence
    assert sandbox.call("echo", value) == expected


def test_tuples_become_lists_and_bytes_become_strings(sandbox: Sandbox) -> None:
    assert sandbox.call("echo", (1, (2, 3))) == [1, [2, 3]]
    assert sandbox.call("echo", b"raw") == "raw"


def test_empty_containers_come_back_as_dicts(sandbox: Sandbox) -> None:
    assert sandbox.call("echo", []) == {}
    assert sandbox.call("echo", {}) == {}


def test_lua_sees_nested_tables(sandbox: Sandbox) -> None:
    assert (
        sandbox.call("describe", {"a": [1, {"b": True}]})
        == "{string:a={number:1=number,number:2={string:b=boolean}}}"
    )


def test_multiple_and_no_results(sandbox: Sandbox) -> None:
    assert sandbox.call("echo", 1, "two", [3]) == (1, "two", [3])
    assert sandbox.call("echo") is None


def test_mixed_sparse_float_and_shared_tables(sandbox: Sandbox) -> None:
    assert sandbox.call("make_mixed") == {1: 1, 2: 2, "x": "y"}
    assert sandbox.call("make_sparse") == {1: "a", 3: "c"}
    assert sandbox.call("make_float_key") == {1.5: "x"}
    assert sandbox.call("make_shared") == {"a": {"v": 1}, "b": {"v": 1}}


def test_python_cycles_refused(sandbox: Sandbox) -> None:
    cyclic: dict[str, Any] = {"a": []}
    cyclic["a"].append(cyclic)
    with pytest.raises(LuaBehaviorError, match="cyclic"):
        sandbox.call("echo", cyclic)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(LuaBehaviorError, match="cyclic"):
        sandbox.on_task({"self": looped})


def test_lua_cycles_refused(sandbox: Sandbox) -> None:
    with pytest.raises(LuaBehaviorError, match="cyclic"):
        sandbox.call("make_cycle")


def test_depth_bound_both_ways(sandbox: Sandbox) -> None:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(20):
        cursor["next"] = {}
        cursor = cursor["next"]
    with pytest.raises(LuaBehaviorError, match="nested deeper than 8"):
        sandbox.call("echo", deep)
    with pytest.raises(LuaBehaviorError, match="nested deeper than 8"):
        sandbox.call("make_deep", 20)
    assert sandbox.call("make_deep", 3) == {"next": {"next": {"next": {}}}}


def test_size_bound_both_ways(sandbox: Sandbox) -> None:
    with pytest.raises(LuaBehaviorError, match="more than 200 values"):
        sandbox.call("echo", list(range(500)))
    with pytest.raises(LuaBehaviorError, match="more than 200 values"):
        sandbox.on_task({f"k{i}": i for i in range(500)})
    with pytest.raises(LuaBehaviorError, match="more than 200 values"):
        sandbox.call("make_wide", 500)
    assert sandbox.call("make_wide", 50) == list(range(1, 51))


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, 2**64, {None: 1}, {(1, 2): 3}, {True: 1}, print, Exception("x")],
    ids=["object", "set", "bigint", "none-key", "tuple-key", "bool-key", "function", "exception"],
)
def test_unsupported_python_values_refused(sandbox: Sandbox, value: Any) -> None:
    """Nothing but JSON-like data crosses: a Python object in Lua would be a handle on the host."""
    with pytest.raises(LuaBehaviorError, match="cannot be converted"):
        sandbox.call("echo", value)
    with pytest.raises(LuaBehaviorError, match="cannot be converted"):
        sandbox.on_task({"v": value})


@pytest.mark.parametrize("fn", ["make_bad_key", "make_bool_key"])
def test_unsupported_lua_keys_refused(sandbox: Sandbox, fn: str) -> None:
    with pytest.raises(LuaBehaviorError, match="keys must be strings or numbers"):
        sandbox.call(fn)


def test_on_task_flat_results(sandbox: Sandbox) -> None:
    """The fast path (flat tables in one call) gives what the general conversion gives."""
    assert sandbox.on_task({"accept": True, "effort": 0.5}) == {"accept": True, "effort": 0.5}
    assert sandbox.on_task({"a": "x", "n": 3}) == {"a": "x", "n": 3}
    assert sandbox.on_task({}) == {}
    # Integer keys leave the fast path: on_task is annotated for str keys (a task is JSON-like),
    # but converts any Lua key, and these check that it does.
    sequence: dict[Any, str] = {1: "a", 2: "b"}
    sparse: dict[Any, str] = {1: "a", 3: "c"}
    assert sandbox.on_task(sequence) == ["a", "b"]
    assert sandbox.on_task(sparse) == {1: "a", 3: "c"}
    assert sandbox.on_task({"nested": {"x": 1}}) == {"nested": {"x": 1}}
