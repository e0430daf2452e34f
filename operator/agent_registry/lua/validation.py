"""validate_script: the admission check of an AgentBehavior (webhook and controller)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import LuaError
from .limits import Limits
from .sandbox import Sandbox

__all__ = ["DRY_RUN_TASK", "ValidationResult", "validate_script"]

# The task of the dry call: shaped like the simulated workload's tasks (see the runtime).
DRY_RUN_TASK: dict[str, Any] = {"id": "validation", "kind": "simulated", "difficulty": 0.5}


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    error: str | None = None
    line: int | None = None


def validate_script(source: str, limits: Limits | None = None) -> ValidationResult:
    """Whether `source` is a usable behavior: it compiles, its top level and init(config) run
    within the limits, it defines on_task, and one dry call on_task(DRY_RUN_TASK, ctx) succeeds
    (with a result that converts back to Python). Never raises for a bad script."""
    try:
        sandbox = Sandbox(source, limits if limits is not None else Limits(), log=_discard)
    except LuaError as exc:
        return ValidationResult(False, str(exc), exc.line)
    try:
        sandbox.on_task(dict(DRY_RUN_TASK))
    except LuaError as exc:
        return ValidationResult(False, f"dry call on_task: {exc}", exc.line)
    finally:
        sandbox.close()
    return ValidationResult(True)


def _discard(_: str) -> None:
    """Validation output is not an agent's log."""
