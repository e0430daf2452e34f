"""The pattern guard's cost model (Sandbox.pattern_cost): linear where the matcher is linear,
polynomial where it backtracks; which calls run as one C call, as a loop, or are refused.
The calls themselves are in test_library_semantics (results) and the corpus (containment)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent_registry.lua import Limits, Sandbox

pytestmark = pytest.mark.timeout(30, method="thread")

KB100 = 100 * 1024
LIMIT = Limits().max_pattern_cost


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox("function on_task() end") as box:
        yield box


# Every attempt fails within its first items or succeeds, consuming what it scanned.
LINEAR = [
    ("gsub", "%s+"),
    ("gsub", "%s"),
    ("gmatch", "%w+"),
    ("gmatch", "[^,]*"),
    ("gmatch", "%S+"),
    ("find", "%d%d%d%d%-%d%d"),
    ("gsub", "k=%d+"),
    ("match", "^(%w+)=(%w+)$"),
    ("match", "^%s+"),
    ("gsub", "[<>&]"),
]

# Unanchored, so n starts times a linear attempt: over the limit as one C call on 100 KB, but
# each attempt fits, so the call runs as a loop of attempts the hook can stop.
STEPPED = [
    ("find", "<(.-)>"),
    ("gsub", '"(.-)"'),
    ("gmatch", "([^,]*),"),
    ("gsub", "%s+$"),
    ("find", "%w+%.%w+"),
    ("match", "(%w+)=(%w+)$"),
    ("find", "%b()"),
]

# One attempt backtracks polynomially: refused on a long subject.
PATHOLOGICAL = [
    ("find", "a*a*a*a*b", 4),
    ("find", "(.-)(.-)(.-)x", 3),
    ("find", ".-.-.-b", 3),
    ("gsub", "a*a*b", 2),
    ("match", "^%s*(.-)%s*$", 2),
    ("match", "(.-)%1b", 2),
]


@pytest.mark.parametrize(("function", "pattern"), LINEAR)
def test_linear_patterns_are_one_c_call_on_100_kb(
    sandbox: Sandbox, function: str, pattern: str
) -> None:
    call, _ = sandbox.pattern_cost(pattern, KB100, function)
    assert call <= LIMIT / 10
    doubled, _ = sandbox.pattern_cost(pattern, 2 * KB100, function)
    assert doubled <= 2.01 * call


@pytest.mark.parametrize(("function", "pattern"), STEPPED)
def test_unanchored_patterns_with_linear_attempts_run_as_a_loop(
    sandbox: Sandbox, function: str, pattern: str
) -> None:
    call, attempt = sandbox.pattern_cost(pattern, KB100, function)
    assert call > LIMIT
    assert attempt <= LIMIT / 10
    _, doubled = sandbox.pattern_cost(pattern, 2 * KB100, function)
    assert doubled <= 2.01 * attempt


@pytest.mark.parametrize(("function", "pattern", "degree"), PATHOLOGICAL)
def test_backtracking_attempts_are_polynomial_and_refused(
    sandbox: Sandbox, function: str, pattern: str, degree: int
) -> None:
    _, attempt = sandbox.pattern_cost(pattern, KB100, function)
    assert attempt > LIMIT
    _, doubled = sandbox.pattern_cost(pattern, 2 * KB100, function)
    assert doubled >= 0.99 * 2**degree * attempt


def test_a_quantifier_followed_by_its_own_class_multiplies() -> None:
    """After `%s+`, a rest that cannot start with a space fails at once at every retry but one
    (a linear attempt); a rest that can is retried in full at every position of the run."""
    with Sandbox("function on_task() end") as box:
        _, apart = box.pattern_cost("^%s+x%s+y", KB100)
        _, overlapping = box.pattern_cost("^%s+%s+y", KB100)
    assert apart < 10 * KB100
    assert overlapping > KB100 * KB100


def test_pattern_cost_takes_a_pattern_function() -> None:
    with Sandbox("function on_task() end") as box, pytest.raises(ValueError, match="rep"):
        box.pattern_cost("a", 10, "rep")


def test_a_subject_without_long_runs_is_one_c_call(sandbox: Sandbox) -> None:
    """`([^,]*),` retries only inside runs of its first class: with short fields it is one C
    call; a long run anywhere (also at the start) makes it a loop of attempts."""
    fields = ",".join(f"field{i}" for i in range(10_000)) + ","
    assert sandbox.pattern_plan("([^,]*),", fields, "gmatch") == "call"
    assert sandbox.pattern_plan("([^,]*),", "x" * 5000 + fields, "gmatch") == "loop"
    assert sandbox.pattern_plan("([^,]*),", fields + "x" * 5000 + ",", "gmatch") == "loop"
    text = "a b  c\t\n" * 10_000
    assert sandbox.pattern_plan("%s+$", text, "gsub") == "call"
    assert sandbox.pattern_plan("%s+$", text + " " * 5000 + "x", "gsub") == "loop"


def test_plans_of_the_other_kinds(sandbox: Sandbox) -> None:
    assert sandbox.pattern_plan("%s+", " " * KB100, "gsub") == "call"
    assert sandbox.pattern_plan("<(.-)>", "<" * KB100) == "loop"
    assert sandbox.pattern_plan("a*a*a*b", "a" * KB100) == "refused"
    assert sandbox.pattern_plan("^%s*(.-)%s*$", "x" + " " * KB100 + "y", "match") == "refused"
