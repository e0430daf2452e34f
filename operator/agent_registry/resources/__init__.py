"""The Agent and AgentBehavior custom resources as pydantic models, and their CRDs."""

from agent_registry.resources.agent import (
    AgentSpec,
    AgentStats,
    AgentStatus,
    AssignedBehavior,
    LoadedBehaviorStatus,
)
from agent_registry.resources.behavior import (
    AgentBehaviorSpec,
    AgentBehaviorStatus,
    BehaviorLimits,
    BehaviorStats,
    LuaSource,
)
from agent_registry.resources.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    LocalObjectReference,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "AgentBehaviorSpec",
    "AgentBehaviorStatus",
    "AgentSpec",
    "AgentStats",
    "AgentStatus",
    "AssignedBehavior",
    "BehaviorLimits",
    "BehaviorStats",
    "Condition",
    "LoadedBehaviorStatus",
    "LocalObjectReference",
    "LuaSource",
]
