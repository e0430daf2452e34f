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
    remove: Iterable[str] = (),
) -> list[ConditionDict]:
    """The new conditions list: `updates` replace their types, types in `remove` are dropped
    (kstatus' abnormal-true conditions are present only while True), others are kept.
    Existing conditions keep their positions and new types are appended, so recomputing the
    same conditions never reorders the list (which would be a patch on every tick)."""
    dropped = set(remove)
    existing = {
        c.get("type"): c
        for c in current or ()
        if isinstance(c, dict) and c.get("type") not in dropped
    }
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
    result = [
        merged.pop(type_, condition)
        for type_, condition in existing.items()
        if isinstance(type_, str)
    ]
    return result + list(merged.values())


def find(conditions: Iterable[ConditionDict] | None, type_: str) -> ConditionDict | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None
