"""The Argo CD health checks (manifests/argocd/*.lua) on sample Agent and AgentBehavior objects.

Argo CD evaluates them with gopher-lua (Lua 5.1 semantics); we run the very same files under lupa's
Lua 5.1 and 5.4, so a construct only one of them accepts fails here. docs/gitops.md embeds the same
text in its argocd-cm snippet, checked below.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import lupa.lua51
import lupa.lua54
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "manifests" / "argocd"
AGENT_LUA = ARGOCD / "health-agent.lua"
BEHAVIOR_LUA = ARGOCD / "health-agentbehavior.lua"
SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture(params=[lupa.lua51, lupa.lua54], ids=["lua51", "lua54"])
def lua(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


def assess(lua: ModuleType, script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    runtime = lua.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    hs = runtime.execute(script.read_text())
    return str(hs["status"]), str(hs["message"])


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def agent(
    *,
    generation: int = 3,
    observed: int | None = 3,
    assigned: str | None = SHA_A,
    loaded: str | None = SHA_A,
    conditions: list[dict[str, str]] | None = None,
    paused: bool = False,
    status: bool = True,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "agents.singularity.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "reviewer-1", "namespace": "team-a", "generation": generation},
        "spec": {"role": "code_reviewer", "behaviorRef": {"name": "careful"}, "paused": paused},
    }
    if not status:
        return obj
    st: dict[str, Any] = {"phase": "Paused" if paused else "Active"}
    if observed is not None:
        st["observedGeneration"] = observed
    if assigned is not None:
        st["behavior"] = {"name": "careful", "revision": 2, "sha256": assigned}
    if loaded is not None:
        st["loadedBehavior"] = {"sha256": loaded, "loadedAt": "2026-11-25T22:00:00Z"}
    st["conditions"] = (
        conditions
        if conditions is not None
        else [
            cond("BehaviorAssigned", "True"),
            cond("BehaviorLoaded", "True"),
            cond("Ready", "True"),
        ]
    )
    obj["status"] = st
    return obj


def behavior(
    *,
    generation: int = 5,
    observed: int | None = 5,
    conditions: list[dict[str, str]] | None = None,
    status: bool = True,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "agents.singularity.dev/v1alpha1",
        "kind": "AgentBehavior",
        "metadata": {"name": "careful", "namespace": "team-a", "generation": generation},
        "spec": {"roleType": "code_reviewer", "lua": {"script": "function on_task(t, c) end"}},
    }
    if status:
        st: dict[str, Any] = {"revision": 4, "scriptSha256": SHA_A}
        if observed is not None:
            st["observedGeneration"] = observed
        st["conditions"] = conditions if conditions is not None else [cond("Valid", "True")]
        obj["status"] = st
    return obj


# ---- Agent --------------------------------------------------------------------------------------


def test_agent_ready_with_confirmed_script_is_healthy(lua: ModuleType) -> None:
    status, message = assess(lua, AGENT_LUA, agent())
    assert status == "Healthy"
    assert "careful revision 2" in message


def test_agent_without_status_is_progressing(lua: ModuleType) -> None:
    assert assess(lua, AGENT_LUA, agent(status=False))[0] == "Progressing"


@pytest.mark.parametrize("observed", [None, 2])
def test_agent_with_lagging_observed_generation_is_progressing(
    lua: ModuleType, observed: int | None
) -> None:
    # Even a Ready=True from an older generation says nothing about the current spec.
    status, message = assess(lua, AGENT_LUA, agent(generation=3, observed=observed))
    assert (status, message) == ("Progressing", "Waiting for the operator to observe generation 3")


@pytest.mark.parametrize("loaded", [None, SHA_B])
def test_agent_whose_new_script_is_not_confirmed_is_progressing(
    lua: ModuleType, loaded: str | None
) -> None:
    # Ready may still be True from the previous script: the hot reload is in flight.
    status, message = assess(lua, AGENT_LUA, agent(assigned=SHA_A, loaded=loaded))
    assert status == "Progressing"
    assert message == f"Waiting for the runtime to load careful revision 2 (sha256 {SHA_A[:12]})"


def test_agent_not_ready_is_degraded(lua: ModuleType) -> None:
    conditions = [
        cond("BehaviorLoaded", "True"),
        cond("Ready", "False", "RuntimeUnreachable", "no report from the runtime for 5m"),
    ]
    status, message = assess(lua, AGENT_LUA, agent(conditions=conditions))
    assert (status, message) == ("Degraded", "no report from the runtime for 5m")


def test_agent_not_ready_without_message_reports_the_reason(lua: ModuleType) -> None:
    conditions = [cond("Ready", "False", "BehaviorNotFound")]
    assert assess(lua, AGENT_LUA, agent(conditions=conditions)) == ("Degraded", "BehaviorNotFound")


def test_agent_whose_runtime_refused_the_new_script_is_degraded(lua: ModuleType) -> None:
    # The runtime keeps the last good script, so the shas differ: a failure, not progress.
    conditions = [
        cond("BehaviorLoaded", "False", "LoadFailed", "behavior.lua:3: unexpected symbol"),
        cond("Ready", "True"),
    ]
    status, message = assess(lua, AGENT_LUA, agent(loaded=SHA_B, conditions=conditions))
    assert (status, message) == ("Degraded", "behavior.lua:3: unexpected symbol")


def test_agent_with_ready_unknown_or_missing_is_progressing(lua: ModuleType) -> None:
    assert assess(lua, AGENT_LUA, agent(conditions=[]))[0] == "Progressing"
    unknown = [cond("Ready", "Unknown", "Starting")]
    assert assess(lua, AGENT_LUA, agent(conditions=unknown)) == ("Progressing", "Starting")


def test_paused_agent_is_suspended(lua: ModuleType) -> None:
    assert assess(lua, AGENT_LUA, agent(paused=True))[0] == "Suspended"


def test_agent_kstatus_conditions_are_honoured(lua: ModuleType) -> None:
    stalled = [
        cond("Stalled", "True", "InvalidTemplate", "spec.template: bad"),
        cond("Ready", "True"),
    ]
    assert assess(lua, AGENT_LUA, agent(conditions=stalled)) == ("Degraded", "spec.template: bad")
    reconciling = [cond("Reconciling", "True", "Rendering"), cond("Ready", "True")]
    assert assess(lua, AGENT_LUA, agent(conditions=reconciling)) == ("Progressing", "Rendering")


# ---- AgentBehavior ------------------------------------------------------------------------------


def test_valid_behavior_is_healthy(lua: ModuleType) -> None:
    assert assess(lua, BEHAVIOR_LUA, behavior()) == ("Healthy", "Valid: revision 4")


def test_invalid_behavior_is_degraded_with_the_lua_error(lua: ModuleType) -> None:
    conditions = [cond("Valid", "False", "LuaError", "line 2: 'end' expected near <eof>")]
    status, message = assess(lua, BEHAVIOR_LUA, behavior(conditions=conditions))
    assert (status, message) == ("Degraded", "line 2: 'end' expected near <eof>")


@pytest.mark.parametrize("valid", ["True", "False"])
def test_behavior_verdict_on_an_older_generation_is_progressing(
    lua: ModuleType, valid: str
) -> None:
    # A new script was pushed; the verdict (either way) is about the previous one.
    obj = behavior(generation=6, observed=5, conditions=[cond("Valid", valid)])
    assert assess(lua, BEHAVIOR_LUA, obj) == (
        "Progressing",
        "Waiting for the operator to observe generation 6",
    )


def test_behavior_not_yet_validated_is_progressing(lua: ModuleType) -> None:
    assert assess(lua, BEHAVIOR_LUA, behavior(status=False))[0] == "Progressing"
    assert assess(lua, BEHAVIOR_LUA, behavior(conditions=[]))[0] == "Progressing"
    unknown = [cond("Valid", "Unknown", "Validating")]
    assert assess(lua, BEHAVIOR_LUA, behavior(conditions=unknown)) == ("Progressing", "Validating")


# ---- docs ---------------------------------------------------------------------------------------


def test_docs_argocd_cm_snippet_carries_the_same_lua() -> None:
    text = (REPO / "docs" / "gitops.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    configmaps = [
        doc
        for block in blocks
        for doc in yaml.safe_load_all(block)
        if isinstance(doc, dict) and doc.get("metadata", {}).get("name") == "argocd-cm"
    ]
    assert len(configmaps) == 1, "docs/gitops.md needs exactly one argocd-cm snippet"
    data = configmaps[0]["data"]
    assert (
        data["resource.customizations.health.agents.singularity.dev_Agent"] == AGENT_LUA.read_text()
    )
    assert (
        data["resource.customizations.health.agents.singularity.dev_AgentBehavior"]
        == BEHAVIOR_LUA.read_text()
    )


def test_the_controllers_load_failed_status_is_degraded_in_argo(lua: ModuleType) -> None:
    """What the controller writes for a refused script (agent_registry.controller.status) is
    what the health check maps to Degraded, with the Lua error in the message."""
    from datetime import UTC, datetime

    from agent_registry.controller.status import (
        AgentView,
        AssignmentView,
        LoadFailureView,
        desired_agent_status,
    )

    view = AgentView(
        status="active",
        assignment=AssignmentView(name="careful", revision=2, sha256=SHA_A),
        loaded_sha256=SHA_B,
        load_failure=LoadFailureView(SHA_A, "behavior:3: unexpected symbol", 3),
    )
    written = desired_agent_status(
        {}, behavior_ref="careful", view=view, now=datetime.now(UTC), observed_generation=3
    )
    obj = agent(loaded=SHA_B)
    obj["status"] = written
    status, message = assess(lua, AGENT_LUA, obj)
    assert status == "Degraded"
    assert "line 3: unexpected symbol" in message


def test_the_controllers_kstatus_conditions_drive_argo(lua: ModuleType) -> None:
    """Reconciling (reload in flight) -> Progressing; Stalled (invalid script) -> Degraded."""
    from datetime import UTC, datetime

    from agent_registry.controller.status import (
        AgentView,
        AssignmentView,
        desired_agent_status,
        desired_behavior_status,
        validity_condition,
    )

    now = datetime.now(UTC)
    view = AgentView(
        status="active",
        assignment=AssignmentView(name="careful", revision=2, sha256=SHA_A),
        loaded_sha256=None,
    )
    obj = agent(loaded=None)
    obj["status"] = desired_agent_status(
        {}, behavior_ref="careful", view=view, now=now, observed_generation=3, generation=3
    )
    assert assess(lua, AGENT_LUA, obj)[0] == "Progressing"

    invalid = validity_condition(False, "behavior:2: unexpected symbol", 2)
    bobj = behavior()
    bobj["status"] = desired_behavior_status(
        {}, observed_generation=5, valid=invalid, now=now, generation=5
    )
    status, message = assess(lua, BEHAVIOR_LUA, bobj)
    assert status == "Degraded"
    assert "line 2: unexpected symbol" in message


# ---- canary rollouts ----------------------------------------------------------------------------


def test_behavior_with_degraded_true_is_degraded(lua: ModuleType) -> None:
    conditions = [
        cond("Valid", "True"),
        cond("Degraded", "True", "RolloutAborted", "agents run stable revision 3"),
    ]
    status, message = assess(lua, BEHAVIOR_LUA, behavior(conditions=conditions))
    assert (status, message) == ("Degraded", "agents run stable revision 3")


@pytest.mark.parametrize(
    ("annotation", "steps", "health"),
    [
        (None, [{"setWeight": 10}], "Progressing"),
        (None, [{"pause": {}}, {"setWeight": 50}], "Suspended"),
        (None, [{"pause": {"duration": "1h"}}, {"setWeight": 50}], "Progressing"),
        ("true", [{"pause": {}}, {"setWeight": 50}], "Progressing"),
        ("abort", [{"setWeight": 10}], "Degraded"),
        ("full", [{"setWeight": 10}], "Healthy"),
    ],
)
def test_the_controllers_rollout_status_drives_argo(
    lua: ModuleType, annotation: str | None, steps: list[dict[str, Any]], health: str
) -> None:
    """What the controller writes at each rollout phase (controller.rollouts and .status):
    in progress -> Progressing, held for a manual promote -> Suspended, aborted -> Degraded,
    promoted -> Healthy."""
    from datetime import UTC, datetime

    from agent_registry.controller.indexes import ABORT_ANNOTATION, PROMOTE_ANNOTATION
    from agent_registry.controller.rollouts import (
        Observation,
        RevisionRef,
        next_rollout_state,
        on_new_revision,
    )
    from agent_registry.controller.status import desired_behavior_status, validity_condition

    now = datetime.now(UTC)
    spec = {"roleType": "coder", "rollout": {"strategy": "Canary", "steps": steps}}
    before = {"revision": 3, "scriptSha256": SHA_A}
    started = on_new_revision("careful", spec, before, RevisionRef(4, SHA_B), now)
    assert started is not None
    status: dict[str, Any] = {**before, "rollout": started.rollout}
    actions = {
        "true": {PROMOTE_ANNOTATION: "true"},
        "full": {PROMOTE_ANNOTATION: "full"},
        "abort": {ABORT_ANNOTATION: "bad latency"},
    }
    for asked in ({}, actions.get(annotation or "", {})):
        moved = next_rollout_state("careful", spec, status, None, now, asked, Observation())
        if moved is not None:
            status = {**status, "rollout": moved.rollout}
    written = desired_behavior_status(
        status,
        observed_generation=5,
        valid=validity_condition(True, None, None),
        revision=4,
        now=now,
        generation=5,
    )
    obj = behavior()
    obj["status"] = written
    assert assess(lua, BEHAVIOR_LUA, obj)[0] == health
