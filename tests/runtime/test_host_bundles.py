"""BehaviorHost with multi-script bundles and the real sandbox: the per-task draw by weight,
one ctx.state per script, reloads that keep what did not change, per-script last-good
fallback, and what `loaded` / `load_failure` say about it."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest

from agent_registry.lua import LuaBehaviorError, LuaLimitExceeded, LuaValidationError, Sandbox
from agent_registry.reports import LoadedBehavior, LoadedScript, LoadFailure
from agent_registry.runtime.backoff import Backoff
from agent_registry.runtime.bundle import parse_bundle
from agent_registry.runtime.host import BehaviorHost
from runtime.bundles import Script, bundle_files, identifying, make_bundle
from runtime.waiting import wait_until_sync

BROKEN = "function on_task(task, ctx)\n  return (\nend\n"


def binomial_interval(n: int, p: float, level: float) -> tuple[int, int]:
    """The central `level` interval of Binomial(n, p): the smallest k whose CDF reaches
    (1 - level) / 2, and the smallest whose CDF reaches (1 + level) / 2."""
    low_tail, high_tail = (1 - level) / 2, (1 + level) / 2
    log_p, log_q = math.log(p), math.log1p(-p)
    cdf = 0.0
    low: int | None = None
    for k in range(n + 1):
        log_pmf = (
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * log_p
            + (n - k) * log_q
        )
        cdf += math.exp(log_pmf)
        if low is None and cdf >= low_tail:
            low = k
        if cdf >= high_tail:
            assert low is not None
            return low, k
    raise AssertionError("unreachable: the CDF reaches 1")


def test_the_interval_helper_matches_a_known_binomial() -> None:
    # Binomial(10, 0.5): CDF(1) = 11/1024 > 0.005, CDF(8) = 1013/1024 < 0.995 < CDF(9).
    assert binomial_interval(10, 0.5, 0.99) == (1, 9)


def test_tasks_are_drawn_by_weight() -> None:
    """The issue's acceptance: 0.9/0.1 over 10,000 tasks, each count inside the binomial
    99.9 % interval of its weight, and every run says which script produced its result."""
    stable = Script(identifying("stable"), weight=0.9, name="stable")
    canary = Script(identifying("canary"), weight=0.1, name="canary")
    host = BehaviorHost(rng=random.Random(20261125))
    host.load(make_bundle(stable, canary))
    n = 10_000
    counts: Counter[str] = Counter()
    for i in range(n):
        run = host.run_task({"id": i})
        expected_sha = {"stable": stable.sha256, "canary": canary.sha256}[run.result["who"]]
        assert run.sha256 == expected_sha
        counts[run.sha256] += 1
    for script in (stable, canary):
        low, high = binomial_interval(n, script.weight, 0.999)
        assert low <= counts[script.sha256] <= high, (script.name, counts, (low, high))
    assert sum(counts.values()) == n


def test_a_script_of_weight_zero_is_loaded_but_never_drawn() -> None:
    primary = Script(identifying("primary"), weight=0.0, name="p")
    other = Script(identifying("other"), weight=1.0, name="o")
    host = BehaviorHost(rng=random.Random(1))
    loaded = host.load(make_bundle(primary, other))
    assert isinstance(loaded, LoadedBehavior)
    assert loaded.sha256 == primary.sha256
    assert [(s.sha256, s.weight) for s in loaded.scripts] == [
        (primary.sha256, 0.0),
        (other.sha256, 1.0),
    ]
    assert {host.run_task({}).sha256 for _ in range(500)} == {other.sha256}


def test_each_script_has_its_own_state() -> None:
    a = Script(identifying("a"), weight=0.5, name="a")
    b = Script(identifying("b"), weight=0.5, name="b")
    host = BehaviorHost(rng=random.Random(7))
    host.load(make_bundle(a, b))
    seen: dict[str, list[int]] = {"a": [], "b": []}
    for _ in range(200):
        result = host.on_task({})
        seen[result["who"]].append(result["calls"])
    # Each script counts only its own calls: 1, 2, 3... in each, never one shared sequence.
    assert seen["a"] == list(range(1, len(seen["a"]) + 1))
    assert seen["b"] == list(range(1, len(seen["b"]) + 1))
    assert seen["a"]
    assert seen["b"]
    assert host.state == {"calls": len(seen["a"])}  # the primary's


def _calls_by_script(host: BehaviorHost, tasks: int) -> dict[str, int]:
    """Run tasks; the last `calls` count each script reported."""
    last: dict[str, int] = {}
    for _ in range(tasks):
        result = host.on_task({})
        last[result["who"]] = result["calls"]
    return last


def test_a_reload_keeps_unchanged_sandboxes_and_hands_a_new_revision_its_predecessors_state() -> (
    None
):
    stable = Script(identifying("stable"), weight=0.5, name="stable", revision=1)
    canary = Script(identifying("canary-r2"), weight=0.5, name="canary", revision=2)
    host = BehaviorHost(rng=random.Random(3))
    first = host.load(make_bundle(stable, canary))
    assert isinstance(first, LoadedBehavior)
    before = _calls_by_script(host, 100)
    assert host.loads == 2

    # Weights only: nothing is rebuilt, both states go on, the report shows the new weights.
    reweighted = host.load(
        make_bundle(
            Script(stable.source, 0.8, "stable", 1), Script(canary.source, 0.2, "canary", 2)
        )
    )
    assert isinstance(reweighted, LoadedBehavior)
    assert host.loads == 2
    assert reweighted.loaded_at == first.loaded_at
    assert [s.weight for s in reweighted.scripts] == pytest.approx([0.8, 0.2])
    after_reweight = _calls_by_script(host, 100)
    assert after_reweight["stable"] > before["stable"]
    assert after_reweight["canary-r2"] > before["canary-r2"]

    # A new revision of the canary: the stable sandbox stays, the new canary starts from the
    # old canary's state (its own ctx.state, not the stable's).
    canary_r3 = Script(identifying("canary-r3"), weight=0.2, name="canary", revision=3)
    host.load(make_bundle(Script(stable.source, 0.8, "stable", 1), canary_r3))
    assert host.loads == 3
    results: dict[str, list[int]] = {}
    for _ in range(100):
        result = host.on_task({})
        results.setdefault(result["who"], []).append(result["calls"])
    assert "canary-r2" not in results
    assert results["stable"][0] == after_reweight["stable"] + 1
    assert results["canary-r3"][0] == after_reweight["canary-r2"] + 1


def test_same_scripts_under_new_revisions_are_relabelled() -> None:
    a = Script(identifying("a"), weight=0.9, name="x", revision=1)
    b = Script(identifying("b"), weight=0.1, name="x", revision=2)
    host = BehaviorHost(rng=random.Random(5))
    first = host.load(make_bundle(a, b))
    assert isinstance(first, LoadedBehavior)
    relabelled = host.load(
        make_bundle(Script(a.source, 0.9, "x", 5), Script(b.source, 0.1, "x", 6))
    )
    assert isinstance(relabelled, LoadedBehavior)
    assert relabelled.loaded_at == first.loaded_at
    assert relabelled.revision == 5
    assert [s.revision for s in relabelled.scripts] == [5, 6]
    assert host.loads == 2
    runs = {host.run_task({}).revision for _ in range(300)}
    assert runs == {5, 6}
    assert (
        host.load(make_bundle(Script(a.source, 0.9, "x", 5), Script(b.source, 0.1, "x", 6))) is None
    )


def test_a_new_revision_that_fails_leaves_its_predecessor_serving_its_share() -> None:
    stable = Script(identifying("stable"), weight=0.9, name="stable", revision=1)
    canary = Script(identifying("canary-r1"), weight=0.1, name="canary", revision=1)
    host = BehaviorHost(rng=random.Random(11))
    events: list[object] = []
    host.subscribe(events.append)
    first = host.load(make_bundle(stable, canary))
    assert isinstance(first, LoadedBehavior)

    broken = Script(BROKEN, weight=0.3, name="canary", revision=2)
    failure = host.load(make_bundle(Script(stable.source, 0.7, "stable", 1), broken))
    assert isinstance(failure, LoadFailure)
    assert failure.sha256 == broken.sha256
    assert failure.line is not None
    assert host.load_failure == failure
    loaded = host.loaded
    assert loaded is not None
    # The old canary keeps the canary's (new) share; the registry hears what really runs.
    assert [(s.sha256, s.revision) for s in loaded.scripts] == [
        (stable.sha256, 1),
        (canary.sha256, 1),
    ]
    assert [s.weight for s in loaded.scripts] == pytest.approx([0.7, 0.3])
    assert {host.run_task({}).sha256 for _ in range(300)} == {stable.sha256, canary.sha256}
    assert events == [first, loaded, failure]
    assert failure.failed_at > loaded.loaded_at  # else the registry would drop the failure


def test_a_script_that_fails_with_nothing_before_it_is_dropped_and_the_rest_renormalized() -> None:
    a = Script(identifying("a"), weight=0.6, name="a")
    b = Script(identifying("b"), weight=0.3, name="b")
    broken = Script(BROKEN, weight=0.1, name="c")
    host = BehaviorHost(rng=random.Random(13))
    events: list[object] = []
    host.subscribe(events.append)
    failure = host.load(make_bundle(a, b, broken))
    assert isinstance(failure, LoadFailure)
    assert failure.sha256 == broken.sha256
    loaded = host.loaded
    assert loaded is not None
    assert loaded.sha256 == a.sha256
    assert [s.sha256 for s in loaded.scripts] == [a.sha256, b.sha256]
    assert [s.weight for s in loaded.scripts] == pytest.approx([2 / 3, 1 / 3])
    assert failure.failed_at > loaded.loaded_at
    assert [type(e).__name__ for e in events] == ["LoadedBehavior", "LoadFailure"]


def test_when_the_primary_cannot_load_first_the_scripts_that_can_run() -> None:
    broken = Script(BROKEN, weight=0.9, name="p")
    canary = Script(identifying("c"), weight=0.1, name="c")
    host = BehaviorHost()
    failure = host.load(make_bundle(broken, canary))
    assert isinstance(failure, LoadFailure)
    assert failure.sha256 == broken.sha256
    assert host.loaded is not None
    # Not the primary's sha256: the registry must not take the primary as loaded.
    assert host.loaded.sha256 == canary.sha256
    assert host.loaded.scripts == [
        LoadedScript(sha256=canary.sha256, weight=1.0, name="c", revision=1)
    ]
    assert host.on_task({})["who"] == "c"


def test_when_nothing_of_the_new_bundle_runs_the_previous_one_keeps_running() -> None:
    a = Script(identifying("a"), weight=0.5, name="a")
    b = Script(identifying("b"), weight=0.5, name="b")
    host = BehaviorHost(rng=random.Random(17))
    host.load(make_bundle(a, b))
    before = host.loaded
    events: list[object] = []
    host.subscribe(events.append)
    first_broken = Script(BROKEN, weight=0.5, name="x")
    second_broken = Script(BROKEN + "-- other\n", weight=0.5, name="y")
    failure = host.load(make_bundle(first_broken, second_broken))
    assert isinstance(failure, LoadFailure)
    assert failure.sha256 == second_broken.sha256  # the latest
    assert host.loaded == before
    assert host.load_failure == failure
    assert [type(e).__name__ for e in events] == ["LoadFailure", "LoadFailure"]
    assert {host.on_task({})["who"] for _ in range(200)} == {"a", "b"}
    assert host.load(make_bundle(first_broken, second_broken)) is None  # not retried


def test_a_refused_script_is_not_rebuilt_when_only_the_weights_move() -> None:
    built: Counter[str] = Counter()

    def factory(source: str, *args: Any, **kwargs: Any) -> Any:
        built[source] += 1
        return Sandbox(source, *args, **kwargs)

    a = Script(identifying("a"), weight=0.9, name="a")
    host = BehaviorHost(sandbox_factory=factory)
    failure = host.load(make_bundle(a, Script(BROKEN, 0.1, "b")))
    assert isinstance(failure, LoadFailure)
    assert host.load(make_bundle(Script(a.source, 0.8, "a"), Script(BROKEN, 0.2, "b"))) is None
    assert built == {a.source: 1, BROKEN: 1}
    assert host.load_failure == failure
    fixed = Script(identifying("b"), 0.2, "b")
    loaded = host.load(make_bundle(Script(a.source, 0.8, "a"), fixed))
    assert isinstance(loaded, LoadedBehavior)
    assert host.load_failure is None
    assert [s.sha256 for s in loaded.scripts] == [a.sha256, fixed.sha256]


def test_a_bad_script_list_is_refused_for_the_primary_and_the_old_bundle_runs() -> None:
    a = Script(identifying("a"), weight=0.9, name="a")
    b = Script(identifying("b"), weight=0.1, name="b")
    host = BehaviorHost()
    host.load(make_bundle(a))
    before = host.loaded
    files = bundle_files(Script(identifying("new"), 0.9, "a", 2), b)
    del files["behavior-1.lua"]
    failure = host.load(parse_bundle(files))
    assert isinstance(failure, LoadFailure)
    assert failure.sha256 == Script(identifying("new")).sha256
    assert "behavior-1.lua is not in the ConfigMap" in failure.error
    assert host.loaded == before
    assert host.on_task({})["who"] == "a"
    # Once the key arrives, the same primary script loads (a metadata error is not its fault).
    files = bundle_files(Script(identifying("new"), 0.9, "a", 2), b)
    assert isinstance(host.load(parse_bundle(files)), LoadedBehavior)
    assert host.load_failure is None


def test_one_script_bundles_report_no_script_list_and_stamp_every_run() -> None:
    a = Script(identifying("a"), name="a", revision=4)
    host = BehaviorHost()
    loaded = host.load(make_bundle(a))
    assert isinstance(loaded, LoadedBehavior)
    assert loaded.scripts == []
    run = host.run_task({})
    assert (run.sha256, run.name, run.revision, run.ok) == (a.sha256, "a", 4, True)


def test_failed_tasks_say_which_script_failed() -> None:
    boom = Script("function on_task(task, ctx) error('no') end", weight=0.5, name="boom")
    spin = Script(
        "function on_task() while true do end end",
        0.5,
        "spin",
        limits={"maxInstructions": 100_000},
    )
    host = BehaviorHost(rng=random.Random(19))
    host.load(make_bundle(boom, spin))
    kinds: dict[str, type[BaseException]] = {}
    for _ in range(40):
        run = host.run_task({})
        assert run.error is not None
        assert not run.ok
        kinds[run.sha256] = type(run.error)
        with pytest.raises(type(run.error)):
            run.value()
    assert kinds == {boom.sha256: LuaBehaviorError, spin.sha256: LuaLimitExceeded}
    assert host.calls_failed == 40


def test_a_script_that_timed_out_while_loading_is_retried_beside_the_others() -> None:
    """The busy machine is played by the factory (a real timeout cannot be provoked)."""
    attempts = Counter[str]()

    def factory(source: str, *args: Any, **kwargs: Any) -> Any:
        if "slow" in source:
            attempts["slow"] += 1
            if attempts["slow"] == 1:
                try:
                    raise LuaLimitExceeded("timeout")
                except LuaLimitExceeded as exc:
                    raise LuaValidationError(f"init(config): {exc}") from exc
        return Sandbox(source, *args, **kwargs)

    a = Script(identifying("a"), weight=0.5, name="a")
    slow = Script("-- slow\n" + identifying("slow"), weight=0.5, name="s")
    host = BehaviorHost(sandbox_factory=factory, timeout_retry=Backoff(base=0.02, cap=0.05))
    failure = host.load(make_bundle(a, slow))
    assert isinstance(failure, LoadFailure)
    assert failure.sha256 == slow.sha256
    wait_until_sync(lambda: host.loaded is not None and len(host.loaded.scripts) == 2)
    assert attempts["slow"] == 2
    assert host.load_failure is None
    assert {host.on_task({})["who"] for _ in range(200)} == {"a", "slow"}
    host.close()


def test_a_bundle_whose_script_was_dropped_can_still_be_relabelled() -> None:
    a = Script(identifying("a"), weight=0.9, name="a", revision=1)
    host = BehaviorHost()
    host.load(make_bundle(a, Script(BROKEN, 0.1, "x", 1)))
    relabelled = host.load(make_bundle(Script(a.source, 0.9, "a", 2), Script(BROKEN, 0.1, "x", 2)))
    assert isinstance(relabelled, LoadedBehavior)
    assert relabelled.revision == 2
    assert [(s.sha256, s.revision, s.weight) for s in relabelled.scripts] == [(a.sha256, 2, 1.0)]
    assert host.run_task({}).revision == 2


def test_a_primary_at_weight_zero_serves_alone_when_nothing_else_loads() -> None:
    primary = Script(identifying("p"), weight=0.0, name="p")
    host = BehaviorHost()
    # First load: running the primary beats running nothing.
    host.load(make_bundle(primary, Script(BROKEN, 1.0, "c")))
    assert host.on_task({})["who"] == "p"
    # Later, the same situation keeps what runs (its weights still mean something).
    other = Script(identifying("o"), weight=1.0, name="o")
    host.load(make_bundle(primary, other))
    before = host.loaded
    failure = host.load(make_bundle(primary, Script(BROKEN + "-- 2\n", 1.0, "d")))
    assert isinstance(failure, LoadFailure)
    assert host.loaded == before
    assert host.on_task({})["who"] == "o"
