"""The public surface of agent_registry.registry: what others import exists and is exported."""

from __future__ import annotations

import inspect

import agent_registry.registry as registry
from agent_registry.registry import RegistryService

# The seed's methods (issue 2) and the ones the operator and API need (team contracts).
METHODS = {
    "register_agent",
    "unregister_agent",
    "set_status",
    "create_behavior",
    "assign_behavior",
    "get_agent_behavior",
    "update_stats",
    "record_task",
    "record_tasks",
    "list_active_agents",
    "list_agents_by_role",
    "list_underperforming_agents",
    "get_by_agent_id",
    "hot_reload_behavior",
    "assignment_history",
    "behavior_lineage",
    "get_behavior",
    "get_behavior_by_name",
    "mark_behavior_deleted",
    "confirm_loaded",
    "record_load_failure",
    "list_agents",
    "behavior_summary",
    "allow_scripts",
    "revision_stats",
    "agent_revision_stats",
    "subscribe",
    "close",
    "from_url",
}
ERRORS = {
    "RegistryError",
    "AgentNotFound",
    "AgentAlreadyRegistered",
    "BehaviorNotFound",
    "BehaviorRevisionNotFound",
    "NoBehaviorAssigned",
    "InvalidStatus",
    "RegistryUnavailable",
    "UnknownStatsField",
}


def test_all_is_complete_and_importable() -> None:
    for name in registry.__all__:
        assert hasattr(registry, name), name
    public = {
        name
        for name, value in vars(registry).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(registry.__all__)


def test_service_has_every_method() -> None:
    missing = {name for name in METHODS if not callable(getattr(RegistryService, name, None))}
    assert missing == set()


def test_errors_share_a_base() -> None:
    assert set(registry.__all__) >= ERRORS
    for name in ERRORS:
        assert issubclass(getattr(registry, name), registry.RegistryError)


def test_records_are_frozen() -> None:
    for name in (
        "AgentRecord",
        "AssignmentRecord",
        "BehaviorRecord",
        "BehaviorChanged",
        "RecordResult",
        "Refusal",
        "RevisionStatsRecord",
        "AgentRevisionStatsRecord",
    ):
        assert getattr(registry, name).model_config.get("frozen") is True
