"""The API against real services: a registry on PostgreSQL or SQLite, and TokenReview,
SubjectAccessReview and Agent reads against the local kube-apiserver. Nothing is mocked:
tokens come from `kubectl create token` (TokenRequest)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_registry.registry import RegistryService
from api.harness import Api, Kube, serve

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kube(kube_cluster: Any) -> Kube:
    """The control plane with the project's CRDs installed (from crds/, the generated ones)."""
    helper = Kube(kube_cluster)
    helper.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    helper.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/agents.agents.singularity.dev",
        "crd/agentbehaviors.agents.singularity.dev",
    )
    return helper


@pytest.fixture
def other_namespace(kube: Kube) -> Iterator[str]:
    name = f"other-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
async def api(database_url: str, kube: Kube) -> AsyncIterator[Api]:
    """The API app on a fresh registry (PostgreSQL and SQLite), served on a local port."""
    registry = RegistryService.from_url(database_url)
    harness = await serve(registry, kube.cluster.kubeconfig)
    try:
        yield harness
    finally:
        await harness.client.close()
        await registry.close()
