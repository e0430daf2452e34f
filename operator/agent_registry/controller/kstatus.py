"""kstatus' two standard conditions, so Flux's default health check (and kstatus-based tools
such as `kubectl wait`-like pollers) reads our objects without custom rules.

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) defines `Reconciling` and `Stalled` as
"abnormal-true" conditions: their presence with status True says something is off, and they
should be present only while True, removed otherwise (not left as False). Its generic reader
checks observedGeneration first, then `Reconciling=True` (InProgress), then `Stalled=True`
(Failed); anything else is Current. So an object that cannot make progress without a human
(an invalid script, a script the runtime refused) is Stalled and NOT Reconciling: otherwise
Flux would wait for its timeout instead of failing at once.

Pure: the status computation (controller.status) calls `kstatus_updates` and merges the result.
"""

from __future__ import annotations

from agent_registry.controller.conditions import Cond

RECONCILING = "Reconciling"
STALLED = "Stalled"
KSTATUS_TYPES = (RECONCILING, STALLED)


def generation_lags(generation: int | None, observed_generation: int | None) -> bool:
    return generation is not None and (
        observed_generation is None or observed_generation < generation
    )


def kstatus_updates(
    *,
    generation: int | None,
    observed_generation: int | None,
    stalled: Cond | None,
    progressing: Cond | None,
) -> tuple[list[Cond], list[str]]:
    """(conditions to set, condition types to remove); at most one of the two is set.
    `stalled`: why the object is stuck (its reason and message are reused), or None;
    `progressing`: what is still in flight (e.g. a reload not yet confirmed), or None.
    While observedGeneration lags, the object is Reconciling whatever else it says: a verdict
    on an older spec says nothing about the current one."""
    update: Cond | None = None
    if generation_lags(generation, observed_generation):
        update = Cond(
            RECONCILING,
            "True",
            "GenerationPending",
            f"generation {generation} is not reconciled yet",
        )
    elif stalled is not None:
        update = Cond(STALLED, "True", stalled.reason, stalled.message)
    elif progressing is not None:
        update = Cond(RECONCILING, "True", progressing.reason, progressing.message)
    updates = [update] if update is not None else []
    return updates, [t for t in KSTATUS_TYPES if update is None or t != update.type]


__all__ = ["KSTATUS_TYPES", "RECONCILING", "STALLED", "generation_lags", "kstatus_updates"]
