"""The pure parts of the operator's own Agent watch (controller/agent_watch.py); the list,
the watch and the deletions themselves run against the real apiserver in tests/e2e."""

from __future__ import annotations

from agent_registry.controller.agent_watch import (
    LEGACY_FINALIZER,
    agents_path,
    finalizer_removal,
    key_of_agent_id,
    missing,
)


def test_the_finalizer_removal_tests_the_entry_it_removes() -> None:
    body = {"metadata": {"finalizers": ["example.com/keep", LEGACY_FINALIZER]}}
    assert finalizer_removal(body, LEGACY_FINALIZER) == [
        {"op": "test", "path": "/metadata/finalizers/1", "value": LEGACY_FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]


def test_no_patch_without_the_finalizer() -> None:
    assert (
        finalizer_removal({"metadata": {"finalizers": ["example.com/keep"]}}, LEGACY_FINALIZER)
        is None
    )
    assert finalizer_removal({"metadata": {}}, LEGACY_FINALIZER) is None


def test_missing_keys_are_the_known_ones_not_present() -> None:
    known = [("a", "x"), ("a", "y"), ("b", "x")]
    assert missing(known, [("a", "y")]) == [("a", "x"), ("b", "x")]
    assert missing(known, known) == []
    assert missing([], [("a", "x")]) == []


def test_agent_ids_map_back_to_agents() -> None:
    assert key_of_agent_id("team-a/coder-1") == ("team-a", "coder-1")
    assert key_of_agent_id("not-an-agent-of-ours") is None
    assert key_of_agent_id("/x") is None


def test_paths_of_one_namespace_or_all() -> None:
    assert agents_path(None) == "/apis/agents.singularity.dev/v1alpha1/agents"
    assert agents_path("t") == "/apis/agents.singularity.dev/v1alpha1/namespaces/t/agents"
