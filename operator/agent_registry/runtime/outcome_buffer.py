"""The bounded, thread-safe buffer between an agent's work and the reporter.

`add` never blocks on I/O: it takes a lock held only for a deque append. When full, the
oldest outcome is dropped (the newest say more about the behavior running now) and counted.
"""

from __future__ import annotations

import threading
from collections import deque

from agent_registry.reports import TaskOutcome


class OutcomeBuffer:
    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: deque[TaskOutcome] = deque()
        self._lock = threading.Lock()
        self._dropped = 0
        self._cycles = 0
        self._peak = 0

    def add(self, outcome: TaskOutcome) -> None:
        with self._lock:
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self._dropped += 1
            self._items.append(outcome)
            if len(self._items) > self._peak:
                self._peak = len(self._items)

    def add_cycles(self, count: int = 1) -> None:
        with self._lock:
            self._cycles += count

    def take(self, max_items: int) -> tuple[list[TaskOutcome], int]:
        """Remove and return up to `max_items` oldest outcomes and all pending cycles."""
        with self._lock:
            count = min(max_items, len(self._items))
            items = [self._items.popleft() for _ in range(count)]
            cycles, self._cycles = self._cycles, 0
            return items, cycles

    @property
    def dropped(self) -> int:
        """Outcomes dropped on overflow since the buffer was created."""
        return self._dropped

    @property
    def peak(self) -> int:
        """The most outcomes the buffer has held at once (how close an outage came to
        `capacity`)."""
        return self._peak

    @property
    def pending_cycles(self) -> int:
        return self._cycles

    def __len__(self) -> int:
        return len(self._items)
