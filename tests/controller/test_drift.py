"""Which ConfigMaps the resync re-applies (pure; the e2e test in test_operator_resilience.py
deletes and edits real ones)."""

from __future__ import annotations

from agent_registry.controller.drift import data_digest, drifted


def test_missing_and_edited_configmaps_drift_unchanged_ones_do_not() -> None:
    data = {"behavior.lua": "function on_task() end", "behavior.json": '{"revision": 1}'}
    applied = {
        ("ns", "same"): data_digest(data),
        ("ns", "deleted"): data_digest(data),
        ("ns", "edited"): data_digest(data),
    }
    live = {
        ("ns", "same"): data_digest(dict(reversed(list(data.items())))),  # key order: same
        ("ns", "edited"): data_digest({**data, "behavior.lua": "-- by hand"}),
        ("ns", "not-ours"): data_digest({}),
    }
    assert drifted(applied, live) == [("ns", "deleted"), ("ns", "edited")]


def test_empty_data_has_a_digest_of_its_own() -> None:
    assert data_digest(None) == data_digest({})
    assert data_digest({}) != data_digest({"behavior.lua": ""})
