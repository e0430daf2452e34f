"""Every hostile script of the corpus is refused or contained, and afterwards the same sandbox
(unless the case says otherwise), an older sandbox and a new one all still work.

"Within a few seconds" is enforced by the per-test timeout, not asserted: a containment that
breaks hangs the test until pytest-timeout fails it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_registry.lua import (
    Limits,
    LuaBehaviorError,
    LuaError,
    LuaLimitExceeded,
    LuaValidationError,
    Sandbox,
)

from .corpus import CORPUS, Case

# "thread": a containment that breaks hangs inside Lua (C code), where the signal method never
# gets control back; the thread method dumps the stacks and ends the session instead.
pytestmark = pytest.mark.timeout(30, method="thread")

PING_ONLY = 'function ping() return "pong" end\n'

BYSTANDER = """
function on_task(task, ctx)
  ctx.state.calls = (ctx.state.calls or 0) + 1
  return {echo = task.id, upper = ("ok"):upper(), rep = ("ab"):rep(2), calls = ctx.state.calls}
end
"""
TASK = {"id": "t-1", "kind": "simulated", "difficulty": 0.5}


@pytest.fixture
def bystander() -> Iterator[Sandbox]:
    """A sandbox loaded before the hostile one, in the same process."""
    sandbox = Sandbox(BYSTANDER)
    yield sandbox
    sandbox.close()


def outcome_of(case: Case) -> tuple[str, Any, Sandbox | None]:
    try:
        sandbox = Sandbox(case.script, case.limits, log=lambda _: None)
    except LuaValidationError as exc:
        return "invalid", str(exc), None
    try:
        return "ok", sandbox.on_task(dict(TASK)), sandbox
    except LuaLimitExceeded as exc:
        return exc.kind, str(exc), sandbox
    except LuaBehaviorError as exc:
        return "error", str(exc), sandbox


def assert_still_works(bystander: Sandbox) -> None:
    before = bystander.state.get("calls", 0)
    assert bystander.on_task(dict(TASK)) == {
        "echo": "t-1",
        "upper": "OK",
        "rep": "abab",
        "calls": before + 1,
    }
    fresh = Sandbox(BYSTANDER)
    try:
        assert fresh.on_task(dict(TASK))["upper"] == "OK"
    finally:
        fresh.close()


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_script_is_contained(case: Case, bystander: Sandbox) -> None:
    kind, detail, sandbox = outcome_of(case)
    try:
        assert kind == case.expect, detail
        if case.expect == "ok":
            assert detail == case.result
        if case.message is not None:
            assert case.message in str(detail)
        if sandbox is not None and case.usable_after:
            assert sandbox.call("ping") == "pong"
    finally:
        if sandbox is not None:
            sandbox.close()
    assert_still_works(bystander)


def test_corpus_names_are_unique() -> None:
    names = [c.name for c in CORPUS]
    assert len(names) == len(set(names))


def test_tampering_does_not_reach_the_next_load() -> None:
    """A reload is a fresh Lua state: the string library, the string metatable's methods and the
    globals a script changed are back to normal for the next script."""
    tamper = """
    string.upper = function() return "pwned" end
    rawset(string, "rep", function() return "pwned" end)
    math.floor = nil
    shared = "leak"
    function on_task(task, ctx) return {("x"):upper(), ("x"):rep(2), shared ~= nil} end
    """
    first = Sandbox(tamper)
    assert first.on_task({}) == ["pwned", "pwned", True]
    second = Sandbox(
        'function on_task(task, ctx) return {("x"):upper(), ("x"):rep(2), shared ~= nil,'
        " math.floor(1.5)} end",
        previous_state=first.state,
    )
    assert second.on_task({}) == ["X", "xx", False, 1]
    first.close()
    second.close()


def test_limit_stop_is_per_call() -> None:
    """After a call ran out of budget, the next call gets a whole budget again (the hook was
    disarmed and re-armed), in the main thread and in a coroutine left over from before."""
    script = """
    local co = coroutine.wrap(function() while true do coroutine.yield(1) end end)
    function on_task(task, ctx)
      if task.spin then while true do end end
      local s = 0
      for i = 1, 100000 do s = s + co() end
      return s
    end
    """
    sandbox = Sandbox(script, Limits(max_instructions=2_000_000))
    for _ in range(3):
        with pytest.raises(LuaLimitExceeded) as info:
            sandbox.on_task({"spin": True})
        assert info.value.kind == "instructions"
        assert sandbox.on_task({}) == 100000
    sandbox.close()


def test_close_runs_no_script_code() -> None:
    """Closing a sandbox (lua_close) runs no finalizer of the script: it cannot mark one."""
    sandbox = Sandbox(
        "local mt = {}\nkeep = setmetatable({}, mt)\nmt.__gc = function() while true do end end\n"
        "function on_task() end"
    )
    sandbox.close()
    with pytest.raises(LuaError):
        sandbox.on_task({})


def test_sandboxes_in_parallel_threads() -> None:
    """A looping sandbox in one thread neither blocks nor disturbs one in another thread."""
    import threading

    looping = Sandbox(
        "function on_task() while true do end end", Limits(max_instructions=10**12, timeout_ms=1500)
    )
    busy_result: list[str] = []

    def spin() -> None:
        try:
            looping.on_task({})
        except LuaLimitExceeded as exc:
            busy_result.append(exc.kind)

    thread = threading.Thread(target=spin)
    thread.start()
    worker = Sandbox(BYSTANDER)
    results = [worker.on_task(dict(TASK))["calls"] for _ in range(200)]
    thread.join()
    assert results == list(range(1, 201))
    assert busy_result == ["timeout"]
    looping.close()
    worker.close()


def test_coroutine_stopped_by_a_limit_is_never_closed_unhooked() -> None:
    """An error raised by the hook leaves the coroutine it killed with hooks off; closing it
    later (or coroutine.wrap closing it) would run its looping __close with no hook at all."""
    script = """
    local function body()
      local guard <close> = setmetatable({}, {__close = function() while true do end end})
      while true do end
    end
    function on_task() end
    function spin_create() co = coroutine.create(body) return coroutine.resume(co) end
    function spin_wrap() return pcall(coroutine.wrap(body)) end
    function close_later() return coroutine.close(co), coroutine.status(co) end
    function suspended_close()
      local c = coroutine.create(function()
        local g <close> = setmetatable({}, {__close = function() closed = true end})
        coroutine.yield()
      end)
      coroutine.resume(c)
      return coroutine.close(c), closed
    end
    """
    sandbox = Sandbox(script, Limits(max_instructions=1_000_000))
    for name in ("spin_create", "spin_wrap"):
        with pytest.raises(LuaLimitExceeded):
            sandbox.call(name)
    assert sandbox.call("close_later") == (True, "dead")
    assert sandbox.call("suspended_close") == (True, True)
    sandbox.close()


@pytest.mark.parametrize(
    "body",
    [
        # Lua stack overflow: near the limit, calling the hook itself may overflow.
        "local function f() f() end\nreturn xpcall(f, function() while true do end end)",
        # C stack overflow (LUAI_MAXCCALLS): likewise, in the hook call or in the script.
        "local function f() return pcall(f) end\n"
        "return xpcall(function() return f() end, function() while true do end end)",
        "local function f() return tostring(setmetatable({}, {__tostring = f})) end\n"
        "return xpcall(f, function() while true do end end)",
        # The same with an error object whose __tostring loops (read by the host's handler).
        "local function f() f() end\n"
        "local e = setmetatable({}, {__tostring = function() while true do end end})\n"
        "return xpcall(f, function() error(e) end)",
    ],
    ids=["lua-stack", "c-stack-pcall", "c-stack-tostring", "error-object"],
)
def test_overflow_inside_the_hook_runs_no_handler_unhooked(body: str) -> None:
    """An error raised while the hook is being called (stack or C stack overflow) leaves hooks
    off until the error reaches a pcall: the script's message handler must not run then (it
    would loop with no hook), and neither may the __tostring of its error object. Whether the
    overflow hits in the hook or in the script varies, so either outcome is accepted; what
    matters is that the call ends."""
    sandbox = Sandbox(
        PING_ONLY + "function on_task()\n" + body + "\nend\n",
        Limits(max_memory_bytes=256 * 1024 * 1024, max_instructions=10**8, timeout_ms=3000),
    )
    outcome: object
    try:
        outcome = sandbox.on_task({})  # xpcall's status, whichever way it went
    except LuaLimitExceeded as exc:
        outcome = exc.kind
    except LuaBehaviorError:
        outcome = "error"
    assert outcome in (True, False, "instructions", "timeout", "error")
    assert sandbox.call("ping") == "pong"
    sandbox.close()


def test_memory_exhausted_for_good_only_raises_sandbox_errors() -> None:
    """A script that keeps the memory it exhausted makes the host's own allocations fail too
    (flattening its result, reading its state): every failure is still one of our LuaErrors,
    never lupa's, and the hook is cleared so small calls keep working."""
    sandbox = Sandbox(
        PING_ONLY
        + """
        function on_task(task, ctx)
          hoard = hoard or {}
          pcall(function() while true do hoard[#hoard + 1] = {} end end)
          local r = {}
          for i = 1, 50 do r["k" .. i] = i end
          return r
        end
        """,
        Limits(max_memory_bytes=2 * 1024 * 1024),
    )
    for _ in range(3):
        with pytest.raises(LuaError):
            sandbox.on_task({})
        assert isinstance(sandbox.state, dict)
        assert sandbox.call("ping") == "pong"
    sandbox.close()
