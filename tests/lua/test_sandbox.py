"""The behavior contract of ARCHITECTURE.md: on_task(task, ctx), init(config),
on_reload(previous_state), ctx.state across calls and reloads, host functions log/json/now."""

from __future__ import annotations

import dataclasses
import hashlib
import time

import pytest

import agent_registry.lua as lua_api
from agent_registry.lua import (
    Limits,
    LuaBehaviorError,
    LuaError,
    LuaLimitExceeded,
    LuaValidationError,
    Sandbox,
)

pytestmark = pytest.mark.timeout(30, method="thread")

COUNTER = """
function on_task(task, ctx)
  ctx.state.count = (ctx.state.count or 0) + 1
  return {count = ctx.state.count, id = task.id}
end
"""


def test_all_is_complete() -> None:
    public = {
        n
        for n in dir(lua_api)
        if (not n.startswith("_") and n[0].isupper()) or n == "validate_script"
    }
    assert public <= set(lua_api.__all__)
    for name in lua_api.__all__:
        assert hasattr(lua_api, name)


def test_error_hierarchy() -> None:
    for cls in (LuaValidationError, LuaBehaviorError, LuaLimitExceeded):
        assert issubclass(cls, LuaError)
    exc = LuaLimitExceeded("timeout")
    assert exc.kind == "timeout"
    assert exc.line is None
    assert str(LuaBehaviorError("boom", 3)) == "boom"
    assert LuaValidationError("bad", 7).line == 7


def test_limits_defaults_and_validation() -> None:
    limits = Limits()
    assert limits.max_instructions > 0
    assert limits.max_memory_bytes > 0
    assert limits.timeout_ms > 0
    assert dataclasses.replace(limits, timeout_ms=5).timeout_ms == 5
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            Limits(max_instructions=bad)  # type: ignore[arg-type]


def test_state_persists_across_calls() -> None:
    sandbox = Sandbox(COUNTER)
    assert [sandbox.on_task({"id": i})["count"] for i in range(3)] == [1, 2, 3]
    assert sandbox.state == {"count": 3}
    copy = sandbox.state
    copy["count"] = 100
    assert sandbox.state == {"count": 3}, "state is a copy"
    sandbox.close()


def test_sha256() -> None:
    assert Sandbox(COUNTER).sha256 == hashlib.sha256(COUNTER.encode()).hexdigest()


def test_init_receives_config_and_may_return_the_initial_state() -> None:
    script = """
    function init(config) return {count = config.start, name = config.name} end
    function on_task(task, ctx) ctx.state.count = ctx.state.count + 1 return ctx.state end
    """
    sandbox = Sandbox(script, config={"start": 10, "name": "a"})
    assert sandbox.on_task({}) == {"count": 11, "name": "a"}


def test_reload_carries_state_without_on_reload() -> None:
    first = Sandbox(COUNTER)
    first.on_task({"id": 1})
    first.on_task({"id": 2})
    second = Sandbox(COUNTER, previous_state=first.state)
    first.close()
    assert second.on_task({"id": 3})["count"] == 3


def test_on_reload_may_replace_the_state() -> None:
    script = (
        COUNTER
        + """
    function on_reload(previous)
      return {count = previous.count * 10, migrated = true}
    end
    """
    )
    second = Sandbox(script, previous_state={"count": 2})
    assert second.on_task({"id": 1}) == {"count": 21, "id": 1}
    assert second.state == {"count": 21, "migrated": True}


def test_on_reload_returning_nothing_keeps_previous_state() -> None:
    script = COUNTER + "\nfunction on_reload(previous) previous.seen = true end\n"
    sandbox = Sandbox(script, previous_state={"count": 5})
    assert sandbox.on_task({})["count"] == 6
    assert sandbox.state == {"count": 6, "seen": True}


def test_on_reload_not_called_on_first_load() -> None:
    script = COUNTER + "\nfunction on_reload(previous) error('must not run') end\n"
    assert Sandbox(script).on_task({})["count"] == 1


def test_on_reload_failure_is_a_validation_error_with_line() -> None:
    script = COUNTER + "\nfunction on_reload(previous)\n  error('cannot migrate')\nend\n"
    with pytest.raises(LuaValidationError, match="on_reload") as info:
        Sandbox(script, previous_state={"count": 1})
    assert info.value.line == script.splitlines().index("  error('cannot migrate')") + 1


def test_state_must_be_convertible() -> None:
    sandbox = Sandbox("function on_task(task, ctx) ctx.state.f = function() end end")
    sandbox.on_task({})
    with pytest.raises(LuaBehaviorError, match=r"ctx\.state"):
        _ = sandbox.state
    replaced = Sandbox("function on_task(task, ctx) ctx.state = 42 end")
    replaced.on_task({})
    with pytest.raises(LuaBehaviorError, match="not a table"):
        _ = replaced.state


def test_runtime_error_has_message_and_line() -> None:
    sandbox = Sandbox(
        "function on_task(task, ctx)\n\n  return task.a.b\nend\n", chunk_name="my-behavior"
    )
    with pytest.raises(LuaBehaviorError) as info:
        sandbox.on_task({})
    assert info.value.line == 3
    assert str(info.value).startswith("my-behavior:3:")


def test_call_missing_function() -> None:
    sandbox = Sandbox(COUNTER)
    with pytest.raises(LuaBehaviorError, match="does not define the function nope"):
        sandbox.call("nope")


def test_limit_kinds() -> None:
    sandbox = Sandbox(
        """
        function on_task(task, ctx)
          if task.kind == "spin" then while true do end end
          if task.kind == "wait" then local t = now() while now() - t < 5 do end end
          if task.kind == "hog" then local t = {} while true do t[#t + 1] = {} end end
          return {ok = true}
        end
        """,
        Limits(max_instructions=2_000_000, timeout_ms=100, max_memory_bytes=2 * 1024 * 1024),
    )
    kinds = []
    for kind in ("spin", "hog"):
        with pytest.raises(LuaLimitExceeded) as info:
            sandbox.on_task({"kind": kind})
        kinds.append(info.value.kind)
    assert kinds == ["instructions", "memory"]
    slow = Sandbox(
        "function on_task() local t = now() while now() - t < 5 do end end",
        Limits(max_instructions=10**12, timeout_ms=100),
    )
    with pytest.raises(LuaLimitExceeded) as info:
        slow.on_task({})
    assert info.value.kind == "timeout"
    assert sandbox.on_task({"kind": "fine"}) == {"ok": True}


def test_log_goes_to_the_sink() -> None:
    lines: list[str] = []
    sandbox = Sandbox(
        'log("loaded", 1, true, nil)\nfunction on_task(task, ctx) log("task", task.id, {}) end',
        log=lines.append,
    )
    sandbox.on_task({"id": "t1"})
    assert lines[0] == "loaded 1 true nil"
    assert lines[1].startswith("task t1 table: ")


def test_log_truncates_and_survives_a_broken_sink() -> None:
    lines: list[str] = []
    Sandbox('log(("x"):rep(100000))\nfunction on_task() end', log=lines.append)
    assert 4000 < len(lines[0]) < 5000

    def broken(_: str) -> None:
        raise RuntimeError("sink down")

    sandbox = Sandbox('function on_task() log("x") return 1 end', log=broken)
    assert sandbox.on_task({}) == 1


def test_default_log_uses_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="agent_registry.lua")
    Sandbox('log("hello from lua")\nfunction on_task() end')
    assert "hello from lua" in caplog.text


def test_json_round_trip() -> None:
    sandbox = Sandbox(
        """
        function on_task(task, ctx)
          local text = json.encode({name = task.name, list = {1, 2, 3}, nested = {ok = true}})
          local back = json.decode(text)
          return {text = text, back = back, scalar = json.decode("3.5"), null = json.decode("null")}
        end
        """
    )
    result = sandbox.on_task({"name": "ä"})
    assert result["back"] == {"name": "ä", "list": [1, 2, 3], "nested": {"ok": True}}
    assert result["scalar"] == 3.5
    assert "null" not in result


def test_now_is_wall_clock_seconds() -> None:
    sandbox = Sandbox("function on_task() return now() end")
    assert abs(sandbox.on_task({}) - time.time()) < 60


def test_closed_sandbox_refuses_calls() -> None:
    sandbox = Sandbox(COUNTER)
    sandbox.close()
    sandbox.close()
    for action in (
        lambda: sandbox.on_task({}),
        lambda: sandbox.call("on_task"),
        lambda: sandbox.state,
    ):
        with pytest.raises(LuaError, match="closed"):
            action()


def test_context_manager() -> None:
    with Sandbox(COUNTER) as sandbox:
        assert sandbox.on_task({})["count"] == 1
    with pytest.raises(LuaError):
        sandbox.on_task({})


def test_small_memory_ceiling_still_loads() -> None:
    """The ceiling counts what the script allocates, not the sandbox's own environment: the CRD's
    minimum (64 KiB) must still run a small behavior."""
    sandbox = Sandbox(COUNTER, Limits(max_memory_bytes=64 * 1024))
    assert sandbox.on_task({"id": 1})["count"] == 1


def test_unconvertible_config_or_state_is_a_validation_error() -> None:
    with pytest.raises(LuaValidationError, match="cannot be converted"):
        Sandbox("function init(c) end\nfunction on_task() end", config={"x": object()})
    with pytest.raises(LuaValidationError, match="cannot be converted"):
        Sandbox("function on_task() end", previous_state={"x": {1, 2}})


def test_log_lines_are_capped_per_call() -> None:
    lines: list[str] = []
    sandbox = Sandbox(
        "function on_task(task) for i = 1, task.n do log('line', i) end end",
        Limits(max_log_lines=5),
        log=lines.append,
    )
    sandbox.on_task({"n": 1000})
    assert lines == [f"line {i}" for i in range(1, 6)] + [
        "(further log lines of this call dropped: more than 5)"
    ]
    lines.clear()
    sandbox.on_task({"n": 2})
    assert lines == ["line 1", "line 2"], "the cap is per call"
