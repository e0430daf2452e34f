"""The report an agent runtime sends to the registry API, shared by both sides.

A report is a batch: the outcomes of tasks run since the last report, the behavior the
runtime has loaded, and the cycles it completed. `batch_id` is the idempotency key: the
runtime retries a batch with the same id until it is acknowledged, and the registry counts
a batch once however often it arrives.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAX_OUTCOMES_PER_REPORT = 10_000

Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN, description="Lowercase hex sha256.")]
# The registry stores these numbers in 32-bit columns (PostgreSQL INTEGER): larger ones are
# refused here (422) instead of failing in the database (500, which the runtime retries
# forever).
INT32_MAX = 2**31 - 1


def _without_nul(value: str) -> str:
    # Lua strings (an error message quoting the script) may hold NUL, which PostgreSQL text
    # cannot store. Replaced rather than refused: a refusal would drop the batch's outcomes.
    return value.replace("\x00", "\ufffd")


Text = Annotated[str, AfterValidator(_without_nul)]


def _in_utc(value: datetime) -> datetime:
    # ISO 8601 allows offsets up to ±23:59, PostgreSQL only ±15:59: stored in UTC, any
    # offset works. A time that leaves the calendar in UTC (year 1 at +02:00) is refused.
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the time is out of range once converted to UTC") from exc


Timestamp = Annotated[datetime, AfterValidator(_in_utc)]


class TaskOutcome(BaseModel):
    """How one task went."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    success: bool
    duration_ms: float | None = Field(
        default=None, ge=0, le=86_400_000, description="Wall time of the task in milliseconds."
    )
    finished_at: Timestamp | None = Field(
        default=None, description="When the task finished (UTC); the server's time if omitted."
    )
    behavior_sha256: Sha256 | None = Field(
        default=None,
        description=(
            "sha256 of the script that ran the task. Omitted by older runtimes: the registry "
            "then credits the batch's loaded.sha256, else the agent's current assignment."
        ),
    )


class LoadedScript(BaseModel):
    """One script of a multi-script bundle that the runtime runs, with its effective weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: Sha256
    weight: float = Field(ge=0, le=1, description="Share of tasks drawn for this script.")
    name: Text | None = Field(default=None, max_length=253)
    revision: int | None = Field(default=None, ge=1, le=INT32_MAX)


class LoadedBehavior(BaseModel):
    """What the runtime has actually loaded: the confirmation of a hot reload.

    `sha256` is the bundle's primary script (behavior.lua). `scripts` lists every script the
    runtime runs when the bundle holds more than one (empty for a one-script bundle).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: Sha256
    loaded_at: Timestamp
    revision: int | None = Field(default=None, ge=1, le=INT32_MAX)
    scripts: list[LoadedScript] = Field(default_factory=list, max_length=16)


class LoadFailure(BaseModel):
    """The last script the runtime refused (it keeps running the last good one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: Sha256
    error: Text = Field(max_length=4096)
    line: int | None = Field(default=None, ge=-INT32_MAX, le=INT32_MAX)
    failed_at: Timestamp


class OutcomeReport(BaseModel):
    """POST /v1/agents/{namespace}/{name}/reports"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: uuid.UUID = Field(description="Idempotency key; a retried batch keeps its id.")
    outcomes: list[TaskOutcome] = Field(default_factory=list, max_length=MAX_OUTCOMES_PER_REPORT)
    cycles: int = Field(
        default=0, ge=0, le=INT32_MAX, description="Cycles completed since the last report."
    )
    loaded: LoadedBehavior | None = None
    load_failure: LoadFailure | None = None
    dropped: int = Field(
        default=0,
        ge=0,
        le=2**63 - 1,
        description="Outcomes the runtime dropped on buffer overflow since start.",
    )


class RefusedOutcome(BaseModel):
    """An outcome the registry did not count, and why (the rest of the batch still counts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, description="Position of the outcome in the report's outcomes.")
    behavior_sha256: str | None = None
    reason: str


class ReportAccepted(BaseModel):
    """The registry's answer to a report (HTTP 202)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: uuid.UUID
    recorded: int = Field(description="Outcomes recorded now; 0 when the batch was a duplicate.")
    duplicate: bool
    refused: list[RefusedOutcome] = Field(
        default_factory=list,
        description="Outcomes not counted: a script the registry never delivered to this agent.",
    )


__all__ = [
    "MAX_OUTCOMES_PER_REPORT",
    "SHA256_PATTERN",
    "LoadFailure",
    "LoadedBehavior",
    "LoadedScript",
    "OutcomeReport",
    "RefusedOutcome",
    "ReportAccepted",
    "TaskOutcome",
]
