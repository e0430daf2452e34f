"""The evidence decisions rest on: exact outcome counts of one script, on one agent or
summed over many. The registry keeps them per (agent, script); the controller sums them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Counts:
    """Tasks and successes of one script (on one agent, or summed over agents)."""

    tasks: int = 0
    successes: int = 0

    def __post_init__(self) -> None:
        if self.tasks < 0 or not 0 <= self.successes <= self.tasks:
            raise ValueError(f"invalid counts: {self.successes} successes of {self.tasks} tasks")

    @property
    def failures(self) -> int:
        return self.tasks - self.successes

    @property
    def rate(self) -> float:
        """Observed success rate; 0.0 with no task (there is no rate to show yet)."""
        return self.successes / self.tasks if self.tasks else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tasks + other.tasks, self.successes + other.successes)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.tasks - other.tasks, self.successes - other.successes)

    @staticmethod
    def total(items: Iterable[Counts]) -> Counts:
        tasks = successes = 0
        for item in items:
            tasks += item.tasks
            successes += item.successes
        return Counts(tasks, successes)


__all__ = ["Counts"]
