"""validate_script: the admission check of an AgentBehavior (webhook and controller)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import LuaError
from .limits import Limits
from .sandbox import Sandbox

__all__ = ["DRY_RUN_TASK", "ValidationResult", "validate_script"]

# The task of the dry call when the behavior declares none: shaped like the simulated
# workload's tasks (see the runtime). Real tasks may look nothing like it.
DRY_RUN_TASK: dict[str, Any] = {"id": "validation", "kind": "simulated", "difficulty": 0.5}

_CHUNK = "behavior"


@dataclass(frozen=True)
class ValidationResult:
    """`ok` False is a refusal (`error`, and the script `line` when known). `warnings` are
    problems that do not make the script unusable, such as a dry call that failed on the
    invented task."""

    ok: bool
    error: str | None = None
    line: int | None = None
    warnings: tuple[str, ...] = ()


def validate_script(
    source: str,
    limits: Limits | None = None,
    *,
    sample_task: Mapping[str, Any] | None = None,
) -> ValidationResult:
    """Whether `source` is a usable behavior. Refused when it does not compile, its top level or
    init(config) fails or exceeds the limits, or it does not define on_task.

    Then one dry call on_task(task, ctx). With `sample_task` (the behavior says what its tasks
    look like) the call must succeed, with a result that converts back to Python. Without one
    it runs on DRY_RUN_TASK, an invented task: a script that reads fields of its own tasks
    (task.n + 1) fails there and is right to, so that failure is only a warning.
    Never raises for a bad script."""
    try:
        sandbox = Sandbox(
            source, limits if limits is not None else Limits(), chunk_name=_CHUNK, log=_discard
        )
    except LuaError as exc:
        return ValidationResult(False, str(exc), exc.line)
    task = dict(sample_task) if sample_task is not None else dict(DRY_RUN_TASK)
    try:
        sandbox.on_task(task)
    except LuaError as exc:
        if sample_task is not None:
            message = f"dry call on_task with the sample task: {_without_position(exc)}"
            return ValidationResult(False, message, exc.line)
        return ValidationResult(True, warnings=(_invented_task_warning(exc),))
    finally:
        sandbox.close()
    return ValidationResult(True)


def _without_position(exc: LuaError) -> str:
    """The message without Lua's "behavior:N: " prefix: the line travels separately, and a
    reader of "line N: ..." (controller.status) would cut what precedes the prefix."""
    return re.sub(rf"^{_CHUNK}:\d+: ", "", str(exc))


def _invented_task_warning(exc: LuaError) -> str:
    where = f"line {exc.line}: " if exc.line is not None else ""
    fields = ", ".join(DRY_RUN_TASK)
    return (
        f"dry call on_task with an invented task {{{fields}}} failed: {where}"
        f"{_without_position(exc)}; the script is accepted, since its real tasks may have "
        "other fields"
    )


def _discard(_: str) -> None:
    """Validation output is not an agent's log."""
