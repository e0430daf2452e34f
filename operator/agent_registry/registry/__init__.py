"""The registry: agents, their behaviors and assignment history, and exact task statistics,
in PostgreSQL or SQLite. `RegistryService.from_url(url)` is the entry point."""

from agent_registry.registry.assignments import AssignRequest
from agent_registry.registry.engine import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from agent_registry.registry.errors import (
    AgentAlreadyRegistered,
    AgentNotFound,
    BehaviorNotFound,
    BehaviorRevisionNotFound,
    InvalidStatus,
    NoBehaviorAssigned,
    RegistryError,
    RegistryUnavailable,
    UnknownStatsField,
)
from agent_registry.registry.migration import downgrade, migrate
from agent_registry.registry.records import (
    STATUSES,
    AgentRecord,
    AgentRevisionStatsRecord,
    AssignmentRecord,
    BehaviorChanged,
    BehaviorRecord,
    BehaviorRevisionRecord,
    BehaviorSummary,
    LoadConfirmation,
    RecordResult,
    Refusal,
    RevisionStatsRecord,
    ScriptCounts,
    ScriptRef,
    Status,
    UnderperformingAgent,
)
from agent_registry.registry.service import RegistryService
from agent_registry.registry.stats import Outcome, OutcomeLike

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "STATUSES",
    "AgentAlreadyRegistered",
    "AgentNotFound",
    "AgentRecord",
    "AgentRevisionStatsRecord",
    "AssignRequest",
    "AssignmentRecord",
    "BehaviorChanged",
    "BehaviorNotFound",
    "BehaviorRecord",
    "BehaviorRevisionNotFound",
    "BehaviorRevisionRecord",
    "BehaviorSummary",
    "InvalidStatus",
    "LoadConfirmation",
    "NoBehaviorAssigned",
    "Outcome",
    "OutcomeLike",
    "RecordResult",
    "Refusal",
    "RegistryError",
    "RegistryService",
    "RegistryUnavailable",
    "RevisionStatsRecord",
    "ScriptCounts",
    "ScriptRef",
    "Status",
    "UnderperformingAgent",
    "UnknownStatsField",
    "downgrade",
    "migrate",
]
