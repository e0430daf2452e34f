"""The fleet's status writer: one patch per object however often it is put, first statuses
before updates, and updates held back while the reconciler still applies ConfigMaps.

The apiserver is replaced by a recorder (what is tested is the order and the holding, not
the patch, which the e2e tests write to a real apiserver)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from agent_registry.controller.fleet import StatusSink
from agent_registry.controller.indexes import ObjectState
from agent_registry.controller.throttle import RateLimiter


def _agent(name: str, *, shown: bool) -> ObjectState:
    status = {"behavior": {"name": "b", "revision": 1}} if shown else {}
    return ObjectState("Agent", "ns", name, f"uid-{name}", 1, {}, status)


class RecordingKube:
    def __init__(self) -> None:
        self.patched: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, changes: dict[str, Any]
    ) -> None:
        self.patched.append((name, changes))


class Gate(RateLimiter):
    """A limiter that lets nobody through until the test opens it."""

    def __init__(self) -> None:
        super().__init__(0)
        self.opened = asyncio.Event()
        self.waiting = 0

    async def acquire(self) -> None:
        self.waiting += 1
        await self.opened.wait()


def _sink(*, busy: bool, writers: int = 2) -> tuple[StatusSink, RecordingKube, Gate]:
    kube = RecordingKube()
    gate = Gate()
    sink = StatusSink(cast(Any, SimpleNamespace(kube=kube)), RateLimiter(0), writers=writers)
    sink.held = gate
    sink.busy = lambda: busy
    return sink, kube, gate


async def _until(predicate: Any) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_updates_wait_while_the_reconciler_is_busy_first_statuses_do_not() -> None:
    sink, kube, gate = _sink(busy=True)
    for name in ("u1", "u2", "u3"):
        sink.put(_agent(name, shown=True), {"phase": "Active"})
    sink.put(_agent("new", shown=False), {"behavior": {"name": "b"}})
    writers = asyncio.create_task(sink.run())
    try:
        await _until(lambda: gate.waiting == 2)  # both writers hold back an update
        assert [name for name, _ in kube.patched] == ["new"]
        assert set(n for _, n in sink.pending) == {"u1", "u2", "u3"}
        assert not sink.idle()
        gate.opened.set()
        await _until(sink.idle)
        assert sorted(name for name, _ in kube.patched) == ["new", "u1", "u2", "u3"]
    finally:
        writers.cancel()


async def test_updates_are_not_held_when_the_reconciler_is_idle() -> None:
    sink, kube, gate = _sink(busy=False)
    for name in ("u1", "u2"):
        sink.put(_agent(name, shown=True), {"phase": "Active"})
    writers = asyncio.create_task(sink.run())
    try:
        await _until(sink.idle)
        await _until(lambda: len(kube.patched) == 2)
        assert gate.waiting == 0
    finally:
        writers.cancel()


async def test_the_newest_changes_of_an_object_merge_into_one_patch() -> None:
    sink, kube, _ = _sink(busy=False)
    agent = _agent("a", shown=False)
    sink.put(agent, {"phase": "Active", "observedGeneration": 1})
    sink.put(agent, {"observedGeneration": 2})
    writers = asyncio.create_task(sink.run())
    try:
        await _until(lambda: len(kube.patched) == 1)
        await asyncio.sleep(0)
        assert kube.patched == [("a", {"phase": "Active", "observedGeneration": 2})]
    finally:
        writers.cancel()


async def test_an_agent_put_again_after_its_status_showed_a_behavior_is_an_update() -> None:
    sink, kube, gate = _sink(busy=True, writers=1)
    sink.put(_agent("a", shown=False), {"phase": "Active"})
    sink.put(_agent("a", shown=True), {"phase": "Paused"})  # the newest state has a status
    writers = asyncio.create_task(sink.run())
    try:
        await _until(lambda: gate.waiting == 1)
        assert kube.patched == []
        gate.opened.set()
        await _until(lambda: len(kube.patched) == 1)
    finally:
        writers.cancel()
