"""Fuzz the registry API with schemathesis, from its own OpenAPI document (GET /openapi.json).

The app runs on a real TCP port (a thread with its own event loop) in front of a real
PostgreSQL registry, with TokenReview, SubjectAccessReview and Agent reads against the local
kube-apiserver. Every operation gets generated requests (positive and negative data) sent
without a token, with a forged one, with the Agent's own ServiceAccount token and with a
reader's token (RBAC get/list on agents), half of them aimed at objects that exist, so the
fuzzer gets past authentication and the path checks into the registry.

Checked on every answer: no server error (5xx other than the documented 503, which a healthy
registry never gives here either), a documented status code, content type, headers and a body
matching the documented schema. Bounded by MAX_EXAMPLES per operation and pass (about 40 s
on 2 cores).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from agent_registry.api import Authenticator, create_app
from agent_registry.metrics import Metrics
from agent_registry.registry import RegistryService
from api.harness import Api, Kube

pytestmark = [pytest.mark.kube, pytest.mark.postgres]

# Per operation and pass; AGENTREG_FUZZ_EXAMPLES=500 digs deeper by hand (minutes).
MAX_EXAMPLES = int(os.environ.get("AGENTREG_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SCRIPT = "function on_task(task, ctx) return {accept = true, effort = 0.5} end\n"


class ServedApp:
    """The API app served on 127.0.0.1 from a thread of its own: schemathesis calls it with a
    blocking HTTP client, so the app cannot share the test's event loop."""

    def __init__(self, database_url: str, kubeconfig: str) -> None:
        self._database_url = database_url
        self._kubeconfig = kubeconfig
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.base_url = ""
        self._thread = threading.Thread(target=self._run, name="fuzzed-api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the API did not start: {self._error!r}")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # surfaced by start()
            self._error = error
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        registry = RegistryService.from_url(self._database_url)
        app = create_app(
            registry, Authenticator.from_kubeconfig(self._kubeconfig), metrics=Metrics()
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        port = server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await registry.close()


@dataclass(frozen=True)
class Target:
    base_url: str
    namespace: str
    agent: str
    behavior: str
    tokens: dict[str, str | None]


async def _populate(database_url: str, namespace: str) -> None:
    registry = RegistryService.from_url(database_url)
    try:
        parent = await registry.create_behavior("base", "tester", SCRIPT, namespace=namespace)
        child = await registry.create_behavior(
            "tuned", "tester", SCRIPT + "-- v2\n", namespace=namespace, parent_behavior_id=parent.id
        )
        await registry.register_agent(f"{namespace}/a1", "tester")
        await registry.assign_behavior(f"{namespace}/a1", child.id)
    finally:
        await registry.close()


@pytest.fixture
def target(postgres_url: str, kube: Kube, namespace: str) -> Iterator[Target]:
    kube.agent(namespace, "a1")
    asyncio.run(_populate(postgres_url, namespace))
    tokens: dict[str, str | None] = {
        "none": None,
        "forged": "not-a-token",
        "agent": kube.token(namespace, "a1"),
        "reader": kube.reader(namespace),
    }
    served = ServedApp(postgres_url, kube.cluster.kubeconfig)
    served.start()
    try:
        yield Target(served.base_url, namespace, "a1", "tuned", tokens)
    finally:
        served.stop()


def _aim(case: schemathesis.Case[Any], target: Target) -> None:
    """Point the path (or the namespace filter) at objects that exist, so the request gets
    past authorization into the registry."""
    params = case.path_parameters
    if params:
        params["namespace"] = target.namespace
        params["name"] = target.behavior if "/behaviors/" in case.path else target.agent
    elif case.path in ("/v1/agents", "/v1/underperformers"):
        # The reader's Role is namespaced: it may list one namespace, not all.
        case.query = {**(case.query or {}), "namespace": target.namespace}


def _fuzz(
    operation: Any, target: Target, *, authorized: bool, failures: list[str], statuses: set[int]
) -> None:
    """Fuzz one operation: `authorized`, with the right token at objects that exist (the
    registry is reached); otherwise with any of the tokens, or none, anywhere."""
    right = "agent" if operation.method.upper() == "POST" else "reader"
    auths = [right] if authorized else sorted(target.tokens)

    # No shrinking: a failing example is reported as found, with its curl reproducer, and the
    # run stays bounded. No example database: every run starts from nothing.
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(), auth=st.sampled_from(auths))
    def run(case: schemathesis.Case[Any], auth: str) -> None:
        if authorized:
            _aim(case, target)
        token = target.tokens[auth]
        if case.headers is not None:
            case.headers.pop("Authorization", None)  # ours decides, not a generated one
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        response = case.call(base_url=target.base_url, headers=headers, timeout=20)
        statuses.add(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as failure:
            curl = case.as_curl_command(base_url=target.base_url)
            failures.append(f"{operation.label} [{auth}]: {failure}\n  reproduce: {curl}")
            raise

    try:
        run()
    except Exception as error:  # recorded above; other operations still run
        if not failures or operation.label not in failures[-1]:
            failures.append(f"{operation.label}: {error!r}")


def test_every_operation_survives_fuzzing_with_documented_answers(target: Target) -> None:
    with urllib.request.urlopen(target.base_url + "/openapi.json", timeout=10) as answer:
        document = json.loads(answer.read())
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == 9, [op.label for op in operations]

    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    for operation in operations:
        statuses = seen.setdefault(operation.label, set())
        for authorized in (False, True):
            _fuzz(operation, target, authorized=authorized, failures=failures, statuses=statuses)

    assert not failures, "\n\n".join(failures)
    # The fuzzer got past authentication and the path checks: every operation answered
    # successfully at least once (reports 202, reads 200), and the refusals were exercised.
    for label, statuses in seen.items():
        assert statuses & {200, 202}, f"{label} never succeeded: {sorted(statuses)}"
    every = set().union(*seen.values())
    assert {401, 403, 422} <= every, sorted(every)


# What the fuzzer found, kept as plain regressions (each answered 500 before its fix).


async def test_a_nul_in_a_load_error_and_a_large_utc_offset_are_stored(
    api: Api, kube: Kube, namespace: str
) -> None:
    kube.agent(namespace, "a1")
    await api.registry.register_agent(f"{namespace}/a1", "tester")
    body = {
        "batch_id": str(uuid.uuid4()),
        # PostgreSQL takes offsets up to ±15:59; ISO 8601 (and Python) up to ±23:59.
        "outcomes": [{"success": True, "finished_at": "2026-01-01T10:00:00+20:22"}],
        "load_failure": {
            "sha256": "a" * 64,
            "error": "bad \u0000 byte",  # Lua strings may hold NUL; PostgreSQL text may not
            "line": 3,
            "failed_at": "2026-01-01T10:00:00+20:22",
        },
    }

    status, answer, _ = await api.report(namespace, "a1", body, kube.token(namespace, "a1"))

    assert status == 202, answer
    agent = await api.registry.get_by_agent_id(f"{namespace}/a1")
    assert agent.load_error == "bad \ufffd byte"
    assert agent.load_failed_at is not None
    assert agent.load_failed_at.replace(tzinfo=UTC) == datetime(2025, 12, 31, 13, 38, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value"),
    [("line", 2**31), ("cycles", 2**31), ("failed_at", "0001-01-01T00:00+02:00")],
)
async def test_numbers_and_times_the_database_cannot_hold_are_422(
    api: Api, kube: Kube, namespace: str, field: str, value: object
) -> None:
    kube.agent(namespace, "a1")
    await api.registry.register_agent(f"{namespace}/a1", "tester")
    failure: dict[str, object] = {
        "sha256": "a" * 64,
        "error": "e",
        "failed_at": "2026-01-01T00:00Z",
    }
    body: dict[str, object] = {"batch_id": str(uuid.uuid4()), "load_failure": failure}
    if field == "cycles":
        body["cycles"] = value
    else:
        failure[field] = value

    status, answer, _ = await api.report(namespace, "a1", body, kube.token(namespace, "a1"))

    assert status == 422, answer
    assert answer["errors"][0]["loc"][0] == "body"


async def test_min_tasks_beyond_64_bits_is_422(api: Api, kube: Kube, namespace: str) -> None:
    reader = kube.reader(namespace)
    status, problem = await api.get(
        f"/v1/underperformers?namespace={namespace}&min_tasks={2**63}", reader
    )
    assert status == 422, problem
    assert problem["errors"][0]["loc"] == ["query", "min_tasks"]
