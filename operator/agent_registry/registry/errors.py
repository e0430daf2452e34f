"""Typed errors of the registry. Callers catch `RegistryError` for all of them, and
`RegistryUnavailable` for what is worth retrying (the database is down or busy)."""

from __future__ import annotations

import uuid


class RegistryError(Exception):
    """Base class of every error the registry raises."""


class AgentNotFound(RegistryError, LookupError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} is not registered")
        self.agent_id = agent_id


class AgentAlreadyRegistered(RegistryError):
    def __init__(self, agent_id: str, status: str) -> None:
        super().__init__(f"agent {agent_id!r} is already registered (status {status!r})")
        self.agent_id = agent_id
        self.status = status


class BehaviorNotFound(RegistryError, LookupError):
    def __init__(self, behavior: uuid.UUID | str) -> None:
        super().__init__(f"behavior {behavior!s} not found")
        self.behavior = behavior


class BehaviorRevisionNotFound(BehaviorNotFound):
    """The behavior exists, but it never had that revision (or it is marked deleted)."""

    def __init__(self, behavior: uuid.UUID | str, revision: int) -> None:
        super().__init__(f"{behavior!s} revision {revision}")
        self.revision = revision


class NoBehaviorAssigned(RegistryError, LookupError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} has no behavior assigned")
        self.agent_id = agent_id


class InvalidStatus(RegistryError, ValueError):
    def __init__(self, status: str) -> None:
        super().__init__(f"invalid status {status!r}: expected active, paused or stopped")
        self.status = status


class UnknownStatsField(RegistryError, TypeError):
    """`update_stats` was given a field it does not accept."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__(f"update_stats does not accept: {', '.join(sorted(fields))}")
        self.fields = fields


class RegistryUnavailable(RegistryError):
    """The database cannot be reached, or is too busy (SQLite locked): retry later.

    The underlying driver error is chained as `__cause__`."""


__all__ = [
    "AgentAlreadyRegistered",
    "AgentNotFound",
    "BehaviorNotFound",
    "BehaviorRevisionNotFound",
    "InvalidStatus",
    "NoBehaviorAssigned",
    "RegistryError",
    "RegistryUnavailable",
    "UnknownStatsField",
]
