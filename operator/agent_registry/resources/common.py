"""Pieces both custom resources share: the API group, references, conditions.

Conditions follow the Kubernetes API conventions (metav1.Condition): `type`, `status`,
`reason`, `message`, `lastTransitionTime`, `observedGeneration`, a list keyed by `type`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "agents.singularity.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "singularity"

# A DNS-1123 subdomain: what Kubernetes accepts as an object name.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# metav1.Condition's reason: CamelCase, machine-readable.
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

ConditionStatus = Literal["True", "False", "Unknown"]


class ResourceModel(BaseModel):
    """Base of every model that maps to a resource's JSON: camelCase on the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict[str, object]:
        """The JSON shape Kubernetes stores (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LocalObjectReference(ResourceModel):
    """A reference to an object of a known kind in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="Name of the referenced object, in the same namespace.",
    )


class Condition(ResourceModel):
    """One aspect of the object's current state (Kubernetes API conventions)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="Type of condition in CamelCase, e.g. Ready, Valid, BehaviorLoaded.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details about the last transition.",
    )
    last_transition_time: datetime = Field(
        description="When the status last changed (not when the condition was last written).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object this condition was computed from.",
    )


# Go-style durations as users write them in manifests: 30s, 10m, 1h30m, 500ms.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration like `1h30m` (the DURATION_PATTERN the schema admits)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 10m, 1h30m)")
    return sum(
        float(number) * _DURATION_UNITS[unit]
        for number, _, unit in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text)
    )


class LabelSelector(ResourceModel):
    """Narrows the agents by their labels (all must match)."""

    match_labels: dict[str, str] | None = Field(
        default=None, description="Labels an Agent must carry, all of them."
    )

    def matches(self, labels: dict[str, str] | None) -> bool:
        have = labels or {}
        return all(have.get(k) == v for k, v in (self.match_labels or {}).items())
