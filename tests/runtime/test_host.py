"""BehaviorHost with the real sandbox: hot reload under load, last-good fallback, state
carried across reloads, failing tasks contained."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from agent_registry.lua import LuaBehaviorError, LuaLimitExceeded
from agent_registry.reports import LoadedBehavior, LoadFailure
from agent_registry.runtime.bundle import BehaviorBundle, parse_bundle
from agent_registry.runtime.directory_source import DirectorySource
from agent_registry.runtime.host import BehaviorHost, NoBehaviorLoaded
from agent_registry.runtime.kubelet_volume import write_configmap_volume
from runtime.waiting import wait_until_sync


def versioned(n: int) -> str:
    """Script N returns N from two places that must agree (a top-level upvalue and a
    function defined at the end of the chunk), and counts calls in ctx.state."""
    return f"""
local N = {n}
function on_task(task, ctx)
  ctx.state.calls = (ctx.state.calls or 0) + 1
  return {{a = N, b = second_opinion(), calls = ctx.state.calls}}
end
function second_opinion() return {n} end
"""


def bundle(script: str, revision: int | None = None, **limits: int) -> BehaviorBundle:
    meta: dict[str, Any] = {"name": "b", "namespace": "ns"}
    if revision is not None:
        meta["revision"] = revision
    if limits:
        names = {"max_instructions": "maxInstructions", "timeout_ms": "timeoutMs"}
        meta["limits"] = {names[k]: v for k, v in limits.items()}
    return parse_bundle({"behavior.lua": script, "behavior.json": json.dumps(meta)})


def test_reload_under_load_every_call_sees_a_whole_script(tmp_path: Path) -> None:
    write_configmap_volume(tmp_path, {"behavior.lua": versioned(0)})
    host = BehaviorHost()
    source = DirectorySource(tmp_path, poll_interval=0.05)
    source.start(host.load)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                results.append(host.on_task({"id": len(results)}))
            except BaseException as exc:  # any failure is a test failure
                errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for n in range(1, 101):
            write_configmap_volume(tmp_path, {"behavior.lua": versioned(n)})
            expected = parse_bundle({"behavior.lua": versioned(n)}).sha256
            wait_until_sync(lambda sha=expected: host.loaded and host.loaded.sha256 == sha)  # type: ignore[misc]
            calls_before = len(results)
            wait_until_sync(lambda c=calls_before: len(results) > c)  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
        source.stop()
    assert errors == []
    assert host.loads == 101
    assert len(results) > 200
    versions = [r["a"] for r in results]
    assert all(r["a"] == r["b"] for r in results), "a call mixed two scripts"
    assert versions == sorted(versions), "an older script ran after a newer one"
    assert set(range(1, 101)) <= set(versions), "every version served calls"
    # ctx.state carried across all 100 reloads without losing a single call.
    assert [r["calls"] for r in results] == list(range(1, len(results) + 1))


def test_last_good_script_keeps_running_when_a_new_one_fails() -> None:
    host = BehaviorHost()
    events: list[object] = []
    host.subscribe(events.append)
    first = host.load(bundle(versioned(1), revision=1))
    assert isinstance(first, LoadedBehavior)
    assert first.revision == 1

    broken = bundle("function on_task(task, ctx)\n  return (\nend\n", revision=2)
    failure = host.load(broken)
    assert isinstance(failure, LoadFailure)
    assert failure.sha256 == broken.sha256
    assert failure.line is not None
    assert failure.error
    assert host.loaded == first  # still the old one
    assert host.load_failure == failure
    assert host.on_task({})["a"] == 1
    assert host.load(broken) is None  # the same broken script is not retried

    third = host.load(bundle(versioned(3), revision=3))
    assert isinstance(third, LoadedBehavior)
    assert host.load_failure is None
    assert host.on_task({})["a"] == 3
    assert events == [first, failure, third]


@pytest.mark.parametrize(
    "script",
    [
        "this is not lua",
        "function helper() end",  # no on_task
        "function init(config) error('init refuses') end\nfunction on_task() end",
        "function on_reload(prev) error('cannot migrate') end\nfunction on_task() end",
        "while true do end\nfunction on_task() end",  # top level never finishes
    ],
)
def test_refused_scripts_leave_the_agent_working(script: str) -> None:
    host = BehaviorHost()
    host.load(bundle(versioned(1), max_instructions=100_000, timeout_ms=500))
    result = host.load(bundle(script, max_instructions=100_000, timeout_ms=500))
    assert isinstance(result, LoadFailure)
    assert host.on_task({})["a"] == 1


def test_state_is_carried_across_a_reload_and_on_reload_can_migrate_it() -> None:
    host = BehaviorHost()
    host.load(
        bundle("function on_task(task, ctx) ctx.state.count = (ctx.state.count or 0) + 1 end")
    )
    for _ in range(3):
        host.on_task({})
    assert host.state["count"] == 3

    # No on_reload: the previous state becomes ctx.state as it is.
    host.load(bundle("function on_task(task, ctx) return ctx.state.count end"))
    assert host.on_task({}) == 3

    # on_reload returns the new state.
    host.load(
        bundle(
            "function on_reload(prev) return {total = prev.count * 10, migrated = true} end\n"
            "function on_task(task, ctx) return ctx.state end"
        )
    )
    assert host.on_task({}) == {"total": 30, "migrated": True}


def test_failing_tasks_raise_and_the_agent_keeps_working() -> None:
    host = BehaviorHost()
    host.load(
        bundle(
            "function on_task(task, ctx)\n"
            "  if task.kind == 'boom' then error('bad task') end\n"
            "  if task.kind == 'spin' then while true do end end\n"
            "  return 'ok'\n"
            "end",
            max_instructions=100_000,
            timeout_ms=500,
        )
    )
    with pytest.raises(LuaBehaviorError):
        host.on_task({"kind": "boom"})
    with pytest.raises(LuaLimitExceeded):
        host.on_task({"kind": "spin"})
    assert host.on_task({"kind": "fine"}) == "ok"
    assert host.calls == 3
    assert host.calls_failed == 2


def test_limits_from_behavior_json_apply() -> None:
    spin = "function on_task() local i = 0 while i < 1000000 do i = i + 1 end return i end"
    host = BehaviorHost()
    host.load(bundle(spin, max_instructions=10_000_000, timeout_ms=5000))
    assert host.on_task({}) == 1_000_000
    host.load(bundle(spin, max_instructions=1_000, timeout_ms=5000))  # same script, new limits
    with pytest.raises(LuaLimitExceeded):
        host.on_task({})


def test_no_script_yet() -> None:
    with pytest.raises(NoBehaviorLoaded):
        BehaviorHost().on_task({})


def test_same_script_again_is_not_a_reload() -> None:
    host = BehaviorHost()
    assert host.load(bundle(versioned(1))) is not None
    assert host.load(bundle(versioned(1))) is None
    assert host.loads == 1


def test_an_unexpected_error_while_loading_keeps_the_last_good_script() -> None:
    from agent_registry.lua import Sandbox

    def factory(source: str, *args: Any, **kwargs: Any) -> Any:
        if "explode" in source:
            raise MemoryError("host ran out")
        return Sandbox(source, *args, **kwargs)

    host = BehaviorHost(sandbox_factory=factory)
    host.load(bundle(versioned(1)))
    failure = host.load(bundle("-- explode\nfunction on_task() end"))
    assert isinstance(failure, LoadFailure)
    assert "MemoryError" in failure.error
    assert host.on_task({})["a"] == 1


def test_same_script_under_a_new_revision_is_relabelled_not_reloaded() -> None:
    host = BehaviorHost()
    events: list[object] = []
    host.subscribe(events.append)
    first = host.load(bundle(versioned(1), revision=1))
    host.on_task({})
    relabelled = host.load(bundle(versioned(1), revision=5))
    assert isinstance(first, LoadedBehavior)
    assert isinstance(relabelled, LoadedBehavior)
    assert relabelled.revision == 5
    assert relabelled.loaded_at == first.loaded_at
    assert host.loads == 1
    assert host.on_task({})["calls"] == 2  # same sandbox, state untouched
    assert events == [first, relabelled]


def test_a_script_that_timed_out_while_loading_is_retried() -> None:
    """A wall-clock timeout depends on how busy the machine is: the host retries it by itself.
    The busy machine is played by the factory (a real timeout cannot be provoked on demand)."""
    from agent_registry.lua import LuaValidationError, Sandbox
    from agent_registry.runtime.backoff import Backoff

    attempts = {"slow": 0}

    def factory(source: str, *args: Any, **kwargs: Any) -> Any:
        if "slow" in source:
            attempts["slow"] += 1
            if attempts["slow"] <= 2:
                try:
                    raise LuaLimitExceeded("timeout")
                except LuaLimitExceeded as exc:
                    raise LuaValidationError(f"init(config): {exc}") from exc
        return Sandbox(source, *args, **kwargs)

    host = BehaviorHost(sandbox_factory=factory, timeout_retry=Backoff(base=0.02, cap=0.05))
    events: list[object] = []
    host.subscribe(events.append)
    host.load(bundle(versioned(1)))
    slow = bundle("-- slow\n" + versioned(2))
    assert isinstance(host.load(slow), LoadFailure)
    wait_until_sync(lambda: host.loaded is not None and host.loaded.sha256 == slow.sha256)
    assert attempts["slow"] == 3
    assert [type(e).__name__ for e in events] == [
        "LoadedBehavior",
        "LoadFailure",
        "LoadFailure",
        "LoadedBehavior",
    ]
    assert host.on_task({})["a"] == 2
    host.close()


def test_deterministic_refusals_are_not_retried() -> None:
    from agent_registry.runtime.backoff import Backoff

    host = BehaviorHost(timeout_retry=Backoff(base=0.01, cap=0.01))
    host.load(bundle(versioned(1)))
    events: list[object] = []
    host.subscribe(events.append)
    host.load(bundle("while true do end\nfunction on_task() end", max_instructions=10_000))
    threading.Event().wait(0.2)
    assert len(events) == 1  # an instruction limit is the script's own doing
    host.close()
