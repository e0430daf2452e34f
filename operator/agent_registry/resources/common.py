"""Pieces both custom resources share: the API group, references, conditions.

Conditions follow the Kubernetes API conventions (metav1.Condition): `type`, `status`,
`reason`, `message`, `lastTransitionTime`, `observedGeneration`, a list keyed by `type`.
"""

from __future__ import annotations

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
