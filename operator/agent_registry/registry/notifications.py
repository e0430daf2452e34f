"""In-process change notifications (what the seed did with Cachex and telemetry): the service
publishes a `BehaviorChanged` when an agent's behavior is assigned or hot-reloaded, and every
current subscriber receives it. Subscribers live on the service's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent_registry.registry.records import AssignmentRecord, BehaviorChanged


class ChangeHub:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[BehaviorChanged]] = set()

    def publish(self, event: BehaviorChanged) -> None:
        # Unbounded queues: events are small and rare (assignments), and a slow subscriber
        # must not lose one or block the writer.
        for queue in self._queues:
            queue.put_nowait(event)

    @property
    def subscriber_count(self) -> int:
        return len(self._queues)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[BehaviorChanged]]:
        """`async with hub.subscribe() as events: async for event in events: ...`. Events
        published after entering are delivered; leaving the block unsubscribes."""
        queue: asyncio.Queue[BehaviorChanged] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield _drain(queue)
        finally:
            self._queues.discard(queue)


def behavior_changed(assignment: AssignmentRecord, *, reason: str | None = None) -> BehaviorChanged:
    """The event announcing `assignment` (its own reason unless `reason` is given)."""
    return BehaviorChanged(
        agent_id=assignment.agent_id,
        behavior_id=assignment.behavior_id,
        revision=assignment.behavior_revision,
        script_sha256=assignment.script_sha256,
        reason=reason or assignment.reason or "",
    )


async def _drain(queue: asyncio.Queue[BehaviorChanged]) -> AsyncIterator[BehaviorChanged]:
    while True:
        yield await queue.get()


__all__ = ["ChangeHub", "behavior_changed"]
