"""Group commit for record_task: outcomes for the same agent that arrive while a write for that
agent is in flight are written together by the next write.

Every outcome of one agent updates the same row, so concurrent single-outcome writes only
queue on that row's lock; merging them into one UPDATE gives the same counts (the statement
adds the batch's totals atomically) for one round trip and one commit. A caller still returns
only after the write that carries its outcome has committed, with that write's result (or
its error).

No background task: the caller that finds the agent idle writes (it "leads"); callers that
arrive meanwhile wait; when the leader's write is done, it wakes the first waiter to lead the
next write with everything queued by then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

Item = TypeVar("Item")
Result = TypeVar("Result")

_LEAD = object()  # a waiter's future resolves to this when it is to write the next batch


@dataclass
class _Queue(Generic[Item]):
    busy: bool = False
    waiting: list[tuple[Item, asyncio.Future[object]]] = field(default_factory=list)


class Coalescer(Generic[Item, Result]):
    def __init__(self, write: Callable[[str, list[Item]], Awaitable[Result]]) -> None:
        self._write = write
        self._queues: dict[str, _Queue[Item]] = {}

    async def submit(self, key: str, item: Item) -> Result:
        """Return the result of the write that carried `item`, once it is written (raise
        what that write raised)."""
        queue = self._queues.setdefault(key, _Queue())
        if queue.busy:
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            queue.waiting.append((item, future))
            result = await future
            if result is not _LEAD:
                return cast(Result, result)
        else:
            queue.busy = True
            queue.waiting.insert(0, (item, asyncio.get_running_loop().create_future()))
        return await self._lead(key, queue)

    async def _lead(self, key: str, queue: _Queue[Item]) -> Result:
        # Our own item is first in `waiting` (put there by submit or by the previous leader).
        batch, queue.waiting = queue.waiting, []
        live = [(item, fut) for item, fut in batch if not fut.cancelled()]
        own_future = batch[0][1]
        error: BaseException | None = None
        written: object = None
        try:
            result = await self._write(key, [item for item, _ in live])
            written = result
            return result
        except asyncio.CancelledError:
            error = asyncio.CancelledError()
            raise
        except Exception as exc:
            error = exc
            raise
        finally:
            for _, fut in live:
                if fut is own_future or fut.done():
                    continue
                if error is None:
                    fut.set_result(written)
                elif isinstance(error, asyncio.CancelledError):
                    # The leader was cancelled mid-write: whether it committed is unknown.
                    fut.set_exception(
                        asyncio.CancelledError("the write carrying this outcome was cancelled")
                    )
                else:
                    fut.set_exception(error)
            self._hand_over(key, queue)

    def _hand_over(self, key: str, queue: _Queue[Item]) -> None:
        while queue.waiting:
            fut = queue.waiting[0][1]
            if fut.cancelled():
                queue.waiting.pop(0)  # its caller is gone: not written
                continue
            # Stays first in `waiting`: the new leader writes it with the rest.
            fut.set_result(_LEAD)
            return
        queue.busy = False
        del self._queues[key]


__all__ = ["Coalescer"]
