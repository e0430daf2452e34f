"""`agentreg runtime` as a real subprocess: the local HTTP API, hot reload from a kubelet-layout
directory, reports to a (fake, see fake_registry.py) registry endpoint, --simulate, and a
graceful SIGTERM that flushes the reporter. There is no kubelet: the test performs its swap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent_registry.runtime.bundle import script_sha256
from agent_registry.runtime.kubelet_volume import write_configmap_volume
from runtime.bundles import Script, bundle_files
from runtime.fake_registry import FakeRegistry, fake_registry
from runtime.waiting import wait_until

SCRIPT_V1 = """
function on_task(task, ctx)
  if task.kind == "boom" then error("refusing " .. tostring(task.id)) end
  if task.kind == "spin" then while true do end end
  ctx.state.seen = (ctx.state.seen or 0) + 1
  return {accept = true, effort = 1.0, version = 1, seen = ctx.state.seen}
end
"""
SCRIPT_V2 = SCRIPT_V1.replace("version = 1", "version = 2")
BROKEN = "function on_task(task, ctx) return ( end"


LIMITS = {"maxInstructions": 200_000, "timeoutMs": 500}


def files(script: str, revision: int) -> dict[str, str]:
    meta = {
        "name": "b",
        "namespace": "team-a",
        "revision": revision,
        "sha256": script_sha256(script),
        "limits": LIMITS,
    }
    return {"behavior.lua": script, "behavior.json": json.dumps(meta)}


@dataclass
class Runtime:
    process: asyncio.subprocess.Process
    url: str = ""
    lines: list[str] = field(default_factory=list)

    async def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=30)


@contextlib.asynccontextmanager
async def run_runtime(*args: str) -> AsyncIterator[Runtime]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent_registry",
        "runtime",
        "--listen",
        "127.0.0.1:0",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    runtime = Runtime(process)
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def drain() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            runtime.lines.append(line)
            match = re.search(r"listening on (\S+):(\d+)", line)
            if match and not listening.done():
                listening.set_result(f"http://{match[1]}:{match[2]}")
        if not listening.done():
            listening.set_exception(RuntimeError("runtime exited:\n" + "\n".join(runtime.lines)))

    drainer = asyncio.create_task(drain())
    try:
        runtime.url = await asyncio.wait_for(listening, timeout=60)
        yield runtime
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await drainer


def common(registry: FakeRegistry, behavior_dir: Path, token: Path) -> list[str]:
    return [
        "--agent",
        "team-a/scout-1",
        "--behavior-dir",
        str(behavior_dir),
        "--registry-url",
        registry.url,
        "--token-file",
        str(token),
        "--report-interval",
        "0.1",
    ]


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("sa-token")
    return path


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    status, answer, _ = await post_with_headers(session, url, body)
    return status, answer


async def post_with_headers(
    session: aiohttp.ClientSession, url: str, body: Any
) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, str) else json.dumps(body)
    async with session.post(url, data=data) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_http_api_reload_reports_and_graceful_stop(tmp_path: Path, token: Path) -> None:
    volume = tmp_path / "behavior"
    write_configmap_volume(volume, files(SCRIPT_V1, 1))
    async with (
        fake_registry() as registry,
        run_runtime(*common(registry, volume, token)) as rt,
        aiohttp.ClientSession() as http,
    ):
        status, health = await get_json(http, f"{rt.url}/healthz")
        assert status == 200
        assert health["sha256"] == script_sha256(SCRIPT_V1)
        assert health["revision"] == 1
        assert health["last_error"] is None
        assert health["loaded_at"]

        assert health["scripts"] == []  # one script
        sha1 = script_sha256(SCRIPT_V1)
        status, result, headers = await post_with_headers(
            http, f"{rt.url}/v1/decide", {"id": 1, "kind": "normal"}
        )
        assert (status, result["version"], result["seen"]) == (200, 1, 1)
        assert headers["X-Behavior-Sha256"] == sha1

        status, error, headers = await post_with_headers(
            http, f"{rt.url}/v1/decide", {"id": 7, "kind": "boom"}
        )
        assert status == 422
        assert "refusing 7" in error["error"]
        assert error["kind"] == "error"
        assert error["line"] == 3
        assert error["behavior_sha256"] == headers["X-Behavior-Sha256"] == sha1
        status, error = await post(http, f"{rt.url}/v1/decide", {"kind": "spin"})
        assert status == 422
        assert error["kind"] in ("instructions", "timeout")
        assert (await post(http, f"{rt.url}/v1/decide", "not json"))[0] == 400
        assert (await post(http, f"{rt.url}/v1/decide", [1, 2]))[0] == 400

        assert (await post(http, f"{rt.url}/v1/outcome", {"success": True, "duration_ms": 12}))[
            0
        ] == 202
        assert (await post(http, f"{rt.url}/v1/outcome", {"success": "maybe"}))[0] == 400

        # The registry hears the load confirmation.
        await wait_until(lambda: any(r.loaded for r in registry.counted.values()))

        # Hot reload: the kubelet's swap; state carries over.
        write_configmap_volume(volume, files(SCRIPT_V2, 2))
        sha2 = script_sha256(SCRIPT_V2)

        async def health_sha() -> Any:
            return (await get_json(http, f"{rt.url}/healthz"))[1]["sha256"]

        for _ in range(1000):
            if await health_sha() == sha2:
                break
            await asyncio.sleep(0.01)
        status, result = await post(http, f"{rt.url}/v1/decide", {"id": 2})
        assert (result["version"], result["seen"]) == (2, 2)
        await wait_until(
            lambda: any(r.loaded and r.loaded.sha256 == sha2 for r in registry.counted.values())
        )

        # A broken script: reported, the last good one keeps serving.
        write_configmap_volume(volume, files(BROKEN, 3))
        for _ in range(1000):
            _, health = await get_json(http, f"{rt.url}/healthz")
            if health["last_error"]:
                break
            await asyncio.sleep(0.01)
        assert health["sha256"] == sha2
        assert (await post(http, f"{rt.url}/v1/decide", {"id": 3}))[1]["version"] == 2
        await wait_until(lambda: any(r.load_failure for r in registry.counted.values()))

        assert await rt.terminate() == 0

    outcomes = [o for r in registry.counted.values() for o in r.outcomes]
    # 1 explicit outcome + 2 failed decides (boom, spin), recorded by the sidecar itself,
    # all credited to the one script that ran then (the explicit one by the reporter).
    assert sorted(o.success for o in outcomes) == [False, False, True]
    assert {o.behavior_sha256 for o in outcomes} == {script_sha256(SCRIPT_V1)}
    assert set(registry.tokens) == {"sa-token"}
    assert set(registry.paths) == {"/v1/agents/team-a/scout-1/reports"}
    failure = next(r.load_failure for r in registry.counted.values() if r.load_failure)
    assert failure.sha256 == script_sha256(BROKEN)


async def test_simulate_reports_outcomes_and_cycles(tmp_path: Path, token: Path) -> None:
    volume = tmp_path / "behavior"
    write_configmap_volume(volume, files(SCRIPT_V1, 1))
    async with fake_registry() as registry:
        async with run_runtime(*common(registry, volume, token), "--simulate", "200") as rt:
            await wait_until(lambda: registry.outcomes_counted >= 100, within=30)
            assert await rt.terminate() == 0
        reports = list(registry.counted.values())
    outcomes = [o for r in reports for o in r.outcomes]
    assert sum(r.cycles for r in reports) == len(outcomes)
    # effort 1.0 and accept: success unless difficulty > 1 + noise, i.e. nearly always;
    # duration 5 + 50 * 1.0.
    assert sum(o.success for o in outcomes) / len(outcomes) > 0.9
    assert {o.duration_ms for o in outcomes} == {55.0}


async def test_a_multi_script_bundle_over_the_http_api_and_the_simulation(
    tmp_path: Path, token: Path
) -> None:
    stable = Script(SCRIPT_V1, weight=0.5, name="b", revision=1, limits=LIMITS)
    canary = Script(SCRIPT_V2, weight=0.5, name="b", revision=2, limits=LIMITS)
    volume = tmp_path / "behavior"
    write_configmap_volume(volume, bundle_files(stable, canary))
    async with (
        fake_registry() as registry,
        run_runtime(*common(registry, volume, token), "--simulate", "200") as rt,
        aiohttp.ClientSession() as http,
    ):
        status, health = await get_json(http, f"{rt.url}/healthz")
        assert status == 200
        assert health["sha256"] == stable.sha256
        assert health["scripts"] == [
            {"sha256": stable.sha256, "weight": 0.5, "name": "b", "revision": 1},
            {"sha256": canary.sha256, "weight": 0.5, "name": "b", "revision": 2},
        ]
        by_version = {1: stable.sha256, 2: canary.sha256}
        answered = set()
        for i in range(64):
            status, result, headers = await post_with_headers(
                http, f"{rt.url}/v1/decide", {"id": i}
            )
            assert status == 200
            assert headers["X-Behavior-Sha256"] == by_version[result["version"]]
            answered.add(result["version"])
        assert answered == {1, 2}  # a miss has probability 2 ** -63
        await wait_until(lambda: registry.outcomes_counted >= 100, within=30)
        assert await rt.terminate() == 0
    reports = list(registry.counted.values())
    outcomes = [o for r in reports for o in r.outcomes]
    assert {o.behavior_sha256 for o in outcomes} == {stable.sha256, canary.sha256}
    loaded = next(r.loaded for r in reports if r.loaded)
    assert [s.sha256 for s in loaded.scripts] == [stable.sha256, canary.sha256]


async def test_no_script_yet_and_an_unreachable_registry(tmp_path: Path, token: Path) -> None:
    volume = tmp_path / "empty"
    volume.mkdir()
    args = [
        "--agent",
        "team-a/scout-1",
        "--behavior-dir",
        str(volume),
        "--registry-url",
        "http://127.0.0.1:9",
        "--token-file",
        str(token),
        "--report-interval",
        "0.1",
    ]
    async with run_runtime(*args) as rt, aiohttp.ClientSession() as http:
        status, health = await get_json(http, f"{rt.url}/healthz")
        assert status == 503
        assert health["sha256"] is None
        assert (await post(http, f"{rt.url}/v1/decide", {"id": 1}))[0] == 503
        write_configmap_volume(volume, files(SCRIPT_V1, 1))
        for _ in range(1000):
            status, health = await get_json(http, f"{rt.url}/healthz")
            if status == 200:
                break
            await asyncio.sleep(0.01)
        assert health["sha256"] == script_sha256(SCRIPT_V1)
        for i in range(20):  # decisions work although no report can be delivered
            assert (await post(http, f"{rt.url}/v1/decide", {"id": i}))[0] == 200
        assert (await post(http, f"{rt.url}/v1/outcome", {"success": True}))[0] == 202
        assert await rt.terminate() == 0  # gives up flushing after its deadline
    assert any("unsent" in line for line in rt.lines)


def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agent_registry.cli import main

    runner = CliRunner()
    base = ["runtime", "--registry-url", "http://x"]
    result = runner.invoke(main, [*base, "--agent", "no-slash", "--behavior-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "NAMESPACE/NAME" in result.output
    result = runner.invoke(main, [*base, "--agent", "a/b"])
    assert result.exit_code == 2
    assert "--behavior-dir or --watch-configmap" in result.output
    result = runner.invoke(
        main, [*base, "--agent", "a/b", "--behavior-dir", str(tmp_path), "--listen", "nope"]
    )
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


@pytest.mark.kube
async def test_watch_configmap_mode_against_the_apiserver(
    namespace: str, kubeconfig: str, token: Path
) -> None:
    from kubernetes import client

    from agent_registry.runtime.configmap_source import make_api_client

    api_client = make_api_client(kubeconfig)
    core: Any = client.CoreV1Api(api_client)
    name = "scout-1-behavior"
    await asyncio.to_thread(
        core.create_namespaced_config_map,
        namespace,
        {"metadata": {"name": name}, "data": files(SCRIPT_V1, 1)},
    )
    try:
        async with fake_registry() as registry:
            args = [
                "--agent",
                f"{namespace}/scout-1",
                "--watch-configmap",
                name,
                "--kubeconfig",
                kubeconfig,
                "--registry-url",
                registry.url,
                "--token-file",
                str(token),
                "--report-interval",
                "0.1",
            ]
            async with run_runtime(*args) as rt, aiohttp.ClientSession() as http:
                status, health = await get_json(http, f"{rt.url}/healthz")
                assert (status, health["revision"]) == (200, 1)
                await asyncio.to_thread(
                    core.patch_namespaced_config_map,
                    name,
                    namespace,
                    {"data": files(SCRIPT_V2, 2)},
                )
                for _ in range(1000):
                    _, health = await get_json(http, f"{rt.url}/healthz")
                    if health["revision"] == 2:
                        break
                    await asyncio.sleep(0.01)
                assert health["sha256"] == script_sha256(SCRIPT_V2)
                assert (await post(http, f"{rt.url}/v1/decide", {"id": 1}))[1]["version"] == 2
                await wait_until(
                    lambda: any(
                        r.loaded and r.loaded.revision == 2 for r in registry.counted.values()
                    )
                )
                assert await rt.terminate() == 0
    finally:
        api_client.close()
