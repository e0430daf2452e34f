"""Conditions as the Kubernetes API conventions want them, and kstatus can read them.

`lastTransitionTime` moves only when a condition's status changes; rewriting the same status
with a new message keeps it. That also keeps the status write-back idempotent: recomputing an
unchanged condition yields an identical dict, so no patch is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent_registry.resources.common import ConditionStatus

ConditionDict = dict[str, Any]

MAX_MESSAGE = 32768


@dataclass(frozen=True)
class Cond:
    """A condition before it is timestamped and merged into a status."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""

    @property
    def is_true(self) -> bool:
        return self.status == "True"


def timestamp(moment: datetime) -> str:
    """RFC 3339 with seconds, as Kubernetes writes metav1.Time."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: Iterable[ConditionDict] | None,
    updates: Iterable[Cond],
    *,
    now: datetime,
    observed_generation: int | None,
) -> list[ConditionDict]:
    """The new conditions list: `updates` replace their types, other types are kept."""
    existing = {c.get("type"): c for c in current or () if isinstance(c, dict)}
    merged: dict[str, ConditionDict] = {}
    for update in updates:
        before = existing.get(update.type)
        unchanged = before is not None and before.get("status") == update.status
        transition = before.get("lastTransitionTime") if unchanged and before else None
        condition: ConditionDict = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message[:MAX_MESSAGE],
            "lastTransitionTime": transition or timestamp(now),
        }
        if observed_generation is not None:
            condition["observedGeneration"] = observed_generation
        merged[update.type] = condition
    for type_, condition in existing.items():
        if type_ not in merged and isinstance(type_, str):
            merged[type_] = condition
    return list(merged.values())


def find(conditions: Iterable[ConditionDict] | None, type_: str) -> ConditionDict | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None
