"""validate_script: compiles, defines on_task, init runs; a dry call on the invented task is a
warning, on a declared sample task a condition; error and line."""

from __future__ import annotations

import pytest

from agent_registry.lua import Limits, Sandbox, ValidationResult, validate_script

from .corpus import BENIGN, Benign

pytestmark = pytest.mark.timeout(30, method="thread")


def test_valid_script() -> None:
    script = """
    local seen = 0
    function init(config) seen = 0 end
    function on_task(task, ctx)
      seen = seen + 1
      return {accept = task.difficulty < 0.9, effort = task.difficulty}
    end
    """
    assert validate_script(script) == ValidationResult(ok=True, error=None, line=None)


def test_missing_on_task() -> None:
    result = validate_script("function on_tsak(task, ctx) end")
    assert not result.ok
    assert "on_task" in (result.error or "")
    assert result.line is None


def test_on_task_not_a_function() -> None:
    result = validate_script("on_task = 42")
    assert not result.ok
    assert "on_task" in (result.error or "")


def test_syntax_error_with_line() -> None:
    result = validate_script("function on_task(task, ctx)\n  local y = 1\n\n  local x = = 2\nend\n")
    assert not result.ok
    assert result.line == 4
    assert "unexpected symbol" in (result.error or "")


def test_top_level_error_with_line() -> None:
    result = validate_script("function on_task() end\n\nlocal t = nil\nprint(t.x)\n")
    assert not result.ok
    assert result.line == 4
    assert "top level" in (result.error or "")


def test_init_error_with_line() -> None:
    script = (
        "function init(config)\n  error('bad config: ' .. tostring(config.x))\nend\n"
        "function on_task() end\n"
    )
    result = validate_script(script)
    assert not result.ok
    assert result.line == 2
    assert "init(config)" in (result.error or "")
    assert "bad config: nil" in (result.error or "")


READS_ITS_FIELDS = "function on_task(task, ctx)\n  return {next = task.n + 1}\nend\n"


def test_a_script_reading_fields_of_its_own_tasks_is_accepted_with_a_warning() -> None:
    result = validate_script(READS_ITS_FIELDS)
    assert result.ok
    assert result.error is None
    (warning,) = result.warnings
    assert warning.startswith(
        "dry call on_task with an invented task {id, kind, difficulty} failed: line 2: "
        "attempt to perform arithmetic on a nil value (field 'n')"
    )
    assert "accepted" in warning


def test_with_a_sample_task_the_dry_call_uses_it() -> None:
    assert validate_script(READS_ITS_FIELDS, sample_task={"n": 1}) == ValidationResult(ok=True)


def test_with_a_sample_task_a_failing_dry_call_is_refused_with_the_line() -> None:
    result = validate_script(READS_ITS_FIELDS, sample_task={"m": 1})
    assert not result.ok
    assert result.line == 2
    assert (result.error or "").startswith("dry call on_task with the sample task:")
    assert result.warnings == ()


def test_dry_call_error_raised_in_a_nested_function_reports_the_script_line() -> None:
    script = (
        "local function helper(t)\n  return t.a.b\nend\n"
        "function on_task(task, ctx)\n  return helper(task)\nend\n"
    )
    assert "failed: line 2: " in validate_script(script).warnings[0]
    assert validate_script(script, sample_task={}).line == 2


def test_error_object_without_position_still_gets_a_line() -> None:
    script = "function on_task(task, ctx)\n\n  error({code = 1})\nend\n"
    assert "failed: line 3: " in validate_script(script).warnings[0]
    result = validate_script(script, sample_task={"id": "x"})
    assert not result.ok
    assert result.line == 3


def test_dry_call_over_the_limits() -> None:
    script = "function on_task() while true do end end"
    limits = Limits(max_instructions=100_000)
    (warning,) = validate_script(script, limits).warnings
    assert "instruction limit exceeded" in warning
    result = validate_script(script, limits, sample_task={})
    assert not result.ok
    assert "instruction limit exceeded" in (result.error or "")


def test_dry_call_result_must_convert() -> None:
    script = "function on_task() return {f = function() end} end"
    assert "cannot be converted" in validate_script(script).warnings[0]
    result = validate_script(script, sample_task={})
    assert not result.ok
    assert "cannot be converted" in (result.error or "")


def test_a_sample_task_that_cannot_be_converted_is_refused() -> None:
    deep: dict[str, object] = {}
    for _ in range(40):
        deep = {"d": deep}
    result = validate_script(READS_ITS_FIELDS, sample_task=deep)
    assert not result.ok
    assert "cannot be converted" in (result.error or "")


def test_top_level_over_the_limits_is_still_refused() -> None:
    result = validate_script(
        "while true do end\nfunction on_task() end", Limits(max_instructions=100_000)
    )
    assert not result.ok
    assert "instruction limit exceeded" in (result.error or "")


@pytest.mark.parametrize("case", BENIGN, ids=[b.name for b in BENIGN])
def test_realistic_scripts_validate_and_run(case: Benign) -> None:
    result = validate_script(case.script)
    assert result.ok, result.error
    # Without a sample task, only the scripts that read fields the invented task lacks warn.
    assert bool(result.warnings) == case.reads_own_fields, result.warnings
    assert validate_script(case.script, sample_task=case.task) == ValidationResult(ok=True)
    with Sandbox(case.script) as sandbox:
        assert sandbox.on_task(case.task) == case.result


def test_bytecode_refused() -> None:
    result = validate_script("\x1bLua\x54\x00")
    assert not result.ok


def test_too_large_script() -> None:
    result = validate_script(
        "-- " + "x" * 2000 + "\nfunction on_task() end", Limits(max_source_bytes=1000)
    )
    assert not result.ok
    assert "larger than 1000 bytes" in (result.error or "")


def test_validation_output_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert validate_script('log("noise")\nfunction on_task() log("more") end').ok
    assert "noise" not in caplog.text
