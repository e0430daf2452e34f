"""The status loop never overwrites a newer status than the one it computed from.

The loop computes from kopf's index, which can lag the apiserver: when a handler has just
written a verdict the loop cannot recompute (Valid=True after a fixed script), a patch built
from the older snapshot would put the old verdict back for good. Against the real apiserver:
the loop's patch carries the snapshot's resourceVersion, so the apiserver refuses it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agent_registry.controller.context import OperatorConfig, OperatorContext
from agent_registry.controller.indexes import ObjectState, state_of
from agent_registry.controller.kubeapi import Kube
from agent_registry.controller.writeback import StatusWriter
from e2e.conftest import Kubectl, condition

pytestmark = [pytest.mark.e2e, pytest.mark.kube]

BEHAVIOR = """
apiVersion: agents.singularity.dev/v1alpha1
kind: AgentBehavior
metadata:
  name: racy
spec:
  roleType: code_developer
  lua:
    script: |
      function on_task(task, ctx) return {accept = true, effort = 1} end
"""


def _valid(status: str, generation: int) -> dict[str, Any]:
    return {
        "type": "Valid",
        "status": status,
        "reason": "ScriptValid" if status == "True" else "InvalidScript",
        "message": "ok" if status == "True" else "line 3: unexpected symbol near '}'",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": generation,
    }


def write(kubeconfig: str, state: ObjectState, changes: dict[str, Any]) -> int:
    """The status loop's write step alone, against the real apiserver (no registry needed)."""

    async def run() -> int:
        kube = Kube.from_kubeconfig(kubeconfig)
        try:
            ctx = OperatorContext(
                config=OperatorConfig(database_url="sqlite+aiosqlite://", registry_url="http://x"),
                registry=None,  # type: ignore[arg-type]  # write() needs only the apiserver
                kube=kube,
            )
            return await StatusWriter(ctx).write([(state, changes)])
        finally:
            await kube.close()

    return asyncio.run(run())


def test_a_patch_from_a_stale_snapshot_is_refused(kubectl: Kubectl, kubeconfig: str) -> None:
    kubectl("apply", "-f", "-", input=BEHAVIOR)
    patch = {"status": {"conditions": [_valid("False", 1)]}}
    kubectl(
        "patch",
        "agentbehavior",
        "racy",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    stale = kubectl.get("agentbehavior", "racy")
    assert stale is not None
    snapshot = state_of("AgentBehavior", stale)
    assert snapshot.resource_version == stale["metadata"]["resourceVersion"]

    # The handler's newer verdict lands after the snapshot was taken.
    newer = {"status": {"conditions": [_valid("True", 1)]}}
    kubectl(
        "patch",
        "agentbehavior",
        "racy",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(newer),
    )

    changes = {"conditions": [_valid("False", 1)], "agentCount": 0}
    assert write(kubeconfig, snapshot, changes) == 0, "the stale patch must not be written"
    current = kubectl.get("agentbehavior", "racy")
    valid = condition(current, "Valid")
    assert valid is not None
    assert valid["status"] == "True", "the handler's newer verdict survives"

    # A patch computed from the current version goes through.
    fresh = state_of("AgentBehavior", current or {})
    assert write(kubeconfig, fresh, {"agentCount": 0}) == 1
    assert (kubectl.get("agentbehavior", "racy") or {})["status"]["agentCount"] == 0
