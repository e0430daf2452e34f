"""Parsing what a behavior ConfigMap holds (pure)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from agent_registry.runtime.bundle import BundleError, parse_bundle
from runtime.bundles import Script, bundle_files, identifying, make_bundle

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


# -- multi-script bundles --------------------------------------------------------------------

A = Script(identifying("a"), weight=0.9, name="stable", revision=3, limits={"timeoutMs": 40})
B = Script(identifying("b"), weight=0.1, name="stable", revision=4)


def test_multi_script_bundle_lists_every_script_primary_first() -> None:
    bundle = make_bundle(A, B)
    assert bundle.multi
    first, second = bundle.entries
    assert (first.key, first.sha256, first.revision) == ("behavior.lua", A.sha256, 3)
    assert (second.key, second.sha256, second.revision) == ("behavior-1.lua", B.sha256, 4)
    assert (first.weight, second.weight) == pytest.approx((0.9, 0.1))
    assert dict(first.limits) == {"timeout_ms": 40}
    assert dict(second.limits) == {}
    assert second.script == B.source
    assert bundle.sha256 == A.sha256  # the top level stays the primary's
    assert bundle.meta_error is None


def test_weights_are_normalized() -> None:
    bundle = make_bundle(
        Script(identifying("a"), weight=3), Script(identifying("b"), weight=1, name="x")
    )
    assert [e.weight for e in bundle.entries] == [0.75, 0.25]
    # 0.7 + 0.2 + 0.1 is not exactly 1 in floats; the parser's division absorbs that.
    floats = make_bundle(
        Script(identifying("a"), weight=0.7),
        Script(identifying("b"), weight=0.2),
        Script(identifying("c"), weight=0.1),
    )
    assert math.fsum(e.weight for e in floats.entries) == pytest.approx(1.0, abs=1e-15)


def test_the_primary_may_have_weight_zero() -> None:
    bundle = make_bundle(Script(identifying("a"), weight=0), Script(identifying("b"), weight=1))
    assert [e.weight for e in bundle.entries] == [0.0, 1.0]
    assert bundle.meta_error is None


def test_weights_take_part_in_the_identity_labels_do_not() -> None:
    base = make_bundle(A, B)
    relabelled = make_bundle(
        dataclasses.replace(A, revision=7), dataclasses.replace(B, name="other")
    )
    reweighted = make_bundle(dataclasses.replace(A, weight=0.5), dataclasses.replace(B, weight=0.5))
    assert base.identity == relabelled.identity
    assert base.identity != reweighted.identity


def _rewrite(files: dict[str, str], edit: Callable[[dict[str, Any]], object]) -> dict[str, str]:
    meta = json.loads(files["behavior.json"])
    edit(meta)
    return {**files, "behavior.json": json.dumps(meta)}


def _set(index: int, key: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda meta: meta["scripts"][index].__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(1, "weight", -0.1), "weight must be >= 0"),
        (lambda m: [s.__setitem__("weight", 0) for s in m["scripts"]], "sum to 0"),
        (_set(1, "weight", True), "weight must be a number"),
        (_set(1, "weight", "0.1"), "weight must be a number"),
        (_set(1, "weight", float("nan")), "weight must be a number"),
        (lambda m: m["scripts"][1].pop("weight"), "weight must be a number"),
        (_set(1, "key", "behavior-7.lua"), "behavior-7.lua is not in the ConfigMap"),
        (_set(1, "sha256", "0" * 64), "does not match behavior-1.lua's content"),
        (_set(0, "sha256", "0" * 64), "does not match behavior.lua's content"),
        (lambda m: m["scripts"][1].pop("sha256"), "sha256 must be a string"),
        (_set(0, "key", "behavior-1.lua"), "must be behavior.lua"),
        (_set(1, "key", "behavior.lua"), "must be behavior-N.lua"),
        (_set(1, "key", "scripts/b.lua"), "must be behavior-N.lua"),
        (lambda m: m["scripts"].append(dict(m["scripts"][1])), "listed twice"),
        (lambda m: m["scripts"].extend([m["scripts"][1]] * 16), "at most 16"),
        (lambda m: m.__setitem__("scripts", []), "non-empty list"),
        (lambda m: m.__setitem__("scripts", {"key": "behavior.lua"}), "non-empty list"),
        (_set(1, "revision", 0), "revision must be a positive integer"),
        (_set(1, "limits", {"timeoutMs": 0}), "limits.timeoutMs"),
        (_set(1, "name", "x" * 254), "longer than 253"),
    ],
)
def test_a_bad_script_list_refuses_the_bundle_and_names_the_primary(
    edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    bundle = parse_bundle(_rewrite(bundle_files(A, B), edit))
    assert bundle.meta_error is not None
    assert bundle.meta_error.startswith("behavior.json: scripts")
    assert message in bundle.meta_error
    assert bundle.sha256 == A.sha256  # the failure is reported against the primary


def test_an_extra_script_that_is_not_utf8_refuses_the_bundle() -> None:
    files: dict[str, str | bytes] = {**bundle_files(A, B), "behavior-1.lua": b"\xff\xfe"}
    bundle = parse_bundle(files)
    assert bundle.meta_error is not None
    assert "behavior-1.lua is not UTF-8" in bundle.meta_error


def test_a_one_script_bundle_is_what_it_always_was() -> None:
    bundle = make_bundle(A)
    assert "scripts" not in json.loads(bundle_files(A)["behavior.json"])
    assert bundle.scripts == ()
    assert not bundle.multi
    (entry,) = bundle.entries
    assert (entry.key, entry.sha256, entry.weight) == ("behavior.lua", A.sha256, 1.0)
    assert (entry.name, entry.revision, dict(entry.limits)) == ("stable", 3, {"timeout_ms": 40})
    # Keys a one-script bundle does not list are not read, whatever else the ConfigMap holds.
    stray = parse_bundle({**bundle_files(A), "behavior-1.lua": "garbage"})
    assert stray.identity == bundle.identity
    assert stray.meta_error is None
