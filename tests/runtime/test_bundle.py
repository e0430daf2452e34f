"""Parsing what a behavior ConfigMap holds (pure)."""

from __future__ import annotations

import hashlib
import json

import pytest

from agent_registry.runtime.bundle import BundleError, parse_bundle

SCRIPT = "function on_task(task, ctx) return 1 end\n"
SHA = hashlib.sha256(SCRIPT.encode()).hexdigest()


def test_script_and_metadata() -> None:
    meta = {
        "name": "greedy",
        "namespace": "team-a",
        "revision": 4,
        "sha256": SHA,
        "limits": {"maxInstructions": 1000, "timeoutMs": 50, "futureKey": 1},
    }
    bundle = parse_bundle({"behavior.lua": SCRIPT, "behavior.json": json.dumps(meta)})
    assert bundle.sha256 == SHA
    assert bundle.declared_sha256 == SHA
    assert bundle.revision == 4
    assert (bundle.name, bundle.namespace) == ("greedy", "team-a")
    assert dict(bundle.limits) == {"max_instructions": 1000, "timeout_ms": 50}
    assert bundle.meta_error is None


def test_metadata_is_optional() -> None:
    bundle = parse_bundle({"behavior.lua": SCRIPT.encode()})
    assert bundle.sha256 == SHA
    assert bundle.revision is None
    assert dict(bundle.limits) == {}


def test_no_script_is_an_error() -> None:
    with pytest.raises(BundleError, match=r"behavior\.lua"):
        parse_bundle({"behavior.json": "{}"})


@pytest.mark.parametrize(
    "meta",
    [
        "not json",
        "[]",
        '{"revision": 0}',
        '{"revision": "3"}',
        '{"limits": {"timeoutMs": -1}}',
        '{"limits": []}',
        '{"name": 5}',
    ],
)
def test_bad_metadata_keeps_the_script_hash_and_says_why(meta: str) -> None:
    bundle = parse_bundle({"behavior.lua": SCRIPT, "behavior.json": meta})
    assert bundle.sha256 == SHA
    assert bundle.meta_error is not None
    assert bundle.meta_error.startswith("behavior.json")


def test_identity_ignores_origin_but_not_limits() -> None:
    a = parse_bundle({"behavior.lua": SCRIPT}, origin="dir")
    b = parse_bundle({"behavior.lua": SCRIPT}, origin="configmap")
    c = parse_bundle({"behavior.lua": SCRIPT, "behavior.json": '{"limits": {"timeoutMs": 9}}'})
    assert a.identity == b.identity
    assert a.identity != c.identity
